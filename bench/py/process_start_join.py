# SPDX-License-Identifier: MIT
"""Python peer of the process_start_join row: multiprocessing.Process with the
fork start method, start + join of a target that returns at once.
Usage: process_start_join.py ITERS REPS; prints the median ns per op."""
import multiprocessing as mp
import statistics
import sys
import time


def target():
    pass


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            p = ctx.Process(target=target)
            p.start()
            p.join()
            p.close()
        samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
