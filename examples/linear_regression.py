"""Multi-output linear regression by gradient descent three ways, NumPy and fastopt side by side.

Batch GD, mini-batch GD with step decay, and SGD with momentum and exponential decay, each with an
L2 penalty (weight_decay: its gradient joins the update in the same pass), on a weight matrix of
512 x 512 (262,144 weights).  The same data, batches and initial weights go to a
NumPy update (fastopt.reference, the plain NumPy expressions) and to fastopt's fused kernels; the
losses agree, fall to the noise floor, and only the update step is timed.

    python examples/linear_regression.py            # 4,096 samples, 512 features, 512 outputs
    python examples/linear_regression.py --quick    # small, for CI
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt import schedules


def data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)  # features of unit scale: a well-conditioned problem
    w_true = rng.standard_normal((d, k), dtype=np.float32) / np.sqrt(d, dtype=np.float32)
    y = x @ w_true + np.float32(0.1) * rng.standard_normal((n, k), dtype=np.float32)
    return x, y


def loss(x, y, w, lam):
    r = x @ w - y
    return float(np.vdot(r, r)) / (2 * len(y)) + lam / 2 * float(np.vdot(w, w))


def train(backend, method, x, y, epochs, lam, batch):
    """Returns the loss after each epoch and the seconds spent in the update."""
    n, d, k = x.shape[0], x.shape[1], y.shape[1]
    w, buf, g = (np.zeros((d, k), np.float32) for _ in range(3))
    lr = {"batch GD": schedules.constant(0.5),
          "mini-batch GD": schedules.step_decay(0.3, step_size=epochs * n // batch // 3, gamma=0.5),
          "SGD + momentum": schedules.exponential_decay(0.03, gamma=0.999)}[method]
    size = n if method == "batch GD" else batch
    rng = np.random.default_rng(1)  # the same batches for both backends
    losses, update_time, step = [], 0.0, 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - size + 1, size):
            idx = order[start:start + size]
            xb, yb = x[idx], y[idx]
            np.matmul(xb.T, (xb @ w - yb) / np.float32(size), out=g)  # the data term's gradient
            step += 1
            t0 = time.perf_counter()
            if method == "SGD + momentum":
                backend.sgd(w, g, buf, lr=lr(step), momentum=0.9, weight_decay=lam, first_step=step == 1)
            else:
                backend.sgd(w, g, lr=lr(step), weight_decay=lam)
            update_time += time.perf_counter() - t0
        losses.append(loss(x, y, w, lam))
    return losses, update_time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small problem (CI)")
    args = ap.parse_args(argv)
    n, d, k, epochs, batch = (512, 64, 16, 3, 128) if args.quick else (4_096, 512, 512, 20, 1024)
    x, y = data(n, d, k)
    lam = 1e-3
    print(f"linear regression: {n} samples, {d} features, {k} outputs ({d * k:,} weights), L2 penalty {lam}, "
          f"{epochs} epochs")
    for method in ("batch GD", "mini-batch GD", "SGD + momentum"):
        ref_losses, ref_time = train(fastopt.reference, method, x, y, epochs, lam, batch)
        fo_losses, fo_time = train(fastopt, method, x, y, epochs, lam, batch)
        print(f"\n{method}")
        print("  epoch   loss (NumPy)    loss (fastopt)")
        for e, (a, b) in enumerate(zip(ref_losses, fo_losses), 1):
            print(f"  {e:5d}   {a:.9f}   {b:.9f}")
        same = np.allclose(ref_losses, fo_losses, rtol=1e-5)
        print(f"  same losses: {same}; update time NumPy {ref_time * 1e3:.1f} ms, fastopt {fo_time * 1e3:.1f} ms: "
              f"{ref_time / fo_time:.1f}x")
        if not same:
            raise SystemExit(f"{method}: fastopt and NumPy disagree")


if __name__ == "__main__":
    main()
