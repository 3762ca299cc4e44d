"""Grid and random search over learning rate x weight decay, every configuration trained together.

A small MLP classifier (64 -> 64 -> 10, softmax cross-entropy) on synthetic data: a grid of 4
learning rates x 3 weight decays and 8 random draws, each a replica with its own AdamW
hyper-parameters.  All replicas step in one fastopt call a step (fastopt.sweep: the replicas are
param groups that differ only in lr and weight_decay); the same search as one run per
configuration (each with its own optimizer) gives the same weights bit for bit, and takes a call
per configuration a step.  Prints each configuration's validation loss and accuracy, the best
marked, and the time of both; --plot draws every loss curve.

    python examples/lr_sweep.py [--epochs 20] [--plot sweep.png]
    python examples/lr_sweep.py --quick            # small, for CI
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt import optim, sweep


def data(n, d=64, classes=10, seed=0):
    """n samples of Gaussian clusters, one per class (the same clusters for every seed), with 10%
    of the labels noise: a problem where lr and weight decay matter."""
    centers = 0.35 * np.random.default_rng(12345).standard_normal((classes, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.standard_normal((n, d)).astype(np.float32)
    flip = rng.random(n) < 0.1
    y[flip] = rng.integers(0, classes, flip.sum())
    return x, y


def init(d=64, hidden=64, classes=10, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((d, hidden)) / np.sqrt(d)).astype(np.float32), np.zeros(hidden, np.float32),
            (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32),
            np.zeros(classes, np.float32)]


def loss_and_grads(params, x, y, out=None):
    """Mean cross-entropy of the MLP on (x, y); its gradients written into out (if given)."""
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0)
    logits = h @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -float(np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    if out is not None:
        d = p
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        dh = (d @ w2.T) * (h > 0)
        out[0][...], out[1][...] = x.T @ dh, dh.sum(axis=0)
        out[2][...], out[3][...] = h.T @ d, d.sum(axis=0)
    return loss


def accuracy(params, x, y):
    w1, b1, w2, b2 = params
    return float(np.mean(np.argmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2, axis=1) == y))


def batches(n, batch, epochs, seed=2):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield order[i:i + batch]


def train_together(configs, x, y, xv, yv, epochs, batch):
    """Every configuration at once: one Sweep, one optimizer call a step."""
    search = sweep.Sweep(init(), configs, optim.AdamW)
    per_epoch = len(y) // batch
    stepping = evaluating = 0.0
    for step, idx in enumerate(batches(len(y), batch, epochs), 1):
        for k, params in enumerate(search.replicas):
            loss_and_grads(params, x[idx], y[idx], out=search.grads[k])
        start = time.perf_counter()
        search.step()
        stepping += time.perf_counter() - start
        if step % per_epoch == 0:  # each replica's validation loss, once an epoch (not timed as training)
            start = time.perf_counter()
            for k, params in enumerate(search.replicas):
                search.record(k, loss_and_grads(params, xv, yv))
            evaluating += time.perf_counter() - start
    return search, stepping, evaluating


def train_one_by_one(configs, x, y, epochs, batch):
    """The same search as one run per configuration, each with its own optimizer."""
    runs = []
    for config in configs:
        params = init()
        runs.append((params, optim.AdamW(params, **config)))
    stepping = 0.0
    for idx in batches(len(y), batch, epochs):
        for params, opt in runs:
            loss_and_grads(params, x[idx], y[idx], out=opt.grads)
            start = time.perf_counter()
            opt.step()
            stepping += time.perf_counter() - start
    return [params for params, _ in runs], stepping


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--plot", help="write the loss curves here (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="small, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 3, 1024
    fastopt.set_num_threads(1)  # (tiny tensors: threads cost more than they give)
    x, y = data(args.samples)
    xv, yv = data(1024, seed=9)
    configs = sweep.grid(lr=[3e-4, 1e-3, 3e-3, 1e-2], weight_decay=[0.0, 1e-2, 1e-1]) + \
        sweep.random(8, lr=(1e-4, 3e-2), weight_decay=(1e-4, 0.3), seed=3)

    start = time.perf_counter()
    search, together_step, evaluating = train_together(configs, x, y, xv, yv, args.epochs, args.batch)
    together = time.perf_counter() - start - evaluating
    start = time.perf_counter()
    alone, alone_step = train_one_by_one(configs, x, y, args.epochs, args.batch)
    one_by_one = time.perf_counter() - start
    same = all(np.array_equal(a, b) for r, s in zip(search.replicas, alone) for a, b in zip(r, s))

    print(f"{len(configs)} configurations (a 4 x 3 grid, 8 random), AdamW, {args.epochs} epochs of "
          f"{args.samples // args.batch} steps; validation loss after training:")
    print(search.table())
    best = search.best()
    print(f"best: lr={configs[best]['lr']:.3g}, weight_decay={configs[best]['weight_decay']:.3g}, "
          f"validation accuracy {accuracy(search.replicas[best], xv, yv):.1%}")
    steps = search.optimizer.param_groups[0]["step"]
    print(f"optimizer steps: together {together_step * 1e3:.0f} ms in {steps} calls, one run per configuration "
          f"{alone_step * 1e3:.0f} ms in {len(configs) * steps} calls ({alone_step / together_step:.1f}x);  the same "
          f"weights: {same}")
    print(f"whole training (forward, backward, step; validation not counted): together {together:.2f} s, one run per "
          f"configuration {one_by_one:.2f} s; NumPy's forward and backward, the same work either way, dominate both")
    if args.plot:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        colors = plt.get_cmap("viridis")
        span = np.log10([c["lr"] for c in configs])
        for k, curve in enumerate(search.losses):
            c = configs[k]
            shade = colors((np.log10(c["lr"]) - span.min()) / (np.ptp(span) or 1))
            ax.plot(range(1, len(curve) + 1), curve, color="crimson" if k == best else shade,
                    lw=2.5 if k == best else 1.0, ls="-" if k < 12 else "--", alpha=1 if k == best else 0.8,
                    label=f"best: lr={c['lr']:.2g}, weight decay={c['weight_decay']:.2g}" if k == best else None)
        ax.plot([], [], color="gray", ls="-", label="grid (color: lr, dark low, light high)")
        ax.plot([], [], color="gray", ls="--", label="random")
        ax.set(xlabel="epoch", ylabel="validation loss", title=f"{len(configs)} AdamW configurations trained together")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return same


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
