"""Honest timing: warm-up, calibrated repetitions, variants interleaved, medians and spread."""
from __future__ import annotations

import random
import statistics
import time

# Pause before each sample: other runtimes' idle threads (torch's OpenMP, BLAS) spin for a while
# after their work, on the same cores; a sample taken in that window measures their spinning.
SETTLE_S = 0.01


def _time(fn, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def calibrate(fn, min_time: float) -> int:
    """How many calls make one sample last at least min_time (after one warm-up call)."""
    fn()
    number = 1
    while True:
        elapsed = _time(fn, number)
        if elapsed >= min_time or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9) * 1.2))


def interleaved(fns: dict, repeats: int, min_time: float = 0.01, on_sample=None, seed: int = 0) -> dict:
    """Seconds per call of each function: `repeats` samples each, taken in rounds (a fresh order
    every round, so no variant always follows the same one), each after a short settling pause, so
    that a noisy neighbour or another runtime's spinning threads slow every variant alike."""
    numbers = {name: calibrate(fn, min_time) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    order, rng = list(fns), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            time.sleep(SETTLE_S)
            samples[name].append(_time(fns[name], numbers[name]) / numbers[name])
            if on_sample:
                on_sample()
    return samples


def summary(samples: list[float]) -> dict:
    """Median, and the spread as the interquartile range relative to the median."""
    median = statistics.median(samples)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        spread = (q[2] - q[0]) / median
    else:
        spread = (max(samples) - min(samples)) / median
    return {"median_s": median, "min_s": min(samples), "spread": spread, "samples": len(samples)}
