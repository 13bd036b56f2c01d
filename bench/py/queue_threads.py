# SPDX-License-Identifier: MIT
"""Python peer of queue_threads: one producer thread puts ITERS ints into a
queue.Queue(maxsize=1024), the main thread gets them. Prints the median ns
per item. Usage: queue_threads.py ITERS REPS."""
import queue
import statistics
import sys
import threading
import time


def produce(q, n):
    for i in range(1, n + 1):
        q.put(i)


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    samples = []
    for _ in range(reps):
        q = queue.Queue(maxsize=1024)
        t = threading.Thread(target=produce, args=(q, iters))
        t0 = time.perf_counter_ns()
        t.start()
        total = 0
        for _ in range(iters):
            total += q.get()
        t.join()
        samples.append((time.perf_counter_ns() - t0) / iters)
        assert total == iters * (iters + 1) // 2
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
