#!/bin/sh
# Runs every test binary given, prints each one's Check summary and a final tally line.
pass=0; fail=0; failed=""
for t in "$@"; do
  name=$(basename "$t")
  echo "== $name"
  if CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-600} "$t"; then
    pass=$((pass+1))
  else
    fail=$((fail+1)); failed="$failed $name"
  fi
done
echo
echo "suites: $pass passed, $fail failed"
[ "$fail" -eq 0 ] || { echo "failed suites:$failed"; exit 1; }
