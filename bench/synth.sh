#!/bin/sh
# synth.sh - writes the random-weight models the speed targets are measured on (porta synth):
# the 1.5B and 7B R1-Distill-Qwen shapes in Q4_0, Q4_K_M and Q8_0 (and, with ALL=1, F16 and
# Q4_1, plus Qwen2.5-0.5B). Files that exist are kept.
#
#   bench/synth.sh [DIR]        DIR defaults to models/synth (git-ignored); PORTA=path/to/porta
#
# Sizes: 1.5B ~1.0-1.9 GB each, 7B ~4.4-8.1 GB each (F16 7B: 15 GB).
set -e
dir=${1:-models/synth}
porta=${PORTA:-./porta}
mkdir -p "$dir"
shapes="r1-distill-qwen-1.5b r1-distill-qwen-7b"
types="Q4_0 Q4_K_M Q8_0"
if [ "${ALL:-0}" = 1 ]; then
  shapes="qwen2.5-0.5b $shapes"
  types="$types Q4_1 F16"
fi
for s in $shapes; do
  for t in $types; do
    f="$dir/$s-$t.gguf"
    if [ -f "$f" ]; then
      echo "have $f"
    else
      "$porta" synth --shape "$s" --type "$t" -o "$f"
    fi
  done
done
