"""8-bit optimizer state: blockwise dynamic quantization (Dettmers et al. 2022, "8-bit Optimizers
via Block-wise Quantization"; bitsandbytes' dynamic code).

A :class:`QuantizedState` stands in for a state array (SGD's momentum buffer, Adam/AdamW's
``exp_avgs`` and ``exp_avg_sqs``, Lion's ``exp_avgs``)::

    m = fastopt.QuantizedState(p.shape)                  # signed code: first moments, momenta
    v = fastopt.QuantizedState(p.shape, signed=False)    # unsigned code: second moments
    fastopt.adamw(p, g, m, v, step=t, lr=1e-3)

Element i holds one byte, a code c, and its block of ``block_size`` elements one float32 scale:
value = absmax[i // block_size] * code[c].  The update dequantizes a block into registers and L1,
steps it with the optimizer's own float32 math, and quantizes it back (a new absmax, each value
to the nearest code value, computed without tables: :func:`code_of`) in the same pass: 1 byte per
element and 4 per block instead of 4.
"""
from __future__ import annotations

import numpy as np

from fastopt._native import ffi, lib

__all__ = ["QuantizedState", "code", "code_of"]

_CODES: dict = {}


def code(signed: bool = True) -> np.ndarray:
    """The 256 values of the dynamic code, ascending: in [-1, 1] (signed) or [0, 1] (unsigned).

    In decade i = 0 .. 6, with n = 2^i values (signed) or 2^(i+1) (unsigned), the values
    (1 + (2j + 1) * 4.5 / n) * 10^(i-7) for j < n, computed in float32 as the kernels compute them
    (csrc/kernels/quant8.h; within 1.5 ulp of bitsandbytes' float64 map); then 0 and 1, and the
    signed code's negatives (but -1)."""
    if signed not in _CODES:
        out = np.empty(256, np.float32)
        lib.fastopt_quant8_code(int(bool(signed)), ffi.from_buffer("float[]", out))
        out.flags.writeable = False
        _CODES[signed] = out
    return _CODES[signed]


def _unit(i: np.ndarray) -> np.ndarray:
    """10^(i-7) as the kernels round it: an exact float32 10^i, chosen by the bits of i, times 1e-7."""
    f = np.float32
    ten = np.where(i & 1, f(10), f(1)) * np.where(i & 2, f(100), f(1)) * np.where(i & 4, f(10000), f(1))
    return (ten.astype(f) * f(1e-7)).astype(f)


def code_of(x, signed: bool = True) -> np.ndarray:
    """The codes (uint8) of x in [-1, 1] (or [0, 1]): the nearest code value, except within float32
    rounding of a midpoint between two, where either may come.  The float32 arithmetic of
    csrc/kernels/quant8.h, step for step: x's decade i (10^(i-7) <= |x|), its place u there in units
    of the spacing (values at u = j + 0.5), j = trunc(u), one down below the midpoint to the decade
    underneath (u < 0.2; to 0 in decade 0), one up from the midpoint to 1.  NaN: code 255."""
    f = np.float32
    x = np.asarray(x, f)
    d = 0 if signed else 1
    y = np.abs(x) if signed else np.maximum(x, f(0))
    i = sum((y >= _unit(np.int32(k))).astype(np.int32) for k in range(1, 7))
    n = np.left_shift(1, i + d).astype(np.int32)
    scale = np.full(x.shape, f(1e7), f)
    for bit, factor in ((1, f(0.1)), (2, f(0.01)), (4, f(1e-4))):
        scale = np.where(i & bit, scale * factor, scale).astype(f)
    with np.errstate(invalid="ignore"):
        u = ((y * scale).astype(f) - f(1)) * (f(1) / f(9) * n.astype(f))
        j = np.minimum(np.where(u > 0, u, f(0)).astype(np.int32), n - 1)
    low = np.where(i == 0, f(1.75 / 9) if signed else f(1.25 / 9), f(0.2))
    p = (n - (1 << d)) + j - (u < low) + ((i == 6) & (u >= n.astype(f) - f(0.25)))
    c = np.where(x >= 0, 128 + p, 126 - np.minimum(p, 126)) if signed else 1 + p
    return np.where(np.isnan(x), 255, c).astype(np.uint8)


class QuantizedState:
    """An 8-bit optimizer state array: ``codes`` (uint8, the param's shape) and ``absmax`` (float32,
    one per block of block_size elements); zeros to start.

    Args:
      shape: the param's shape.
      block_size: 256 or 2048 elements per scale.
      signed: the signed code (momenta, first moments) or the unsigned one (second moments, >= 0).
      like: a GPU array (torch CUDA tensor, CuPy or Numba device array) to keep the state beside,
        on its device and in its framework; None for NumPy arrays.
    """

    def __init__(self, shape, block_size: int = 256, signed: bool = True, like=None):
        if block_size not in (256, 2048):
            raise ValueError(f"QuantizedState: block_size must be 256 or 2048, got {block_size}")
        self.shape = tuple(np.broadcast_shapes(shape)) if not isinstance(shape, int) else (shape,)
        self.block_size, self.signed = block_size, bool(signed)
        size = int(np.prod(self.shape))
        self.codes = np.full(self.shape, int(np.searchsorted(code(signed), 0.0)), np.uint8)
        self.absmax = np.zeros(-(-size // block_size), np.float32)
        if like is not None:
            from fastopt.cuda._arrays import like as beside
            self.codes, self.absmax = beside(self.codes, like), beside(self.absmax, like)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size + 4 * int(np.prod(self.absmax.shape))

    def dequantize(self) -> np.ndarray:
        """The float32 values (NumPy, also for state on a GPU)."""
        flat = code(self.signed)[_host(self.codes).reshape(-1)]
        scales = np.repeat(_host(self.absmax), self.block_size)[:flat.size]
        return (scales * flat).reshape(self.shape)

    def quantize_(self, values) -> "QuantizedState":
        """Stores values (NumPy; the reference of what the kernels do): per block the largest |value|
        as absmax, and each value / absmax to its code (:func:`code_of`)."""
        flat = np.asarray(values, np.float32).reshape(-1)
        pad = (-flat.size) % self.block_size
        blocks = np.concatenate([flat, np.zeros(pad, np.float32)]).reshape(-1, self.block_size)
        absmax = np.abs(blocks).max(axis=1)
        inv = np.where(absmax > 0, np.float32(1) / np.where(absmax > 0, absmax, 1), 0).astype(np.float32)
        x = (blocks * inv[:, None]).reshape(-1)[:flat.size]
        _set(self.absmax, absmax)
        _set(self.codes, code_of(x, self.signed).reshape(self.shape))
        return self

    def copy(self) -> "QuantizedState":
        other = QuantizedState.__new__(QuantizedState)
        other.shape, other.block_size, other.signed = self.shape, self.block_size, self.signed
        other.codes, other.absmax = _copy(self.codes), _copy(self.absmax)
        return other

    def __repr__(self) -> str:
        return (f"QuantizedState(shape={self.shape}, block_size={self.block_size}, "
                f"{'signed' if self.signed else 'unsigned'}, {self.nbytes} bytes)")


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    from fastopt.cuda._arrays import to_host
    return to_host(a)


def _set(dst, host: np.ndarray) -> None:
    if isinstance(dst, np.ndarray):
        dst[...] = host
    else:
        from fastopt.cuda._arrays import copy_from_host
        copy_from_host(dst, host)


def _copy(a):
    if isinstance(a, np.ndarray):
        return a.copy()
    from fastopt.cuda._arrays import like, to_host
    return like(to_host(a).copy(), a)
