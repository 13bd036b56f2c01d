#!/bin/sh
# The short form of the soak, run by `make test`: a round of every scenario
# but the barrier's (below) under two fixed seeds and one random seed (each
# run prints its seed), then every injection, each of which must make the
# soak fail.
# Usage: tests/soak/short.sh BUILD_DIR
set -u
soak=$1/tests/weft_soak
status=0
seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
# The barrier scenario is left to `make soak`: weft_barrier_wait blocks for
# good, past its timeout, once a party is killed after its cycle ended but
# before it left (the cycle's `draining` count never reaches 0).
for s in 1 2 "$seed"; do
  if ! "$soak" --seed="$s" --iterations=7 --skip=barrier --phase=0.8; then
    echo "soak: seed $s failed"
    status=1
  fi
done
tests/soak/inject.sh "$1" || status=1
exit $status
