#!/usr/bin/env bash
# The test command: the whole suite against real git, etcd and Docker.
# Services that are missing are skipped locally and FAIL under CI=true.
# Runs with the project's virtual environment (.venv, as .ci/run and
# scripts/quickstart.sh make it) when it exists, activated or not; otherwise
# with the `python3` on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
if [ -x .venv/bin/python ]; then
    python=.venv/bin/python
fi
if ! "$python" -c 'import pytest, pytest_asyncio' 2>/dev/null; then
    echo "scripts/test.sh: $python has no pytest/pytest-asyncio;" \
        "install the test extras: $python -m pip install -e '.[test]'" >&2
    exit 2
fi
exec "$python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
