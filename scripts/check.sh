#!/usr/bin/env bash
# Lint, type checks, import contracts, then the whole test suite (fault tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy and import contracts (on the installed layout, build/tree)"
bash scripts/package_tree.sh
(cd build/tree && ../../.venv/bin/mypy --config-file ../../pyproject.toml -p mimamori)
(cd build/tree && PYTHONPATH=. ../../.venv/bin/lint-imports --config ../../pyproject.toml)
echo "== mypy on the firmware, against MicroPython's stubs (firmware/mypy.ini)"
.venv/bin/python firmware/tests/typings.py build/mpy-typings
MYPYPATH=build/mpy-typings .venv/bin/mypy --config-file firmware/mypy.ini \
  --custom-typeshed-dir build/mpy-typings firmware/main.py firmware/mimamori_sensor
echo "== tests"
.venv/bin/python -m pytest "$@"
