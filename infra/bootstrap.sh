#!/usr/bin/env bash
# Installs what nocstream needs on a fresh Debian machine: Python packages, and the system packages
# (Java 17 + Maven for the local Kafka, PostgreSQL, and — with --browser — Chromium for the
# dashboard's end-to-end tests). Everything is skipped when already present, so re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
[ "${1:-}" = "--browser" ] && want_browser=1

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "nocstream needs Python 3.11 or newer (found: $($py --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ "$want_browser" = 1 ]; then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${missing[*]} — install them (sudo apt-get install ${missing[*]}) and re-run" >&2
    exit 1
  fi
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Editable install with the dev extras; quick when everything is already satisfied.
"$py" -m pip install -q --disable-pip-version-check -e '.[dev]'
