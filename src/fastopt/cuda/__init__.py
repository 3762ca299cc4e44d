"""fastopt on NVIDIA GPUs: the same functions, CUDA kernels written in Numba (``pip install fastopt[cuda]``).

Call any fastopt function with GPU arrays (PyTorch CUDA tensors, CuPy arrays, Numba device arrays,
anything with ``__cuda_array_interface__`` or a CUDA ``__dlpack__``) and it runs here::

    fastopt.adamw(params, grads, exp_avgs, exp_avg_sqs, step=t, lr=1e-3)   # torch CUDA tensors

- One launch updates every tensor of a call (LAMB: three; norms: two): a table of the tensors'
  addresses, not a Python loop of launches.
- Launched on the caller's stream: ``stream=`` if given, else torch's or CuPy's current stream, else
  the stream named in __cuda_array_interface__, else the default stream.  Nothing synchronizes,
  except what returns a host value (:func:`fastopt.global_norm`, :func:`fastopt.clip_grad_norm`,
  :func:`fastopt.unscale` without a ``found_inf`` flag; LAMB with ``max_grad_norm`` reads its norm).
- float32, float64, float16 and bfloat16 params (bfloat16 from torch, DLPack, or a uint16 array
  wrapped in :class:`bfloat16`); math in float32 registers for the 16-bit types (float64 for
  float64), stored back with round-to-nearest-even.  Optimizer state has the params' dtype, or
  float32, or bfloat16 (float64 params: float64 only), as on the CPU; 16-bit params may have
  float32 master copies (``master_params=``) or bfloat16 params stochastic rounding
  (``stochastic_rounding=``), and SGD momentum, Adam/AdamW and Lion take 8-bit state
  (``fastopt.QuantizedState(shape, like=param)``): the same bits as the C kernels.
- Norms and found_inf are deterministic (a fixed reduction tree); a skipped step writes nothing.

On a GPU, every kernel is compiled for all its signatures (107 in all) when fastopt.cuda's kernels
are first imported, and cached on disk (``cache=True``): the first import on a machine takes a
while, later ones load the cache.  Without a GPU, the kernels run under Numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``) and :func:`compile_ptx` builds their PTX.
"""
from __future__ import annotations

import functools

from fastopt.cuda._arrays import bfloat16, is_gpu_array

__all__ = ["bfloat16", "is_gpu_array", "available", "signatures", "compile_ptx", "precompile"]

# (params dtype, state dtype) pairs, with bfloat16 as its uint16 bits
_STORED = [("float32", "float32"), ("float32", "bfloat16"), ("float64", "float64"), ("float16", "float16"),
           ("float16", "float32"), ("float16", "bfloat16"), ("bfloat16", "bfloat16"), ("bfloat16", "float32")]
_Q8_PARAMS = ("float32", "float16", "bfloat16")


def available() -> bool:
    """Whether a CUDA GPU (or Numba's simulator) can run fastopt's kernels here."""
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


def signatures_of(name: str, spec: str) -> list:
    """The argument types kernel `name` is built for, its arguments as `spec` names them (see
    fastopt.cuda._kernels.kernel), once per stored-type combination (8-bit kernels: float32 state)."""
    from numba import types
    bits = {"float32": types.float32, "float64": types.float64, "float16": types.float16,
            "bfloat16": types.uint16}
    arg = {"table": types.int64[:, ::1], "flag": types.int64, "int": types.int64, "vec": types.float64[::1], "mat": types.float64[:, ::1],
           "aux": types.UniTuple(types.int64, 5), "book": types.float32[:, ::1]}
    sigs = set()  # (a kernel without pm or sm: one)
    for p, s in _STORED if "q8" not in name else [(p, "float32") for p in _Q8_PARAMS]:
        marker = {"pm": bits[p], "sm": bits[s]}
        sigs.add(tuple(types.UniTuple(types.float64, int(a[1:])) if a[0] == "k" else marker.get(a) or arg[a]
                       for a in spec.split()))
    return sorted(sigs, key=str)


@functools.cache
def signatures() -> dict:
    """{kernel name: [argument types, ...]}: every stored-type combination each kernel is built for."""
    from fastopt.cuda import _kernels
    return {name: signatures_of(name, spec) for name, spec in _kernels.ARGS.items()}


def compile_ptx(cc=(9, 0), every_signature: bool = True) -> dict:
    """{(kernel name, argument types): PTX} for every kernel and signature (or the first signature
    of each kernel), for compute capability cc; works without a GPU (what CI runs to prove the
    kernels build)."""
    from unittest import mock

    from numba import cuda
    from numba.cuda import dispatcher

    from fastopt.cuda import _kernels

    class Device:  # device functions ask the current device for its capability; there may be none
        compute_capability = tuple(cc)
    out = {}
    with mock.patch.object(dispatcher, "get_current_device", lambda: Device):
        for name, sigs in signatures().items():
            for sig in sigs if every_signature else sigs[:1]:
                out[name, sig] = cuda.compile_ptx(getattr(_kernels, name).py_func, sig, cc=tuple(cc))[0]
    return out


def precompile() -> int:
    """Compiles (or loads from the disk cache) every kernel for every signature on the current GPU
    now rather than at the first GPU call; returns how many."""
    from fastopt.cuda import _kernels
    return sum(len(getattr(_kernels, name).overloads) for name in signatures())
