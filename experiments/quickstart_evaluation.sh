#!/usr/bin/env bash
# What is the quickstart model worth? Pretrain it, then evaluate it per target class on its own validation
# split and on held-out Debian libraries, and on function search across optimisation levels (real C code
# from Debian source packages). Results of one run on a 2-core CPU are in docs/results.md.
#
#   bash experiments/quickstart_evaluation.sh [WORK_DIR]        (needs gcc; apt access for the sources)
set -euo pipefail
work=${1:-outputs/quickstart_evaluation}
run=$work/run
mkdir -p "$work"

# 1. pretrain (the quickstart: tiny model, 1,500 steps on this machine's binaries)
python train.py experiment=quickstart hydra.run.dir="$run"

# 2. masked-LM evaluation, per target class: the run's validation split, then held-out libraries
python evaluate.py run="$run"
cp "$run/evaluation.json" "$work/evaluation-validation.json"
packages="libcjson1 libcmark0.30.2 libconfuse2 libhiredis0.14 liblmdb0 libmaxminddb0 libtre5 libyajl2"
mkdir -p "$work/heldout" && (cd "$work/heldout" && apt-get download $packages && for deb in *.deb; do dpkg-deb -x "$deb" root; done)
libraries=$(find "$work/heldout/root" -name "*.so*" -type f | sort | paste -sd, -)
python evaluate.py run="$run" data=binaries "data.paths=[$libraries]"
cp "$run/evaluation.json" "$work/evaluation-heldout.json"

# 3. function search across optimisation levels: C sources of Debian packages, pairs split by project
#    (needs a deb-src line, see docs/pairs.md)
mkdir -p "$work/sources" && (cd "$work/sources" && apt-get source --download-only bzip2 cjson jansson libmd libyaml lz4 lzo2 xxhash zlib \
    && for archive in *.orig.tar.*; do tar -xf "$archive"; done)
python -m undertale.data pairs "$work/pairs" $(find "$work/sources" -mindepth 1 -maxdepth 1 -type d) --levels O0,O1,O2,O3 --compilers gcc
python evaluate.py task=similarity run="$run" pairs="$work/pairs" split=test
cp "$run/similarity.json" "$work/similarity-test.json"
python evaluate.py task=similarity run="$run" pairs="$work/pairs" split=train
cp "$run/similarity.json" "$work/similarity-train.json"
