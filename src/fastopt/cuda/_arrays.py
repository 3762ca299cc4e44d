"""GPU arrays as fastopt sees them: an address, a size, a shape, a dtype and a device, read from the
object's own protocol without copying, and the stream a call launches on.

Accepted: PyTorch CUDA tensors (any dtype, bfloat16 included), objects with
``__cuda_array_interface__`` (CuPy, Numba device arrays), objects whose ``__dlpack_device__`` is a
CUDA device (their ``__dlpack__`` capsule is read, not consumed), a uint16 array wrapped in
:func:`fastopt.cuda.bfloat16` (for protocols without a bfloat16 type), and, under Numba's CUDA
simulator, its device arrays.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np

DTYPES = ("float32", "float64", "float16", "bfloat16")
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "uint8": 1}
_TYPESTR = {"<f4": "float32", "<f8": "float64", "<f2": "float16"}
KDL_CUDA, KDL_CUDA_MANAGED = 2, 13


class View(NamedTuple):
    address: int
    size: int
    shape: tuple
    dtype: str           # one of DTYPES, or what the array has (for the error)
    device: int
    readonly: bool
    contiguous: bool
    framework: str       # "torch", "cupy", "numba", "dlpack", "simulator", "other": picks the stream
    stream: int | None   # the producer's stream from __cuda_array_interface__, if it gave one


class bfloat16:
    """Marks a uint16 GPU array (e.g. a Numba or CuPy view of bfloat16 data) as holding bfloat16.

    ``fastopt.adamw(bfloat16(p_bits), bfloat16(g_bits), m, v, step=1)``.
    """

    def __init__(self, array):
        self.array = array


def is_gpu_array(a) -> bool:
    """Whether a is an array fastopt hands to its CUDA kernels (cheap: no import of numba)."""
    t = type(a)
    if t is np.ndarray:
        return False
    if t is bfloat16 or t.__name__ == "FakeCUDAArray":
        return True
    if t.__module__.startswith("torch"):
        return bool(getattr(a, "is_cuda", False))
    if hasattr(a, "__cuda_array_interface__"):
        return True
    device = getattr(a, "__dlpack_device__", None)
    if device is not None:
        try:
            return device()[0] in (KDL_CUDA, KDL_CUDA_MANAGED)
        except Exception:
            return False
    return False


def like(host: np.ndarray, where):
    """A copy of the host array on the GPU and in the framework of the GPU array `where` (a torch
    tensor, a CuPy array, else a Numba device array)."""
    where = where.array if type(where) is bfloat16 else where
    if type(where).__module__.startswith("torch"):
        import torch
        return torch.from_numpy(host).to(where.device)
    if type(where).__module__.startswith("cupy"):
        import cupy
        with cupy.cuda.Device(where.device.id):
            return cupy.asarray(host)
    from numba import cuda
    return cuda.to_device(host)


def to_host(a) -> np.ndarray:
    """A NumPy copy of a GPU array (or a itself if it is NumPy)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return a.get()


def copy_from_host(dst, host: np.ndarray) -> None:
    """dst[...] = host, for a NumPy array or any GPU array like() makes."""
    if isinstance(dst, np.ndarray):
        dst[...] = host
    elif type(dst).__module__.startswith("torch"):
        import torch
        dst.copy_(torch.from_numpy(np.ascontiguousarray(host)))
    elif hasattr(dst, "copy_to_device"):
        dst.copy_to_device(np.ascontiguousarray(host))
    else:
        dst.set(np.ascontiguousarray(host))


_TORCH_DTYPES: dict = {}  # torch.float32 -> "float32"


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def view(a) -> View | None:
    """The View of a GPU array, or None when a is not one."""
    t = type(a)
    if t is bfloat16:
        inner = view(a.array)
        if inner is None or inner.dtype not in ("uint16", "int16", "bfloat16"):
            return inner._replace(dtype=f"{inner.dtype} (bfloat16() needs 16-bit integers)") if inner else None
        return inner._replace(dtype="bfloat16")
    if t.__module__.startswith("torch"):
        if not getattr(a, "is_cuda", False):
            return None
        dtype = _TORCH_DTYPES.get(a.dtype) or _TORCH_DTYPES.setdefault(a.dtype, str(a.dtype).removeprefix("torch."))
        return View(a.data_ptr(), a.numel(), tuple(a.shape), dtype, a.get_device(), False, a.is_contiguous(),
                    "torch", None)
    if t.__name__ == "FakeCUDAArray":  # Numba's simulator: "device" memory is host memory
        host = a._ary
        return View(host.ctypes.data, host.size, host.shape, str(host.dtype), 0, False,
                    bool(host.flags.c_contiguous), "simulator", None)
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        shape = tuple(cai["shape"])
        dtype = _TYPESTR.get(cai["typestr"], np.dtype(cai["typestr"]).name)
        itemsize = np.dtype(cai["typestr"]).itemsize
        strides = cai.get("strides")
        contiguous = strides is None or tuple(strides) == _c_strides(shape, itemsize) or int(np.prod(shape)) <= 1
        address, readonly = cai["data"]
        framework = "cupy" if t.__module__.startswith("cupy") else "numba" if t.__module__.startswith("numba") \
            else "other"
        return View(address, int(np.prod(shape)), shape, dtype, _device_of(a, address), bool(readonly), contiguous,
                    framework, cai.get("stream"))
    if hasattr(a, "__dlpack_device__") and is_gpu_array(a):
        return _dlpack_view(a)
    return None


def _device_of(a, address: int) -> int:
    device = getattr(a, "device", None)
    for attr in ("id", "index"):                       # CuPy's Device.id, torch's device.index
        if isinstance(getattr(device, attr, None), int):
            return getattr(device, attr)
    from fastopt.cuda._prims import SIMULATOR
    if SIMULATOR or not address:
        return 0
    from numba import cuda
    from numba.cuda.cudadrv import driver
    try:  # the device that owns the pointer (CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9)
        return int(driver.driver.cuPointerGetAttribute(9, address))
    except Exception:
        return cuda.get_current_device().id


# ---- DLPack: the capsule's DLTensor, read in place ----

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_DL_CODES = {(2, 32): "float32", (2, 64): "float64", (2, 16): "float16", (4, 16): "bfloat16", (1, 16): "uint16"}


def _dlpack_view(a) -> View:
    capsule = a.__dlpack__()
    tensor = _DLTensor.from_address(_get_pointer(capsule, b"dltensor"))  # DLManagedTensor starts with it
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    code = (tensor.dtype.code, tensor.dtype.bits)
    dtype = _DL_CODES.get(code, f"DLPack type code {code[0]}, {code[1]} bits") if tensor.dtype.lanes == 1 else "vector"
    itemsize = tensor.dtype.bits // 8
    contiguous = not tensor.strides or tuple(tensor.strides[i] * itemsize for i in range(tensor.ndim)) == \
        _c_strides(shape, itemsize) or int(np.prod(shape)) <= 1
    return View((tensor.data or 0) + tensor.byte_offset, int(np.prod(shape)), shape, dtype, tensor.device.device_id,
                False, contiguous, "dlpack", None)


# ---- streams ----

def stream_handle(stream, views) -> int:
    """The CUDA stream a call launches on, as a handle (0: the default stream).

    An explicit ``stream=`` wins (an int handle, a torch.cuda.Stream, a CuPy stream or a Numba
    stream); else the current stream of the framework the arrays come from (torch, CuPy); else the
    stream the arrays' producer named in __cuda_array_interface__; else the default stream.
    """
    if stream is not None:
        for attr in ("cuda_stream", "ptr", "handle"):  # torch, CuPy, Numba
            value = getattr(stream, attr, None)
            if value is not None:
                return int(getattr(value, "value", value) or 0)
        if isinstance(stream, int) and not isinstance(stream, bool):
            return stream
        raise TypeError(f"stream must be a CUDA stream (torch, CuPy, Numba) or an int handle, got "
                        f"{type(stream).__name__}")
    frameworks = {v.framework for v in views}
    if "torch" in frameworks:
        import torch
        return int(torch.cuda.current_stream(views[0].device).cuda_stream)
    if "cupy" in frameworks:
        import cupy
        return int(cupy.cuda.get_current_stream().ptr)
    for v in views:
        if v.stream:
            return 0 if v.stream == 1 else int(v.stream)  # 1: the legacy default; 2: per-thread default
    return 0
