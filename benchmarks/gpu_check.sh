#!/usr/bin/env bash
# The whole GPU check in one go: what the machine is, the test suite on CUDA, training throughput
# of the `gpu` preset (bf16 + TF32, with and without torch.compile), a training run on a fixed
# wall-clock budget, then 10,000 samples scored with MNIST-FD, precision, recall and class accuracy.
#
#   bash benchmarks/gpu_check.sh OUT_DIR          # on a GPU: about 8 minutes on one H100/H200
#   bash benchmarks/gpu_check.sh OUT_DIR --cpu    # the same steps with the tiny preset and tiny
#                                                 # budgets: proves the script before GPU time is
#                                                 # spent (tests/test_gpu_check.py runs it)
#
# OUT_DIR receives a few small files: check.log (everything printed), summary.md (the figures),
# throughput.json. The run, the samples and the exported real digits go under $GPU_CHECK_WORK
# (default runs/gpu_check), so OUT_DIR stays small enough to bring back from a lent machine.
#
# Environment:
#   DIT_DATA_DIR    folder holding MNIST/raw/ (default ./data); no download is attempted when the
#                   four files are there, so copy them in before going to a machine offline
#   WHEELS          optional folder of wheels to install first (pytorch-fid, which a bare GPU
#                   machine lacks), into a private --target folder put on PYTHONPATH
#   TRAIN_MINUTES   the training budget (default 3 on a GPU, 0.1 with --cpu)
#
# Preparing a lent GPU machine that reaches no network (from the repository root, here):
#   mkdir -p data/MNIST/raw && cp ../shared/data/MNIST/raw/* data/MNIST/raw/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pytorch-fid==0.3.0
# then run there, carrying data/MNIST and .whl:
#   WHEELS=.whl bash benchmarks/gpu_check.sh "$OUT"
#
# Every step is timed; a failing step is reported and the check goes on to the next one, so one
# bug does not hide the others. The exit status is the number of failed steps (0 = all passed).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [--cpu]}
MODE=${2:-gpu}
if [ "$MODE" = "--cpu" ]; then
    PRESET=tiny; DEVICE=cpu; AMP=off; SECONDS_PER_ROW=1; PER_CLASS=20; BATCH=500
    MINUTES=${TRAIN_MINUTES:-0.1}; TEST_ARGS=(-m cuda); COMPILE=()
elif [ "$MODE" = "gpu" ]; then
    PRESET=gpu; DEVICE=cuda; AMP=bf16; SECONDS_PER_ROW=10; PER_CLASS=1000; BATCH=2500
    MINUTES=${TRAIN_MINUTES:-3}; TEST_ARGS=(-m "not slow"); COMPILE=(--compile)
else
    echo "unknown mode $MODE: pass --cpu or nothing" >&2
    exit 2
fi
WORK=${GPU_CHECK_WORK:-runs/gpu_check}
DATA=${DIT_DATA_DIR:-data}
ROOT=$PWD
DATA_ABS=$(realpath -m "$DATA")
mkdir -p "$OUT" "$WORK"
LOG="$OUT/check.log"
SUMMARY="$OUT/summary.md"
: > "$LOG"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 DIT_DATA_DIR="$DATA"
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY" "$LOG"; }

# step NAME COMMAND...: run it with its output in the log, and its time and status in the summary.
step() {
    local name=$1; shift
    echo -e "\n=== $name: $*" | tee -a "$LOG"
    local start=$SECONDS
    "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    if [ "$status" -eq 0 ]; then
        say "- $name: ok in $((SECONDS - start)) s"
    else
        say "- $name: FAILED (status $status) after $((SECONDS - start)) s"
        FAILED=$((FAILED + 1))
    fi
    return "$status"
}

if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi

say "# GPU check ($MODE mode, preset $PRESET), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# 1. The machine.
step "machine" python3 - "$DEVICE" <<'EOF'
import platform, subprocess, sys
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.get_num_threads()} CPU threads")
for name in ("torchvision", "scipy", "numpy", "pytorch_fid"):
    try:
        print(f"{name} {getattr(__import__(name), '__version__', '?')}")
    except ImportError:
        print(f"{name} missing")
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("PyTorch sees no CUDA GPU")
    print(f"GPU: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    print(f"nvidia-smi: {out.stdout.strip() or out.stderr.strip()}")
EOF
grep -E "^(GPU|python|nvidia-smi)" "$LOG" | sed 's/^/  /' >> "$SUMMARY"

# 2. The tests: the fast suite with the CUDA tests on a GPU; the CUDA tests alone with --cpu
#    (where they skip: this proves the step, not the GPU).
step "tests (pytest ${TEST_ARGS[*]})" python3 -m pytest -q -p no:cacheprovider "${TEST_ARGS[@]}"
grep -E "passed|failed|skipped" "$LOG" | tail -n 1 | sed 's/^/  /' >> "$SUMMARY"

# 3. Training throughput of the preset, bf16 + TF32 on a GPU, with and without torch.compile.
step "throughput" python3 benchmarks/train_throughput.py --presets "$PRESET" --amp "$AMP" \
    "${COMPILE[@]}" --seconds "$SECONDS_PER_ROW" --device "$DEVICE" --json "$OUT/throughput.json"
grep -E "^\| (preset|$PRESET)" "$LOG" | sed 's/^/  /' >> "$SUMMARY"

# 4. Training on a budget. The run's length is what the measured (uncompiled) throughput fits in
#    95% of the budget, so the cosine decay of the rate completes; --time-limit stops it at the
#    budget should the machine be slower than measured.
STEPS=$(python3 - "$OUT/throughput.json" "$MINUTES" <<'EOF'
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if "compile" not in r["preset"]]
r = rows[0]
print(max(10, int(0.95 * float(sys.argv[2]) * 60 * r["images_per_sec"] / r["batch"])))
EOF
) || STEPS=200
say "- training budget: $MINUTES min, $STEPS steps of the cosine decay"
step "train" python3 train.py --preset "$PRESET" --device "$DEVICE" --amp "$AMP" \
    --out-dir "$WORK/run" --overwrite --max-steps "$STEPS" --lr-decay \
    --time-limit "$MINUTES" --sample-every 1000000000
grep -E "^(trained|time limit)" "$LOG" | sed 's/^/  /' >> "$SUMMARY"

# 5. 10,000 samples (1,000 per digit) with the checkpoint's sampler, scored against the MNIST
#    test set. The floor, real training digits at 10,000 images: MNIST-FD 3.4-3.9.
step "sample" python3 inference.py --checkpoint "$WORK/run/model.pth" --device "$DEVICE" \
    --num-per-class "$PER_CLASS" --out-dir "$WORK/fake" --batch-size "$BATCH"
# fid_computer.py exports the MNIST test set to images/real and caches its statistics in
# images/cache, both relative to where it runs: it runs inside $WORK, so that the check leaves
# the repository's own images/ alone.
score() {
    (cd "$WORK" && python3 "$ROOT/fid_computer.py" --metric mnist --device "$DEVICE" --fake fake \
        --data-dir "$DATA_ABS")
}
step "score" score
grep -E "^(MNIST-FD|precision|recall|class accuracy|per digit)" "$LOG" | sed 's/^/  /' >> "$SUMMARY"

say "- failed steps: $FAILED"
exit "$FAILED"
