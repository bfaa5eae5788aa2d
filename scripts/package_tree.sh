#!/usr/bin/env bash
# Lay out the source as the installed package (mimamori/<component>/...) under build/tree,
# for tools that read files rather than import them (mypy, import-linter).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/tree && mkdir -p build/tree/mimamori
cp mimamori/*.py build/tree/mimamori/
for c in protocol detect edge cloud dashboards simulators; do
  cp -r "$c" "build/tree/mimamori/$c"
done
find build/tree -name __pycache__ -prune -exec rm -rf {} +
