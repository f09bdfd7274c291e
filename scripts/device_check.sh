#!/usr/bin/env bash
# The GPU checks, in one call on a machine with a CUDA GPU, from the repository root:
#
#   FLAME_DATA_DIR=../shared/data bash scripts/device_check.sh [OUT_DIR]
#
# 1. tests/test_cuda.py: the captured (CUDA graph) step equals the eager step, dropout under replay, NaN
#    detection, every method trains on the GPU;
# 2. bench/speed.py --device cuda on amazon-toys: eager, packed and graph steps, stacked seeds, the naive
#    reference, a FLAME epoch with validation (one seed and three stacked), written as JSON;
# 3. bench/related.py --device cuda: a step of every method against Single (the GPU hours of the table's
#    cells), EMKD's KL pairwise against one pass;
# 4. a stacked training run through the CLI (FLAME, three seeds, three epochs, with its anchor);
# 5. torch.compile(mode="reduce-overhead") of the loss beside the hand-captured graph, for comparison;
# 6. the library's tests on the GPU machine, last: CI runs them on the CPU, so a call cut short keeps 1 to 5.
# Each step has its own time limit and log (OUT_DIR, default $OUT or gpu-out); a failing step does not stop
# the others. The steps share one budget, BUDGET_S seconds (default 570, inside the device's 600 s a call):
# a step gets at most what is left of it, and a step with under 15 s left is skipped, so a call is never cut
# from outside and only the last steps can be lost. The summary lines and each log's tail are printed.
set -u
out="${1:-${OUT:-gpu-out}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export FLAME_CACHE_DIR="${FLAME_CACHE_DIR:-/tmp/flame-cache}"
py="$(command -v python3 || command -v python)"

budget="${BUDGET_S:-570}"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS left=$((budget - SECONDS))
    shift 2
    if ((left < 15)); then
        echo "== $name: skipped, ${left} s of the ${budget} s budget left"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    tail -n "${TAIL:-25}" "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -3
"$py" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")'

step cuda-tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step bench 180 "$py" bench/speed.py --device cuda --steps 50 --json "$out/speed-amazon-toys-cuda.json"
TAIL=12 step related 60 "$py" bench/related.py --device cuda --steps 20 --json "$out/related-amazon-toys-cuda.json"
TAIL=12 step cli-stacked 80 "$py" -m flame_core train --method flame --dataset amazon-toys --seeds 42,43,44 \
    --epochs 3 --device cuda --no-progress --out /tmp/flame-runs/flame-stack
TAIL=8 step compile 90 "$py" bench/speed.py --device cuda --steps 30 --compile --no-epoch \
    --json "$out/speed-amazon-toys-cuda-compile.json"
TAIL=6 step library-tests 100 "$py" -m pytest -q -p no:cacheprovider --ignore=tests/test_book.py tests
echo "== done"
