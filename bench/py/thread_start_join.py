# SPDX-License-Identifier: MIT
"""Python peer of thread_start_join: threading.Thread start + join.
Usage: thread_start_join.py ITERS REPS; prints the median ns per op."""
import statistics
import sys
import threading
import time


def target():
    pass


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            t = threading.Thread(target=target)
            t.start()
            t.join()
        samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
