# SPDX-License-Identifier: MIT
"""Python peer of pool_map_bytes: Pool.map(len, strings) on a
multiprocessing.Pool (fork) with os.cpu_count() workers and map's default
chunksize, over ITERS byte strings of 10..200 bytes made as the weft row
makes them (a xorshift64 stream from the same seed gives each a length and
a starting letter in the repeated alphabet). The pool is started before
the clock and closed after it, as in the weft row. Prints the median ns
per item.
Usage: pool_map_bytes.py ITERS REPS."""
import multiprocessing as mp
import os
import statistics
import sys
import time

MASK = (1 << 64) - 1


def strings(n):
    text = b"abcdefghijklmnopqrstuvwxyz" * 9
    x = 88172645463325252
    out = []
    for _ in range(n):
        vals = []
        for _ in range(2):
            x ^= (x << 13) & MASK
            x ^= x >> 7
            x ^= (x << 17) & MASK
            vals.append(x)
        length, start = 10 + vals[0] % 191, vals[1] % 26
        out.append(text[start:start + length])
    return out


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    items = strings(iters)
    ctx = mp.get_context("fork")
    samples = []
    for _ in range(reps):
        with ctx.Pool(os.cpu_count()) as pool:
            t0 = time.perf_counter_ns()
            out = pool.map(len, items)
            samples.append((time.perf_counter_ns() - t0) / iters)
        assert out == [len(s) for s in items]
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
