#!/usr/bin/env bash
# A slice of the full table on a GPU within a time limit, from the repository root:
#
#   FLAME_DATA_DIR=../shared/data bash scripts/device_sweep.sh LIMIT_S [SWEEP OPTIONS...]
#   bash scripts/device_sweep.sh 480 --datasets amazon-toys --methods single,flame --released ../shared/official_weights
#
# Runs `python -m flame_core sweep --profile full --device cuda --executor debug` with the options given (an
# option given again wins), recording into ${RECORD:-results}, so the committed records are skipped, and
# stops it after LIMIT_S seconds. Every record written meanwhile is copied to ${OUT:-gpu-out}/results/DATASET/
# (commit them under results/), the sweep's output to OUT/sweep.log. List the jobs in the order they should
# run: a job stopped by the limit writes no record, and its run folder under ${RUNS:-/tmp/flame-runs} lets a
# later call on the same machine resume it. The sweep needs submitit: where it is not installed, put its wheel
# (pure Python) on PYTHONPATH first.
set -uo pipefail
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: bash scripts/device_sweep.sh LIMIT_S [sweep options...]" >&2
    exit 2
fi
limit=$1
shift
out="${OUT:-gpu-out}" records="${RECORD:-results}"
mkdir -p "$out/results" "$records"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export FLAME_CACHE_DIR="${FLAME_CACHE_DIR:-/tmp/flame-cache}"
py="$(command -v python3 || command -v python)"
marker="$(mktemp)"  # records newer than this one were written by this call

start=$SECONDS
timeout "$limit" "$py" -m flame_core sweep --profile full --device cuda --executor debug \
    --runs "${RUNS:-/tmp/flame-runs}" --record "$records" "$@" 2>&1 | tee "$out/sweep.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "== stopped at the limit of $limit s: the job then running wrote no record"

copied=0
while IFS= read -r -d '' rec; do
    dest="$out/results/$(basename "$(dirname "$rec")")"
    mkdir -p "$dest" && cp "$rec" "$dest/" && copied=$((copied + 1))
done < <(find "$records" -name '*.json' -newer "$marker" -print0)
rm -f "$marker"
echo "== sweep exit $status after $((SECONDS - start)) s; $copied new record(s) in $out/results"
[ "$status" -eq 0 ] || [ "$status" -eq 124 ]
