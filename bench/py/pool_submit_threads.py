# SPDX-License-Identifier: MIT
"""Python peer of pool_submit_threads: a ThreadPoolExecutor with
os.cpu_count() workers (as weft's default), ITERS trivial tasks submitted,
then result() of each, then shutdown. Prints the median ns per task.
Usage: pool_submit_threads.py ITERS REPS."""
import concurrent.futures
import os
import statistics
import sys
import time


def identity(x):
    return x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as ex:
            fs = [ex.submit(identity, i) for i in range(iters)]
            for i, f in enumerate(fs):
                assert f.result() == i
        samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
