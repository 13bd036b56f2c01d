# SPDX-License-Identifier: MIT
"""Python peer of the process_start_join_500 row: multiprocessing.Process with
the fork start method, start + join of a target that returns at once, with
500 idle children alive.
Usage: process_start_join_500.py ITERS REPS; prints the median ns per op."""
import multiprocessing as mp
import statistics
import sys
import time

IDLE_CHILDREN = 500


def idle():
    while True:
        time.sleep(3600)


def target():
    pass


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    kids = [ctx.Process(target=idle, daemon=True) for _ in range(IDLE_CHILDREN)]
    for k in kids:
        k.start()
    samples = []
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(iters):
                p = ctx.Process(target=target)
                p.start()
                p.join()
                p.close()
            samples.append((time.perf_counter_ns() - t0) / iters)
    finally:
        for k in kids:
            k.kill()
        for k in kids:
            k.join()
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
