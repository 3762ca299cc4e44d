"""Runs fastopt's functional calls on GPU arrays: the tensor table and the launches, on the
caller's stream.

What only the Python objects carry (device, shape, contiguity, writability, each array's dtype) is
checked here; everything else is checked by the C library, which also computes the kernels'
constants: an optimizer call goes to its C function with the arrays' device addresses and
``fastopt_common.constant_rows`` set (C checks it as any call, never reading through the
pointers, and writes each tensor's constants instead of running), a gradient call to
``fastopt_check_buffers``.  fastopt._calls calls :func:`optimizer` or a gradient function here.
"""
from __future__ import annotations

import copy
import ctypes
import math
import os
from collections import OrderedDict

import numpy as np
from numba import cuda

from fastopt import reference
from fastopt._native import check, ffi, lib
from fastopt._optimizers import OPTIMIZERS
from fastopt.cuda import _kernels as K
from fastopt.cuda._arrays import DTYPES, View, is_gpu_array, stream_handle, view
from fastopt.cuda._prims import MARKERS, SIMULATOR

C_DTYPES = {"float32": lib.FASTOPT_FLOAT32, "float64": lib.FASTOPT_FLOAT64, "float16": lib.FASTOPT_FLOAT16,
            "bfloat16": lib.FASTOPT_BFLOAT16}
# the dtype of each role kind but params and state
KIND_DTYPES = {"master": "float32", "q8": "uint8", "absmax": "float32"}


class Call:
    """A validated call: its tensors' views per role, dtypes, device and stream."""

    def __init__(self, fn: str, names, views, written, kinds, stream: int, block: int = 0):
        self.fn, self.names, self.views, self.written, self.kinds = fn, names, views, written, kinds
        self.n = len(views[0])
        self.block = block
        self._check()
        self.stream = stream
        self._tables = {}  # chunk size -> (the tensor table on the device, blocks); see table()
        self.repeat = None  # after an optimizer step a prepared call can repeat: (C's arguments but the
        #                     options, the constants rows C writes, launch(rows, differ)); see _step

    @classmethod
    def of(cls, fn: str, roles, stream, state_from: int = 2, block: int = 0) -> "Call":
        """roles: (name, array or list of arrays or None for unused, written[, kind]).  Role 0
        (params, or grads) sets the list length, the shapes and the dtype; roles from state_from on
        are optimizer state, which shares one dtype of its own (C says which go with the params'), unless a kind
        says otherwise: "master" (float32 copies of the params), "q8" (8-bit state codes, uint8),
        "absmax" (their float32 scales, one per block of `block` elements)."""
        first_name, first = roles[0][0], roles[0][1]
        n = len(first) if isinstance(first, (list, tuple)) else 1
        if not n:
            raise ValueError(f"fastopt.{fn}: {first_name} is an empty list")
        all_views, kinds = [], []
        for r, (name, value, written, *kind) in enumerate(roles):
            kinds.append(kind[0] if kind else "param" if r < state_from else "state")
            if value is None:
                all_views.append(None)
                continue
            arrays = value if isinstance(value, (list, tuple)) else [value]
            if len(arrays) != n:
                raise ValueError(f"fastopt.{fn}: {name} has {len(arrays)} arrays, {first_name} has {n}")
            views = []
            for i, a in enumerate(arrays):
                v = view(a)
                if v is None:
                    where = f"{name}[{i}]" if arrays is value else name
                    raise TypeError(f"fastopt.{fn}: {where} is a {type(a).__name__} in host memory, but "
                                    f"{first_name} is on a GPU; all arrays of a call must be on one device")
                views.append(v)
            all_views.append(views)
        # What validation reads (and the table holds) is all in the views: a training loop passes the
        # same tensors every step, so its calls are validated, and their tables uploaded, once.
        key = (fn, block, tuple(kinds), tuple(r[2] for r in roles), tuple(r[0] for r in roles),
               tuple(None if v is None else tuple(v) for v in all_views))
        known = _CALLS.pop(key, None)  # then put back last: the least recently used go first
        if known is None:
            known = cls(fn, [r[0] for r in roles], all_views, [r[2] for r in roles], kinds, 0, block)
        _CALLS[key] = known
        if len(_CALLS) > _CALLS_KEPT:
            _CALLS.popitem(last=False)
        call = copy.copy(known)  # its own stream; the tables stay shared
        call.stream = stream_handle(stream, all_views[0])
        return call

    def role(self, r: int, written: bool) -> "Call":
        """A call over role r alone (the same stream)."""
        return Call(self.fn, [self.names[r]], [self.views[r]], [written], ["param"], self.stream)

    def has(self, kind: str) -> bool:
        return any(k == kind and v is not None for k, v in zip(self.kinds, self.views))

    def _check(self):
        fn, first = self.fn, self.views[0]
        self.dtype, self.device = first[0].dtype, first[0].device
        if self.dtype not in DTYPES:
            raise TypeError(f"fastopt.{fn}: {self._where(0, 0)} has dtype {self.dtype}; supported on GPUs: "
                            f"{', '.join(DTYPES)}")
        state = [(views[0].dtype, r) for r, views in enumerate(self.views) if views and self.kinds[r] == "state"]
        self.state_dtype = state[0][0] if state else "float32" if self.has("q8") else self.dtype
        if self.state_dtype not in DTYPES:
            raise TypeError(f"fastopt.{fn}: {self._where(state[0][1], 0)} has dtype {self.state_dtype}; supported on "
                            f"GPUs: {', '.join(DTYPES)}")
        for r, views in enumerate(self.views):
            if views is None:
                continue
            kind = self.kinds[r]
            expected = {"param": self.dtype, "state": self.state_dtype}.get(kind) or KIND_DTYPES[kind]
            for i, v in enumerate(views):
                where = self._where(r, i)
                if v.device != self.device:
                    raise ValueError(f"fastopt.{fn}: {where} is on cuda:{v.device}, {self._where(0, 0)} on "
                                     f"cuda:{self.device}; all arrays of a call must be on one device")
                if v.dtype != expected:
                    why = {"param": f"the dtype of {self.names[0]}", "state": "every state array has one dtype",
                           "master": "master_params are float32"}.get(kind, f"{kind} arrays are {expected}")
                    raise TypeError(f"fastopt.{fn}: {where} has dtype {v.dtype}, expected {expected} ({why})")
                shape = (-(-first[i].size // self.block),) if kind == "absmax" else first[i].shape
                if r and v.shape != shape:
                    raise ValueError(f"fastopt.{fn}: {where} has shape {v.shape}, expected {shape} "
                                     f"(the shape of its {self.names[0]} entry)")
                if not v.contiguous:
                    raise ValueError(f"fastopt.{fn}: {where} is not C-contiguous")
                if self.written[r] and v.readonly:
                    raise ValueError(f"fastopt.{fn}: {where} is read-only")
        # the arrays as C takes them: sizes, and per role a list of device addresses
        self.numel = ffi.new("size_t[]", [v.size for v in first])
        self.lists = [None if views is None else _pointers([v.address for v in views]) for views in self.views]
        if all(k == "param" for k in self.kinds):  # a gradient call (one dtype): C checks its buffers now
            used = [r for r, views in enumerate(self.views) if views is not None]
            names = [ffi.new("char[]", self._where(r, 0).split("[")[0].encode()) for r in used]
            check(lib.fastopt_check_buffers(C_DTYPES[self.dtype], self.n, self.numel, len(used),
                                            ffi.new("const char *[]", names),
                                            ffi.new("void *const *[]", [self.lists[r] for r in used]),
                                            ffi.new("int[]", [int(self.written[r]) for r in used])), fn)

    def constants(self, c_function, n_args: int, o, steps=None, mu_products=None, rounding=None, lrs=None,
                  weight_decays=None) -> np.ndarray:
        """C checks the call (its options, and the buffers at their device addresses) and returns
        each tensor's kernel constants, one float64 row per tensor (fastopt_common.constant_rows).
        n_args: how many of the call's roles are C's array arguments (the rest: master copies and
        8-bit scales, which go into the options)."""
        from fastopt._calls import with_arrays
        c = o.common
        rows = np.zeros((self.n, lib.FASTOPT_CONSTANTS_ROW))
        c.constant_rows = ffi.from_buffer("double[]", rows)
        q8 = self.has("q8")
        state_code = lib.FASTOPT_QUANT8 if q8 else C_DTYPES[self.state_dtype] if self.state_dtype != self.dtype \
            else None
        scales = [self.lists[r] for r, k in enumerate(self.kinds) if k == "absmax" and self.lists[r] is not None]
        masters = [self.lists[r] for r, k in enumerate(self.kinds) if k == "master" and self.lists[r] is not None]
        kept = with_arrays(self.fn, o, self.n, state_code, steps, mu_products, scales,  # noqa: F841 (alive
                           self.block if q8 else 0, masters[0] if masters else None, rounding,  # for the call)
                           lrs, weight_decays)
        c.found_inf = ffi.NULL  # a device flag is the kernels' to read; a host one was read by the caller
        args = [ffi.NULL if lists is None else lists for lists in self.lists[:n_args]]
        check(c_function(C_DTYPES[self.dtype], self.n, self.numel, *args, o), self.fn)
        return rows

    def _where(self, r, i):
        return f"{self.names[r]}[{i}]" if self.n > 1 else self.names[r]

    # ---- launching ----

    def table(self, chunk: int = K.CHUNK):
        """The tensor table on the device (see _kernels) and the number of chunks (blocks), made
        once per validated call: its own device memory, uploaded synchronously, so that any stream
        may read it and no later call overwrites it."""
        if chunk not in self._tables:
            host, blocks = self._host_table(chunk)
            with _on(self.device):
                self._tables[chunk] = cuda.to_device(host), blocks
        return self._tables[chunk]

    def _host_table(self, chunk: int):
        width = 2 + len(self.views)
        host = np.zeros((self.n, width), np.int64)
        sizes = np.array([v.size for v in self.views[0]], np.int64)
        chunks = (sizes + chunk - 1) // chunk
        host[:, 0] = sizes
        host[1:, 1] = np.cumsum(chunks)[:-1]
        for r, views in enumerate(self.views):
            if views is not None:
                host[:, 2 + r] = [v.address for v in views]
        return host, int(chunks.sum())

    def markers(self):
        return MARKERS[self.dtype], MARKERS[self.state_dtype]

    def codebook(self):
        """The 8-bit codes of this call's states, each row 256 code values then 1 if the code is
        signed, on its device (made once per device and signedness)."""
        signed = {r.arg: r.signed for r in OPTIMIZERS[self.fn].state}
        signs = tuple(signed[self.names[r]] for r, k in enumerate(self.kinds)
                      if k == "q8" and self.views[r] is not None)
        key = (self.device, signs)
        if key not in _CODEBOOKS:
            from fastopt.quant8 import code
            host = np.zeros((2, 257), np.float32)
            for j, signed in enumerate(signs):
                host[j, :256], host[j, 256] = code(signed), signed
            with _on(self.device):
                _CODEBOOKS[key] = cuda.to_device(host)
        return _CODEBOOKS[key]

    def numba_stream(self):
        if SIMULATOR or self.stream == 0:
            return cuda.default_stream()
        if self.stream == 2:
            return cuda.per_thread_default_stream()
        return cuda.external_stream(self.stream)

    def launch(self, kernel, blocks: int, *args, threads: int = K.THREADS):
        if LAUNCHES is not None:
            LAUNCHES.append((kernel, args))
        if blocks:
            with _on(self.device):
                kernel[blocks, threads, self.numba_stream()](*args)

    def workspace(self, name, shape, dtype=np.float64):
        """A scratch device array of this call's device and stream, reused by later calls."""
        size = int(np.prod(shape))
        key = (self.device, self.stream, name, np.dtype(dtype).str)
        buffer = _WORKSPACES.get(key)
        if buffer is None or buffer.size < size:
            with _on(self.device):
                buffer = _WORKSPACES[key] = cuda.device_array(max(size, 1024), dtype)
        return buffer[:size].reshape(shape)


def _pointers(addresses):
    """A C array of pointers (which owns its memory) holding these addresses."""
    array = ffi.new("void *[]", len(addresses))
    ffi.cast("uintptr_t *", array)[0:len(addresses)] = addresses
    return array


_WORKSPACES: dict = {}
_CODEBOOKS: dict = {}
_CALLS: OrderedDict = OrderedDict()  # validated calls by what validation read, least recently used first
_CALLS_KEPT = 64
LAUNCHES: list | None = None  # tests set a list here to see every launch's kernel and arguments


def _forget_device_memory() -> None:
    """In a forked child: the parent's device memory (tables, workspaces, codebooks) belongs to the
    parent's CUDA context, which the child does not have; anything it launches starts afresh."""
    _CALLS.clear()
    _WORKSPACES.clear()
    _CODEBOOKS.clear()


os.register_at_fork(after_in_child=_forget_device_memory)


def _on(device: int):
    import contextlib
    return contextlib.nullcontext() if SIMULATOR else cuda.gpus[device]


def _to_device(call: Call, name: str, host: np.ndarray):
    out = call.workspace(name, host.shape, host.dtype)
    with _on(call.device):
        out.copy_to_device(host, stream=call.numba_stream())
    return out


def flag_address(call: Call, found_inf) -> int | None:
    """The device address of a found_inf flag (0: none), or None when a host flag says skip."""
    if found_inf is None or isinstance(found_inf, (bool, np.bool_, int, float)):
        return 0  # a host scalar was handled by the caller (it skips before launching)
    if isinstance(found_inf, np.ndarray):
        return None if float(found_inf.reshape(-1)[0]) != 0 else 0
    v = view(found_inf) if is_gpu_array(found_inf) else None
    if v is None or v.dtype != "float32" or v.size != 1:
        raise TypeError(f"fastopt.{call.fn}: found_inf must be a one-element float32 array, a bool or a number")
    if v.device != call.device:
        raise ValueError(f"fastopt.{call.fn}: found_inf is on cuda:{v.device}, the params on cuda:{call.device}")
    return v.address


# ---- optimizers ----

def kernel_of(fn: str, q8: bool) -> str:
    """The name of optimizer fn's kernel in fastopt.cuda._kernels: <c_name>_kernel, or with 8-bit
    state <c_name>_q8_kernel (LAMB's first: lamb_moments_kernel)."""
    c_name = OPTIMIZERS[fn].c_name
    return "lamb_moments_kernel" if c_name == "lamb" else f"{c_name}_q8_kernel" if q8 else f"{c_name}_kernel"


def optimizer(fn: str, c_function, o, roles, stream=None, found_inf=None, master_params=None, rounding=None,
              absmax=(), block=0, steps=None, mu_products=None, sum_over=None, lrs=None, weight_decays=None,
              known=None) -> "Call":
    """One optimizer step over GPU arrays: one launch (LAMB: a few) for all tensors.

    c_function and o: the C function and its options struct, which check the call and give the
    kernels' constants; roles: its array arguments, (name, arrays or None, written, kind) with
    kind "state" or "q8" (8-bit codes, their scales in absmax, one list per 8-bit state, and block
    elements per scale); master_params: float32 copies of 16-bit params; rounding: (seed, counter)
    of stochastic rounding; steps (and NAdam's mu_products), lrs, weight_decays: per-tensor values,
    or None; sum_over: LAMB's sums over processes (see fastopt.lamb); known: the call these same
    arrays made before (fastopt.prepare), whose views are then not made again.  Returns the call."""
    n_args = len(roles)
    if known is not None:
        call = copy.copy(known)
        call.stream, call.repeat = stream_handle(stream, call.views[0]), None
    else:
        roles = list(roles) + [("master_params", master_params, True, "master")] + \
            [(f"absmax[{j}]", a, True, "absmax") for j, a in enumerate(absmax)]
        call = Call.of(fn, roles, stream, block=block)
    _step(call, fn, c_function, o, n_args, found_inf, master_params, rounding, steps, mu_products, sum_over, lrs,
          weight_decays)
    return call


def _step(call, fn, c_function, o, n_args, found_inf, master_params, rounding, steps, mu_products, sum_over, lrs,
          weight_decays) -> None:
    """The step of a validated call (see optimizer): C's constants for it, then the launches."""
    if sum_over is not None:  # C checks a phased step as such (max_grad_norm 0); the sums are the kernels'
        unused = np.zeros(2 * call.n)
        o.phase, o.sums = lib.FASTOPT_LAMB_MOMENTS, ffi.from_buffer("double[]", unused)
    rows = call.constants(c_function, n_args, o, steps, mu_products, rounding, lrs, weight_decays)
    flag = flag_address(call, found_inf)
    if flag is None:
        return
    seed, counter = rounding or (0, 0)
    aux = (int(master_params is not None), int(rounding is not None), counter, seed & 0xFFFFFFFF, seed >> 32)
    kernel = kernel_of(fn, call.has("q8"))
    differ = steps is not None or mu_products is not None or lrs is not None or weight_decays is not None
    if fn == "lamb":
        k = tuple(rows[0, :K.width(kernel)].tolist())
        per_tensor = _to_device(call, "per_tensor", rows) if differ else call.workspace("no_rows", (0, 1))
        return _lamb(call, o, k, float(rows[0][12]), per_tensor, aux, flag, sum_over)
    launch = _launcher(call, kernel, aux, flag)
    launch(rows, differ)
    if flag == 0 and rounding is None and steps is None and mu_products is None:
        # what a repeat needs (fastopt.prepare): C's arguments, and the launch from the rows it writes
        call.repeat = ((C_DTYPES[call.dtype], call.n, call.numel,
                        *[ffi.NULL if lists is None else lists for lists in call.lists[:n_args]]), rows, launch)


def _launcher(call: Call, kernel: str, aux: tuple, flag: int):
    """The launch of an optimizer kernel (not LAMB's) from C's constants rows: each tensor's row
    where they differ (per-tensor steps, products, lr or weight decay: differ), else every tensor
    reads k, the first row cut to the width the kernel is declared (compiled) with."""
    width, function = K.width(kernel), getattr(K, kernel)
    if call.has("q8"):
        table, blocks = call.table(call.block)
        tail = (aux, flag, call.block, call.codebook(), call.markers()[0])
    else:
        table, blocks = call.table()
        tail = (aux, flag, *call.markers())
    no_rows = call.workspace("no_rows", (0, 1))

    def launch(rows: np.ndarray, differ: bool) -> None:
        per_tensor = _to_device(call, "per_tensor", rows) if differ else no_rows
        call.launch(function, blocks, table, tuple(rows[0, :width].tolist()), per_tensor, *tail)
    return launch


def _lamb(call: Call, o, k, grad_mul: float, rows, aux, flag: int, sum_over=None) -> None:
    """The moments and each block's sums of squares; each tensor's trust ratio from its blocks'
    sums (with sum_over: each tensor's sums first, summed over the processes by sum_over); the params."""
    if o.max_grad_norm > 0:  # apex: g / max(1, ||g|| / max_grad_norm), the norm over all tensors
        norm = _norm(call.role(1, False), 2.0) * abs(grad_mul)
        if norm > o.max_grad_norm:
            grad_mul = grad_mul / (norm / o.max_grad_norm)
    table, blocks = call.table()
    sums = call.workspace("sums", (max(blocks, 1), 2))
    tensor_sums = call.workspace("tensor_sums", (call.n, 2))
    mul = _to_device(call, "grad_mul", np.array([grad_mul]))
    ratios = call.workspace("ratios", (call.n,))
    grid = (call.n + K.THREADS - 1) // K.THREADS
    call.launch(K.lamb_moments_kernel, blocks, table, k, rows, aux, mul, flag, sums, *call.markers())
    if sum_over is None:
        call.launch(K.lamb_ratio_kernel, grid, table, k, rows, flag, sums, tensor_sums, ratios, K.LAMB_WHOLE)
    else:
        call.launch(K.lamb_ratio_kernel, grid, table, k, rows, flag, sums, tensor_sums, ratios, K.LAMB_SUMS)
        sum_over(tensor_sums)
        call.launch(K.lamb_ratio_kernel, grid, table, k, rows, flag, sums, tensor_sums, ratios, K.LAMB_RATIOS)
    call.launch(K.lamb_apply_kernel, blocks, table, k, rows, aux, flag, ratios, *call.markers())


# ---- gradients ----

def _norm(call: Call, norm_type: float) -> float:
    """The global norm of role 0 (C's norm_of: fixed blocks, sums in double, a power-of-two rescue)."""
    kind = K.NORM_2 if norm_type == 2 else K.NORM_1 if norm_type == 1 else K.NORM_INF if math.isinf(norm_type) \
        else K.NORM_P
    table, blocks = call.table()
    if not blocks:
        return 0.0
    scale = 1.0
    for attempt in range(2):
        partial = call.workspace("norm_blocks", (blocks, 2))
        total = call.workspace("norm_total", (2,))
        call.launch(K.norm_blocks_kernel, blocks, table, (float(kind), float(norm_type), scale), partial,
                    call.markers()[0])
        call.launch(K.norm_total_kernel, 1, partial, total)
        with _on(call.device):
            s, big = total.copy_to_host(stream=call.numba_stream())
            call.numba_stream().synchronize()
        if kind == K.NORM_INF:
            return float(big)
        root = math.sqrt(s) if kind == K.NORM_2 else s if kind == K.NORM_1 else s ** (1.0 / norm_type)
        rescue = math.isfinite(big) and big > 0 and (not math.isfinite(s) or s < 1e-280)
        if attempt or not rescue:
            return float(root / scale)
        scale = math.ldexp(1.0, min(1 - math.frexp(big)[1], 1020))
    raise AssertionError("unreachable")


def global_norm(fn, grads, norm_type, stream=None) -> float:
    return _norm(Call.of(fn, [("grads", grads, False)], stream, 1), norm_type)


def clip_grad_norm(fn, grads, max_norm, norm_type, stream=None) -> float:
    call = Call.of(fn, [("grads", grads, True)], stream, 1)
    total = _norm(call, norm_type)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:
        table, blocks = call.table()
        call.launch(K.scale_kernel, blocks, table, (float(coef),), call.markers()[0])
    return total


def unscale(fn, grads, inv_scale, found_inf, stream=None):
    """grads *= inv_scale on the GPU, setting the device flag found_inf on any inf/NaN; without a
    flag, one is made and read back (a synchronization) to return whether anything was found."""
    call = Call.of(fn, [("grads", grads, True)], stream, 1)
    own = found_inf is None
    if own:
        flag_array = call.workspace("found_inf", (1,), np.float32)
        with _on(call.device):
            flag_array.copy_to_device(np.zeros(1, np.float32), stream=call.numba_stream())
        address = view(flag_array).address
    else:
        address = flag_address(call, found_inf)
        if not address:
            raise TypeError(f"fastopt.{fn}: found_inf must be a writable one-element float32 array on the GPU")
    table, blocks = call.table()
    call.launch(K.unscale_kernel, blocks, table, (float(inv_scale),), address, call.markers()[0])
    if own:
        with _on(call.device):
            found = flag_array.copy_to_host(stream=call.numba_stream())
            call.numba_stream().synchronize()
        return bool(found[0])
    return None


def elastic_net_grad(fn, grads, params, l1, l2, stream=None) -> None:
    call = Call.of(fn, [("grads", grads, True), ("params", params, False)], stream)
    table, blocks = call.table()
    call.launch(K.elastic_net_kernel, blocks, table, (float(l1), float(l2)), call.markers()[0])


# ---- dropout and the losses ----

def _same_memory(a, b) -> bool:
    """Whether two GPU arrays start at one address (an output that is its input: in place)."""
    va, vb = view(a), view(b)
    return va is not None and vb is not None and va.address == vb.address


def _side_array(call: Call, name: str, a, dtype: str, shape: tuple, written: bool) -> View:
    """The view of an array that goes beside a call's own (a mask, labels), checked as Call checks
    its arrays: on the call's device, of this dtype and shape, C-contiguous, writable if written."""
    v = view(a) if is_gpu_array(a) else None
    if v is None:
        raise TypeError(f"fastopt.{call.fn}: {name} must be a GPU array on the call's device, got {type(a).__name__}")
    problem = (f"is on cuda:{v.device}, the call on cuda:{call.device}" if v.device != call.device else
               f"has dtype {v.dtype}, expected {dtype}" if v.dtype != dtype else
               f"has shape {v.shape}, expected {shape}" if v.shape != shape else
               "is not C-contiguous" if not v.contiguous else "is read-only" if written and v.readonly else None)
    if problem:
        raise (TypeError if "dtype" in problem else ValueError)(f"fastopt.{call.fn}: {name} {problem}")
    return v


def _int64_to_host(call: Call, v: View) -> np.ndarray:
    """The int64 GPU array v, copied to the host (waits for the call's stream)."""
    if not v.size:
        return np.empty(0, np.int64)
    if SIMULATOR:  # (the simulator's device memory is host memory)
        return np.ctypeslib.as_array(ctypes.cast(v.address, ctypes.POINTER(ctypes.c_int64)), (v.size,)).copy()
    with _on(call.device):
        device = cuda.from_cuda_array_interface({"shape": (v.size,), "typestr": "<i8", "data": (v.address, True),
                                                 "version": 3}, owner=None, sync=False)
        host = device.copy_to_host(stream=call.numba_stream())
        call.numba_stream().synchronize()
    return host


def _device_table(call: Call, host: np.ndarray):
    """A table made for one call (not kept: it holds a side array's address)."""
    with _on(call.device):
        return cuda.to_device(host, stream=call.numba_stream())


def _read_total(call: Call, total) -> float:
    """total[0] on the host: waits for the call's stream."""
    with _on(call.device):
        host = total.copy_to_host(stream=call.numba_stream())
        call.numba_stream().synchronize()
    return float(host[0])


def dropout(fn, x, out, mask, p, seed, counter, stream=None) -> None:
    call = Call.of(fn, [("out", out, True), ("x", None if _same_memory(x, out) else x, False)], stream)
    host, blocks = call._host_table(K.CHUNK)
    mask_address = 0
    if mask is not None:
        if type(mask).__module__.startswith("torch") and str(mask.dtype) == "torch.bool":
            import torch
            mask = mask.view(torch.uint8)
        mask_address = _side_array(call, "mask", mask, "uint8", call.views[0][0].shape, True).address
    host = np.concatenate([host, np.full((1, 1), mask_address, np.int64)], axis=1)
    key = (seed & 0xFFFFFFFF, (seed >> 32) ^ reference.DROPOUT_KEY)
    call.launch(K.dropout_kernel, blocks, _device_table(call, host), (1 / (1 - p) if p < 1 else 0.0, float(p < 1)),
                (reference.dropout_threshold(p), *key, counter & 0xFFFFFFFF, counter >> 32), call.markers()[0])


def mse_grad(fn, pred, target, out, mean: bool, stream=None) -> float:
    call = Call.of(fn, [("out", out, True), ("pred", None if _same_memory(pred, out) else pred, False),
                        ("target", None if _same_memory(target, out) else target, False)], stream)
    n = call.views[0][0].size
    table, blocks = call.table()
    sums, total = call.workspace("block_sums", (max(blocks, 1), 2)), call.workspace("total", (2,))
    call.launch(K.mse_kernel, blocks, table, (2 / n if mean and n else 2.0,), sums, call.markers()[0])
    if not blocks:
        return math.nan if mean else 0.0
    call.launch(K.norm_total_kernel, 1, sums[:blocks], total)
    loss = _read_total(call, total)
    return loss / n if mean else loss


def softmax_cross_entropy(fn, logits, labels, out, smoothing, ignore_index, mean: bool, stream=None) -> float:
    call = Call.of(fn, [("out", out, True), ("logits", None if _same_memory(logits, out) else logits, False)], stream)
    rows, classes = call.views[0][0].shape
    v = _side_array(call, "labels", labels, "int64", (rows,), False)
    host_labels = _int64_to_host(call, v)  # checked on the host, by C, before anything runs
    counted = ffi.new("size_t *")
    check(lib.fastopt_check_labels(rows, classes, ffi.from_buffer("int64_t[]", host_labels), ignore_index, counted), fn)
    losses, total = call.workspace("row_losses", (max(rows, 1),)), call.workspace("total", (2,))
    logits_address = 0 if call.views[1] is None else call.views[1][0].address
    host = np.array([[rows, 0, call.views[0][0].address, logits_address, v.address, view(losses).address]], np.int64)
    grad_mul = (1 / counted[0] if counted[0] else math.inf) if mean else 1.0
    call.launch(K.xent_kernel, rows, _device_table(call, host), (float(smoothing), grad_mul),
                (classes, ignore_index, 0, 0, 0), call.markers()[0])
    if not rows:
        return math.nan if mean else 0.0
    call.launch(K.lane_total_kernel, 1, losses[:rows], total)
    loss = _read_total(call, total)
    return (loss / counted[0] if counted[0] else math.nan) if mean else loss
