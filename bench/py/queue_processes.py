# SPDX-License-Identifier: MIT
"""Python peer of queue_processes: a child process puts ITERS 8-byte
messages into a multiprocessing.Queue, the parent gets them. Prints the
median ns per message. Usage: queue_processes.py ITERS REPS."""
import multiprocessing as mp
import statistics
import sys
import time


def produce(q, n):
    for i in range(n):
        q.put(i.to_bytes(8, "little"))


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    mp.set_start_method("fork")
    samples = []
    for _ in range(reps):
        q = mp.Queue()
        p = mp.Process(target=produce, args=(q, iters))
        t0 = time.perf_counter_ns()
        p.start()
        for i in range(iters):
            assert int.from_bytes(q.get(), "little") == i
        p.join()
        samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
