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
echo "== tests"
.venv/bin/python -m pytest "$@"
