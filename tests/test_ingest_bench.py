"""``mimamori bench ingest`` runs and reports a complete, loss-free result (not timed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mimamori.simulators.bench import ingest as bench

KEYS = {"storage", "rows", "raw_rows_per_s", "pipeline_rows_per_s", "ratio", "latency_p50_s",
        "latency_p99_s", "lost", "duplicated"}  # fmt: skip


@pytest.mark.slow
def test_bench_ingest_small_run(capsys: Any) -> None:
    argv = ["--rows", "3000", "--rows-per-message", "500", "--latency-seconds", "1",
            "--storage", "postgresql", "--json", "--no-progress"]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= KEYS
    assert result["storage"] == "postgresql"
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert result["raw_rows_per_s"] > 0 and result["pipeline_rows_per_s"] > 0
    assert 0 < result["latency_p50_s"] <= result["latency_p99_s"]


def test_rows_have_unique_ids_and_valid_fields() -> None:
    rows = bench.make_rows(100, 50, now=1.7e9)
    assert [r.pkts_out for r in rows] == list(range(100, 150))
    assert bench.make_rows(100, 50, now=1.7e9) == rows  # deterministic per id range
