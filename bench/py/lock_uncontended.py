# SPDX-License-Identifier: MIT
"""Python peer of lock_uncontended: threading.Lock acquire + release, with a
second thread alive. Usage: lock_uncontended.py ITERS REPS."""
import statistics
import sys
import threading
import time


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    stop = threading.Event()
    second = threading.Thread(target=stop.wait)
    second.start()
    lock = threading.Lock()
    acquire, release = lock.acquire, lock.release
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            acquire()
            release()
        samples.append((time.perf_counter_ns() - t0) / iters)
    stop.set()
    second.join()
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
