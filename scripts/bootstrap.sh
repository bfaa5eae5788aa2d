#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine (or Raspberry Pi OS) to run mimamori:
# system packages when missing, then a virtual environment in .venv with every extra.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pg_config >/dev/null 2>&1 || need_apt+=(libpq-dev)
[ -e /usr/include/pcap/pcap.h ] || need_apt+=(libpcap-dev)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v tcpreplay >/dev/null 2>&1 || need_apt+=(tcpreplay)
# Reports: WeasyPrint prints PDFs with pango (and harfbuzz-subset to embed fonts small);
# Japanese text in charts and PDFs needs a CJK font.
ldconfig -p 2>/dev/null | grep -q libpangoft2-1.0 || need_apt+=(libpango-1.0-0 libpangoft2-1.0-0)
ldconfig -p 2>/dev/null | grep -q libharfbuzz-subset || need_apt+=(libharfbuzz-subset0)
fc-list 2>/dev/null | grep -q -i -E 'IPAGothic|Noto Sans CJK' || need_apt+=(fonts-ipafont-gothic)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged services; mimamori runs its own private instances instead.
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mimamori-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[all,dev]'
  touch "$stamp"
fi
if [ -f firmware/package.json ] && [ ! -d firmware/node_modules ]; then
  echo "bootstrap: installing MicroPython (WebAssembly) for firmware tests"
  (cd firmware && npm install --silent --no-audit --no-fund)
fi
