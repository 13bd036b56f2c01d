# SPDX-License-Identifier: MIT
"""Python peer of the process_start_join rows: multiprocessing.Process
start + join of a target that returns at once, by the fork start method or
METHOD, from a parent that first touched every page of a MIB-MiB bytearray
(process_start_join_1g) or none.
Usage: process_start_join.py ITERS REPS [METHOD [MIB]]; prints the median ns per op."""
import multiprocessing as mp
import statistics
import sys
import time


def target():
    pass


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "fork"
    mib = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    big = bytearray(mib << 20)
    for i in range(0, len(big), 4096):
        big[i] = 1
    ctx = mp.get_context(method)
    if method != "fork":  # starts the forkserver off the clock
        warm = ctx.Process(target=target)
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
