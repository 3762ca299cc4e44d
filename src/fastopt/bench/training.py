"""The training-loop kernels against NumPy and torch: dropout (its forward; the backward is the same
call), the mean squared error with its gradient, and softmax cross-entropy with its gradient.

    fastopt-bench --training [--dtype float32] [--repeats 7]

Rows have fastopt-bench's columns, the kernel in place of the optimizer: GB/s counts the bytes a
kernel must move (dropout: x read, y written; MSE: pred and target read, grad written; cross-entropy:
logits read, grad written), and the roofline probe is fastopt's STREAM probe over one array in and
one in-out.  fastopt's results are checked against fastopt.reference (dropout bit for bit, its
masks specified); NumPy's and torch's dropout draw other masks and are checked for their keep
rate, their losses against the reference.
"""
from __future__ import annotations

import numpy as np

import fastopt
from fastopt.bench import measure
from fastopt.bench.cases import parse_size, torch_available

KERNELS = ("dropout", "mse_grad", "softmax_cross_entropy")
SIZES = {"dropout": ("64k", "1m", "8m"), "mse_grad": ("64k", "1m", "8m"),
         "softmax_cross_entropy": ("256x10", "4096x1000", "512x32000")}
P = 0.1  # dropout's probability
BYTES = {"dropout": 2, "mse_grad": 3, "softmax_cross_entropy": 2}  # arrays moved, in elements


def shape_of(kernel: str, size: str) -> tuple:
    if kernel == "softmax_cross_entropy":
        rows, classes = size.lower().split("x")
        return parse_size(rows), parse_size(classes)
    return (parse_size(size),)


def _arrays(kernel: str, dtype, shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
    if kernel == "softmax_cross_entropy":
        return x, rng.integers(0, shape[1], shape[0])
    return x, rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def steps(kernel: str, dtype: str, shape) -> dict:
    """{backend: (step function, check of its result: True/False)}."""
    x, other = _arrays(kernel, dtype, shape)
    out = np.empty_like(x)
    np_dtype = np.dtype(dtype)
    if kernel == "dropout":
        rng = np.random.default_rng(1)
        scale = np_dtype.type(1 / (1 - P))
        want = fastopt.reference.dropout(x, P, seed=1, counter=2)

        def numpy_dropout():
            np.multiply(x, (rng.random(x.shape, dtype=np.float32) >= P) * scale, out=out)
        fns = {"fastopt": (lambda: fastopt.dropout(x, P, seed=1, counter=2, out=out),
                           lambda: np.array_equal(out, want)),
               "numpy": (numpy_dropout, lambda: _keeps(out, x))}
        if torch_available():
            import torch
            xt = torch.from_numpy(x)
            fns["torch"] = (lambda: out.__setitem__(slice(None), torch.nn.functional.dropout(xt, P).numpy()),
                            lambda: _keeps(out, x))
    elif kernel == "mse_grad":
        def numpy_mse():
            d = np.subtract(x, other, out=out)
            loss = float(np.dot(d.astype(np.float64), d)) / d.size
            d *= np_dtype.type(2 / d.size)
            return loss
        fns = _loss_backends(kernel, x, other, out, dtype, numpy_mse, "mse_loss")
    else:
        rows = np.arange(x.shape[0])

        def numpy_xent():
            z = x - x.max(axis=1, keepdims=True)
            np.exp(z, out=out)
            total = out.sum(axis=1, keepdims=True)
            out[...] /= total
            out[rows, other] -= 1
            out[...] /= x.shape[0]
            return float(np.mean(np.log(total[:, 0]) - z[rows, other]))
        fns = _loss_backends(kernel, x, other, out, dtype, numpy_xent, "cross_entropy")
    fns["roofline"] = (_probe(x, out), None)
    return fns


def _loss_backends(kernel: str, x, other, out, dtype: str, numpy_step, torch_name: str) -> dict:
    """A loss's backends, each writing the gradient into out and keeping its loss, checked
    against fastopt.reference: fastopt, NumPy (numpy_step returns the loss), and torch's
    functional loss with autograd (torch.nn.functional.<torch_name>)."""
    want_loss, want = getattr(fastopt.reference, kernel)(x, other)
    loss = [None]

    def checked(step):
        return (lambda: loss.__setitem__(0, step()), lambda: _close(loss[0], out, want_loss, want, dtype))
    fns = {"fastopt": checked(lambda: getattr(fastopt, kernel)(x, other, out=out)[0]), "numpy": checked(numpy_step)}
    if torch_available():
        import torch
        xt, ot = torch.from_numpy(x).requires_grad_(), torch.from_numpy(other)

        def torch_step():
            xt.grad = None
            value = getattr(torch.nn.functional, torch_name)(xt, ot)
            value.backward()
            out[...] = xt.grad.numpy()
            return value.item()
        fns["torch"] = checked(torch_step)
    return fns


def _keeps(out, x) -> bool:
    """Dropout's result looks right: zeros where dropped, a keep rate within 6 sigma of 1 - P."""
    kept = (out != 0).mean()
    return abs(kept - (1 - P)) < 6 * np.sqrt(P * (1 - P) / x.size) + 1 / x.size


def _close(loss, grad, want_loss, want, dtype) -> bool:
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == "float32" else dict(rtol=1e-9, atol=1e-12)
    return np.allclose(loss, want_loss, **tol) and np.allclose(grad, want, **tol)


def _probe(x, out):
    """fastopt's STREAM probe: x read, out read and written (trivial math)."""
    from fastopt._arrays import C_DTYPES
    from fastopt._native import ffi, lib
    dtype, n, src, dst = C_DTYPES[x.dtype], x.size, ffi.from_buffer(x), [ffi.from_buffer(out)]
    return lambda: lib.fastopt_stream(dtype, n, src, 1, dst)


def run_case(kernel: str, dtype: str, size: str, repeats: int, on_sample=None) -> list[dict]:
    """fastopt-bench's rows for one (kernel, dtype, size): every backend checked, then timed."""
    shape = shape_of(kernel, size)
    fns = steps(kernel, dtype, shape)
    wrong = set()
    for name, (fn, check) in fns.items():
        if check is not None:
            fn()
            if not check():
                wrong.add(name)
    samples = measure.interleaved({name: fn for name, (fn, _) in fns.items()}, repeats, on_sample=on_sample)
    numel, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    case = {"optimizer": kernel, "dtype": dtype, "problem": size, "tensors": 1}
    # (the probe reads one array and reads and writes one)
    return measure.rows_of(samples, case, numel, wrong, BYTES[kernel] * itemsize * numel, 3 * itemsize * numel)
