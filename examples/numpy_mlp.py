"""A whole training loop in NumPy: an MLP classifier on scikit-learn's bundled digits (8x8 images,
10 classes; no download), trained twice from the same start, once with fastopt doing everything but
the matrix products (softmax cross-entropy and its gradient, dropout forward and backward, L2, the
AdamW step with a cosine schedule) and once in plain NumPy, line for line the same loop; the same
model in torch beside them.  Prints each one's test accuracy and time per epoch.

    python examples/numpy_mlp.py [--epochs 30] [--quick]

The two NumPy loops draw different dropout masks (Philox against NumPy's generator), so their
weights differ; their accuracies agree to within what a different mask moves them.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

import fastopt
from fastopt import schedules

HIDDEN, P_DROP, L2, LR, BATCH = 256, 0.2, 1e-4, 2e-3, 64
BETAS, EPS = (0.9, 0.999), 1e-8


def digits(seed: int = 0):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a fixed 80/20 split."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = (data.data[order] / 16).astype(np.float32), data.target[order].astype(np.int64)
    cut = len(y) * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def init(seed: int = 0) -> list[np.ndarray]:
    """Weights and biases of 64 -> HIDDEN -> HIDDEN -> 10 (He initialization)."""
    rng = np.random.default_rng(seed)
    sizes = [64, HIDDEN, HIDDEN, 10]
    params = []
    for a, b in zip(sizes, sizes[1:]):
        params += [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32), np.zeros(b, np.float32)]
    return params


def forward(params, x, drop):
    """Logits and what backward needs; drop(h, layer) applies dropout to a hidden layer."""
    w1, b1, w2, b2, w3, b3 = params
    h1 = drop(np.maximum(x @ w1 + b1, 0), 0)
    h2 = drop(np.maximum(h1 @ w2 + b2, 0), 1)
    return h2 @ w3 + b3, (x, h1, h2)


def backward(params, saved, dlogits, undrop):
    """Gradients of the weights and biases; undrop(dh, layer) is dropout's backward."""
    (x, h1, h2), (_, _, w2, _, w3, _) = saved, params
    dh2 = undrop(dlogits @ w3.T, 1) * (h2 > 0)
    dh1 = undrop(dh2 @ w2.T, 0) * (h1 > 0)
    return [x.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dlogits, dlogits.sum(0)]


def accuracy(params, x, y) -> float:
    logits, _ = forward(params, x, lambda h, layer: h)
    return float((logits.argmax(1) == y).mean())


def train_fastopt(x, y, epochs: int, seed: int = 0):
    """fastopt for the loss and its gradient, dropout, L2 and AdamW; NumPy for the products."""
    params = init()
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    steps = epochs * -(-len(y) // BATCH)
    lr = schedules.cosine(LR, steps)
    order, step, seconds = np.random.default_rng(seed), 0, []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in np.array_split(order.permutation(len(y)), -(-len(y) // BATCH)):
            step += 1
            # the mask of each layer and step is a function of (seed, counter): backward regenerates it
            def drop(h, layer):
                return fastopt.dropout(h, P_DROP, seed=seed, counter=2 * step + layer, out=h)

            def undrop(dh, layer):
                return fastopt.dropout_backward(dh, P_DROP, seed=seed, counter=2 * step + layer, out=dh)
            logits, saved = forward(params, x[batch], drop)
            _, dlogits = fastopt.softmax_cross_entropy(logits, y[batch], out=logits)
            grads = backward(params, saved, dlogits, undrop)
            fastopt.l2_grad(grads[0::2], params[0::2], lam=L2)  # weights only
            fastopt.adamw(params, grads, m, v, step=step, lr=lr(step), betas=BETAS, eps=EPS, weight_decay=0.0)
        seconds.append(time.perf_counter() - start)
    return params, seconds


def train_numpy(x, y, epochs: int, seed: int = 0):
    """The same loop in plain NumPy: each fastopt call written out."""
    params = init()
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    steps = epochs * -(-len(y) // BATCH)
    order, rng, step, seconds = np.random.default_rng(seed), np.random.default_rng(seed + 1), 0, []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in np.array_split(order.permutation(len(y)), -(-len(y) // BATCH)):
            step += 1
            masks = {}

            def drop(h, layer):
                masks[layer] = (rng.random(h.shape, dtype=np.float32) >= P_DROP) / np.float32(1 - P_DROP)
                return h * masks[layer]

            def undrop(dh, layer):
                return dh * masks[layer]
            logits, saved = forward(params, x[batch], drop)
            z = logits - logits.max(1, keepdims=True)
            e = np.exp(z)
            dlogits = e / e.sum(1, keepdims=True)
            dlogits[np.arange(len(batch)), y[batch]] -= 1
            dlogits /= len(batch)
            grads = backward(params, saved, dlogits, undrop)
            lr = 0.5 * LR * (1 + np.cos(np.pi * (step - 1) / steps))
            for i, (p, g) in enumerate(zip(params, grads)):
                if i % 2 == 0:
                    g += L2 * p
                m[i] += (1 - BETAS[0]) * (g - m[i])
                v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g * g
                denom = np.sqrt(v[i]) / np.sqrt(1 - BETAS[1] ** step) + EPS
                p -= lr / (1 - BETAS[0] ** step) * m[i] / denom
        seconds.append(time.perf_counter() - start)
    return params, seconds


def train_torch(x, y, xt, yt, epochs: int, seed: int = 0):
    """The same model, loss, dropout, L2 and schedule in torch (torch.optim.AdamW, fused)."""
    import torch
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Dropout(P_DROP),
              torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Dropout(P_DROP), torch.nn.Linear(HIDDEN, 10)]
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer, (w, b) in zip([l for l in layers if isinstance(l, torch.nn.Linear)], zip(*[iter(init())] * 2)):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
    decayed = [l.weight for l in layers if isinstance(l, torch.nn.Linear)]
    rest = [l.bias for l in layers if isinstance(l, torch.nn.Linear)]
    opt = torch.optim.AdamW([{"params": decayed}, {"params": rest}], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0,
                            fused=True)
    steps = epochs * -(-len(y) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    order, seconds = np.random.default_rng(seed), []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for batch in np.array_split(order.permutation(len(y)), -(-len(y) // BATCH)):
            b = torch.from_numpy(batch)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[b]), ys[b]) + \
                L2 / 2 * sum((w * w).sum() for w in decayed)
            loss.backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xt)).argmax(1) == torch.from_numpy(yt)).float().mean())
    return acc, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="8 epochs")
    args = ap.parse_args()
    epochs = 8 if args.quick else args.epochs
    x, y, xt, yt = digits()
    rows = []
    params, seconds = train_fastopt(x, y, epochs)
    rows.append(("NumPy + fastopt", accuracy(params, xt, yt), seconds))
    params, seconds = train_numpy(x, y, epochs)
    rows.append(("plain NumPy", accuracy(params, xt, yt), seconds))
    try:
        rows.append(("torch", *train_torch(x, y, xt, yt, epochs)))
    except ImportError:
        pass
    print(f"digits: {len(y)} training and {len(yt)} test images, {epochs} epochs of batches of {BATCH}, "
          f"dropout {P_DROP}, L2 {L2}, AdamW with a cosine schedule")
    print(f"{'':<18} {'test accuracy':>13} {'ms per epoch (median)':>22}")
    for name, acc, seconds in rows:
        print(f"{name:<18} {acc:>13.3f} {1e3 * float(np.median(seconds[1:] or seconds)):>22.2f}")
    base = float(np.median(rows[1][2][1:] or rows[1][2]))
    print(f"fastopt's loop takes {float(np.median(rows[0][2][1:] or rows[0][2])) / base:.2f}x the time of plain NumPy's")


if __name__ == "__main__":
    main()
