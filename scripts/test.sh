#!/usr/bin/env bash
# Installs cat-tts with its test dependencies on a fresh machine and runs the default test suite.
# torch is pinned first: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev,train,app,eval]"
$PY -m pytest -q "$@"
