#!/usr/bin/env bash
# Downloads, here (where pip reaches an index), the packages scripts/gpu_check.sh needs that the lent GPU machines'
# image lacks (its package list: torch, transformers, tokenizers, safetensors, httpx, numpy... are there; these are
# not), as wheels for the device's Python (CPython 3.12, x86-64 manylinux) into ./.whl, which gpu_check.sh installs
# into /tmp/site before its steps. DeepSpeed publishes no wheel: its source archive is built there without ops.
#
#   bash scripts/gpu_wheels.sh            # then carry .whl with the working tree (ignored by git here)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Pinned to the versions the test suite runs with; their own needs that the image lacks are listed too.
WHEELS=(
  soundfile==0.14.0 cffi==2.0.0 pycparser==3.0   # audio files (cffi: soundfile's binding)
  soxr==1.1.0                                     # resampling
  hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2  # deepspeed
)
SDISTS=(deepspeed==0.19.8)
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
  manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl "${WHEELS[@]}"
$PY -m pip download -q --no-deps --no-binary=:all: -d .whl "${SDISTS[@]}"
ls -l .whl
du -sh .whl
