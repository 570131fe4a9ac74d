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

# the table: one row per model and kernel set
awk '
function get(k,   r) {
  if (match($0, "\"" k "\": \"[^\"]*\"")) { r = substr($0, RSTART, RLENGTH); sub(/.*: "/, "", r); sub(/"$/, "", r); return r }
  if (match($0, "\"" k "\": [-0-9.e]+")) { r = substr($0, RSTART, RLENGTH); sub(/.*: /, "", r); return r }
  return ""
}
get("test") == "membw" { bw[get("threads")] = get("gb_s"); next }
{
  key = get("model") " | " get("kernels")
  if (!(key in seen)) { seen[key] = 1; order[n++] = key }
  if (get("test") ~ /^pp/) { pp[key] = get("tok_s"); gop[key] = get("gop_s") }
  else { tg[key] = get("tok_s"); gbs[key] = get("gb_s"); pct[key] = get("membw_pct");
         mbw[key] = get("membw_gb_s"); cpu[key] = get("cpu_share"); thr = get("threads") }
}
END {
  printf("read bandwidth (porta bench --membw): ")
  for (t in bw) printf("%s thread(s) %s GB/s  ", t, bw[t])
  printf("\n\n| model | kernels | pp128 tok/s | GOP/s | tg32 tok/s | GB/s | %% of bw (bw GB/s) | cpu |\n")
  printf("|---|---|---:|---:|---:|---:|---:|---:|\n")
  for (i = 0; i < n; i++) {
    k = order[i]
    printf("| %s | %.1f | %.0f | %.2f | %.2f | %.0f%% (%.1f) | %.2f |\n", k, pp[k], gop[k], tg[k],
           gbs[k], pct[k], mbw[k], cpu[k])
  }
}' "$out.jsonl" > "$out.md"
cat "$out.md"
