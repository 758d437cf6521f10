# Steps for a one-call run on a lent GPU machine, sourced by scripts/gpu_check.sh and
# experiments/similarity_gpu.sh: a step runner with a time budget, the environment report, the install of
# the carried wheels, and the collection of every run's results into $OUT.
#
# The caller sets, before sourcing: REPO, OUT (a folder, created here), WORK (run directories and cache;
# WORK/runs and WORK/logs are emptied here), BUDGET (seconds), and optionally RESERVE_SCALE (the budget its
# reserves were set for; default BUDGET) and CAP_SCALE (a factor on every step's cap, e.g. for a slower CPU
# rehearsal; default 1). It then writes the header of $OUT/summary.txt and calls
# `step NAME CAP RESERVE -- command...` for each step. PY is $PYTHON, else python3, else python.

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUNS=$WORK/runs
LOGS=$WORK/logs
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
rm -rf "$RUNS" "$LOGS"
mkdir -p "$RUNS" "$LOGS"
: >"$OUT/steps.log"

export UNDERTALE_CACHE=${UNDERTALE_CACHE:-$WORK/cache}
export WANDB_MODE=offline WANDB_SILENT=false WANDB_CONSOLE=off WANDB_DISABLE_GIT=true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TQDM_MININTERVAL=10
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the project imports even if the editable install fails
export PY REPO RUNS

# ---------------------------------------------------------------- step runner
START=$(date +%s)
now() { date +%s.%N; }
remaining() { echo $((BUDGET - ($(date +%s) - START))); }

record() { # record NAME RC SECONDS LIMIT NOTE
    printf '%-14s %6s %8s %7s  %s\n' "$1" "$2" "$3" "$4" "$5" >>"$OUT/summary.txt"
}

LAST_RC=0
# step NAME CAP RESERVE -- command...   (RESERVE: seconds kept back for the steps after this one)
step() {
    local name=$1 cap=$((${2} * ${CAP_SCALE:-1})) reserve=$3
    shift 4
    local left limit log t0 t1 rc secs note
    if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
        record "$name" skip 0 0 "GPU_CHECK_SKIP"
        LAST_RC=0
        return 0
    fi
    reserve=$((reserve * BUDGET / ${RESERVE_SCALE:-$BUDGET}))   # reserves set for another budget: scale them
    left=$(($(remaining) - reserve))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 15 ]; then
        record "$name" skip 0 "$limit" "not run: $(remaining)s of the budget left"
        echo "=== [$name] skipped: $(remaining)s of the budget left" | tee -a "$OUT/steps.log"
        LAST_RC=124
        return 0
    fi
    log=$LOGS/$name.log
    echo "=== [$name] (timeout ${limit}s, $(remaining)s left) $*" | tee -a "$OUT/steps.log"
    t0=$(now)
    timeout --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$OUT/steps.log" >"$log"
    rc=${PIPESTATUS[0]}
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    note=""
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && note="TIMED OUT at ${limit}s"
    [ "$rc" = 143 ] && [ -z "$note" ] && note="stopped by SIGTERM"
    [ "$rc" = 2 ] && note="$(grep -m1 '^error:' "$log" | cut -c1-160)"
    record "$name" "$rc" "$secs" "$limit" "$note"
    echo "=== [$name] rc=$rc in ${secs}s $note" | tee -a "$OUT/steps.log"
    grep -v "^wandb:" "$log" | tail -n 8 | cut -c1-300
    LAST_RC=$rc
    return 0
}

# ---------------------------------------------------------------- results
collect() {
    "$PY" "$REPO/scripts/collect_runs.py" "$OUT" "$RUNS" "$LOGS" "$WORK" >"$WORK/key-numbers.txt" 2>&1
    {
        for run in "$RUNS"/*/; do
            [ -d "$run" ] || continue
            echo "################ $run"
            (cd "$run" && find . -maxdepth 2 -not -path './wandb/*' -printf '%10s  %p\n' | sort -k2) 2>/dev/null
            for f in overrides.yaml metrics.json wandb.json environment.json; do
                [ -f "$run/$f" ] && { echo "---- $f"; head -c 20000 "$run/$f"; echo; }
            done
            [ -f "$run/train.log" ] && { echo "---- train.log (last 60 lines)"; tail -n 60 "$run/train.log"; }
        done
    } >"$OUT/runs.txt" 2>&1
}

# ---------------------------------------------------------------- environment, install, W&B check
environment() {
    echo "## date"; date -u
    echo "## uname"; uname -a
    echo "## nproc"; nproc
    echo "## memory"; free -g 2>/dev/null || head -3 /proc/meminfo
    echo "## disk"; df -h /tmp "$REPO" 2>/dev/null
    echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm,power.limit,compute_cap \
        --format=csv 2>&1 || true
    echo "## compilers (inductor/triton need a C compiler)"; (gcc --version 2>&1 | head -1) || true
    command -v nvcc >/dev/null && nvcc --version | tail -2
    echo "## python"; "$PY" - <<'PYEOF'
import importlib, platform, sys
print(sys.executable, platform.python_version())
for name in ("torch", "lightning", "pytorch_lightning", "torchmetrics", "transformers", "tokenizers", "pyarrow",
             "numpy", "triton", "hydra", "omegaconf", "wandb", "capstone", "elftools", "scipy", "matplotlib"):
    try:
        module = importlib.import_module(name)
        print(f"{name:18} {getattr(module, '__version__', '?')}")
    except Exception as error:
        print(f"{name:18} MISSING ({type(error).__name__}: {error})")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "bf16", torch.cuda.is_bf16_supported(), "memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
PYEOF
    echo "## large files in the corpus's system directories (disassembly time risk)"
    find /usr/bin /usr/sbin /usr/libexec /usr/lib/x86_64-linux-gnu -type f -size +50M -printf '%s %p\n' 2>/dev/null \
        | sort -rn | head -15
    echo "## pip list"; "$PY" -m pip list 2>/dev/null
}
export -f environment

install() {
    local wheels=$REPO/.device/wheels missing=""
    for module in hydra omegaconf antlr4 wandb capstone elftools; do
        "$PY" -c "import $module" 2>/dev/null || missing="$missing $module"
    done
    echo "missing before install:${missing:- none}"
    if [ -n "$missing" ]; then
        [ -d "$wheels" ] || { echo "no $wheels: carry .device"; return 3; }
        local names
        names=$(ls "$wheels" | sed -E 's/^([^-]+)-.*/\1/' | sort -u | tr '\n' ' ')
        # resolve against what the image has; fall back to the carried wheels without dependency resolution
        "$PY" -m pip install --no-index --find-links "$wheels" --no-cache-dir --no-compile \
            hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 wandb==0.31.0 capstone==5.0.9 \
            pyelftools==0.33 ||
            "$PY" -m pip install --no-index --no-deps --find-links "$wheels" --no-cache-dir --no-compile $names
    fi
    "$PY" -m pip install --no-index --no-deps --no-build-isolation --no-cache-dir -e "$REPO" ||
        echo "editable install failed: the project is imported through PYTHONPATH=$REPO"
    "$PY" -c "import transformers; print('transformers', transformers.__version__)" ||
        echo "no transformers: the bench's HuggingFace row will be skipped"
    "$PY" -c "import hydra, omegaconf, wandb, capstone, elftools, undertale; \
print('hydra', hydra.__version__, 'omegaconf', omegaconf.__version__, 'wandb', wandb.__version__, \
'capstone', capstone.__version__, 'undertale', undertale.__file__)"
}
export -f install

offline_check() {
    local found=0
    for run in "$RUNS"/*/; do
        for dir in "$run"wandb/offline-run-*; do
            [ -d "$dir" ] || continue
            found=1
            echo "## $dir"
            "$PY" -m undertale.training.wandb_offline "$dir" 2>&1 | head -c 3000
            echo
        done
    done
    [ "$found" = 1 ] || { echo "no offline W&B runs found"; return 1; }
}
export -f offline_check
