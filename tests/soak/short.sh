#!/bin/sh
# SPDX-License-Identifier: MIT
# The short form of the soak, run by `make test`: a round of every scenario
# under two fixed seeds and one random seed (each run prints its seed), then
# every injection, each of which must make the soak fail.
# Usage: tests/soak/short.sh BUILD_DIR
set -u
soak=$1/tests/weft_soak
status=0
seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
for s in 1 2 "$seed"; do
  if ! "$soak" --seed="$s" --iterations=7 --phase=0.8; then
    echo "soak: seed $s failed"
    status=1
  fi
done
tests/soak/inject.sh "$1" || status=1
exit $status
