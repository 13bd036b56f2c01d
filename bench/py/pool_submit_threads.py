# SPDX-License-Identifier: MIT
"""Python peer of pool_submit_threads (and pool_submit_threads_32w): a
ThreadPoolExecutor with os.cpu_count() workers (as weft's default) or
WORKERS, ITERS trivial tasks submitted, then result() of each, then
shutdown. Prints the median ns per task.
Usage: pool_submit_threads.py ITERS REPS [WORKERS]."""
import concurrent.futures
import os
import statistics
import sys
import time


def identity(x):
    return x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
            fs = [ex.submit(identity, i) for i in range(iters)]
            for i, f in enumerate(fs):
                assert f.result() == i
        samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
