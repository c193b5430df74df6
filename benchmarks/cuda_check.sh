#!/usr/bin/env bash
# Issue 16's GPU checks in one command, sized for one short lease of one GPU (at most ten
# minutes a command). From the repository root, with the Fashion-MNIST files somewhere:
#
#     FMNIST_DATA_DIR=DIR OUT=DIR bash benchmarks/cuda_check.sh
#
# Through the session's device tool, where ../shared does not travel: once, here,
#     echo /.devdata/ >> .git/info/exclude && mkdir -p .devdata \
#         && cp ../shared/data/fashion-mnist/*.gz .devdata/
# then run "FMNIST_DATA_DIR=.devdata bash benchmarks/cuda_check.sh" with carry [".devdata"]
# and timeout_s 560 (the files in $OUT come back). fmnist is imported from src/
# (PYTHONPATH), so a machine that has torch, numpy and pillow needs no install.
#
# Each step runs under its own time limit (510 s in all, inside the lease's 10-minute
# command), so one that hangs leaves the others their time. OUT gets 8 small files (as
# many as a device lease sends back): one log per step, the time-to-accuracy JSON and
# plot, and best's history.csv; the run folders go to RUNS (default /tmp/fmnist-cuda-runs),
# which must not hold them yet. One line per step says its exit status and seconds, then
# the end of its log.
#   env   torch, CUDA and the GPU as torch sees them; fmnist's import
#   fast  `fmnist train --recipe fast`, the whole command timed (issue 16: 93% in <= 5 s of
#         training on a GPU)
#   nproc `fmnist train --nproc (GPUs + 1)` refused in one line, exit 2, nothing launched
#         (NCCL and SyncBatchNorm need a GPU per rank: one GPU cannot check them)
#   tta   benchmarks/time_to_accuracy.py, fast x 5 seeds and accurate x 1:
#         time-to-accuracy-cuda.json and .png (copy them to benchmarks/results/)
#   best  `fmnist train --recipe best` (WRN-28-10) for BEST_EPOCHS epochs (default 8): its
#         seconds per epoch (best-history.csv) say what the 200-epoch recipe costs, its test
#         accuracy where a short schedule gets
#
# CUDA_CHECK_DEVICE=cpu runs every step on the CPU on small subsets (a 10-layer WRN; nproc
# is then refused for want of CUDA): that tests this script here, not the GPU.
set -uo pipefail

OUT=${OUT:-/tmp/fmnist-cuda-check}
RUNS=${RUNS:-/tmp/fmnist-cuda-runs}
DEV=${CUDA_CHECK_DEVICE:-cuda}
BEST_EPOCHS=${BEST_EPOCHS:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if [ -z "${FMNIST_DATA_DIR:-}" ]; then
    echo "cuda_check: set FMNIST_DATA_DIR to the folder of the Fashion-MNIST files" >&2
    exit 2
fi
for run in fast nproc best; do
    if [ -e "$RUNS/$run" ]; then
        echo "cuda_check: $RUNS/$run exists; pass another RUNS (nothing is overwritten)" >&2
        exit 2
    fi
done
mkdir -p "$OUT" "$RUNS"

if [ "$DEV" = cpu ]; then  # the script's own test: small, and what a CPU can run
    SMALL=(--train-limit 2000 --test-limit 500)
    FAST=(--epochs 2)
    TTA=(--recipes fast:1 --train-limit 2000)
    BEST=(--model-kwargs '{"depth": 10, "widen": 1}' --epochs 1)
else
    SMALL=()
    FAST=()
    TTA=(--recipes fast:5,accurate:1)
    BEST=(--epochs "$BEST_EPOCHS")
fi

failed=0
step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, report it
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc, $(($(date +%s) - start)) s (log: $OUT/$name.log)"
    tail -n 3 "$OUT/$name.log" | sed 's/^/  /'
    [ "$rc" -eq 0 ] || failed=1
}

step env 30 "$PY" -c '
import torch, fmnist
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, round(p.total_memory / 2**30), "GiB,", torch.cuda.device_count(), "device(s)")
    print("bf16", torch.cuda.is_bf16_supported(), "nccl", torch.distributed.is_nccl_available())
print("fmnist", fmnist.__version__)
'
step fast 60 "$PY" -m fmnist train --recipe fast --device "$DEV" --out "$RUNS/fast" \
    "${FAST[@]}" "${SMALL[@]}"
step nproc 60 bash -c '"$1" -m fmnist train --recipe fast --device cuda --out "$2" \
    --nproc "$("$1" -c "import torch; print(torch.cuda.device_count() + 1)")"
    rc=$?; [ -e "$2" ] && { echo "cuda_check: $2 was written"; exit 1; }
    [ "$rc" -eq 2 ] || { echo "cuda_check: exit $rc, expected 2 (refused)"; exit 1; }' \
    nproc "$PY" "$RUNS/nproc"
step tta 180 "$PY" "$ROOT/benchmarks/time_to_accuracy.py" --device "$DEV" \
    --results-dir "$OUT" "${TTA[@]}"
step best 180 "$PY" -m fmnist train --recipe best --device "$DEV" --no-report \
    --out "$RUNS/best" "${BEST[@]}" "${SMALL[@]}"
cp "$RUNS/best/history.csv" "$OUT/best-history.csv" 2>/dev/null || true
exit "$failed"
