"""SQL fragments over the cloud's JC-STAR-style device labels (``device_labels``).

Labels are stored as the labelling job computed them (docs/schema.md): an outcome, the
device kind, criteria with their evidence, reasons and advice in both languages (jsonb).
"""

from __future__ import annotations

from mimamori.dashboards.panels import Tr

#: outcome -> (English, Japanese), the wording of ``mimamori label``.
OUTCOMES = {
    "meets_star1_observed": ("meets ★1 as far as the network shows", "★1相当（観測の範囲で）"),
    "does_not_meet": ("does not meet ★1", "★1を満たしていません"),
    "insufficient_evidence": ("insufficient evidence", "判定材料が不足"),
}


def outcome_text(tr: Tr, column: str = "l.outcome") -> str:
    """SQL turning an outcome code into the reader's words."""
    cases = " ".join(f"WHEN '{code}' THEN '{tr(en, ja)}'" for code, (en, ja) in OUTCOMES.items())
    return f"CASE {column} {cases} ELSE {column} END"


def joined(tr: Tr, column: str) -> str:
    """SQL joining a jsonb list of ``{"ja": ..., "en": ...}`` objects into one text."""
    key = "ja" if tr.lang == "ja" else "en"
    return f"(SELECT string_agg(x->>'{key}', ' / ') FROM jsonb_array_elements({column}) AS x)"


def outcome_counts(tr: Tr) -> str:
    """SQL select-list: one count column per outcome, named in the reader's words."""
    return ", ".join(
        f"count(*) FILTER (WHERE outcome = '{code}') AS \"{tr(en, ja)}\""
        for code, (en, ja) in OUTCOMES.items()
    )
