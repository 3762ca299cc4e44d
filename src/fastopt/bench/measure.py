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


def rows_of(samples: dict, case: dict, numel: int, wrong: set, moved: int, probe_moved: int | None = None) -> list[dict]:
    """fastopt-bench's rows of one case from each backend's samples: case's keys, the summary, the
    rate, GB/s (moved bytes a step; the probe's own row counts probe_moved, default moved), the
    share of the roofline probe (its best sample: an upper bound on bandwidth), and the speed
    against NumPy and torch's fastest variant."""
    probe_moved = moved if probe_moved is None else probe_moved
    rows = []
    for name, s in samples.items():
        row = {**case, "numel": numel, "backend": name, "wrong": name in wrong, **summary(s)}
        row["elements_per_s"] = numel / row["median_s"]
        row["gbps"] = (probe_moved if name == "roofline" else moved) / row["median_s"] / 1e9
        rows.append(row)
    by = {r["backend"]: r for r in rows}
    probe_gbps = probe_moved / by["roofline"]["min_s"] / 1e9
    torch_row = by.get("torch-fused") or by.get("torch-foreach") or by.get("torch")
    for r in rows:
        r["roofline_pct"] = 100 * r["gbps"] / probe_gbps
        r["vs_numpy"] = by["numpy"]["median_s"] / r["median_s"] if r["backend"] != "roofline" else None
        r["vs_torch"] = torch_row["median_s"] / r["median_s"] if torch_row and r["backend"] != "roofline" else None
    return rows


def summary(samples: list[float]) -> dict:
    """Median, and the spread as the interquartile range relative to the median."""
    median = statistics.median(samples)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        spread = (q[2] - q[0]) / median
    else:
        spread = (max(samples) - min(samples)) / median
    return {"median_s": median, "min_s": min(samples), "spread": spread, "samples": len(samples)}
