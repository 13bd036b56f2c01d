# SPDX-License-Identifier: MIT
"""Python peer of the process_start_join_1g row: multiprocessing.Process
start + join of a target that returns at once, from a parent holding a
1 GiB bytearray whose every page it touched, by the start method given.
Usage: process_start_join_1g.py ITERS REPS METHOD; prints the median ns per op."""
import multiprocessing as mp
import statistics
import sys
import time


def target():
    pass


def main():
    iters, reps, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    big = bytearray(1 << 30)
    for i in range(0, len(big), 4096):
        big[i] = 1
    ctx = mp.get_context(method)
    warm = ctx.Process(target=target)  # starts the forkserver off the clock
    warm.start()
    warm.join()
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
    del big


if __name__ == "__main__":
    main()
