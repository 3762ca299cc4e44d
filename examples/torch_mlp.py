"""Trains a small MLP classifier (cross-entropy) three times from the same start: with
torch.optim.AdamW (torch's default CPU implementation), with torch's fused AdamW and with
fastopt.torch.AdamW, and times their optimizer steps side by side.

Three float32 implementations of one update round differently, and in training those differences
grow: the losses agree closely at first and then drift apart slowly.  fastopt's distance from
torch's default is printed next to torch's own fused implementation's distance from it, which is
what "the same within float32 rounding" looks like over many steps.

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

import fastopt
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


def train(model, make_optimizer, x, y, epochs: int, batch: int):
    """Mini-batch training; returns (mean loss per epoch, seconds per optimizer step)."""
    optimizer = make_optimizer(model.parameters())
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--epochs", type=int, help="epochs to train (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smaller data set, 3 epochs unless --epochs")
    args = parser.parse_args(argv)
    epochs, n = (args.epochs or (3 if args.quick else 10)), (2048 if args.quick else 16384)
    torch.set_num_threads(1)  # one thread each, so that the step timings compare
    fastopt.set_num_threads(1)
    x, y = make_data(n)
    base = make_model()
    variants = {"torch": lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=1e-2),
                "torch fused": lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=1e-2, fused=True),
                "fastopt": lambda ps: fastopt.torch.AdamW(ps, lr=3e-3, weight_decay=1e-2)}
    runs = {name: train(copy.deepcopy(base), make, x, y, epochs, batch=128) for name, make in variants.items()}
    losses = {name: run[0] for name, run in runs.items()}
    print(f"{'epoch':>5} " + " ".join(f"{name + ' loss':>18}" for name in runs))
    for e in range(epochs):
        print(f"{e + 1:>5} " + " ".join(f"{losses[name][e]:>18.6f}" for name in runs))

    def drift(name):  # the largest relative difference from torch's default, over the epochs
        return max(abs(a - b) / abs(a) for a, b in zip(losses["torch"], losses[name]))
    print(f"largest relative loss difference from torch: fastopt {drift('fastopt'):.1e}, "
          f"torch fused {drift('torch fused'):.1e}")
    steps = {name: run[1] for name, run in runs.items()}
    print("median optimizer step: " + ", ".join(f"{name} {t * 1e6:.1f} us" for name, t in steps.items())
          + f" (fastopt {steps['torch fused'] / steps['fastopt']:.1f}x torch fused)")
    assert losses["fastopt"][-1] < losses["fastopt"][0], "training should lower the loss"
    assert drift("fastopt") <= 10 * drift("torch fused") + 1e-5, "fastopt and torch should train alike"


if __name__ == "__main__":
    main()
