"""Runs fastopt's functional calls on GPU arrays: validation, the tensor table, the per-call
constants (computed as csrc/api.c computes them) and the launches, all on the caller's stream.

fastopt.functional validates the hyper-parameters (through the C library) and then calls
:func:`optimizer` or one of the gradient functions here with its options struct and its arrays.
"""
from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict

import numpy as np
from numba import cuda

from fastopt.cuda import _kernels as K
from fastopt.cuda._arrays import DTYPES, ITEMSIZE, is_gpu_array, stream_handle, view
from fastopt.cuda._prims import MARKERS, SIMULATOR

# the state's dtypes for each params dtype (as in C: the params' own, float32, or bfloat16)
STATE_DTYPES = {"float32": ("float32", "bfloat16"), "float64": ("float64",),
                "float16": ("float16", "float32", "bfloat16"), "bfloat16": ("bfloat16", "float32")}
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

    @classmethod
    def of(cls, fn: str, roles, stream, state_from: int = 2, block: int = 0) -> "Call":
        """roles: (name, array or list of arrays or None for unused, written[, kind]).  Role 0
        (params, or grads) sets the list length, the shapes and the dtype; roles from state_from on
        are optimizer state, which shares one dtype of its own (see STATE_DTYPES), unless a kind
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
        if self.state_dtype not in STATE_DTYPES[self.dtype] and not self.has("q8"):
            raise TypeError(f"fastopt.{fn}: {self._where(state[0][1], 0)} has dtype {self.state_dtype}; the state of "
                            f"{self.dtype} params may be {' or '.join(STATE_DTYPES[self.dtype])}")
        extents = []
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
                if v.address % ITEMSIZE[v.dtype]:
                    raise ValueError(f"fastopt.{fn}: {where} is not aligned to its element size")
                if self.written[r] and v.readonly:
                    raise ValueError(f"fastopt.{fn}: {where} is read-only")
                if v.size:
                    extents.append((v.address, v.address + v.size * ITEMSIZE[v.dtype], self.written[r], where))
        _check_overlap(fn, extents)

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
        signs = tuple(self.names[r] != "exp_avg_sqs" for r, k in enumerate(self.kinds)
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


def _check_overlap(fn, extents):
    """A written array may share memory with no other array of the call."""
    extents.sort()
    reach_all = reach_written = None
    for lo, hi, written, where in extents:
        hit = reach_all if written else reach_written
        if hit and lo < hit[1]:
            raise ValueError(f"fastopt.{fn}: {hit[3]} and {where} overlap in memory; a written array must not "
                             f"share memory with any other")
        if not reach_all or hi > reach_all[1]:
            reach_all = (lo, hi, written, where)
        if written and (not reach_written or hi > reach_written[1]):
            reach_written = (lo, hi, written, where)


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


# ---- the per-call constants of each optimizer, as csrc/api.c computes them ----

def _common(o, decoupled: bool):
    c = o.common
    scale = c.grad_scale or 1.0
    wd = c.weight_decay
    return (c.lr, wd if not decoupled and wd != 0 else 0.0, (-1.0 if c.maximize else 1.0) / scale,
            c.lr * c.l1_prox, 1.0 - c.lr * wd if decoupled and wd != 0 else 1.0, float(c.l1_prox != 0))


def _sgd(o):
    return _common(o, False) + (o.momentum, 1.0 - o.dampening, float(o.momentum != 0), float(o.nesterov),
                                float(o.first_step))


def _adam(o):
    bc1, bc2 = 1.0 - o.beta1 ** o.step, 1.0 - o.beta2 ** o.step
    return _common(o, bool(o.decoupled_weight_decay)) + (
        1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.eps, -(o.common.lr / bc1), 1.0 / bc2 ** 0.5, float(o.amsgrad))


def _rmsprop(o):
    return _common(o, False) + (o.alpha, 1.0 - o.alpha, o.eps, o.momentum, float(o.centered), float(o.momentum > 0))


def _adagrad(o):
    return _common(o, False) + (-(o.common.lr / (1.0 + (o.step - 1) * o.lr_decay)), o.eps)


def _nadam_mu(beta1, momentum_decay, step):
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def _nadam(o, product=None):
    """product: the product of mu through this step, when the caller keeps it (per-tensor)."""
    lr = o.common.lr
    mu, mu_next = _nadam_mu(o.beta1, o.momentum_decay, o.step), _nadam_mu(o.beta1, o.momentum_decay, o.step + 1)
    product = o.mu_product * mu if product is None else product
    return _common(o, bool(o.decoupled_weight_decay)) + (
        1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.eps, 1.0 / (1.0 - o.beta2 ** o.step),
        -lr * (1.0 - mu) / (1.0 - product), (-lr * mu_next) / (1.0 - product * mu_next))


def _radam(o):
    t, b2t = o.step, o.beta2 ** o.step
    bc1, bc2 = 1.0 - o.beta1 ** t, 1.0 - b2t
    rho_inf = 2.0 / (1.0 - o.beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2t / bc2
    rectified = rho_t > 5.0
    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rectified else 1.0
    return _common(o, bool(o.decoupled_weight_decay)) + (
        1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.eps, 1.0 / bc1, bc2 ** 0.5, rect, float(rectified))


def _lion(o):
    return _common(o, False) + (o.beta1, 1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.common.weight_decay)


OPTIMIZERS = {"sgd": (K.sgd_kernel, _sgd), "adam": (K.adam_kernel, _adam), "adamw": (K.adam_kernel, _adam),
              "rmsprop": (K.rmsprop_kernel, _rmsprop), "adagrad": (K.adagrad_kernel, _adagrad),
              "nadam": (K.nadam_kernel, _nadam), "radam": (K.radam_kernel, _radam), "lion": (K.lion_kernel, _lion)}


Q8_KERNELS = {"sgd": K.sgd_q8_kernel, "adam": K.adam_q8_kernel, "adamw": K.adam_q8_kernel, "lion": K.lion_q8_kernel}
STEPPED = ("adam", "adamw", "adagrad", "nadam", "radam", "lamb")  # their kernels take per-tensor constants


def _per_tensor(call: Call, consts, o, steps, mu_products):
    """The kernel's per-tensor constants: none (every tensor takes k), or, with per-tensor steps (or
    NAdam's products through this step), one row of consts(o) per tensor at its own step, uploaded on
    the stream."""
    if steps is None and mu_products is None:
        return call.workspace("no_rows", (0, 1))
    step = o.step
    rows, known = [], {}
    try:
        for t in range(call.n):
            key = (int(steps[t]) if steps is not None else step, float(mu_products[t]) if mu_products is not None else 0)
            if key not in known:
                o.step = key[0]
                known[key] = consts(o, key[1]) if mu_products is not None else consts(o)
            rows.append(known[key])
    finally:
        o.step = step
    return _to_device(call, "per_tensor", np.array(rows, np.float64))


def optimizer(fn: str, options, roles, stream=None, found_inf=None, master_params=None, rounding=None,
              absmax=(), block=0, steps=None, mu_products=None) -> None:
    """One optimizer step over GPU arrays: one launch (LAMB: a few) for all tensors.

    roles: (name, arrays or None, written, kind) with kind "state" or "q8" (8-bit codes, their
    scales in absmax, one list per 8-bit state, and block elements per scale); master_params:
    float32 copies of 16-bit params; rounding: (seed, counter) of stochastic rounding; steps (and
    NAdam's mu_products): per-tensor values, or None."""
    roles = list(roles) + [("master_params", master_params, True, "master")] + \
        [(f"absmax[{j}]", a, True, "absmax") for j, a in enumerate(absmax)]
    call = Call.of(fn, roles, stream, block=block)
    if master_params is not None and call.dtype not in ("float16", "bfloat16"):
        raise ValueError(f"fastopt.{fn}: master_params are for float16/bfloat16 params, not {call.dtype}")
    if rounding is not None and (call.dtype != "bfloat16" or master_params is not None):
        raise ValueError(f"fastopt.{fn}: stochastic_rounding is for bfloat16 params without master_params")
    q8 = call.has("q8")
    if q8 and (fn not in Q8_KERNELS or getattr(options, "amsgrad", False)):
        raise ValueError(f"fastopt.{fn}: 8-bit state is supported by sgd with momentum, adam/adamw without "
                         f"amsgrad, and lion")
    if q8 and call.dtype == "float64":
        raise TypeError(f"fastopt.{fn}: 8-bit state needs float32, float16 or bfloat16 params")
    flag = flag_address(call, found_inf)
    if flag is None:
        return
    seed, counter = rounding or (0, 0)
    aux = (int(master_params is not None), int(rounding is not None), counter, seed & 0xFFFFFFFF, seed >> 32)
    if fn == "lamb":
        return _lamb(call, options, aux, flag, _per_tensor(call, _lamb_consts, options, steps, None))
    kernel, consts = OPTIMIZERS[fn]
    rows = (_per_tensor(call, consts, options, steps, mu_products),) if fn in STEPPED else ()
    if q8:
        table, blocks = call.table(block)
        call.launch(Q8_KERNELS[fn], blocks, table, consts(options), *rows, aux, flag, block, call.codebook(),
                    call.markers()[0])
        return
    table, blocks = call.table()
    call.launch(kernel, blocks, table, consts(options), *rows, aux, flag, *call.markers())


def _lamb_consts(o):
    c, t = o.common, o.step
    return (1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.eps, 1.0 / (1.0 - o.beta1 ** t), 1.0 / (1.0 - o.beta2 ** t),
            c.weight_decay, float(c.weight_decay != 0), c.lr * c.l1_prox, float(c.l1_prox != 0), -c.lr,
            float(c.weight_decay != 0 or bool(o.use_nvlamb)))


def _lamb(call: Call, o, aux, flag: int, rows) -> None:
    c = o.common
    grad_mul = (-1.0 if c.maximize else 1.0) / (c.grad_scale or 1.0)
    if o.max_grad_norm > 0:  # apex: g / max(1, ||g|| / max_grad_norm), the norm over all tensors
        norm = _norm(call.role(1, False), 2.0) * abs(grad_mul)
        if norm > o.max_grad_norm:
            grad_mul = grad_mul / (norm / o.max_grad_norm)
    k = _lamb_consts(o)
    table, blocks = call.table()
    sums = call.workspace("sums", (max(blocks, 1), 2))
    mul = _to_device(call, "grad_mul", np.array([grad_mul]))
    ratios = call.workspace("ratios", (call.n,))
    call.launch(K.lamb_moments_kernel, blocks, table, k, rows, aux, mul, flag, sums, *call.markers())
    call.launch(K.lamb_ratio_kernel, (call.n + K.THREADS - 1) // K.THREADS, table, k, flag, sums, ratios)
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
