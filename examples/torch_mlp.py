"""Trains a small MLP classifier (cross-entropy) twice, with torch.optim.AdamW and with
fastopt.torch.AdamW from the same start: the losses agree epoch by epoch, and the optimizer steps
are timed side by side.

    python examples/torch_mlp.py [--epochs 10] [--quick]

The data set is synthetic: four Gaussian blobs in 32 dimensions, pushed through a fixed random
nonlinearity so the classes are not linearly separable.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import fastopt.torch


def make_data(n: int, dim: int = 32, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 0.35
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    mix = torch.randn(dim, dim, generator=g) / dim ** 0.5
    return torch.tanh(x @ mix) + 0.1 * x, y


def make_model(dim: int = 32, hidden: int = 64, classes: int = 4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, classes))


def train(model, optimizer, x, y, epochs: int, batch: int):
    """Mini-batch training; returns (mean loss per epoch, seconds per optimizer step)."""
    losses, step_times = [], []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(x), batch):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
            loss.backward()
            start = time.perf_counter()
            optimizer.step()
            step_times.append(time.perf_counter() - start)
            total += loss.item() * len(x[i:i + batch])
        losses.append(total / len(x))
    return losses, statistics.median(step_times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 epochs on a smaller data set")
    args = parser.parse_args(argv)
    epochs, n = (3, 2048) if args.quick else (args.epochs, 16384)
    torch.set_num_threads(1)  # the model's own math on one thread, so the step timings compare
    x, y = make_data(n)
    base = make_model()
    runs = {}
    for name, make in (("torch.optim.AdamW", torch.optim.AdamW), ("fastopt.torch.AdamW", fastopt.torch.AdamW)):
        model = copy.deepcopy(base)
        runs[name] = train(model, make(model.parameters(), lr=3e-3, weight_decay=1e-2), x, y, epochs, batch=128)
    (t_losses, t_step), (f_losses, f_step) = runs.values()
    print(f"{'epoch':>5} {'torch loss':>11} {'fastopt loss':>13}")
    for e, (a, b) in enumerate(zip(t_losses, f_losses), 1):
        print(f"{e:>5} {a:>11.6f} {b:>13.6f}")
    drift = max(abs(a - b) / abs(a) for a, b in zip(t_losses, f_losses))
    print(f"largest relative loss difference: {drift:.1e}")
    print(f"median optimizer step: torch.optim.AdamW {t_step * 1e6:.1f} us, fastopt.torch.AdamW {f_step * 1e6:.1f} us "
          f"({t_step / f_step:.1f}x)")
    assert drift < 1e-3, "fastopt and torch should train alike"


if __name__ == "__main__":
    main()
