#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: the `gpu` tests and the benchmarks at the released sizes (random
# weights, bf16), written to one Markdown report. Steps run in order of importance, each time-boxed, within a total
# budget (GPU_CHECK_BUDGET seconds, default 600; measured on an H200: ~560 s for every step); a step that would not fit is skipped and the report says so.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # default OUT_DIR: $OUT, else ./gpu_check_out
#   GPU_CHECK_DRY=1 bash scripts/gpu_check.sh    # the same plumbing on the CPU at tiny sizes (seconds)
#
# Offline machines: wheels of missing packages in ./.whl (deepspeed as its sdist) are installed to /tmp/site first.
# Writes OUT_DIR/gpu_report.md (the tables), OUT_DIR/gpu_check.log (everything printed), OUT_DIR/results.json.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
LOG="$OUT_DIR/gpu_check.log"
BUDGET=${GPU_CHECK_BUDGET:-600}
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: >"$LOG"

if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then  # CPU plumbing check: tiny models, few frames
  SIZE="--quick --device cpu"; DEV="--device cpu"; CODEC="--preset tiny"; COLD="--preset tiny"; TRAIN="--preset tiny"
  FRAMES=3; BATCHES=1,2; COUNTS=1,2; DEPTHS=2,4; PYTEST_MARK="gpu"
else
  SIZE="--released --device cuda"; DEV="--device cuda"; CODEC="--preset released"; COLD="--preset released"
  TRAIN="--preset small"; FRAMES=10; BATCHES=1,8,16; COUNTS=1,4,8,16; DEPTHS=8,32; PYTEST_MARK="gpu"
fi

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with at most min(TIMEOUT_S, budget left) seconds; logs the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt 20 ]; then
    echo "SKIPPED $name (budget spent)" | tee -a "$LOG" "$WORK/steps.txt"
    return
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "=== $name (limit ${limit}s, $(left)s of budget left) ===" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t0))
  local what="ok"
  [ $rc -ne 0 ] && what="FAILED (exit $rc)"
  [ $rc -eq 124 ] && what="TIMED OUT"
  echo "$what $name (${dt}s)" | tee -a "$LOG" "$WORK/steps.txt"
}

report() {
  python3 scripts/gpu_report.py "$WORK" "$OUT_DIR" "$(($(date +%s) - START))" >>"$LOG" 2>&1 \
    || echo "report generation failed (see $LOG)"
  tail -n 60 "$OUT_DIR/gpu_report.md" 2>/dev/null
}
trap report EXIT

{
  echo "# machine"
  nvidia-smi -L 2>&1 || echo "no nvidia-smi"
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| transformers', transformers.__version__, '| GPU', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
} >"$WORK/machine.txt" 2>&1
cat "$WORK/machine.txt" >>"$LOG"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "${GPU_CHECK_DRY:-0}" != 1 ]; then
  step "install carried wheels" 120 bash -c 'python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && if ls .whl/deepspeed-*.tar.gz >/dev/null 2>&1; then \
    DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target /tmp/site .whl/deepspeed-*.tar.gz; fi'
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

B="python3 -m cat_tts.tools.bench"
step "gpu tests" 90 python3 -m pytest -q -p no:cacheprovider -m "$PYTEST_MARK" tests/generation tests/model \
  --junitxml "$WORK/pytest.xml"
step "engine: concurrent vs sequential" 120 $B --json "$WORK/engine.json" engine $SIZE --concurrency $COUNTS \
  --depths $DEPTHS --frames $FRAMES
step "generate: eager vs CUDA graphs" 150 $B --json "$WORK/generate.json" generate $SIZE --compile --no-inductor \
  --batches $BATCHES --depths $DEPTHS --frames $FRAMES --warmup-frames 2
step "codec fp32" 30 $B --json "$WORK/codec.json" codec $CODEC $DEV --seconds 6 --repeats 2
step "deepspeed train step" 60 $B --json "$WORK/train.json" train $TRAIN --steps 2 --warmup 1 --p 0,1 \
  --tokens-per-batch 2048 --frames 100
step "generate: torch.compile + CUDA graphs (batch 1)" 110 $B --json "$WORK/compiled.json" generate $SIZE \
  --compile --batches 1 --depths 32 --frames 8 --warmup-frames 2
step "cold start: compile cache cold vs warm (tiny)" 60 $B --json "$WORK/coldstart.json" coldstart --preset tiny \
  $DEV --dtypes bfloat16 --codec-dtypes float32 --ttfa --compile on
echo "total $(($(date +%s) - START))s" | tee -a "$LOG"
