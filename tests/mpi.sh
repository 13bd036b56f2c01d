#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the MPI backend's tests of one build directory (when it built them):
# the pool checks on 4 ranks over shared memory and again with the network
# transport forced (--mca btl self,tcp), the same program started without
# mpiexec, a task that crashes its rank (the job must end, naming it) and a
# main that returns with tasks on the ranks. Every run is bounded by a
# timeout that kills the whole job. Adds its counts to BUILD_DIR/test-counts
# and its failures to BUILD_DIR/test-failures, as tests/run.sh.
# Usage: tests/mpi.sh BUILD_DIR LABEL
set -u
dir=$1
label=$2
prog=$dir/tests/weft_mpi_test
[ -x "$prog" ] || exit 0
here=$(cd "$(dirname "$0")" && pwd)
mult=${CK_TIMEOUT_MULTIPLIER:-1}
limit=$((120 * mult))
passed=0
failed=0
root=""
[ "$(id -u)" = 0 ] && root="--allow-run-as-root"
# Open MPI's own allocations and locks are not the sanitizers' business:
# leaks inside it are not checked (it frees them after main), and its
# uninstrumented locking is suppressed for ThreadSanitizer.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" TSAN_OPTIONS="${TSAN_OPTIONS:-}"
case "${WEFT_TEST_SANITIZER:-}" in
  address) export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" ;;
  thread) export TSAN_OPTIONS="${TSAN_OPTIONS:-}:suppressions=$here/mpi/tsan.supp" ;;
esac
mpirun() { # mpirun NRANKS EXTRA_ARGS... -- PROGRAM_ARGS...
  n=$1
  shift
  extra=""
  while [ "$1" != "--" ]; do extra="$extra $1"; shift; done
  shift
  # shellcheck disable=SC2086
  # Every rank on this machine: no ssh is needed, and plm_rsh_agent=false
  # keeps Open MPI from refusing to start on a machine without one.
  timeout -k 5 "$limit" mpiexec $root --oversubscribe --mca plm_rsh_agent false \
    -x ASAN_OPTIONS -x UBSAN_OPTIONS -x TSAN_OPTIONS $extra -n "$n" "$prog" "$@"
}
fail() {
  echo "$label mpi: $1" | tee -a "$dir/test-failures"
  failed=$((failed + 1))
}
# The pool checks: their own counts.
for transport in "" "--mca btl self,tcp"; do
  name="pools${transport:+ over tcp}"
  out=$(mpirun 4 $transport -- pools 2>&1)
  rc=$?
  summary=$(printf '%s\n' "$out" | grep -E '^mpi_pools: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$summary" ] || [ $rc != 0 ]; then
    printf '%s\n' "$out" >&2
    fail "$name: exit $rc${summary:+ ($summary)}"
  fi
  if [ -n "$summary" ]; then
    p=$(echo "$summary" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$summary" | sed -E 's/.*, ([0-9]+) failed/\1/')
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%s\n' "$out" | grep -E '^[^:]+:[0-9]+:F:' | sed "s/^/$label mpi $name: /" \
      >> "$dir/test-failures"
  fi
done
# Started without mpiexec: local pools.
out=$(timeout -k 5 "$limit" "$prog" local 2>&1)
if [ $? = 0 ] && printf '%s\n' "$out" | grep -q '^mpi_local: [0-9]* passed, 0 failed$'; then
  passed=$((passed + 1))
else
  printf '%s\n' "$out" >&2
  fail "local: $out"
fi
# A program that uses MPI itself: with MPI_THREAD_MULTIPLE weft shares it,
# without it weft_mpi_init refuses.
for mode in own-mpi low-mpi; do
  out=$(mpirun 3 -- "$mode" 2>&1)
  rc=$?
  if [ $rc = 0 ] && printf '%s\n' "$out" | grep -qE '^mpi_(own|low): [0-9]+ passed, 0 failed$'; then
    passed=$((passed + 1))
  else
    printf '%s\n' "$out" >&2
    fail "$mode: exit $rc"
  fi
done
# A crashed rank ends the job at once, non-zero, saying what ran where.
out=$(mpirun 3 -- crash 2>&1)
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] &&
   printf '%s\n' "$out" | grep -q "^weft: task 0 of ProcessPool-0 crashed rank 1 on .* with SIGABRT"; then
  passed=$((passed + 1))
else
  printf '%s\n' "$out" >&2
  fail "crash: exit $rc, no report naming the task"
fi
# main returns with tasks on the ranks: they finish and the job ends.
out=$(mpirun 3 -- inflight 2>&1)
rc=$?
if [ $rc = 0 ]; then
  passed=$((passed + 1))
else
  printf '%s\n' "$out" >&2
  fail "inflight: exit $rc"
fi
# A rank killed from outside ends the job, non-zero, not a hang.
tmp=$(mktemp)
mpirun 3 -- hold > "$tmp" 2>&1 &
job=$!
victim=""
end=$(($(date +%s) + limit))
while [ -z "$victim" ] && [ "$(date +%s)" -lt "$end" ] && kill -0 "$job" 2>/dev/null; do
  if grep -q '^holding$' "$tmp"; then
    for p in $(pgrep -f "weft_mpi_test hold"); do
      if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then
        victim=$p
      fi
    done
  fi
  [ -n "$victim" ] || sleep 0.1
done
[ -n "$victim" ] && kill -KILL "$victim"
wait "$job"
rc=$?
if [ -n "$victim" ] && [ $rc != 0 ] && [ $rc != 124 ] && ! grep -q 'survived' "$tmp"; then
  passed=$((passed + 1))
else
  cat "$tmp" >&2
  fail "killed rank: exit $rc${victim:+ after killing rank 2 ($victim)}"
fi
rm -f "$tmp"
echo "$label mpi: $passed passed, $failed failed"
if [ -f "$dir/test-counts" ]; then
  read -r p f < "$dir/test-counts"
  echo "$((p + passed)) $((f + failed))" > "$dir/test-counts"
fi
[ "$failed" -eq 0 ]
