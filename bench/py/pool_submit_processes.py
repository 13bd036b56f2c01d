# SPDX-License-Identifier: MIT
"""Python peer of pool_submit_processes: a multiprocessing.Pool (fork) with
os.cpu_count() workers (as weft's default), ITERS trivial tasks passed to
apply_async, then get() of each. The pool is started before the clock and
closed after it, as in the weft row: the figure is the per-task cost, not
the pool's start-up. Prints the median ns per task.
Usage: pool_submit_processes.py ITERS REPS."""
import multiprocessing as mp
import os
import statistics
import sys
import time


def identity(x):
    return x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    samples = []
    for _ in range(reps):
        with ctx.Pool(os.cpu_count()) as pool:
            t0 = time.perf_counter_ns()
            rs = [pool.apply_async(identity, (i,)) for i in range(iters)]
            for i, r in enumerate(rs):
                assert r.get() == i
            samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
