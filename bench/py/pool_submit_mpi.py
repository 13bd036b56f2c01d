# SPDX-License-Identifier: MIT
"""mpi4py peer of pool_submit_mpi and pool_map_mpi, run as
`mpiexec -n 3 python3 -m mpi4py.futures pool_submit_mpi.py ITERS REPS [map]`:
rank 0 runs this while the others serve the MPIPoolExecutor. submit: ITERS
trivial tasks submitted, then each result fetched; map: map of x*x over
range(ITERS) with chunksize ITERS/16. Prints the median ns per task or item."""
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def identity(x):
    return x


def square(x):
    return x * x


def main():
    iters, reps = int(sys.argv[1]), int(sys.argv[2])
    mapping = len(sys.argv) > 3 and sys.argv[3] == "map"
    samples = []
    with MPIPoolExecutor() as ex:
        ex.submit(identity, 0).result()  # the workers are up
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            if mapping:
                out = list(ex.map(square, range(iters), chunksize=max(1, iters // 16)))
                assert out[-1] == (iters - 1) ** 2
            else:
                fs = [ex.submit(identity, i) for i in range(iters)]
                for i, f in enumerate(fs):
                    assert f.result() == i
            samples.append((time.perf_counter_ns() - t0) / iters)
    print(f"{statistics.median(samples):.1f}")


if __name__ == "__main__":
    main()
