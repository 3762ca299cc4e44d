"""The call machinery below fastopt.functional: a call's options struct from its hyper-parameters
(by the optimizer's table row), its arrays checked and gathered, and the one C call, or the GPU
launch for GPU arrays.

C checks every hyper-parameter and computes the per-call constants; here we convert Python values
to C's types (naming the argument when one cannot be) and handle what only Python objects carry.
"""
from __future__ import annotations

import contextvars
from typing import NamedTuple

import numpy as np

from fastopt._arrays import UNUSED, bump_versions, gather, host_view, integer, pair, pointer, real, torch_written
from fastopt._native import check, ffi, lib
from fastopt._optimizers import OPTIMIZERS, Optimizer
from fastopt.cuda._arrays import is_gpu_array
from fastopt.quant8 import QuantizedState


def _flag(fn: str, found_inf):
    """found_inf as C takes it: a float* (NULL for none), or None when the step is to be skipped."""
    if found_inf is None:
        return ffi.NULL
    if isinstance(found_inf, (bool, np.bool_)):
        return None if found_inf else ffi.NULL
    if is_gpu_array(found_inf):
        return ffi.NULL  # read on the device by the kernels (fastopt.cuda)
    found_inf = host_view(found_inf)
    if isinstance(found_inf, np.ndarray):
        if found_inf.dtype != np.float32 or found_inf.size != 1 or not found_inf.flags.c_contiguous:
            raise TypeError(f"fastopt.{fn}: found_inf must be a one-element float32 array, a bool or a number")
        return ffi.from_buffer("float[]", found_inf)
    return None if real(fn, "found_inf", found_inf) != 0 else ffi.NULL


def _scale(fn: str, grad_scale) -> float:
    if grad_scale is None:
        return 0.0  # C's "no scaling"
    grad_scale = host_view(grad_scale)
    if isinstance(grad_scale, np.ndarray) and grad_scale.size == 1:
        grad_scale = grad_scale.item()
    scale = real(fn, "grad_scale", grad_scale)
    if not scale > 0:
        raise ValueError(f"fastopt.{fn}: grad_scale must be > 0, got {scale}")
    return scale


def common(fn, lr, weight_decay, maximize, l1_prox, grad_scale=None, found_inf=None):
    """The fastopt_common initializer, or None when found_inf says the step is skipped."""
    # inline fast paths first: a small step costs a few microseconds, and much of it is here
    flag = ffi.NULL if found_inf is None else _flag(fn, found_inf)
    if flag is None:
        return None
    return [lr if type(lr) is float else real(fn, "lr", lr),
            weight_decay if type(weight_decay) is float else real(fn, "weight_decay", weight_decay),
            l1_prox if type(l1_prox) is float else real(fn, "l1_prox", l1_prox),
            0.0 if grad_scale is None else _scale(fn, grad_scale), flag, bool(maximize)]


def betas(fn, value) -> tuple[float, float]:
    if type(value) is tuple and len(value) == 2 and type(value[0]) is float and type(value[1]) is float:
        return value
    return pair(fn, "betas", value)


def per_tensor_value(fn: str, name: str, value, integral: bool = False):
    """(the value, None), or with one value per tensor (a sequence or 1-D array): (its first, the
    values as an array, int64 or float64): step, lr and weight_decay of a call."""
    python_type, kinds, dtype, one, many = (int, "iu", np.int64, "an integer", "integers") if integral else \
        (float, "fiu", np.float64, "a real number", "real numbers")
    if type(value) is python_type:
        return value, None
    ndim = getattr(host_view(value), "ndim", None)
    if ndim == 0:  # a 0-d array or tensor: its one value
        value = host_view(value).item() if hasattr(host_view(value), "item") else value
    elif isinstance(value, (list, tuple)) or ndim is not None:
        values = np.asarray(host_view(value))
        what = f"got an empty {type(value).__name__}" if not values.size else \
            f"got a {values.ndim}-d {type(value).__name__}" if values.ndim != 1 else \
            f"got {type(value).__name__} of {values.dtype} values" if values.dtype.kind not in kinds else None
        if what:
            raise TypeError(f"fastopt.{fn}: {name} must be {one}, or a non-empty sequence of {many} (one per "
                            f"tensor), {what}")
        values = np.ascontiguousarray(values, dtype)
        return python_type(values[0]), values
    return (integer if integral else real)(fn, name, value), None


def step(fn, value):
    """(the step, None), or with one step per tensor: (its first, the steps as an int64 array)."""
    return per_tensor_value(fn, "step", value, integral=True)


# ---- the options struct of each C function, read from the header through cffi ----

def _fields(c_name: str):
    """(field, C kind) of fastopt_<c_name>_options after its common: "real", "flag", "int" or
    "pointer" (set by the call machinery, not from a keyword)."""
    kinds = {"double": "real", "int": "flag", "int64_t": "int"}
    out = []
    for field, f in ffi.typeof(f"fastopt_{c_name}_options").fields[1:]:
        out.append((field, kinds.get(f.type.cname, "pointer")))
    return tuple(out)


_FIELDS: dict = {}


def options(optimizer: Optimizer, fn: str, common_init: list, hyper: dict):
    """fastopt_<c_name>_options for a call: common_init (see :func:`common`), then each field by its
    name from hyper (or the row's fixed values), converted as its C type says; C checks the values."""
    fields = _FIELDS.get(optimizer.c_name)
    if fields is None:
        fields = _FIELDS[optimizer.c_name] = _fields(optimizer.c_name)
    fixed = dict(optimizer.fixed)
    values = [common_init]
    for field, kind in fields:
        if kind == "pointer" or (field not in hyper and field not in fixed):
            break  # (the fields after the keywords' are the caller's to set: per-tensor pointers, LAMB's phase)
        value = fixed[field] if field in fixed else hyper[field]
        values.append(bool(value) if kind == "flag" else value if type(value) is (float if kind == "real" else int)
                      else real(fn, field, value) if kind == "real" else integer(fn, field, value))
    return ffi.new(f"fastopt_{optimizer.c_name}_options *", values)


def state_roles(optimizer: Optimizer, fn: str, hyper: dict, arrays: dict) -> list:
    """The state roles of a call, (arg, arrays or UNUSED, written, "state"), in C's order: a role
    its hyper-parameters do not use is UNUSED (its arrays, if given, are ignored); one they use
    must be given."""
    roles = []
    for r in optimizer.state:
        value = arrays.get(r.arg)
        used = r.when is None or hyper[r.when]
        if used and value is None:
            raise ValueError(f"fastopt.{fn}: {r.arg} is required when {r.when}={hyper[r.when]!r}")
        roles.append((r.arg, value if used else UNUSED, True, "state"))
    return roles


class _Arrays(NamedTuple):
    """A host call's arrays as C takes them, validated: what a prepared call keeps."""
    written: list      # torch tensors the call writes (their version counters are bumped)
    block: int         # 8-bit state's block size
    dtype: int
    numel: object      # size_t[]
    ptrs: list         # one void *[] (or NULL) per role
    state: int         # the state arrays' dtype code
    scales: list       # 8-bit state's absmax pointer arrays
    masters: object    # the master copies' pointer array, or None


class _GpuArrays(NamedTuple):
    """A GPU call's arrays as fastopt.cuda validated them: what a prepared call keeps."""
    written: list
    call: object       # fastopt.cuda._launch.Call


class Prepared:
    """The arrays of one call, validated at its first run and trusted after (see
    :func:`fastopt.prepare`): the same objects passed again skip validation.  Torch tensors'
    memory is compared at every call (``p.data = ...`` would move it)."""

    def __init__(self):
        self.kept = None  # (fn, the role values and master copies: compared by identity, _Arrays)
        self.tensors, self.addresses = [], []
        self.last = None  # the last call: (C function, its arguments but the options, options, kept alive,
        #                   None or, on a GPU, the launch from the constants C wrote)
        self.fast = None  # a call fastopt.prepare repeats with new step, lr and weight_decay (see there)

    def arrays(self, fn: str, roles, master) -> _Arrays | _GpuArrays | None:
        if self.kept is None:
            return None
        name, values, masters, arrays = self.kept
        if name != fn or master is not masters or len(roles) != len(values) or \
                any(r[1] is not v for r, v in zip(roles, values)):
            return None
        if self.tensors and [(t.data_ptr(), t.shape) for t in self.tensors] != self.addresses:
            raise ValueError(f"fastopt.{fn}: a tensor of this prepared call has new memory or a new shape since it "
                             f"was prepared (p.data = ..., resize_): prepare the call again")
        if self.tensors:  # (written under torch.no_grad() when they require grad, as at every call)
            torch_written(fn, roles, master)
        return arrays

    def keep(self, fn: str, roles, master, arrays: _Arrays | _GpuArrays) -> None:
        values = tuple(r[1] for r in roles)
        self.kept = (fn, values, master, arrays)
        self.tensors = [t for v in values + (master,) for t in (v if isinstance(v, (list, tuple)) else (v,))
                        if type(t).__module__.startswith("torch")]
        self.addresses = [(t.data_ptr(), t.shape) for t in self.tensors]


PREPARED: contextvars.ContextVar = contextvars.ContextVar("fastopt_prepared", default=None)


def run(fn: str, c_function, o, roles, *scalars, stream=None, found_inf=None, master_params=None,
        stochastic_rounding=None, step=None, steps=None, mu_products=None, sum_over=None, lrs=None,
        weight_decays=None):
    """Validates the arrays of roles, (name, array(s) or UNUSED, written[, "state"]), and calls C
    with the options struct o, or with the scalars when there is none; GPU arrays go to
    fastopt.cuda.  The state arrays' dtype, master_params, stochastic rounding and per-tensor steps
    (and NAdam's mu_products), lrs and weight_decays go into the options.  sum_over: LAMB's step in
    two phases around it (see fastopt.lamb)."""
    if stochastic_rounding is not None and steps is not None and not isinstance(stochastic_rounding, tuple):
        raise TypeError(f"fastopt.{fn}: stochastic_rounding must be (seed, counter) with per-tensor steps")
    prepared, given = PREPARED.get(), roles
    arrays = prepared.arrays(fn, roles, master_params) if prepared is not None else None
    if type(arrays) is _GpuArrays:  # a prepared GPU call: its views and table as they were
        rounding = None if stochastic_rounding is None else _rounding(fn, stochastic_rounding, step)
        call = _run_gpu(fn, c_function, o, roles, scalars, stream, found_inf, master_params, rounding, (), 0, steps,
                        mu_products, sum_over, lrs, weight_decays, known=arrays.call)
        bump_versions(arrays.written)
        _keep_gpu_repeat(prepared, c_function, o, call)
        return
    if arrays is None:
        written = torch_written(fn, roles, master_params)
        gpu = on_gpu(roles[0][1])
        roles, absmax, block = _quantized(fn, roles)
        if gpu:
            rounding = None if stochastic_rounding is None else _rounding(fn, stochastic_rounding, step)
            call = _run_gpu(fn, c_function, o, roles, scalars, stream, found_inf, master_params, rounding, absmax,
                            block, steps, mu_products, sum_over, lrs, weight_decays)
            if prepared is not None and call is not None:
                prepared.keep(fn, given, master_params, _GpuArrays(written, call))
                _keep_gpu_repeat(prepared, c_function, o, call)
            bump_versions(written)
            return
        if master_params is not None:
            roles = roles + [("master_params", master_params, True, "master")]
        dtype, numel, ptrs, state = gather(fn, roles)
        scales = [ffi.new("void *[]", [pointer(a) for a in scale]) for scale in absmax]
        masters = ffi.new("void *[]", ptrs.pop()) if master_params is not None else None
        arrays = _Arrays(written, block, dtype, ffi.new("size_t[]", numel),
                         [p if p == ffi.NULL else ffi.new("void *[]", p) for p in ptrs], state, scales, masters)
        if prepared is not None:
            prepared.keep(fn, given, master_params, arrays)
    written, block, dtype, numel, ptrs, state, scales, masters = arrays
    if o is not None:
        rounding = None if stochastic_rounding is None else _rounding(fn, stochastic_rounding, step)
        kept = with_arrays(fn, o, len(numel), state if state != dtype else None, steps, mu_products,  # noqa: F841
                           scales, block, masters, rounding, lrs, weight_decays)  # (alive for the call)
    if sum_over is not None:  # LAMB over shards: the moments and local sums, their sums over the processes, the params
        sums = np.zeros((len(numel), 2))
        o.phase, o.sums = lib.FASTOPT_LAMB_MOMENTS, ffi.from_buffer("double[]", sums)
        check(c_function(dtype, len(numel), numel, *ptrs, o), fn)
        sum_over(sums)  # (also when found_inf skips the step: a collective every process must join)
        o.phase = lib.FASTOPT_LAMB_APPLY
        check(c_function(dtype, len(numel), numel, *ptrs, o), fn)
        bump_versions(written)
        return
    status = c_function(dtype, len(numel), numel, *ptrs, o) if o is not None else \
        c_function(dtype, len(numel), numel, *ptrs, *scalars)
    if status:
        check(status, fn)
    bump_versions(written)
    if prepared is not None and o is not None:
        prepared.last = (c_function, (dtype, len(numel), numel, *ptrs), o, kept, None)


def _keep_gpu_repeat(prepared: Prepared, c_function, o, call) -> None:
    """A GPU optimizer call a prepared call can repeat (see fastopt.prepare): C's arguments, and the
    launch from the constants rows C writes (each tensor's where lr or weight decay is per tensor)."""
    if call is None or call.repeat is None:
        return
    head, rows, launch = call.repeat
    c = o.common
    prepared.last = (c_function, head, o, rows, lambda: launch(rows, c.lrs != ffi.NULL or c.weight_decays != ffi.NULL))


def with_arrays(fn: str, o, n: int, state_code=None, steps=None, mu_products=None, scales=(), block=0, masters=None,
                rounding=None, lrs=None, weight_decays=None) -> list:
    """Puts into the options o of a call over n tensors what its arrays carry: the state's dtype
    code (None: the params'), per-tensor steps, NAdam's products, lrs and weight decays, the 8-bit
    scales' and the master copies' pointer arrays, stochastic rounding's (seed, counter).  Host
    and device calls alike; returns what must stay alive until the call returns."""
    c, kept = o.common, []
    if state_code is not None:
        c.state_dtype = state_code
    for struct, field, name, values in ((c, "lrs", "lr", lrs), (c, "weight_decays", "weight_decay", weight_decays),
                                        (c, "steps", "step", steps), (o, "mu_products", "mu_product", mu_products)):
        if values is not None:
            kept.append(per_tensor(fn, name, values, n))
            setattr(struct, field, kept[-1])
    if scales:
        c.quant_block, c.absmax = block, list(scales) + [ffi.NULL] * (2 - len(scales))
        kept += scales
    if masters is not None:
        c.master_params = masters
        kept.append(masters)
    if rounding is not None:
        c.stochastic_rounding = 1
        c.rounding_seed, c.rounding_step = rounding
    return kept


def per_tensor(fn: str, name: str, values: np.ndarray, n: int):
    """A per-tensor array (int64 or float64) as C takes it (it reads n values), checked to have one
    value per tensor; the array must outlive the call."""
    if len(values) != n:
        raise ValueError(f"fastopt.{fn}: {name} has {len(values)} value{'s' if len(values) != 1 else ''}, one per "
                         f"tensor of params ({n}) is required")
    return ffi.from_buffer("int64_t[]" if values.dtype == np.int64 else "double[]", values)


def nadam_products(beta1: float, momentum_decay: float, step: int, steps, products):
    """Each tensor's NAdam momentum product through this step, in the dtype of products (the
    products before it, float32 or float64), by C's own arithmetic for mu_t (once per distinct step)."""
    at = steps if steps is not None else np.full(len(products), step)
    distinct, which = np.unique(at, return_inverse=True)
    mu = np.array([lib.fastopt_nadam_mu_product(1.0, beta1, momentum_decay, int(t)) for t in distinct])
    return products * mu[which].astype(products.dtype)


def _quantized(fn: str, roles):
    """roles with QuantizedState state replaced by their codes (kind "q8"), the absmax arrays of
    each such role, and the block size; unchanged roles when there is none."""
    for role in roles:  # the common case first, cheaply: no QuantizedState anywhere
        value = role[1]
        if type(value) is np.ndarray or value is UNUSED or len(role) < 4 or role[3] != "state":
            continue
        if isinstance(value[0] if isinstance(value, (list, tuple)) and value else value, QuantizedState):
            break
    else:
        return roles, [], 0
    signs = {r.arg: r.signed for r in OPTIMIZERS[fn].state}
    out, absmax, blocks = [], [], set()
    for name, value, written, *kind in roles:
        if not (kind == ["state"] and value is not UNUSED):
            out.append((name, value, written, *kind))
            continue
        states = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(q, QuantizedState) for q in states):
            raise TypeError(f"fastopt.{fn}: {name} mixes 8-bit and other state; with 8-bit state every state "
                            f"array is a fastopt.QuantizedState")
        if name == "max_exp_avg_sqs":
            raise ValueError(f"fastopt.{fn}: 8-bit state is supported by sgd with momentum, adam/adamw without "
                             f"amsgrad, and lion")
        signed = signs[name]
        if any(q.signed != signed for q in states):
            raise TypeError(f"fastopt.{fn}: {name} needs QuantizedState(..., signed={signed}) "
                            f"({'second moments are >= 0' if not signed else 'it takes both signs'})")
        blocks.update(q.block_size for q in states)
        codes = [q.codes for q in states]
        out.append((name, codes if isinstance(value, (list, tuple)) else codes[0], written, "q8"))
        absmax.append([q.absmax for q in states])
    if len(blocks) != 1:
        raise ValueError(f"fastopt.{fn}: the QuantizedStates of one call need one block_size, got {sorted(blocks)}")
    return out, absmax, blocks.pop()


def _rounding(fn: str, stochastic_rounding, step) -> tuple[int, int]:
    """(seed, counter) of stochastic rounding: a seed and the optimizer's step, or (seed, counter)."""
    value = stochastic_rounding
    if isinstance(value, tuple) and len(value) == 2:
        seed, counter = integer(fn, "stochastic_rounding[0]", value[0]), integer(fn, "stochastic_rounding[1]", value[1])
    elif step is not None:
        seed, counter = integer(fn, "stochastic_rounding", value), step
    else:
        raise TypeError(f"fastopt.{fn}: stochastic_rounding must be (seed, counter) for an optimizer without a step "
                        f"count (a new counter every call), got {value!r}")
    if not (0 <= seed < 2**64 and 0 <= counter < 2**32):
        raise ValueError(f"fastopt.{fn}: stochastic_rounding needs 0 <= seed < 2**64 and 0 <= counter < 2**32")
    return seed, counter


def on_gpu(value) -> bool:
    first = value[0] if isinstance(value, (list, tuple)) and value else value
    return type(first) is not np.ndarray and is_gpu_array(first)


def _run_gpu(fn, c_function, o, roles, scalars, stream, found_inf, master_params, rounding, absmax, block,
             steps=None, mu_products=None, sum_over=None, lrs=None, weight_decays=None, known=None):
    """The GPU path of run: fastopt.cuda checks what the array objects carry, C the rest (device
    addresses check as host ones do) and computes the constants, then the kernels launch.  Returns
    an optimizer's call (known: the one these arrays made before)."""
    from fastopt.cuda import _launch
    roles = [(name, None if value is UNUSED else value, written, *kind) for name, value, written, *kind in roles]
    if o is None:  # elastic_net_grad: C checks its two scalars (a call over no tensors), fastopt.cuda the arrays
        check(c_function(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, ffi.NULL, *scalars), fn)
        return _launch.elastic_net_grad(fn, roles[0][1], roles[1][1], *scalars, stream=stream)
    return _launch.optimizer(fn, c_function, o, roles, stream=stream, found_inf=found_inf,
                             master_params=master_params, rounding=rounding, absmax=absmax, block=block, steps=steps,
                             mu_products=mu_products, sum_over=sum_over, lrs=lrs, weight_decays=weight_decays,
                             known=known)
