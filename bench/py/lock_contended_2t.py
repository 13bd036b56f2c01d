# SPDX-License-Identifier: MIT
"""Python peer of lock_contended_2t (the tutorial's section 3.6): two threads,
each lock / increment / unlock ITERS/2 times. Prints the median ns per lock
operation. Usage: lock_contended_2t.py ITERS REPS."""
import statistics
import sys
import threading
import time

count = 0


def add(lock, n):
    global count
    for _ in range(n):
        with lock:
            count += 1


def main():
    global count
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    samples = []
    for _ in range(reps):
        count = 0
        lock = threading.Lock()
        threads = [threading.Thread(target=add, args=(lock, iters // 2)) for _ in range(2)]
        t0 = time.perf_counter_ns()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        samples.append((time.perf_counter_ns() - t0) / iters)
        assert count == 2 * (iters // 2)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
