#!/usr/bin/env bash
# One-shot check of the project on a lent GPU machine (one H100/H200, 16 cores, no network).
#
#   bash scripts/gpu_check.sh                         # on the GPU machine, from the repository root
#   GPU_CHECK_CPU=1 bash scripts/gpu_check.sh         # CPU rehearsal: cpu/ddp_cpu trainers, tiny model, few steps,
#                                                     # no wheel install, no FSDP
#
# Steps (each with its own timeout; a failing step never stops the others):
#   0 env        nvidia-smi, driver, python/torch/lightning versions, nproc, pip list
#   1 install    carried wheels (.device/wheels, --no-index) + the project (pip install --no-deps -e .)
#   2 data       the default corpus of this machine's binaries, tokenizer, tokenized and packed shards
#                (exactly what train.py prepares: the data group composed like train.py, then DataConfig.prepare)
#   3 bench      python -m undertale.bench model=medium data.batch_size=32 (HF BertForMaskedLM sdpa+compile,
#                padded vs packed, loader)
#   4 train_gpu  train.py trainer=gpu model=small: bf16, compile=auto, 300 steps, 3 validations, checkpoints
#   5 train_ddp  train.py trainer=ddp trainer.devices=1 model=small, 60 steps
#   6 resume     train.py resume=<gpu run> trainer.max_steps=400
#   7 evaluate   evaluate.py run=<gpu run>
#   8 similarity train.py task=similarity pretrained=<gpu run> on .device/pairs, 300 steps; evaluate.py on its test split
#   9 train_fsdp train.py trainer=fsdp trainer.devices=1 model=small, 60 steps (retried with compile=false on failure)
#  10 collect    results.json / runs.txt / W&B offline check
#
# Everything that comes back is written under $OUT (default ./gpu-check-out), at most 8 plain files, no folders
# (the device tool returns at most 8 files, 16 MiB each): summary.txt (each step: exit code, seconds, key numbers),
# env.txt, steps.log (every step's full output), bench.txt, results.json (metrics.json / evaluation.json of every
# run, the bench table), runs.txt (each run directory's listing, overrides, environment, train.log tail).
# Run directories, checkpoints and the data cache stay OUTSIDE $OUT, under $GPU_CHECK_WORK (default
# /tmp/undertale-gpu-check): runs/gpu, runs/ddp, runs/fsdp, runs/similarity; cache/ (UNDERTALE_CACHE).
#
# Environment knobs:
#   OUT                     where the returned files go (default ./gpu-check-out)
#   GPU_CHECK_CPU=1         CPU rehearsal (see above)
#   GPU_CHECK_BUDGET        seconds for the whole script (default 550; 1500 with GPU_CHECK_CPU=1); each step's timeout is cut so that the
#                           later steps keep a minimum share, and a step with under 15 s left is skipped
#   GPU_CHECK_WORK          run directories and cache (default /tmp/undertale-gpu-check; runs/ is emptied first)
#   GPU_CHECK_DATA          extra data overrides for every step, space-separated (e.g. "data.max_functions=20000")
#   UNDERTALE_CACHE         data cache (default $GPU_CHECK_WORK/cache)
#   PYTHON                  interpreter (default python3: on the device image that is the one with torch)
#   GPU_CHECK_SKIP          steps to leave out, space-separated (e.g. "bench" on a second call)
#   SIMILARITY_PAIRS        a pairs directory (python -m undertale.data pairs) to run step 9
#
# Preparing .device/ (git-ignored; the device has no network and lacks these packages), on a networked machine:
#   pip wheel --no-deps -w .device/wheels antlr4-python3-runtime==4.9.3           # no wheel on PyPI: build it
#   pip download --only-binary=:all: --find-links .device/wheels --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_28_x86_64 -d .device/wheels hydra-core omegaconf wandb capstone pyelftools xxhash
#   cp -r <pairs build> .device/pairs                                               # experiments/similarity_data.sh
# then call the device with carry=[".device"] (at most 64 MiB in all).
#
# Deliberately no `set -e`: every step runs under `timeout` and its exit code is recorded.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
OUT=${OUT:-$REPO/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CPU=${GPU_CHECK_CPU:-0}
BUDGET=${GPU_CHECK_BUDGET:-$([ "${GPU_CHECK_CPU:-0}" = 1 ] && echo 1500 || echo 560)}
WORK=${GPU_CHECK_WORK:-/tmp/undertale-gpu-check}
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

# ---------------------------------------------------------------- settings per mode
if [ "$CPU" = 1 ]; then
    MODE="cpu rehearsal"
    MODEL=tiny
    TRAIN_GPU=(trainer=cpu)
    TRAIN_DDP=(trainer=ddp_cpu trainer.devices=1)
    GPU_STEPS=30 GPU_VAL=10 RESUME_STEPS=40 SHORT_STEPS=10 SHORT_VAL=5
    BENCH=(model=tiny data.batch_size=8 bench.steps=2 bench.warmup=1 bench.loader_batches=20)
    EVAL_ARGS=(batches=5)
    DATA_DEFAULT="data.max_functions=5000"
else
    MODE="gpu"
    MODEL=small
    TRAIN_GPU=(trainer=gpu)
    TRAIN_DDP=(trainer=ddp trainer.devices=1)
    GPU_STEPS=${GPU_CHECK_STEPS:-300} GPU_VAL=100 RESUME_STEPS=$((${GPU_CHECK_STEPS:-300} + 100)) SHORT_STEPS=60 SHORT_VAL=30
    BENCH=(model=medium data.batch_size=32)
    EVAL_ARGS=()
    DATA_DEFAULT=""
fi
read -r -a DATA <<<"${GPU_CHECK_DATA-$DATA_DEFAULT}"

# ---------------------------------------------------------------- step runner
START=$(date +%s)
now() { date +%s.%N; }
remaining() { echo $((BUDGET - ($(date +%s) - START))); }

{
    echo "undertale GPU check ($MODE), started $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-?}"
    echo "repo $REPO; OUT $OUT; work $WORK; cache $UNDERTALE_CACHE; budget ${BUDGET}s; python $PY"
    echo
    printf '%-14s %6s %8s %7s  %s\n' step rc seconds limit note
} >"$OUT/summary.txt"

record() { # record NAME RC SECONDS LIMIT NOTE
    printf '%-14s %6s %8s %7s  %s\n' "$1" "$2" "$3" "$4" "$5" >>"$OUT/summary.txt"
}

LAST_RC=0
# step NAME CAP RESERVE -- command...   (RESERVE: seconds kept back for the steps after this one)
step() {
    local name=$1 cap=$2 reserve=$3
    shift 4
    local left limit log t0 t1 rc secs note
    if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
        record "$name" skip 0 0 "GPU_CHECK_SKIP"
        LAST_RC=0
        return 0
    fi
    reserve=$((reserve * BUDGET / 560))   # the reserves are set for the default budget: scale them to this one
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

# ---------------------------------------------------------------- helpers (files under $WORK)
cat >"$WORK/prepare.py" <<'EOF'
"""Prepare the data exactly as train.py does: compose conf/train.yaml with the overrides, DataConfig.prepare."""
import os
import sys
import time

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from undertale.config import CONF, register_configs

register_configs()
with initialize_config_dir(str(CONF), version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[1:])
data = instantiate(cfg.data, _convert_="all")
print(f"cores {os.cpu_count()}; cache {data.cache}; overrides {sys.argv[1:]}")
started = time.perf_counter()
prepared = data.prepare(cfg.model.sequence_length, progress=True)
print(f"prepared in {time.perf_counter() - started:.1f} s: tokenizer {prepared.tokenizer}; shards {prepared.tokenized}")
EOF

cat >"$WORK/collect.py" <<'EOF'
"""results.json: every run's metrics.json / evaluation.json, the bench table; key numbers on stdout."""
import json
import re
import sys
from pathlib import Path

out, runs, logs, work = (Path(p) for p in sys.argv[1:5])


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


results = {"runs": {}, "bench": {}}
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    entry = {"metrics": load(run / "metrics.json"), "evaluation": load(run / "evaluation.json"),
             "similarity": load(run / "similarity.json"), "wandb": load(run / "wandb.json")}
    checkpoints = run / "checkpoints"
    if checkpoints.is_dir():
        entry["checkpoints"] = {p.name: (p.stat().st_size if p.is_file() else "dir")
                                for p in sorted(checkpoints.iterdir())}
    results["runs"][run.name] = entry
before = load(work / "metrics-gpu-before-resume.json")
if before is not None:
    results["runs"].setdefault("gpu", {})["metrics_before_resume"] = before

bench = logs / "bench.log"
if bench.is_file():
    text = bench.read_text(errors="replace")
    rows, in_table = [], False
    for line in text.splitlines():
        if "tokens/s" in line and "step ms" in line:
            in_table = True
            continue
        if in_table:
            if not line.strip():
                in_table = False
                continue
            match = re.match(r"^(.{36})\s*([\d,.]+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$", line)
            if match:
                rows.append({"row": match.group(1).strip(), "tokens_per_s": match.group(2),
                             "step_ms": match.group(3), "peak_gb": match.group(4),
                             "ceiling": match.group(5), "note": match.group(6).strip()})
    results["bench"] = {
        "header": [l for l in text.splitlines() if l.startswith(("machine:", "device:", "shape:", "corpus lengths:"))],
        "rows": rows,
        "ratios": [l for l in text.splitlines() if "x" in l and ("/ HuggingFace" in l or "packed / padded" in l)],
    }
(out / "results.json").write_text(json.dumps(results, indent=2, default=str))

keys = ("status", "global_step", "seconds", "train/loss", "train/tokens_per_sec", "train/mfu", "val/loss",
        "val/accuracy", "baseline/most_frequent_token_accuracy", "val/mrr", "val/recall@1", "baseline/tfidf_mrr",
        "world_size", "error")
for name, entry in results["runs"].items():
    for label in ("metrics_before_resume", "metrics"):
        metrics = entry.get(label)
        if metrics:
            shown = ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics[k]}"
                              for k in keys if k in metrics)
            print(f"  {name}{' (before resume)' if label == 'metrics_before_resume' else ''}: {shown}")
    evaluation = entry.get("evaluation")
    if evaluation:
        overall = evaluation.get("overall", evaluation) if isinstance(evaluation, dict) else {}
        shown = {k: overall[k] for k in ("loss", "accuracy", "perplexity", "targets") if k in overall}
        print(f"  {name} evaluation: {shown or list(evaluation)[:8]}")
    for comparison, scores in ((entry.get("similarity") or {}).get("comparisons") or {}).items():
        for system, pools in scores["systems"].items():
            cells = ", ".join(f"MRR@{size} {score['mrr']:.3f}" for size, score in pools.items() if score["mrr"] is not None)
            print(f"  {name} search {comparison} ({scores['pairs']} pairs) {system}: {cells}")
    if entry.get("checkpoints"):
        print(f"  {name} checkpoints: {entry['checkpoints']}")
for line in results["bench"].get("header", []) + [
        f"{r['row']:<36} {r['tokens_per_s']:>14} {r['step_ms']:>9} {r['peak_gb']:>7} {r['ceiling']:>7}  {r['note']}"
        for r in results["bench"].get("rows", [])] + results["bench"].get("ratios", []):
    print(f"  bench: {line}")
EOF

collect() {
    "$PY" "$WORK/collect.py" "$OUT" "$RUNS" "$LOGS" "$WORK" >"$WORK/key-numbers.txt" 2>&1
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

# ---------------------------------------------------------------- step 0: environment
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
export PY REPO
step env 60 0 -- bash -c environment
cp "$LOGS/env.log" "$OUT/env.txt" 2>/dev/null

# ---------------------------------------------------------------- step 1: wheels + project
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
if [ "$CPU" = 1 ]; then
    record install skip 0 0 "cpu rehearsal: no wheel install"
else
    step install 150 400 -- bash -c install
fi

# W&B offline is the default logger; if wandb does not import, the runs log to CSV so that the rest still runs
LOGGER=(logger=wandb)
EVAL_LOGGER=(logger=wandb)
if ! "$PY" -c "import wandb" >/dev/null 2>&1; then
    LOGGER=(logger=csv)
    EVAL_LOGGER=(logger=none)
    echo "wandb does not import: the runs below use logger=csv, evaluate logger=none" | tee -a "$OUT/summary.txt"
fi

# ---------------------------------------------------------------- step 2: data
# What `python train.py` prepares by default (data=system, 50,000 functions, sequence 512 for small/medium).
step data 120 380 -- "$PY" "$WORK/prepare.py" model=$MODEL ${DATA[@]+"${DATA[@]}"}
if [ "$LAST_RC" != 0 ] && [ "$CPU" != 1 ] && [ -z "${GPU_CHECK_DATA:-}" ]; then
    # A huge library among the system directories can hold up the default build: narrow it to /usr/bin, /usr/sbin.
    DATA=("data.paths=[/usr/bin,/usr/sbin]")
    step data_fallback 90 380 -- "$PY" "$WORK/prepare.py" model=$MODEL "${DATA[@]}"
fi
echo "data overrides for the following steps: ${DATA[*]:-none}" | tee -a "$OUT/summary.txt"

# ---------------------------------------------------------------- step 3: bench
step bench 200 260 -- "$PY" -m undertale.bench "${BENCH[@]}" ${DATA[@]+"${DATA[@]}"}
cp "$LOGS/bench.log" "$OUT/bench.txt" 2>/dev/null
collect

# ---------------------------------------------------------------- step 4: single-GPU training
GPU_RUN=$RUNS/gpu
step train_gpu 100 200 -- "$PY" train.py "${TRAIN_GPU[@]}" model=$MODEL ${DATA[@]+"${DATA[@]}"} \
    trainer.max_steps=$GPU_STEPS trainer.val_check_interval=$GPU_VAL trainer.log_every_n_steps=10 \
    callbacks.checkpoint.every_n_train_steps=$GPU_VAL "${LOGGER[@]}" "hydra.run.dir=$GPU_RUN"
cp "$GPU_RUN/metrics.json" "$WORK/metrics-gpu-before-resume.json" 2>/dev/null
collect

# ---------------------------------------------------------------- step 5: DDP, one device
step train_ddp 60 170 -- "$PY" train.py "${TRAIN_DDP[@]}" model=$MODEL ${DATA[@]+"${DATA[@]}"} \
    trainer.max_steps=$SHORT_STEPS trainer.val_check_interval=$SHORT_VAL trainer.log_every_n_steps=10 \
    callbacks.checkpoint.every_n_train_steps=$SHORT_VAL "${LOGGER[@]}" "hydra.run.dir=$RUNS/ddp"
collect

# ---------------------------------------------------------------- step 6: resume the single-GPU run
# Only ALLOWED_ON_RESUME keys may change (undertale/training/resume.py); the run keeps its own config and directory.
step resume 60 140 -- "$PY" train.py "resume=$GPU_RUN" trainer.max_steps=$RESUME_STEPS
collect

# ---------------------------------------------------------------- step 7: evaluate the single-GPU run
step evaluate 45 120 -- "$PY" evaluate.py "run=$GPU_RUN" "${EVAL_LOGGER[@]}" ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"}
collect

# ---------------------------------------------------------------- step 8: similarity fine-tuning
# task=similarity from the single-GPU run (docs/finetuning.md): InfoNCE on function pairs, bf16 + compile, then
# the function-search table on the held-out test projects. The pairs (experiments/similarity_data.sh) are carried
# in .device/pairs (no network there); SIMILARITY_PAIRS names another directory.
SIMILARITY_PAIRS=${SIMILARITY_PAIRS:-$REPO/.device/pairs}
similarity_step() {
    local trainer=(trainer=gpu trainer.max_steps=300 trainer.val_check_interval=100 data.batch_size=64)
    [ "$CPU" = 1 ] && trainer=(trainer=cpu trainer.max_steps=10 trainer.val_check_interval=5 data.batch_size=16)
    "$PY" train.py task=similarity "pretrained=$GPU_RUN" "data.pairs=$SIMILARITY_PAIRS" "${trainer[@]}" \
        trainer.log_every_n_steps=10 $SIM_LOGGER "hydra.run.dir=$RUNS/similarity" || return $?
    "$PY" evaluate.py task=similarity "run=$RUNS/similarity" "pairs=$SIMILARITY_PAIRS" split=test $SIM_EVAL_LOGGER
}
export -f similarity_step
SIM_LOGGER="${LOGGER[*]}" SIM_EVAL_LOGGER="${EVAL_LOGGER[*]}"
export CPU GPU_RUN RUNS SIMILARITY_PAIRS PY SIM_LOGGER SIM_EVAL_LOGGER
if [ -d "$SIMILARITY_PAIRS" ]; then
    step similarity 120 40 -- bash -c similarity_step
else
    record similarity skip 0 0 "SIMILARITY_PAIRS ($SIMILARITY_PAIRS) is not a directory"
fi
collect

# ---------------------------------------------------------------- step 9: FSDP, one device
if [ "$CPU" = 1 ]; then
    record train_fsdp skip 0 0 "cpu rehearsal: Lightning's FSDP needs GPUs"
else
    step train_fsdp 60 10 -- "$PY" train.py trainer=fsdp trainer.devices=1 model=$MODEL ${DATA[@]+"${DATA[@]}"} \
        trainer.max_steps=$SHORT_STEPS trainer.val_check_interval=$SHORT_VAL trainer.log_every_n_steps=10 \
        callbacks.checkpoint.every_n_train_steps=$SHORT_VAL "${LOGGER[@]}" "hydra.run.dir=$RUNS/fsdp"
    if [ "$LAST_RC" != 0 ] && [ "$(remaining)" -gt 70 ]; then
        # tells a torch.compile + FSDP problem apart from an FSDP one
        step train_fsdp_eager 90 10 -- "$PY" train.py trainer=fsdp trainer.devices=1 model=$MODEL compile=false \
            ${DATA[@]+"${DATA[@]}"} trainer.max_steps=$SHORT_STEPS trainer.val_check_interval=$SHORT_VAL \
            callbacks.checkpoint.every_n_train_steps=$SHORT_VAL "${LOGGER[@]}" "hydra.run.dir=$RUNS/fsdp_eager"
    fi
fi
collect


# ---------------------------------------------------------------- step 10: collect
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
step wandb_offline 40 0 -- bash -c offline_check
collect
{
    echo
    echo "total ${SECONDS}s of a ${BUDGET}s budget"
    echo
    echo "key numbers:"
    cat "$WORK/key-numbers.txt"
    echo
    echo "files in OUT: $(ls "$OUT" | tr '\n' ' ')"
} >>"$OUT/summary.txt"
# each returned file must stay under 16 MiB
if [ "$(stat -c %s "$OUT/steps.log")" -gt 15000000 ]; then
    { head -c 5000000 "$OUT/steps.log"; printf '\n\n[... cut: steps.log was over 15 MB ...]\n\n'
      tail -c 9000000 "$OUT/steps.log"; } >"$WORK/steps.cut" && mv "$WORK/steps.cut" "$OUT/steps.log"
fi
# only plain files directly under $OUT come back (at most 8): say so if anything else is there
extra=$(find "$OUT" -mindepth 1 -maxdepth 1 -not -type f | head -5)
[ -n "$extra" ] && echo "warning: not plain files under $OUT (will not come back): $extra" | tee -a "$OUT/summary.txt"
echo
echo "################ summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
