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
CPU=${GPU_CHECK_CPU:-0}
BUDGET=${GPU_CHECK_BUDGET:-$([ "$CPU" = 1 ] && echo 1500 || echo 560)}
WORK=${GPU_CHECK_WORK:-/tmp/undertale-gpu-check}
source "$REPO/scripts/device_steps.sh"
RESERVE_SCALE=560   # the step reserves below are set for a 560 s budget

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

# ---------------------------------------------------------------- summary header
{
    echo "undertale GPU check ($MODE), started $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-?}"
    echo "repo $REPO; OUT $OUT; work $WORK; cache $UNDERTALE_CACHE; budget ${BUDGET}s; python $PY"
    echo
    printf '%-14s %6s %8s %7s  %s\n' step rc seconds limit note
} >"$OUT/summary.txt"

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

step env 60 0 -- bash -c environment
cp "$LOGS/env.log" "$OUT/env.txt" 2>/dev/null

# ---------------------------------------------------------------- step 1: wheels + project
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
