# SPDX-License-Identifier: MIT
"""Python peer of pool_roundtrip_threads_32w: a ThreadPoolExecutor of 32
workers, all started before the clock; then ITERS times: submit a trivial
task and wait for its result. Prints the median ns per round trip.
Usage: pool_roundtrip_threads_32w.py ITERS REPS."""
import concurrent.futures
import statistics
import sys
import threading
import time

WORKERS = 32


def identity(x):
    return x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    samples = []
    for _ in range(reps):
        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as ex:
            gate = threading.Barrier(WORKERS)
            for f in [ex.submit(gate.wait) for _ in range(WORKERS)]:
                f.result()
            t0 = time.perf_counter_ns()
            for i in range(iters):
                assert ex.submit(identity, i).result() == i
            samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
