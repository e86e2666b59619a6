#!/usr/bin/env bash
# Installs what nocstream needs on a fresh Debian machine: Python packages, and the system packages
# (Java 17 + Maven for the local Kafka, PostgreSQL, and — with --browser — Chromium for the
# dashboard's end-to-end tests). Everything is skipped when already present, so re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
runtime=0  # --runtime: only what the processes need (the container image, deploy/Containerfile)
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    --runtime) runtime=1 ;;
    *) echo "usage: infra/bootstrap.sh [--browser] [--runtime]" >&2; exit 2 ;;
  esac
done

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "nocstream needs Python 3.11 or newer (found: $($py --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ "$runtime" = 1 ]; then
  "$py" -m pip install -q --disable-pip-version-check --no-cache-dir .
  exit 0
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# tests/unit/test_deploy.py checks the systemd units with systemd-analyze verify.
command -v systemd-analyze >/dev/null || missing+=(systemd)
# Helm is built from the Go module proxy (below); Debian's Go when the machine has none.
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || [ -x .cache/helm/bin/helm ] || missing+=(golang-go)
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

# Helm, for tests/unit/test_deploy.py (helm lint --strict, helm template): built once into .cache/helm/bin from
# the Go module proxy. It took 4.5 min of CPU (13.5 min wall on a loaded 2-core machine) the first time; Go's own
# module and build caches (under $HOME) make a rebuild in a fresh clone much quicker.
HELM_VERSION=v4.3.2
if [ ! -x .cache/helm/bin/helm ] || [ "$(cat .cache/helm/version 2>/dev/null)" != "$HELM_VERSION" ]; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  echo "building helm $HELM_VERSION from the Go module proxy (first run only, several minutes)..."
  start=$(date +%s)
  GOBIN="$PWD/.cache/helm/bin" GOFLAGS=-mod=mod "$go" install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > .cache/helm/version
  echo "helm built in $(( $(date +%s) - start )) s"
fi
