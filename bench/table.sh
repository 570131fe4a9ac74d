#!/bin/sh
# table.sh - the Markdown table of bench/README.md from porta bench --json lines (bench/run.sh
# writes them): one row per model and kernel set; a later line for the same model, set and
# test replaces an earlier one, so runs can be concatenated and re-run rows override.
#
#   bench/table.sh results.jsonl [more.jsonl ...] > results.md
set -e
cat "$@" | awk '
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
}'
