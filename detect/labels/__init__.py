"""mimamori.detect.labels: JC-STAR-style ★1 labels for devices, from network evidence.

Pure assessment: :class:`Observer` collects :class:`Evidence` per device from protocol
records, :func:`assess` turns one device's evidence into a :class:`Label` with an explicit
``now``. The criteria and the lists the checks use are in ``catalogue.toml``
(:func:`load_catalogue`), the well-known factory credentials in
``default_credentials.toml`` (:func:`load_credentials`). See docs/labels.md.
"""

from mimamori.detect.labels.assess import (
    OUTCOMES,
    CriterionResult,
    Label,
    assess,
    assess_all,
    classify,
)
from mimamori.detect.labels.catalogue import (
    Catalogue,
    Criterion,
    Kind,
    load_catalogue,
    parse_catalogue,
)
from mimamori.detect.labels.credentials import (
    Credential,
    DefaultCredentials,
    load_credentials,
    parse_credentials,
)
from mimamori.detect.labels.observe import (
    DeviceEvidence,
    Evidence,
    Observer,
    ja4_version,
    model_hint,
    weaker_hello,
)

__all__ = [
    "OUTCOMES",
    "Catalogue",
    "Credential",
    "Criterion",
    "CriterionResult",
    "DefaultCredentials",
    "DeviceEvidence",
    "Evidence",
    "Kind",
    "Label",
    "Observer",
    "assess",
    "assess_all",
    "classify",
    "ja4_version",
    "load_catalogue",
    "load_credentials",
    "model_hint",
    "parse_catalogue",
    "parse_credentials",
    "weaker_hello",
]
