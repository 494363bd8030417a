#!/usr/bin/env bash
# The test command: the whole suite against real git, etcd and Docker.
# Services that are missing are skipped locally and FAIL under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -q -p no:cacheprovider --durations=15 "$@"
