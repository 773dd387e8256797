#!/usr/bin/env bash
# The GPU check in one command: the `gpu` tests and the benchmarks at the released sizes (random weights, bf16),
# time-boxed to 9 minutes of device time, into docs/notes/gpu/DATE/report.{md,json} (see scripts/gpu_check.py).
#
#   bash scripts/gpu_check.sh                    # on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --dry-run          # every step on the CPU at tiny sizes (~10 minutes on 2 cores)
#   bash scripts/gpu_check.sh --out $OUT/gpu     # the report elsewhere; --list: the steps and their limits
#
# Offline: run `bash scripts/gpu_wheels.sh` where pip works first; the wheels in ./.whl travel with the tree.
set -euo pipefail
exec python3 "$(dirname "$0")/gpu_check.py" "$@"  # the steps run in the repository root; --out is from here
