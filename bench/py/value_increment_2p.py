# SPDX-License-Identifier: MIT
"""Python peer of value_increment_2p: two processes (fork) each increment a
shared multiprocessing.Value('i') ITERS times under its lock. Prints the
median ns per increment (the time from start to join over 2 * ITERS).
Usage: value_increment_2p.py ITERS REPS."""
import multiprocessing as mp
import statistics
import sys
import time


def add(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    samples = []
    for _ in range(reps):
        v = ctx.Value("i", 0)
        procs = [ctx.Process(target=add, args=(v, iters)) for _ in range(2)]
        t0 = time.perf_counter_ns()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        samples.append((time.perf_counter_ns() - t0) / (2 * iters))
        assert v.value == 2 * iters, v.value
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
