"""The rest of a training step: dropout and the gradients of the two common losses, each one pass
over memory in C (SIMD, threads) or one CUDA launch, for NumPy arrays, PyTorch tensors (CPU or CUDA)
and GPU arrays.

    y = fastopt.dropout(h, 0.5, seed=0, counter=step)                     # forward
    dh = fastopt.dropout_backward(dy, 0.5, seed=0, counter=step)          # the same mask, regenerated
    loss, dlogits = fastopt.softmax_cross_entropy(logits, labels)         # mean over rows
    loss, dpred = fastopt.mse_grad(pred, target)

Arrays are C-contiguous, float32, float64, float16 or bfloat16 (the math in float32 for 16-bit,
in float64 for float64).  Dropout's mask is a pure function of (seed, counter, element index):
the same bits on every backend, thread count and SIMD level, so the backward pass regenerates it
instead of storing it.  Losses sum in double, deterministically; on a GPU they return the loss as
a float, which waits for the kernel.  Bad arguments raise before anything is written.
"""
from __future__ import annotations

import numpy as np

from fastopt import _calls
from fastopt._arrays import bump_versions, gather, host_view, integer, real, torch_written
from fastopt._native import check, ffi, lib

__all__ = ["dropout", "dropout_backward", "mse_grad", "softmax_cross_entropy"]

_REDUCTIONS = {"mean": lib.FASTOPT_MEAN, "sum": lib.FASTOPT_SUM}


def dropout(x, p, *, seed, counter, out=None, mask=None, stream=None):
    """Inverted dropout: each element kept with probability 1 - p and scaled by 1 / (1 - p)::

        out = x * (kept ? 1 / (1 - p) : 0)     (p = 1: out = x * 0)

    Element e is kept when its 32-bit word of Philox-4x32-10 keyed by ``seed`` and counted by
    ``counter`` is >= min(round(p * 2^32), 2^32 - 1), and p < 1 (:func:`fastopt.reference.dropout`
    specifies every bit): the
    same (seed, counter) gives the same mask on every backend.  Use a new counter each step (the
    step number) and the same pair in :func:`dropout_backward`.

    Args:
      x: the activations (not written unless ``out`` is x).
      p: the probability of dropping an element, in [0, 1].
      seed: an integer in [0, 2^64): the key.
      counter: an integer in [0, 2^64): which mask of the key's.
      out: where to write (x's shape and dtype; may be x itself); None: a new array like x.
      mask: optional uint8 or bool array of x's shape (same device): 1 where kept, 0 where dropped.
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      out.
    """
    fn = "dropout"
    p, seed, counter = real(fn, "p", p), _word(fn, "seed", seed), _word(fn, "counter", counter)
    out = _output(fn, "out", out, x)
    if _calls.on_gpu(x):
        check(lib.fastopt_dropout(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, ffi.NULL, p, seed, counter), fn)
        from fastopt.cuda import _launch
        _launch.dropout(fn, x, out, mask, p, seed, counter, stream)
        return out
    written = torch_written(fn, [("out", out, True), ("mask", mask, True)])
    dtype, (numel,), (xs, outs), _ = gather(fn, [("x", x, False), ("out", out, True)])
    mask_buffer = ffi.NULL if mask is None else ffi.from_buffer("uint8_t[]", _mask_view(fn, mask, x))
    check(lib.fastopt_dropout(dtype, numel, xs[0], outs[0], mask_buffer, p, seed, counter), fn)
    bump_versions(written)
    return out


def dropout_backward(grad, p, *, seed, counter, out=None, stream=None):
    """The gradient through :func:`dropout` with the same p, seed and counter: the same mask
    regenerated, ``out = grad * (kept ? 1 / (1 - p) : 0)``.

    Args:
      grad: the gradient of the loss with respect to dropout's output.
      p, seed, counter: those of the forward call.
      out: where to write (grad's shape and dtype; may be grad itself); None: a new array.
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      out, the gradient with respect to dropout's input.
    """
    return dropout(grad, p, seed=seed, counter=counter, out=out, stream=stream)


def mse_grad(pred, target, *, reduction="mean", out=None, stream=None):
    """The mean squared error and its gradient in one pass (torch.nn.functional.mse_loss)::

        loss = sum((pred - target)^2) / n          ("sum": not divided)
        grad = (pred - target) * 2 / n             ("sum": * 2)

    Args:
      pred: predictions (any shape).
      target: targets, pred's shape and dtype.
      reduction: "mean" or "sum".
      out: where to write the gradient (pred's shape and dtype; may be pred); None: a new array.
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      (loss as a float, summed in double; grad).
    """
    fn = "mse_grad"
    code = _reduction(fn, reduction)
    out = _output(fn, "out", out, pred)
    loss = ffi.new("double *")
    if _calls.on_gpu(pred):
        check(lib.fastopt_mse_grad(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, ffi.NULL, code, loss), fn)
        from fastopt.cuda import _launch
        return _launch.mse_grad(fn, pred, target, out, reduction == "mean", stream), out
    written = torch_written(fn, [("out", out, True)])
    dtype, (numel,), (preds, targets, outs), _ = gather(fn, [("pred", pred, False), ("target", target, False),
                                                           ("out", out, True)])
    check(lib.fastopt_mse_grad(dtype, numel, preds[0], targets[0], outs[0], code, loss), fn)
    bump_versions(written)
    return loss[0], out


def softmax_cross_entropy(logits, labels, *, label_smoothing=0.0, ignore_index=-100, reduction="mean", out=None,
                          stream=None):
    """Softmax cross-entropy over the rows of logits and its gradient, numerically stable, in one
    pass over the logits (torch.nn.functional.cross_entropy's rules, label smoothing included)::

        t_j = label_smoothing / classes + (1 - label_smoothing) [j == label]
        loss_row = logsumexp(x) - sum_j t_j x_j          grad_row = (softmax(x) - t) / rows counted
        loss = mean of loss_row over the rows whose label is not ignore_index ("sum": their sum,
        and the gradient not divided)

    Args:
      logits: rows x classes scores.
      labels: rows integers, each in [0, classes) or ignore_index (int64 on a GPU; other integer
        dtypes are converted on the host).
      label_smoothing: in [0, 1].
      ignore_index: the label of rows that count for nothing (zero gradient).
      reduction: "mean" or "sum".
      out: where to write the gradient (logits' shape and dtype; may be logits itself); None: a new
        array.
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      (loss as a float, summed in double; grad).  A mean over no counted rows is NaN.
    """
    fn = "softmax_cross_entropy"
    code = _reduction(fn, reduction)
    smoothing, ignore = real(fn, "label_smoothing", label_smoothing), integer(fn, "ignore_index", ignore_index)
    if not -2 ** 63 <= ignore < 2 ** 63:
        raise ValueError(f"fastopt.{fn}: ignore_index must fit in int64, got {ignore}")
    shape = getattr(logits, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"fastopt.{fn}: logits must be 2-D (rows x classes), got "
                         f"{'shape ' + str(tuple(shape)) if shape is not None else type(logits).__name__}")
    rows, classes = (int(d) for d in shape)
    out = _output(fn, "out", out, logits)
    loss = ffi.new("double *")
    if _calls.on_gpu(logits):
        check(lib.fastopt_softmax_cross_entropy(lib.FASTOPT_FLOAT32, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, smoothing,
                                                ignore, code, loss), fn)
        from fastopt.cuda import _launch
        return _launch.softmax_cross_entropy(fn, logits, labels, out, smoothing, ignore, reduction == "mean",
                                             stream), out
    written = torch_written(fn, [("out", out, True)])
    dtype, _, (xs, outs), _ = gather(fn, [("logits", logits, False), ("out", out, True)])
    labels = _labels(fn, labels, rows)
    check(lib.fastopt_softmax_cross_entropy(dtype, rows, classes, xs[0], ffi.from_buffer("int64_t[]", labels),
                                            outs[0], smoothing, ignore, code, loss), fn)
    bump_versions(written)
    return loss[0], out


# ---- arguments ----

def _word(fn: str, name: str, value) -> int:
    """An integer in [0, 2^64)."""
    value = integer(fn, name, value)
    if not 0 <= value < 2 ** 64:
        raise ValueError(f"fastopt.{fn}: {name} must be in [0, 2**64), got {value}")
    return value


def _reduction(fn: str, reduction) -> int:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"fastopt.{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    return _REDUCTIONS[reduction]


def _output(fn: str, name: str, out, like):
    """out, or a new array like `like` (same kind, device, shape and dtype) when it is None."""
    if out is not None:
        return out
    if type(like).__name__ == "bfloat16" and hasattr(like, "array"):  # fastopt.cuda.bfloat16: the same wrapper
        return type(like)(_output(fn, name, None, like.array))
    if isinstance(like, np.ndarray):
        return np.empty_like(like)
    module = type(like).__module__
    if module.startswith("torch"):
        import torch
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    if module.startswith("cupy"):
        import cupy
        return cupy.empty_like(like)
    if hasattr(like, "__cuda_array_interface__") or type(like).__name__ == "FakeCUDAArray":
        from numba import cuda
        return cuda.device_array(like.shape, like.dtype)
    raise TypeError(f"fastopt.{fn}: the input must be an array, got {type(like).__name__}")


def _mask_view(fn: str, mask, x) -> np.ndarray:
    """The mask as a writable uint8 NumPy array of x's shape (a bool array through its bytes)."""
    m = host_view(mask)
    if not isinstance(m, np.ndarray) or m.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"fastopt.{fn}: mask must be a uint8 or bool array in host memory, got "
                        f"{getattr(m, 'dtype', type(m).__name__)}")
    shape = tuple(getattr(x, "shape", ()))
    if m.shape != shape:
        raise ValueError(f"fastopt.{fn}: mask has shape {m.shape}, expected {shape} (the shape of x)")
    if not (m.flags.c_contiguous and m.flags.writeable):
        raise ValueError(f"fastopt.{fn}: mask must be C-contiguous and writable")
    return m.view(np.uint8)


def _labels(fn: str, labels, rows: int) -> np.ndarray:
    """Integer labels as a C-contiguous int64 NumPy array of length rows (converted if need be)."""
    a = host_view(labels)
    if not isinstance(a, np.ndarray):
        a = np.asarray(a) if isinstance(a, (list, tuple)) else a
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        raise TypeError(f"fastopt.{fn}: labels must be an array of integers, got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.shape != (rows,):
        raise ValueError(f"fastopt.{fn}: labels has shape {a.shape}, expected ({rows},) (one per row of logits)")
    if a.dtype == np.uint64 and a.size and a.max() >= 2 ** 63:
        raise ValueError(f"fastopt.{fn}: labels has a value >= 2**63")
    return np.ascontiguousarray(a, np.int64)
