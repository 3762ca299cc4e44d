"""Turns the array arguments of a call into what the C API takes, checking what C cannot see.

C checks pointers, alignment, overlap and hyper-parameters itself (and names the argument); here we
check types, dtypes, shapes, contiguity and writability, which only the Python objects carry.
Everything is checked before anything is written.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from fastopt._native import ffi, lib
from fastopt.cuda._arrays import is_gpu_array

try:  # NumPy's bfloat16 comes from ml_dtypes (JAX's); without it, bfloat16 arrays cannot exist here
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BFLOAT16 = None
FLOAT32 = np.dtype(np.float32)
C_DTYPES = {FLOAT32: lib.FASTOPT_FLOAT32, np.dtype(np.float64): lib.FASTOPT_FLOAT64,
            np.dtype(np.float16): lib.FASTOPT_FLOAT16}
if BFLOAT16 is not None:
    C_DTYPES[BFLOAT16] = lib.FASTOPT_BFLOAT16
SUPPORTED = "float32, float64, float16" + (", bfloat16" if BFLOAT16 is not None else "")
_from_buffer = ffi.from_buffer


def pointer(a: np.ndarray):
    """The C pointer to a's data (16-bit floats through their bits: the buffer protocol has no bfloat16)."""
    return _from_buffer(a.view(np.uint16) if a.dtype.itemsize == 2 else a)


def as_list(fn: str, name: str, value) -> tuple:
    """One array, or a list/tuple of arrays, as a non-empty sequence."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"fastopt.{fn}: {name} is an empty list")
        return value
    if value is None:
        raise TypeError(f"fastopt.{fn}: {name} is None; an array or a list of arrays is required")
    return (value,)


def _problem(a, dtype, shape, written: bool, first: str = "params", whose: str | None = None):
    """(exception type, what is wrong) with `a` as an array of this dtype (and shape, unless None);
    whose: why that dtype (default: it is the dtype of `first`)."""
    if not isinstance(a, np.ndarray):
        if is_gpu_array(a):
            return TypeError, f"is on a GPU but {first} is in host memory; all arrays of a call must be on one device"
        return TypeError, f"must be a numpy.ndarray, got {type(a).__name__}"
    if a.dtype != dtype:
        return TypeError, f"has dtype {a.dtype}, expected {dtype} ({whose or 'the dtype of ' + first})"
    if shape is not None and a.shape != shape:
        return ValueError, f"has shape {a.shape}, expected {shape} (the shape of its {first} entry)"
    flags = a.flags
    if not flags.c_contiguous:
        return ValueError, "is not C-contiguous"
    if not flags.aligned:
        return ValueError, "is not aligned to its element size"
    if written and not flags.writeable:
        return ValueError, "is read-only"
    return None


UNUSED = object()  # a role that a call does not use: its pointer list is NULL (None is a user's value)


def gather(fn: str, roles):
    """Validates a call's arrays and returns (dtype code, numel list, one pointer list per role,
    state dtype code).

    roles: (name, array or list of arrays, written[, kind]) tuples; the first is params, which sets
    the list length, the dtype and the shape that every other role's entries must match.  Roles of
    kind "state" share a dtype of their own (the first one's: fastopt_common.state_dtype), roles of
    kind "master" are float32.  A role whose value is UNUSED gets ffi.NULL.
    """
    fast = _gather_single(roles)
    return fast if fast is not None else _gather(fn, roles)


def _gather_single(roles):
    """gather() for one well-formed array per role, the latency-critical case; None otherwise.

    Per array: one flags look-up, and a pointer from the buffer protocol (the writability it would
    check is in the flags already).
    """
    first = roles[0][1]
    if type(first) is not np.ndarray:
        return None
    dtype, shape = first.dtype, first.shape
    code = C_DTYPES.get(dtype)
    if code is None:
        return None
    pointers = []
    for role in roles:
        a, written = role[1], role[2]
        if a is UNUSED:
            pointers.append(ffi.NULL)
            continue
        if type(a) is not np.ndarray or a.dtype != dtype or (a is not first and a.shape != shape) or \
                (len(role) > 3 and role[3] != "state"):  # state in the params' dtype, or the full path
            return None
        flags = a.flags
        if not (flags.carray if written else flags.c_contiguous and flags.aligned):
            return None
        pointers.append([_from_buffer(a) if dtype.itemsize != 2 else pointer(a)])
    return code, [first.size], pointers, code


def host_view(a):
    """A zero-copy NumPy view of a PyTorch CPU tensor (float16/bfloat16 through their bits), so that
    torch CPU tensors go wherever NumPy arrays do; anything else is returned as it is."""
    if not type(a).__module__.startswith("torch") or getattr(a, "is_cuda", True) or a.device.type != "cpu":
        return a
    import torch
    t = a.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().view(BFLOAT16 if t.dtype == torch.bfloat16 else np.float16)
    return t.numpy()


def _host_list(fn: str, name: str, value) -> list:
    return [host_view(a) for a in as_list(fn, name, value)]


def _gather(fn: str, roles):
    first = roles[0][0]
    params = _host_list(fn, first, roles[0][1])
    n = len(params)
    dtype = getattr(params[0], "dtype", None)
    if dtype not in C_DTYPES:
        where = f"{first}[0]" if isinstance(roles[0][1], (list, tuple)) else first
        if isinstance(params[0], numbers.Number):
            raise TypeError(f"fastopt.{fn}: {first} must be an array or a list of arrays, got a list of "
                            f"{type(params[0]).__name__}s: an update writes in place, which a Python list of "
                            f"numbers cannot receive; use a NumPy array (np.asarray(...)) or a tensor")
        if not isinstance(params[0], np.ndarray):
            raise TypeError(f"fastopt.{fn}: {where} must be a numpy.ndarray, got {type(params[0]).__name__}")
        raise TypeError(f"fastopt.{fn}: {where} has dtype {dtype}; supported: {SUPPORTED}")
    pointers, state = [], None
    for r, role in enumerate(roles):
        name, value, written = role[:3]
        kind = role[3] if len(role) > 3 else None
        if value is UNUSED:
            pointers.append(ffi.NULL)
            continue
        arrays = _host_list(fn, name, value)
        if len(arrays) != n:
            raise ValueError(f"fastopt.{fn}: {name} has {len(arrays)} arrays, params has {n}")
        expected, whose = dtype, None
        if kind == "master":
            expected, whose = FLOAT32, "master_params are float32"
        elif kind == "q8":
            expected, whose, state = np.dtype(np.uint8), "8-bit state codes", "q8"
        elif kind == "state":
            if state is None:
                state = getattr(arrays[0], "dtype", dtype)
                if state not in C_DTYPES:
                    state = dtype
            expected, whose = state, "the dtype of the first state array"
        for i, a in enumerate(arrays):
            bad = _problem(a, expected, None if r == 0 else params[i].shape, written, first, whose)
            if bad:
                where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                raise bad[0](f"fastopt.{fn}: {where} {bad[1]}")
        pointers.append([pointer(a) for a in arrays])
    state_code = lib.FASTOPT_QUANT8 if state == "q8" else C_DTYPES[state if state is not None else dtype]
    return C_DTYPES[dtype], [p.size for p in params], pointers, state_code


def torch_written(fn: str, roles, extra=None) -> list:
    """The PyTorch tensors a call writes, checked as torch checks an in-place op: a tensor that
    requires grad is written only under torch.no_grad() (else autograd would not see the write).
    roles: (name, value, written, ...) as gather takes them; extra: master_params.  A call whose
    params are not torch tensors has none (a NumPy call pays one type check)."""
    first = roles[0][1]
    first = first[0] if isinstance(first, (list, tuple)) and first else first
    if not type(first).__module__.startswith("torch"):
        return []
    import torch
    out = []
    for name, value, written, *_ in list(roles) + ([("master_params", extra, True)] if extra is not None else []):
        if not written or value is UNUSED or value is None:
            continue
        for i, t in enumerate(value if isinstance(value, (list, tuple)) else (value,)):
            if isinstance(t, torch.Tensor):
                if t.requires_grad and torch.is_grad_enabled():
                    where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                    raise RuntimeError(f"fastopt.{fn}: {where} requires grad; update it under torch.no_grad(), as "
                                       f"torch's in-place operations require (a leaf that requires grad cannot be "
                                       f"written in place where autograd records)")
                if not t.is_inference():  # (an inference tensor has no version to bump)
                    out.append(t)
    return out


def bump_versions(tensors: list) -> None:
    """Tells autograd that the tensors were written in place, as torch's in-place ops do: a graph
    that saved one of them before the write then refuses to backpropagate through it."""
    if tensors:
        import torch
        torch.autograd.graph.increment_version(tensors)


def array_or_list(fn: str, name: str, value):
    """An optional array argument: None, or an array or list of arrays (of any kind a call takes:
    NumPy, a torch tensor, a GPU array, an 8-bit QuantizedState); anything else is a TypeError, not
    a value silently ignored."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else (value,)
    for a in items:
        if not (isinstance(a, np.ndarray) or type(a).__module__.startswith("torch") or is_gpu_array(a)
                or type(a).__name__ == "QuantizedState"):
            raise TypeError(f"fastopt.{fn}: {name} must be an array or a list of arrays, got {type(a).__name__}")
    return value


def real(fn: str, name: str, value) -> float:
    """A real-valued hyper-parameter (int, float or NumPy scalar; not bool)."""
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    raise TypeError(f"fastopt.{fn}: {name} must be a real number, got {type(value).__name__}")


def integer(fn: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"fastopt.{fn}: {name} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"fastopt.{fn}: {name} must be an integer, got {type(value).__name__}") from None


def pair(fn: str, name: str, value) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"fastopt.{fn}: {name} must be a pair of real numbers, got {value!r}")
    return real(fn, f"{name}[0]", value[0]), real(fn, f"{name}[1]", value[1])
