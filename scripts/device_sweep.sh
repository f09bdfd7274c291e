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
# later call on the same machine resume it.
#
# A lent GPU rarely stays for the next call, so the unfinished work also comes back: OUT/state.tar.gz holds
# every run folder without results (its last checkpoint, history and settings; not checkpoint.prev.pt) and
# the pretrained anchors of ${FLAME_CACHE_DIR:-/tmp/flame-cache} (finished ones, and unfinished pretraining
# as above). A device call brings back files of at most 16 MiB (at most 8 files, 64 MiB in all), and one
# checkpoint of amazon-toys holds 10 MB (Single) to 30 MB (EMKD) with Adam's state, so a larger archive comes
# as parts of 15 MiB, OUT/state.tar.gz.00, .01, ... Given back as STATE_IN=OUT/state.tar.gz (the file, or the
# prefix of its parts) on a later call, on any machine, it is unpacked first, so that call resumes from those
# checkpoints and reuses those anchors (and packs the state again). The sweep needs submitit: where it is
# not installed, put its wheel (pure Python) on PYTHONPATH first.
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
runs="${RUNS:-/tmp/flame-runs}"
py="$(command -v python3 || command -v python)"
mkdir -p "$runs" "$FLAME_CACHE_DIR"
if [ -n "${STATE_IN:-}" ]; then
    staged="$(mktemp -d)"
    parts=("$STATE_IN")
    [ -f "$STATE_IN" ] || parts=("$STATE_IN".[0-9][0-9])
    cat "${parts[@]}" | tar -xz -C "$staged" || { echo "== cannot unpack STATE_IN=$STATE_IN" >&2; exit 2; }
    [ -d "$staged/runs" ] && cp -r "$staged/runs/." "$runs/"
    [ -d "$staged/cache" ] && cp -r "$staged/cache/." "$FLAME_CACHE_DIR/"
    echo "== resumed from $STATE_IN: $(find "$staged" -name config.json | wc -l) unfinished run(s), $(find "$staged" -name '*.pt' -path '*/anchors/*' ! -path '*-run/*' | wc -l) anchor(s)"
    rm -rf "$staged"
fi
marker="$(mktemp)"  # records newer than this one were written by this call

start=$SECONDS
timeout "$limit" "$py" -m flame_core sweep --profile full --device cuda --executor debug \
    --runs "$runs" --record "$records" "$@" </dev/null 2>&1 | tee "$out/sweep.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "== stopped at the limit of $limit s: the job then running wrote no record"

copied=0
while IFS= read -r -d '' rec; do
    dest="$out/results/$(basename "$(dirname "$rec")")"
    mkdir -p "$dest" && cp "$rec" "$dest/" && copied=$((copied + 1))
done < <(find "$records" -name '*.json' -newer "$marker" -print0)
rm -f "$marker"
echo "== sweep exit $status after $((SECONDS - start)) s; $copied new record(s) in $out/results"

# What a later call needs to go on: unfinished run folders and the anchors, without the previous checkpoints.
pack="$(mktemp -d)"
mkdir -p "$pack/runs" "$pack/cache"
unfinished=0
while IFS= read -r -d '' config; do
    folder="$(dirname "$config")"
    [ -e "$folder/results.json" ] && continue
    case "$folder" in "$FLAME_CACHE_DIR"/*) dest="$pack/cache/${folder#"$FLAME_CACHE_DIR"/}" ;; *) dest="$pack/runs/${folder#"$runs"/}" ;; esac
    mkdir -p "$dest" && find "$folder" -maxdepth 1 -type f ! -name checkpoint.prev.pt -exec cp {} "$dest/" \;
    unfinished=$((unfinished + 1))
done < <(find "$runs" "$FLAME_CACHE_DIR" -name config.json -print0)
if [ -d "$FLAME_CACHE_DIR/anchors" ]; then
    mkdir -p "$pack/cache/anchors"
    find "$FLAME_CACHE_DIR/anchors" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$pack/cache/anchors/" \;
fi
state="$out/state.tar.gz"
rm -f "$state" "$state".[0-9][0-9]  # an earlier call's
tar -czf "$state" -C "$pack" runs cache
rm -rf "$pack"
size=$(($(stat -c %s "$state") / 1048576))
if [ "$size" -ge 15 ]; then
    split -b 15M -d -a 2 "$state" "$state." && rm "$state"
    echo "== $unfinished unfinished run(s) and the anchors in $(ls "$state".?? | wc -l) parts $state.NN ($size MiB)"
else
    echo "== $unfinished unfinished run(s) and the anchors in $state ($size MiB)"
fi
echo "== STATE_IN=$state on a later call resumes them"
[ "$size" -lt 56 ] || echo "== warning: $size MiB of state is more than a device call brings back beside the records"
[ "$status" -eq 0 ] || [ "$status" -eq 124 ]
