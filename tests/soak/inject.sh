#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the soak with each injection (a broken invariant, on purpose) and
# checks that the soak reports it: "0 passed, 1 failed" and a non-zero exit.
# Usage: tests/soak/inject.sh BUILD_DIR
set -u
soak=$1/tests/weft_soak
names=$("$soak" --help | sed -n 's/^injections[^:]*: //p')
status=0
for name in $names; do
  out=$("$soak" --inject="$name" --seed=7 --phase=0.6 2>&1)
  rc=$?
  if [ "$rc" = 1 ] && printf '%s\n' "$out" | tail -1 | grep -q '^soak: 0 passed, 1 failed$'; then
    echo "soak --inject=$name: caught ($(printf '%s\n' "$out" | grep -m1 'FAIL' | sed 's/^soak: FAIL \[[^]]*\] //' | cut -c1-90))"
  else
    printf '%s\n' "$out"
    echo "soak --inject=$name: NOT caught (exit $rc)"
    status=1
  fi
done
exit $status
