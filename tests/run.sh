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
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1)
  rc=$?
  summary=$(printf '%s\n' "$out" | grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$summary" ]; then
    printf '%s\n' "$out"
    echo "$label $(basename "$t"): crashed (exit $rc) before its summary"
    failed=$((failed + 1))
    status=1
    continue
  fi
  p=$(echo "$summary" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
  f=$(echo "$summary" | sed -E 's/.*, ([0-9]+) failed/\1/')
  if [ "$f" != 0 ] || [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | grep -vE '^(Running suite|100%)' >&2
    status=1
  fi
  echo "$label $summary"
  passed=$((passed + p))
  failed=$((failed + f))
done
echo "$label total: $passed passed, $failed failed"
echo "$passed $failed" > "$dir/test-counts"
exit $status
