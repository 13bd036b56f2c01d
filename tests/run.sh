#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every Check suite of one build directory and prints one line per
# suite ("test_process: N passed, N failed") and a total for the pass.
# Usage: tests/run.sh BUILD_DIR LABEL
set -u
dir=$1
label=$2
passed=0
failed=0
status=0
rm -f "$dir/test-failures"
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1)
  rc=$?
  summary=$(printf '%s\n' "$out" | grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$summary" ]; then
    printf '%s\n' "$out"
    echo "$label $(basename "$t"): crashed (exit $rc) before its summary" |
      tee -a "$dir/test-failures"
    failed=$((failed + 1))
    status=1
    continue
  fi
  p=$(echo "$summary" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
  f=$(echo "$summary" | sed -E 's/.*, ([0-9]+) failed/\1/')
  if [ "$f" != 0 ] || [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | grep -vE '^(Running suite|100%)' >&2
    # Check's failure lines (file:line:F|E:case:test:iteration: message),
    # gathered so the end of `make test` can list them all again.
    printf '%s\n' "$out" | grep -E '^[^:]+:[0-9]+:[FE]:' |
      sed "s/^/$label /" >> "$dir/test-failures"
    if [ "$f" = 0 ]; then
      echo "$label $(basename "$t"): exit $rc after its summary" >> "$dir/test-failures"
    fi
    status=1
  fi
  echo "$label $summary"
  passed=$((passed + p))
  failed=$((failed + f))
done
echo "$label total: $passed passed, $failed failed"
echo "$passed $failed" > "$dir/test-counts"
exit $status
