#!/usr/bin/env bash
# Installs cat-tts with its test dependencies on a fresh machine and runs the default test suite (every extra the
# tests exercise: training, demo, evaluation, server, Ray Serve).
#   bash scripts/test.sh            # default suite (CPU, a few minutes)
#   bash scripts/test.sh -m slow    # the slow tests (multi-rank, overfit, train -> use, ...); other pytest
#                                   # arguments work too (CI runs both commands)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System programs for the demo's browser test and streaming playback (Debian chromium + ffmpeg). Installed when
# we can (root with apt-get); otherwise the browser test skips and says why.
if ! command -v chromium >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing chromium and ffmpeg with apt-get (for the demo's browser test)"
    (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      chromium ffmpeg >/dev/null) || echo "warning: could not install chromium/ffmpeg: the demo's browser test will skip"
  else
    echo "note: chromium/ffmpeg not installed (needs root + apt-get): the demo's browser test will skip"
  fi
fi

# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev,train,app,eval,serve,ray]"
$PY -m pytest -q "$@"
