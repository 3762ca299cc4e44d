"""fastopt: fused optimizer-update kernels (C with SIMD and threads), torch.optim semantics.

    import fastopt
    fastopt.adamw(params, grads, exp_avgs, exp_avg_sqs, step=1, lr=1e-3)

See ``fastopt.reference`` for the NumPy specification each kernel is tested against.
"""
from __future__ import annotations

import os as _os
import warnings as _warnings

from fastopt import optim, reference, schedules, sweep
from fastopt.quant8 import QuantizedState
from fastopt._native import c_string as _c_string
from fastopt._native import check as _check
from fastopt._native import ffi as _ffi
from fastopt._native import lib as _lib
from fastopt._paths import get_cmake_dir, get_include, get_library_dir
from fastopt.functional import (adagrad, adam, adamax, adamw, clip_grad_norm, elastic_net_grad, global_norm,
                                l1_grad, l2_grad, lamb, lion, nadam, prepare, radam, rmsprop, sgd, unscale)
from fastopt.training import dropout, dropout_backward, mse_grad, softmax_cross_entropy

__version__ = _c_string(_lib.fastopt_version())
__all__ = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam", "adamax", "lion", "lamb", "prepare",
           "l2_grad", "l1_grad", "elastic_net_grad", "global_norm", "clip_grad_norm", "unscale",
           "dropout", "dropout_backward", "mse_grad", "softmax_cross_entropy",
           "info", "set_num_threads", "get_num_threads", "set_isa", "optim", "schedules", "sweep", "reference",
           "get_include", "get_library_dir", "get_cmake_dir", "QuantizedState", "__version__"]


def info() -> dict:
    """The library's version, the SIMD level in use, the levels available here, the thread count,
    where the C library is, and whether the CUDA backend can run here (a GPU, or Numba's simulator,
    with numba-cuda installed)."""
    from fastopt import cuda
    return {
        "version": __version__,
        "isa": _c_string(_lib.fastopt_isa()),
        "isas_available": _c_string(_lib.fastopt_isas_available()).split(","),
        "num_threads": _lib.fastopt_get_num_threads(),
        "library_dir": get_library_dir(),
        "cuda": cuda.available(),
    }


def __getattr__(name: str):
    """``fastopt.torch`` after ``import fastopt``: imported on first use (it imports torch)."""
    if name == "torch":
        import importlib
        return importlib.import_module("fastopt.torch")
    raise AttributeError(f"module 'fastopt' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Sets how many threads one call may use (default: FASTOPT_NUM_THREADS, else all cores)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"fastopt.set_num_threads: n must be an int, got {type(n).__name__}")
    _check(_lib.fastopt_set_num_threads(n), "set_num_threads")


def get_num_threads() -> int:
    """How many threads one call may use."""
    return _lib.fastopt_get_num_threads()


def set_isa(name: str | None = None) -> None:
    """Forces the SIMD level named by name ("baseline", "avx2", "avx512", "neon"), or the best one for
    None or "auto"."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"fastopt.set_isa: name must be a str or None, got {type(name).__name__}")
    _check(_lib.fastopt_set_isa(_ffi.NULL if name is None else name.encode()), "set_isa")


_forced = _os.environ.get("FASTOPT_ISA")
if _forced and _forced != "auto" and _c_string(_lib.fastopt_isa()) != _forced:
    _warnings.warn(f"FASTOPT_ISA={_forced} is not available here; using {_c_string(_lib.fastopt_isa())}",
                   RuntimeWarning, stacklevel=2)
