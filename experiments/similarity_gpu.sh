#!/usr/bin/env bash
# The function-search experiment (experiments/similarity.yaml) at `small` on one GPU, end to end, in one
# call of a lent machine (one H100/H200, no network):
#
#   bash experiments/similarity_gpu.sh                 # on the GPU machine, from the repository root
#   SIMILARITY_GPU_CPU=1 bash experiments/similarity_gpu.sh   # CPU rehearsal: tiny, a few steps each
#
# Steps (each under its own timeout; a failing step never stops the others; a training step that fails
# without leaving a checkpoint is tried once more with compile=false, as <step>_eager):
#   env        nvidia-smi, versions (env.txt)
#   install    the carried wheels (.device/wheels) and the project
#   pretrain   train.py trainer=gpu model=small: masked-LM pretraining, PRETRAIN_STEPS steps, on the carried
#              packed shards of the development machine's binaries (.device/pretrain/{shards,tokenizer.json},
#              i.e. `python train.py model=small`'s data), or on this machine's binaries when none is carried
#   finetune   train.py experiment=similarity trainer=gpu pretrained=<pretrain run> data.pairs=<pairs>
#   eval_finetune  evaluate.py task=similarity run=<finetune run> pairs=<pairs> split=test
#   scratch    the same fine-tuning with pretrained=null (same tokenizer, size and steps): the baseline
#   eval_scratch   its test table
#   wandb      every run's offline W&B record reads back
#   ddp, fsdp  with the time left: 60 pretraining steps under trainer=ddp and trainer=fsdp (devices=1)
#
# Returned in $OUT (at most 8 plain files): summary.txt (steps, exit codes, seconds, key numbers), env.txt,
# steps.log (every step's output, with the printed tables), results.json (every run's metrics.json,
# similarity.json ...), runs.txt (run directories, overrides, train.log tails).
#
# Environment: OUT (default ./similarity-gpu-out), SIMILARITY_PAIRS (default .device/pairs, from
# experiments/similarity_data.sh), PRETRAIN_DATA (default .device/pretrain), PRETRAIN_STEPS (default 1500),
# FINETUNE_STEPS (both fine-tuning runs, default 1800), GPU_CHECK_SKIP (steps to leave out, e.g. "ddp fsdp"),
# SIMILARITY_GPU_BUDGET (seconds for the whole script, default 560), SIMILARITY_GPU_WORK (run directories,
# default /tmp/undertale-similarity-gpu), PYTHON (default python3). Preparing .device/: see the header of
# scripts/gpu_check.sh; .device/pretrain is `python train.py model=small`'s prepared data:
#   mkdir -p .device/pretrain && cp -r ~/.cache/undertale/packed/<key> .device/pretrain/shards \
#       && cp ~/.cache/undertale/tokenizers/<key>-4096-512-50000-v1.json .device/pretrain/tokenizer.json
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
OUT=${OUT:-$REPO/similarity-gpu-out}
CPU=${SIMILARITY_GPU_CPU:-0}
BUDGET=${SIMILARITY_GPU_BUDGET:-$([ "$CPU" = 1 ] && echo 1500 || echo 560)}
WORK=${SIMILARITY_GPU_WORK:-/tmp/undertale-similarity-gpu}
PAIRS=${SIMILARITY_PAIRS:-$REPO/.device/pairs}
PRETRAIN_DATA=${PRETRAIN_DATA:-$REPO/.device/pretrain}
source "$REPO/scripts/device_steps.sh"
RESERVE_SCALE=560   # the step reserves below are set for a 560 s budget

if [ "$CPU" = 1 ]; then
    MODE="cpu rehearsal"
    CAP_SCALE=4                                           # CPU steps are slower: longer caps, same order
    HARDWARE=(trainer=cpu)
    MODEL=(model=tiny model.sequence_length=512)     # the carried shards are packed to 512
    PRETRAIN=(trainer.max_steps=${PRETRAIN_STEPS:-20} trainer.val_check_interval=10 trainer.limit_val_batches=4)
    FINETUNE=(trainer.max_steps=20 trainer.val_check_interval=10)
    PRETRAIN_TIME=00:00:05:00 FINETUNE_TIME=00:00:05:00
else
    MODE="gpu"
    HARDWARE=(trainer=gpu)
    MODEL=(model=small)
    PRETRAIN=(trainer.max_steps=${PRETRAIN_STEPS:-1500} trainer.val_check_interval=500)
    # experiments/similarity.yaml's settings, with 1,800 of its 2,250 steps for both runs, so that both finish
    # their schedules within one 10-minute call (on an H100, 2,000 steps and 2,700 did not: docs/results.md)
    FINETUNE=(trainer.max_steps=${FINETUNE_STEPS:-1800})
    # safety nets only: a run stopped by max_time still saves last.ckpt and its metrics (its schedule is cut)
    PRETRAIN_TIME=00:00:02:30 FINETUNE_TIME=00:00:02:20
fi
if [ -f "$PRETRAIN_DATA/tokenizer.json" ] && [ -d "$PRETRAIN_DATA/shards" ]; then
    PRETRAIN_SOURCE=(data=parquet "data.directory=$PRETRAIN_DATA/shards" "data.tokenizer=$PRETRAIN_DATA/tokenizer.json")
else
    PRETRAIN_SOURCE=()                                    # this machine's binaries, as `python train.py` does
fi

{
    echo "undertale function-search experiment on one GPU ($MODE), started $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-?}"
    echo "repo $REPO; OUT $OUT; work $WORK; pairs $PAIRS; pretraining data ${PRETRAIN_SOURCE[*]:-the binaries of this machine}"
    echo "budget ${BUDGET}s; python $PY"
    echo
    printf '%-14s %6s %8s %7s  %s\n' step rc seconds limit note
} >"$OUT/summary.txt"

step env 40 0 -- bash -c environment
cp "$LOGS/env.log" "$OUT/env.txt" 2>/dev/null
if [ "$CPU" = 1 ]; then
    record install skip 0 0 "cpu rehearsal: no wheel install"
else
    step install 150 430 -- bash -c install
fi
LOGGER=(logger=wandb)
EVAL_LOGGER=(logger=wandb)
if ! "$PY" -c "import wandb" >/dev/null 2>&1; then
    LOGGER=(logger=csv) EVAL_LOGGER=(logger=none)
    echo "wandb does not import: the runs below use logger=csv, evaluate logger=none" | tee -a "$OUT/summary.txt"
fi
if [ ! -d "$PAIRS" ]; then
    echo "error: no pairs at $PAIRS (experiments/similarity_data.sh, then carry .device)" | tee -a "$OUT/summary.txt"
    exit 2
fi

# trained RUN_DIR: the run left a checkpoint (one stopped by its step's timeout may still have one)
trained() { compgen -G "$1/checkpoints/*.ckpt" >/dev/null; }

PRETRAINED=$RUNS/pretrain
step pretrain 200 300 -- "$PY" train.py "${HARDWARE[@]}" "${MODEL[@]}" ${PRETRAIN_SOURCE[@]+"${PRETRAIN_SOURCE[@]}"} \
    "${PRETRAIN[@]}" trainer.max_time=$PRETRAIN_TIME trainer.log_every_n_steps=50 "${LOGGER[@]}" \
    "hydra.run.dir=$PRETRAINED"
if [ "$LAST_RC" != 0 ] && ! trained "$PRETRAINED"; then   # tells a torch.compile problem apart from the rest; the later steps need a run
    PRETRAINED=$RUNS/pretrain_eager
    step pretrain_eager 150 300 -- "$PY" train.py "${HARDWARE[@]}" "${MODEL[@]}" compile=false \
        ${PRETRAIN_SOURCE[@]+"${PRETRAIN_SOURCE[@]}"} "${PRETRAIN[@]}" trainer.max_time=00:00:01:30 \
        trainer.log_every_n_steps=50 "${LOGGER[@]}" "hydra.run.dir=$PRETRAINED"
fi
collect

# finetune NAME DIR EXTRA...: experiments/similarity.yaml on this hardware, then its test table
finetune() {
    local name=$1 dir=$2
    shift 2
    step "$name" 170 150 -- "$PY" train.py experiment=similarity "${HARDWARE[@]}" "data.pairs=$PAIRS" "$@" \
        ${FINETUNE[@]+"${FINETUNE[@]}"} trainer.max_time=$FINETUNE_TIME "${LOGGER[@]}" "hydra.run.dir=$dir"
    if [ "$LAST_RC" != 0 ] && ! trained "$dir"; then
        step "${name}_eager" 150 150 -- "$PY" train.py experiment=similarity "${HARDWARE[@]}" "data.pairs=$PAIRS" \
            "$@" compile=false ${FINETUNE[@]+"${FINETUNE[@]}"} trainer.max_time=$FINETUNE_TIME "${LOGGER[@]}" \
            "hydra.run.dir=${dir}_eager"
        dir=${dir}_eager
    fi
    step "eval_$name" 80 100 -- "$PY" evaluate.py task=similarity "run=$dir" "pairs=$PAIRS" split=test \
        "${EVAL_LOGGER[@]}"
    collect
}
finetune finetune "$RUNS/finetune" "pretrained=$PRETRAINED"
# the baseline: the same task from scratch, with the pretraining run's tokenizer, size and steps
RESERVE_SCALE=$((RESERVE_SCALE * 4))   # nothing after it but the W&B check: a quarter of the reserves
finetune scratch "$RUNS/scratch" pretrained=null "${MODEL[@]}" "data.tokenizer=$PRETRAINED/tokenizer.json"

step wandb 20 0 -- bash -c offline_check
collect

# With the time left: the strategies not run on a GPU since the clipping fix (benchmarks/README.md),
# 60 pretraining steps each on the same data
short_run() { # short_run NAME TRAINER...
    local name=$1
    shift
    step "$name" 90 0 -- "$PY" train.py "$@" "${MODEL[@]}" ${PRETRAIN_SOURCE[@]+"${PRETRAIN_SOURCE[@]}"} \
        trainer.max_steps=60 trainer.val_check_interval=30 callbacks.checkpoint.every_n_train_steps=30 \
        trainer.log_every_n_steps=10 "${LOGGER[@]}" "hydra.run.dir=$RUNS/$name"
    collect
}
if [ "$CPU" = 1 ]; then
    short_run ddp trainer=ddp_cpu trainer.devices=1
    record fsdp skip 0 0 "cpu rehearsal: Lightning's FSDP needs GPUs"
else
    short_run ddp trainer=ddp trainer.devices=1
    short_run fsdp trainer=fsdp trainer.devices=1
fi
{
    echo
    echo "total ${SECONDS}s of a ${BUDGET}s budget"
    echo
    echo "key numbers:"
    cat "$WORK/key-numbers.txt"
} >>"$OUT/summary.txt"
echo
echo "################ summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
