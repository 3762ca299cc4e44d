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
to the nearest code value) in the same pass: 1 byte per element and 4 per block instead of 4.
"""
from __future__ import annotations

import numpy as np

from fastopt._native import ffi, lib

__all__ = ["QuantizedState", "code"]

_CODES: dict = {}


def code(signed: bool = True) -> np.ndarray:
    """The 256 values of the dynamic code, ascending: in [-1, 1] (signed) or [0, 1] (unsigned)."""
    if signed not in _CODES:
        out = np.empty(256, np.float32)
        lib.fastopt_quant8_code(int(bool(signed)), ffi.from_buffer("float[]", out))
        out.flags.writeable = False
        _CODES[signed] = out
    return _CODES[signed]


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
        as absmax, each value / absmax to the nearest code value (ties to the lower)."""
        flat = np.asarray(values, np.float32).reshape(-1)
        pad = (-flat.size) % self.block_size
        blocks = np.concatenate([flat, np.zeros(pad, np.float32)]).reshape(-1, self.block_size)
        absmax = np.abs(blocks).max(axis=1)
        inv = np.where(absmax > 0, np.float32(1) / np.where(absmax > 0, absmax, 1), 0).astype(np.float32)
        x = (blocks * inv[:, None]).reshape(-1)[:flat.size]
        c = code(self.signed)
        mids = ((c[:-1] + c[1:]) * np.float32(0.5)).astype(np.float32)
        _set(self.absmax, absmax)
        _set(self.codes, np.searchsorted(mids, x, side="left").astype(np.uint8).reshape(self.shape))
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
