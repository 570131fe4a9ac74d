#!/bin/sh
# run.sh - the CPU speed matrix of bench/README.md: the read bandwidth (porta bench --membw),
# then prefill (pp128) and decode (tg32) of every model in DIR on every CPU kernel set this
# machine runs, as JSON lines (OUT.jsonl) and a Markdown table (OUT.md).
#
#   bench/run.sh [DIR [OUT]]     DIR: models (default models/synth, see bench/synth.sh)
#                                OUT: output prefix (default bench/results)
#   env: PORTA=./porta  THREADS=2  REPS=5  SETS="avx512 avx2"  MODELS="list of .gguf in DIR"
#
# Each decode repetition is paired with a bandwidth measurement on the same number of threads;
# "% bw" is the median decode rate (bytes read per token x tok/s) over the median of those.
# "cpu" is the share of the threads' wall time this process got on the CPU during decode: well
# below 1.00 means other processes were running and the numbers are not the machine's.
set -e
dir=${1:-models/synth}
out=${2:-bench/results}
porta=${PORTA:-./porta}
threads=${THREADS:-2}
reps=${REPS:-5}
sets=${SETS:-"avx512 avx2"}
models=${MODELS:-$(ls "$dir"/*.gguf)}

: > "$out.jsonl"
"$porta" bench --membw -t "$threads" --json >> "$out.jsonl"
for set in $sets; do
  if ! "$porta" devices 2>/dev/null | grep -q "kernel sets:.*$set"; then
    echo "skipping $set: not supported here" >&2
    continue
  fi
  for m in $models; do
    case "$m" in /*|./*) f=$m ;; *) [ -f "$m" ] && f=$m || f=$dir/$m ;; esac
    echo "== $set $(basename "$f")" >&2
    PORTA_CPU=$set "$porta" bench --backend cpu -m "$f" -t "$threads" -p 128 -n 32 -r "$reps" --json -q \
      >> "$out.jsonl"
  done
done

sh "$(dirname "$0")/table.sh" "$out.jsonl" > "$out.md"
cat "$out.md"
