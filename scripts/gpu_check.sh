#!/usr/bin/env bash
# Check this project on a GPU node: the environment, the training throughput, and short real runs.
#
#   bash scripts/gpu_check.sh [--wheelhouse DIR] [--steps N] [OUTPUT_DIR]
#
# Run it from any directory on the node; it uses the repository it belongs to.
#
# Options:
#   OUTPUT_DIR          where the logs, runs and summary go (default: gpu-check-out/ in the repository)
#   --wheelhouse DIR    first install the missing Python packages offline from DIR (also WHEELHOUSE=DIR):
#                         pip install --no-index --find-links DIR -e ".[bench]"
#                       Without it, the project's dependencies must already be installed (pip install -e ".[bench]").
#                       Build DIR on a machine with network access, the same Python version and the same platform:
#                         pip wheel -w DIR ".[bench]" setuptools wheel
#   --steps N           training steps of the single-GPU run (default 300; the resume adds 100)
# Environment: PYTHON (default python3), GPU_CHECK_TIMEOUT (seconds per step, default 1800),
#   WANDB_MODE (default offline), UNDERTALE_CACHE (the data cache, as for train.py).
#
# Steps, in order. The first that fails stops the check with one line: "error: step NAME failed ...".
#   install   only with a wheelhouse (above)
#   env       nvidia-smi; Python, torch, CUDA and package versions; torch must see a CUDA device
#   bench     python -m undertale.bench model=medium data.batch_size=32 (the training-throughput table)
#   train     python train.py trainer=gpu model=small: N steps, 3 validations, checkpoints
#   resume    python train.py resume=<train run> trainer.max_steps=N+100
#   evaluate  python evaluate.py run=<train run>
#   ddp       python train.py trainer=ddp model=small on all the node's GPUs, 60 steps (skipped with one GPU)
#   fsdp      python train.py trainer=fsdp model=small on all the node's GPUs, 60 steps
# The data is what `python train.py` prepares by default (this node's binaries); it is built on first use.
#
# Outputs in OUTPUT_DIR: summary.txt (GPU model, driver, CUDA, torch and other versions; each step's exit code
# and seconds; the bench table; each run's metrics), env.txt, NAME.log for each step, runs/NAME/ (run directories;
# runs/ is emptied at the start).
# Exit status: 0 when every step passed, 1 when a step failed, 2 when no CUDA GPU is visible or on a usage error.
set -u -o pipefail

usage() { sed -n '4s/^#  */usage: /p' "$0" >&2; exit 2; }
WHEELHOUSE=${WHEELHOUSE:-}
STEPS=300
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --wheelhouse) [ $# -ge 2 ] || usage; WHEELHOUSE=$2; shift 2 ;;
        --wheelhouse=*) WHEELHOUSE=${1#*=}; shift ;;
        --steps) [ $# -ge 2 ] || usage; STEPS=$2; shift 2 ;;
        --steps=*) STEPS=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set /{/^set /d; s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; usage ;;
        *) [ -z "$OUT" ] || usage; OUT=$1; shift ;;
    esac
done
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || { echo "error: --steps needs a positive number, not '$STEPS'" >&2; exit 2; }
if [ -n "$WHEELHOUSE" ]; then
    [ -d "$WHEELHOUSE" ] || { echo "error: the wheelhouse $WHEELHOUSE is not a directory" >&2; exit 2; }
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
fi

# the GPU first: fail fast where there is none
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "error: no CUDA GPU visible (nvidia-smi not found)" >&2
    exit 2
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "error: no CUDA GPU visible (nvidia-smi lists none)" >&2
    exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu-check-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) && cd "$REPO" || exit 2
PY=${PYTHON:-python3}
RUNS=$OUT/runs
TIMEOUT=${GPU_CHECK_TIMEOUT:-1800}
export WANDB_MODE=${WANDB_MODE:-offline} PYTHONUNBUFFERED=1
rm -rf "$RUNS" && mkdir -p "$RUNS" || exit 2

ROWS=()     # four fields per step: name, exit code, seconds, note
FAILED=""
# OUTPUT_DIR/summary.txt, written on every exit: a failed check leaves one too
summary() {
    {
        echo "undertale GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
        nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/GPU /'
        [ -f "$OUT/env.log" ] && grep -E '^(python|torch|lightning|transformers|cuda) ' "$OUT/env.log"
        echo
        printf '%-9s %5s %8s  %s\n' step exit seconds note ${ROWS[@]+"${ROWS[@]}"}
        [ -n "$FAILED" ] && echo "$FAILED"
        [ -f "$OUT/bench.log" ] && { echo; sed -n '/^device:/p; /tokens\/s.*step ms/,$p' "$OUT/bench.log"; }
        echo "runs (metrics.json):"
        "$PY" - "$RUNS" <<'EOF'
import json, pathlib, sys
KEYS = ("status", "global_step", "train/tokens_per_sec", "train/mfu", "val/loss", "val/accuracy", "world_size")
for run in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        continue
    print(f"  {run.name:6}", ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                                       for k in KEYS if k in metrics))
EOF
    } >"$OUT/summary.txt" 2>&1
}
trap summary EXIT

# step NAME command...: run it under the timeout, its output in OUTPUT_DIR/NAME.log; stop the check if it fails
step() {
    local name=$1 rc started why last
    shift
    echo "=== $name: $*" | tee "$OUT/$name.log"
    started=$SECONDS
    timeout --kill-after=30 "$TIMEOUT" "$@" 2>&1 | tee -a "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    ROWS+=("$name" "$rc" "$((SECONDS - started))" "")
    if [ "$rc" != 0 ]; then
        why="exit $rc"
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timed out after ${TIMEOUT}s"; fi
        last=$(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1 | cut -c1-200)
        FAILED="error: step $name failed ($why): $last; log: $OUT/$name.log"
        echo "$FAILED" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- install, environment
if [ -n "$WHEELHOUSE" ]; then
    step install "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" -e ".[bench]"
fi
ENV_PY=$(cat <<'EOF'
import importlib, platform, subprocess, sys
subprocess.run(["nvidia-smi"], check=False)
print("python", platform.python_version(), sys.executable, flush=True)
missing = []
for name in ("torch", "lightning", "hydra", "omegaconf", "wandb", "tokenizers", "pyarrow", "capstone", "elftools",
             "numpy", "transformers"):
    try:
        print(f"{name:12}", getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as error:
        print(f"{name:12} MISSING ({error})")
        missing += [name] if name != "transformers" else []  # transformers: only the bench's HuggingFace row
if missing:
    sys.exit(f"missing packages {missing}: pip install -e '.[bench]', or --wheelhouse DIR")
import torch
print("cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "devices", torch.cuda.device_count())
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device (a CPU-only torch build, or a driver older than torch's CUDA)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
EOF
)
step env "$PY" -c "$ENV_PY"
cp "$OUT/env.log" "$OUT/env.txt"
GPUS=$(awk '/^cuda / { print $NF; exit }' "$OUT/env.log")

# ---------------------------------------------------------------- throughput, then real runs
step bench "$PY" -m undertale.bench model=medium data.batch_size=32
EVERY=$(((STEPS + 2) / 3))
step train "$PY" train.py trainer=gpu model=small trainer.max_steps="$STEPS" trainer.val_check_interval=$EVERY \
    callbacks.checkpoint.every_n_train_steps=$EVERY hydra.run.dir="$RUNS/train"
step resume "$PY" train.py resume="$RUNS/train" trainer.max_steps=$((STEPS + 100))
step evaluate "$PY" evaluate.py run="$RUNS/train"
SHORT=(model=small trainer.max_steps=60 trainer.val_check_interval=30 callbacks.checkpoint.every_n_train_steps=30)
if [ "${GPUS:-1}" -gt 1 ]; then
    step ddp "$PY" train.py trainer=ddp "${SHORT[@]}" hydra.run.dir="$RUNS/ddp"
else
    ROWS+=(ddp - - "skipped: one GPU")
fi
step fsdp "$PY" train.py trainer=fsdp "${SHORT[@]}" hydra.run.dir="$RUNS/fsdp"

trap - EXIT
summary
echo
cat "$OUT/summary.txt"
echo "GPU check passed: logs and runs in $OUT"
