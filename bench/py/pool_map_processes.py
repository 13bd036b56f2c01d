# SPDX-License-Identifier: MIT
"""Python peer of pool_map_processes: Pool.map(square, range(ITERS)) on a
multiprocessing.Pool (fork) with os.cpu_count() workers and map's default
chunksize. The pool is started before the clock and closed after it, as in
the weft row. Prints the median ns per item.
Usage: pool_map_processes.py ITERS REPS."""
import multiprocessing as mp
import os
import statistics
import sys
import time


def square(x):
    return x * x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    samples = []
    for _ in range(reps):
        with ctx.Pool(os.cpu_count()) as pool:
            t0 = time.perf_counter_ns()
            out = pool.map(square, range(iters))
            samples.append((time.perf_counter_ns() - t0) / iters)
        assert len(out) == iters and all(v == i * i for i, v in enumerate(out))
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
