"""Python threads stepping distinct parameter sets at once run in parallel: fastopt releases the GIL.

Each of T Python threads steps its own AdamW set (float32, compute-heavy 256K elements, fastopt's
own threads off) S times; the same work done by one thread, one set after the other, is the
baseline.  Medians of interleaved repeats.

    python bench/concurrency.py
"""
import statistics
import threading
import time

import numpy as np

import fastopt

N, STEPS, REPEATS = 1 << 18, 200, 7


def make(seed):
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(N, dtype=np.float32), rng.standard_normal(N, dtype=np.float32)
    return p, g, np.zeros(N, np.float32), np.zeros(N, np.float32)


def work(arrays):
    for t in range(1, STEPS + 1):
        fastopt.adamw(*arrays, step=t)


def serial(sets):
    for s in sets:
        work(s)


def threaded(sets):
    threads = [threading.Thread(target=work, args=(s,)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    fastopt.set_num_threads(1)  # parallelism from the Python threads alone
    sets = [make(i) for i in range(2)]
    times = {"serial": [], "threaded": []}
    for _ in range(REPEATS):
        for name, fn in (("serial", serial), ("threaded", threaded)):
            start = time.perf_counter()
            fn(sets)
            times[name].append(time.perf_counter() - start)
    s, t = statistics.median(times["serial"]), statistics.median(times["threaded"])
    print(f"2 Python threads x {STEPS} AdamW steps of {N} elements each: one thread after the other "
          f"{s * 1e3:.1f} ms, both at once {t * 1e3:.1f} ms: {s / t:.2f}x ({fastopt.info()['isa']}, "
          f"2 cores)")


if __name__ == "__main__":
    main()
