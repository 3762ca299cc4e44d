"""fastopt's optimizers as drop-ins for torch.optim: subclasses of ``torch.optim.Optimizer`` with
torch's constructor arguments, defaults, param groups, state-dict layout, hooks and schedulers.

    opt = fastopt.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    loss.backward(); opt.step(); opt.zero_grad()

Each step is one fused fastopt call per (device, dtype) bucket of a param group: on the CPU the C
kernels update the tensors in place through their own pointers (no copies, and the validated
pointers of params and state are kept between steps); CUDA tensors go to fastopt's CUDA kernels on
torch's current stream.  Checkpoints are interchangeable with ``torch.optim``'s: a state dict saved
from ``torch.optim.AdamW`` loads here and back, and training continues on the same trajectory.

``torch.amp.GradScaler`` drives these optimizers as it drives torch's fused ones: it hands over its
scale and found-inf flag, and the update divides the gradients by the scale in its own pass and
skips the step (writing nothing, not counting it) when the flag is set.

Beyond torch's arguments every optimizer takes ``l1_prox`` (the fused L1 proximal step, see
:mod:`fastopt.functional`) and, for float16/bfloat16 params (CPU or CUDA), ``state_dtype``
(``torch.float32`` or ``torch.bfloat16``; default: the params' dtype, as torch) and
``master_weights=True``: a float32 copy of each param (state key ``"master_param"``) is what the
update steps, in the same pass, and the 16-bit param is written from it.  Both keep their dtypes
through ``load_state_dict`` (torch casts other state to the param's dtype).  Complex params
are stepped as their real and imaginary parts, as torch steps them.  Sparse gradients and
``differentiable=True`` raise; ``foreach``, ``fused`` and ``capturable`` are accepted for
compatibility and change nothing (every step here is fused).
"""
from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import math
import operator
import sys
import weakref

import numpy as np
import torch
import torch.autograd.profiler as _profiler
import torch.optim.optimizer as _torch_optim

from fastopt import _calls, _steady, functional
from fastopt._arrays import gather, host_view
from fastopt._native import check, ffi, lib
from fastopt._optimizers import OPTIMIZERS, used_state

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Lion", "LAMB",
           "register_functional_optimizers"]

_C_DTYPES = {torch.float32: lib.FASTOPT_FLOAT32, torch.float64: lib.FASTOPT_FLOAT64,
             torch.float16: lib.FASTOPT_FLOAT16, torch.bfloat16: lib.FASTOPT_BFLOAT16}
_GPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_is_compiling = torch.compiler.is_compiling
_increment_version = torch._C._increment_version  # of a list of tensors (torch.autograd.graph.increment_version)


def _tensor_address_function() -> int:
    """The address of torch's C function void *(PyObject *tensor) giving a tensor's data pointer,
    which the code torch.compile generates calls: the native step reads each tensor's memory
    through it in ~5 ns, against ~40 ns for data_ptr().  0 (data_ptr() then) where this torch has
    none or it does not give data_ptr()'s answer."""
    function = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    function = getattr(function, "_torchinductor_pyobject_tensor_data_ptr", 0)
    probe = torch.ones(2)
    works = type(function) is int and function != 0 and _steady.tensor_address(function, probe) == probe.data_ptr() \
        and _steady.tensor_address(function, probe[1:]) == probe[1:].data_ptr()
    return function if works else 0


_TENSOR_ADDRESS = _tensor_address_function()
_data_ptr, _is_contiguous, _strides = torch.Tensor.data_ptr, torch.Tensor.is_contiguous, torch.Tensor.stride
_grad, _nbytes, _NoneType = operator.attrgetter("grad"), operator.attrgetter("nbytes"), type(None)
_params = operator.itemgetter("params")
_lr_and_decay = operator.itemgetter("lr", "weight_decay")
_lr_only = operator.itemgetter("lr", "lr")  # (a pair as _lr_and_decay, its second unused)


def _is_sharded(t) -> bool:
    """Whether t is a DTensor (FSDP2's params, their grads and state): stepped through its local shard."""
    return hasattr(t, "_local_tensor")


def _local(t):
    """t's local shard if t is a DTensor, else t."""
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def _shard_groups(t) -> list:
    """The process groups over which a DTensor is sharded (its mesh dimensions that shard it)."""
    return [t.device_mesh.get_group(d) for d, placement in enumerate(t.placements) if placement.is_shard()]


def _all_reduce(values: torch.Tensor, groups) -> None:
    """Sums values over the processes of each group, in place."""
    import torch.distributed as dist
    for g in groups:
        dist.all_reduce(values, group=g)


def sharded_norm(grads, norm_type: float, stream=None) -> float:
    """fastopt.global_norm over tensors some of which are DTensors (FSDP2's gradients): each set of
    tensors sharded alike contributes its local shards' norm, reduced over the processes that hold
    the other shards (a sum of p-th powers, or a maximum); replicated dimensions count once."""
    import torch.distributed as dist
    by: dict = {}
    for g in _as_list(grads):
        groups = tuple(_shard_groups(g)) if _is_sharded(g) else ()
        by.setdefault(groups, []).append(_flat(_local(g).detach()))
    total = 0.0
    for groups, locals_ in by.items():
        local = functional.global_norm(locals_, norm_type, stream=stream)
        value = torch.tensor([local if math.isinf(norm_type) else local ** norm_type], dtype=torch.float64)
        for g in groups:
            dist.all_reduce(value, op=dist.ReduceOp.MAX if math.isinf(norm_type) else dist.ReduceOp.SUM, group=g)
        total = max(total, float(value)) if math.isinf(norm_type) else total + float(value)
    return total if math.isinf(norm_type) else total ** (1.0 / norm_type)


def sharded_clip(grads, max_norm: float, norm_type: float, stream=None) -> float:
    """fastopt.clip_grad_norm over DTensor gradients: the norm over the processes (sharded_norm),
    then each local shard scaled by min(1, max_norm / (norm + 1e-6)); returns the norm."""
    grads = _as_list(grads)
    norm = sharded_norm(grads, norm_type, stream)
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        with torch.no_grad():
            torch._foreach_mul_([_local(g) for g in grads], factor)
    return norm


@torch.no_grad()
def _unscale(grads: list, scale: float) -> None:
    """The gradients divided by GradScaler's scale in place, as torch's fused optimizers leave them."""
    torch._foreach_div_(grads, scale)


def _address(x) -> int:
    """A cffi pointer's address, as fastopt._steady takes it."""
    return int(ffi.cast("uintptr_t", x))


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _same(a: tuple, b) -> bool:
    """Whether two tuples of a group's values are equal: element by element, identical objects
    first (cheap when they are the very objects); a tensor that cannot be compared to one bool
    (a caller's own group entry) makes them differ."""
    try:
        return a == b
    except RuntimeError:
        return False


def _mutable(value) -> bool:
    """Whether a hyper-parameter's value can change in place (a tensor, a list, an array, a dict)."""
    return torch.is_tensor(value) or isinstance(value, (list, dict, np.ndarray))


def _same_layout(a, b) -> bool:
    """Whether two tensors of one shape pair their elements in memory: the same strides, or both
    C-contiguous (strides of size-1 dims aside)."""
    return a.stride() == b.stride() or (a.is_contiguous() and b.is_contiguous())


def _dense(t) -> bool:
    """Whether t's elements fill its memory without gaps or overlaps, in some order of its dims."""
    if t.is_contiguous():
        return True
    expected = 1
    for st, n in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if st != expected:
            return False
        expected *= n
    return True


def _real_dtype(dtype):
    """The dtype a tensor of dtype is stepped as: a complex one as its real and imaginary parts,
    as torch's optimizers step it (torch.view_as_real)."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _flat(t):
    """t as a 1-D view of its memory: elementwise updates need dense memory, not C order (a
    channels_last weight, its gradient and its state share strides and are stepped in place); a
    complex tensor as its real and imaginary parts, interleaved."""
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.is_contiguous():
        return t.view(-1)
    if not _dense(t):
        raise RuntimeError("fastopt.torch: a tensor is not dense in memory (overlapping or with gaps)")
    return t.as_strided((t.numel(),), (1,))


_PER_TENSOR = ("params", "lr", "weight_decay")  # what differs between param groups stepped in one call
# a group's entries that its C options struct is not made from: set each call (lr), read per tensor
# each call (a merged group's members and their groups' values)
_NOT_IN_OPTIONS = ("params", "lr", "_groups", "_member_of")
_NATIVE_WAIT = 64  # steps without a native plan after one declined its first step (see _plan_natively)


def _per_tensor(group, bucket, idx):
    """(lrs, weight_decays) of a merged group's call over the bucket's members at positions idx
    (None: all), each member its own group's (float64 arrays); (None, None) for a plain group.
    The arrays over all members are kept while the groups' values are the same objects."""
    groups = group.get("_groups")
    if groups is None:
        return None, None
    decayed = "weight_decay" in groups[0]
    values = list(map(_lr_and_decay if decayed else _lr_only, groups))
    if idx is None and bucket.per_tensor is not None and _same(values, bucket.per_tensor[0]):
        return bucket.per_tensor[1]
    member_of = group["_member_of"][bucket.index if idx is None else np.asarray(bucket.index)[idx]]
    lrs = np.array([float(v[0]) for v in values])[member_of]
    decays = np.array([float(v[1]) for v in values])[member_of] if decayed else None
    if idx is None and not any(map(torch.is_tensor, itertools.chain.from_iterable(values))):  # (a tensor lr or
        # weight decay may change in place)
        bucket.per_tensor = (values, (lrs, decays))
    return lrs, decays


class _Bucket:
    """The params of one group that share a device and a dtype and have optimizer state, with that
    state: each step, one fastopt call for those of them that have a gradient (SGD: two when some
    take their first momentum step).

    Each param keeps its own step count, as in torch: its ``state["step"]`` is a 0-d view into the
    bucket's ``step_counts``, so one in-place add (through ``counts``, a NumPy view of the same
    memory) advances every param stepped, and the per-tensor counts reach the kernels as one array,
    each tensor with its own bias correction.  NAdam's ``mu_product`` likewise.  What the bucket
    keeps (pointers, state) is a cache, checked every step by :meth:`valid`, never the truth.
    """

    def __init__(self, opt, group, params, index, grads):
        self.params, self.index = params, index  # index: positions in the group's params
        # DTensor params (FSDP2): the bucket steps their local shards, which param, grad and state
        # share (state is made with zeros_like(param): a DTensor of the same placement)
        self.sharded = _is_sharded(params[0])
        self.locals = [_local(p) for p in params] if self.sharded else params
        self.shard_groups = _shard_groups(params[0]) if self.sharded else []
        grads = [_local(g) for g in grads] if self.sharded else grads
        self.device, self.dtype = params[0].device, _real_dtype(params[0].dtype)  # (the dtype C steps)
        self.cpu = self.device.type == "cpu"
        # a param not dense in memory (a strided view with gaps) is stepped through a contiguous copy
        # of itself, its values gathered before each call and written back after (see gather)
        self.copies = {i: torch.empty(p.shape, dtype=p.dtype, device=p.device) for i, p in enumerate(self.locals)
                       if not _dense(p)}
        self.targets = [self.copies.get(i, p) for i, p in enumerate(self.locals)]  # what the kernels write
        self.keys = opt._state_keys(group)
        self.states = [opt.state[p] for p in params] if opt._keeps_state(group, params[0]) else None
        self.fresh = [p in opt._unstepped for p in params] if self.states else [False] * len(params)
        self.any_fresh = any(self.fresh)
        self.counts = self.mu_products = None
        self.versioned = []  # tensors written only by the bucket: a torch in-place op elsewhere moves their version
        if opt._stepped:  # (float64 where every count is, as torch makes them under a float64 default dtype)
            wide = all(torch.is_tensor(s["step"]) and s["step"].dtype == torch.float64 for s in self.states)
            step_counts = torch.tensor([float(s["step"]) for s in self.states],
                                       dtype=torch.float64 if wide else torch.float32)
            for i, s in enumerate(self.states):
                s["step"] = step_counts[i]
            self.counts = step_counts.numpy()
            self.versioned.append(step_counts)
        if self.states and "mu_product" in self.states[0]:  # in the dtype torch keeps them in (float32, or
            # the params' after torch's load_state_dict; 16-bit ones in float32)
            mu_products = torch.stack([s["mu_product"].detach().cpu().reshape(()) for s in self.states])
            if mu_products.dtype not in (torch.float32, torch.float64):
                mu_products = mu_products.float()
            for i, s in enumerate(self.states):
                s["mu_product"] = mu_products[i]
            self.mu_products = mu_products.numpy()
            self.versioned.append(mu_products)
        # state laid out as what the kernels write (a checkpoint of another layout): the update
        # pairs elements in memory
        for p, t, s in zip(params, self.targets, self.states or ()):
            for k in (*self.keys, "master_param"):
                if k in s and not _same_layout(_local(s[k]), t):
                    s[k] = torch.empty_like(p if t is _local(p) else t, dtype=s[k].dtype).copy_(s[k])
        self.state = {k: [_flat(_local(s[k])) for s in self.states] for k in self.keys}
        self.masters = [_flat(_local(s["master_param"])) for s in self.states] if _has_master(group, params[0]) \
            else None
        self.pointers = [p.data_ptr() for p in self.locals]
        self.strides = list(map(_strides, self.locals))
        # the state tensors themselves (and master copies): `.data = ...` on one moves its memory
        self.held = [_local(s[k]) for s in self.states or () for k in (*self.keys, "master_param") if k in s]
        self.held_pointers = list(map(_data_ptr, self.held))
        self.container, self.generation = opt.state, opt.state.generation
        self.versioned = [t for t in self.versioned if not t.is_inference()]  # (made under inference_mode: none)
        self.versions = [t._version for t in self.versioned]
        self.contiguous = all(t.is_contiguous() for t in self.targets)
        self.nbytes = list(map(_nbytes, self.locals))
        self.flat_params = [_flat(t.detach()) for t in self.targets]  # (detached: the same version counter)
        self.written = self.written_by(range(len(params)))
        self.per_tensor = None  # a merged group's (values, (lrs, weight decays)) over every param
        if self.cpu:
            # the checks of an ordinary call, once, on zero-copy NumPy views of the same memory
            grads = self.check_grads(range(len(grads)), grads)
            views = [("params", self.flat_params, True), ("grads", [_flat(g) for g in grads], False)] + \
                [(k, v, True, "state") for k, v in self.state.items()] + \
                ([("master_params", self.masters, True, "master")] if self.masters else [])
            gather(opt._function(group).__name__, [(n, [host_view(t) for t in ts], *rest) for n, ts, *rest in views])
            self.addresses = {"params": [t.data_ptr() for t in self.targets]}
            self.addresses.update({k: [t.data_ptr() for t in v] for k, v in self.state.items()})
            if self.masters:
                self.addresses["master_params"] = [t.data_ptr() for t in self.masters]
            self.numel = [t.numel() for t in self.flat_params]
            self.state_code = _C_DTYPES[next(iter(self.state.values()))[0].dtype] if self.state else None
            self.full = None  # the pointer arrays of a call over every param, made when first used
            self.options = self.options_key = self.seen = None  # the C options struct, the values it was made from

    def written_by(self, idx) -> list:
        """The tensors a call over the members at positions idx writes, whose versions it bumps:
        params, state, master copies (DTensors and their local shards both: autograd may have saved
        either), but for inference tensors (state made under torch.inference_mode: no version)."""
        out = [self.params[i] for i in idx]
        for i in idx:
            s = self.states[i] if self.states else {}
            out += [s[k] for k in self.keys] + ([s["master_param"]] if self.masters else [])
        out = out + [_local(t) for t in out] if self.sharded else out
        return [t for t in out if not t.is_inference()]

    def valid(self, opt) -> bool:
        """Whether the params' memory and their state are still what the bucket keeps: ``p.data =
        ...``, ``load_state_dict`` or an engine assigning ``opt.state[p]`` rebuild it."""
        if list(map(_data_ptr, self.locals)) != self.pointers or list(map(_data_ptr, self.held)) != self.held_pointers \
                or list(map(_strides, self.locals)) != self.strides:  # (p.data = a view at the same address)
            return False
        return opt.state is self.container and opt.state.generation == self.generation and \
            [t._version for t in self.versioned] == self.versions

    def check_grads(self, positions, grads) -> list:
        """The gradients to step the members at positions with: each gradient checked to have its
        param's size in bytes (a ``.grad.data`` swapped or resized behind its param) and to be
        dense (not sparse), and where its memory layout is not its param's (a gradient assigned
        by hand; a param not dense in memory) a copy in that layout.  One flag per gradient when
        the params are C-contiguous, as most are."""
        if list(map(_nbytes, grads)) != [self.nbytes[i] for i in positions]:
            raise RuntimeError("fastopt.torch: a gradient's size or dtype differs from its parameter's "
                               "(its .data replaced or resized)")
        try:
            if self.contiguous and all(map(_is_contiguous, grads)):
                return grads
        except RuntimeError:  # a sparse gradient has no layout to ask: _check_grad names it
            pass
        out = list(grads)
        for j, (i, g) in enumerate(zip(positions, grads)):
            _check_grad(g)
            t = self.targets[i]
            if not _same_layout(g, t):
                out[j] = torch.empty_like(t, dtype=g.dtype).copy_(g.detach())
        return out

    def gather(self, idx) -> None:
        """The contiguous copies of members at positions idx (None: all) not dense in memory take
        their params' values (which the caller may have changed since the last step)."""
        for i in self._copied(idx):
            self.copies[i].copy_(self.locals[i].detach())

    def scatter(self, idx) -> None:
        """Those params take their stepped copies' values."""
        for i in self._copied(idx):
            self.locals[i].detach().copy_(self.copies[i])

    def _copied(self, idx) -> list:
        """The positions among idx (None: all) of members stepped through a copy."""
        return list(self.copies) if idx is None else [i for i in idx if i in self.copies]

    def call_arrays(self, idx, grads):
        """(params, grads, {state key: tensors}, master copies or None) of a GPU call over the
        members at positions idx (None: all), as fastopt.functional takes them."""
        pick = (lambda xs: xs) if idx is None else (lambda xs: [xs[i] for i in idx])
        return (pick(self.flat_params), [_flat(g) for g in grads], {k: pick(v) for k, v in self.state.items()},
                pick(self.masters) if self.masters else None)

    def run(self, opt, group, function, idx, grads, scale, first, step, steps, products):
        """One C call over the CPU members at positions idx (None: all), through the pointers the
        bucket validated; returns NAdam's products through this step (else None)."""
        optimizer = OPTIMIZERS[function.__name__]
        o = self._options(opt, group, optimizer, scale, first)
        pointers = self._pointers(idx, grads)
        c = o.common
        if optimizer.takes_step:
            o.step = step
            c.steps = ffi.NULL if steps is None else ffi.from_buffer("int64_t[]", steps)
        through = wide = None
        if products is not None:  # each member's product kept in its dtype, as torch keeps it
            through = _calls.nadam_products(o.beta1, o.momentum_decay, step, steps, products)
            wide = through.astype(np.float64)
            o.mu_product, o.mu_products = float(products[0]), ffi.from_buffer("double[]", wide)
        c.master_params = pointers["master_params"] if self.masters else ffi.NULL
        numel = pointers["numel"]
        lrs, decays = _per_tensor(group, self, idx)  # (a merged group's: alive for the call)
        c.lrs = ffi.NULL if lrs is None else ffi.from_buffer("double[]", lrs)
        c.weight_decays = ffi.NULL if decays is None else ffi.from_buffer("double[]", decays)

        args = (_C_DTYPES[self.dtype], len(numel), numel, pointers["params"], pointers["grads"],
                *[pointers.get(r.key, ffi.NULL) for r in optimizer.state], o)

        def call():
            status = self.c_function(*args)
            if status:
                check(status, optimizer.name)
        if optimizer.name == "lamb" and self.sharded:  # trust ratios of whole tensors: sums over the shards
            sums = np.zeros(2 * len(numel))
            o.sums = ffi.from_buffer("double[]", sums)  # (clipped through the grad_scale: LAMB._scales)
            o.phase = lib.FASTOPT_LAMB_MOMENTS
            try:
                call()
                _all_reduce(torch.from_numpy(sums), self.shard_groups)
                o.phase = lib.FASTOPT_LAMB_APPLY
                call()
            finally:
                o.phase, o.sums = lib.FASTOPT_LAMB_WHOLE, ffi.NULL
        else:
            call()
        return through

    def _options(self, opt, group, optimizer, scale, first):
        """The group's C options struct and C function, made again only when a hyper-parameter
        other than lr changes (lr, which schedulers change every step, and the grad scale are set
        each call).  The group's values being the very objects of the last call tells it without
        comparing them."""
        seen = (tuple(group.values()), optimizer, first)
        if not _same(seen, self.seen):
            key = (optimizer, first, [v for k, v in group.items() if k not in _NOT_IN_OPTIONS])
            if not _same(key, self.options_key):
                hyper = opt._hyper(group, first)
                c = _calls.common(optimizer.name, 0.0, hyper.pop("weight_decay"), hyper.pop("maximize"),
                                  hyper.pop("l1_prox"))
                if "betas" in hyper:
                    hyper["beta1"], hyper["beta2"] = hyper.pop("betas")
                o = self.options = _calls.options(optimizer, optimizer.name, c, {"step": 1, "mu_product": 1.0, **hyper})
                if self.state_code is not None:
                    o.common.state_dtype = self.state_code
                self.c_function = getattr(lib, f"fastopt_{optimizer.c_name}")
                # a tensor or a list among the values (betas from a config file) may change in place,
                # unseen: then the struct is made every call
                cacheable = not any(_mutable(v) or (type(v) is tuple and any(map(_mutable, v))) for v in key[2])
                self.options_key = key if cacheable else None
            self.seen = seen if self.options_key is not None else None
        c = self.options.common
        c.lr, c.grad_scale = float(group["lr"]), scale or 0.0  # (0: none)
        if optimizer.name == "lamb":  # (its clipping may be in the grad_scale: see LAMB._scales)
            self.options.max_grad_norm = 0.0 if opt._global_clip else group["max_grad_norm"]
        return self.options

    def _pointers(self, idx, grads) -> dict:
        """{role: pointer array} and "numel" of a call over the members at positions idx (None:
        all); the array over every member is made once, its gradients' addresses refreshed."""
        if idx is None:
            full = self.whole_call()
            self.grad_addresses[0:len(grads)] = list(map(_data_ptr, grads))
            return full
        out = {role: self._array([addresses[i] for i in idx]) for role, addresses in self.addresses.items()}
        out["grads"] = self._array(list(map(_data_ptr, grads)))
        out["numel"] = ffi.new("size_t[]", [self.numel[i] for i in idx])
        return out

    def whole_call(self) -> dict:
        """{role: pointer array} and "numel" of a call over every member, made once; its
        gradients' addresses are the caller's to write (through grad_addresses)."""
        if self.full is None:
            self.full = {role: self._array(addresses) for role, addresses in self.addresses.items()}
            self.full["grads"] = self._array(self.pointers)
            self.full["numel"] = ffi.new("size_t[]", self.numel)
            self.grad_addresses = ffi.cast("uintptr_t *", self.full["grads"])
        return self.full

    @staticmethod
    def _array(addresses):
        """A C array of pointers (which owns its memory) holding these addresses."""
        array = ffi.new("void *[]", len(addresses))
        ffi.cast("uintptr_t *", array)[0:len(addresses)] = addresses
        return array


_MUTATORS = ("__setitem__", "__delitem__", "pop", "popitem", "clear", "update", "setdefault", "__ior__")


def _counting(base):
    """base's mutating methods, each bumping ``self._owner().generation`` first (but for fastopt's
    own changes: see _State.own_changes)."""
    def wrap(name):
        def method(self, *args, **kwargs):
            owner = self._owner()
            owner.generation += not owner.own
            return getattr(base, name)(self, *args, **kwargs)
        method.__name__ = name
        return method
    return {name: wrap(name) for name in _MUTATORS}


class _State(collections.defaultdict):
    """torch.optim's per-param state, a ``defaultdict(dict)`` that counts every change of its
    entries and of their own entries (an engine assigning ``opt.state[p] = {...}``, a loop resetting
    ``opt.state[p]["step"]``): a bucket tells in O(1) that the state it keeps is still the
    optimizer's.  Each param's dict is a _ParamState counting into this one."""

    locals().update(_counting(collections.defaultdict))

    def __init__(self, entries=()):
        super().__init__(dict)
        self.generation, self.own = 0, False
        for key, value in dict(entries).items():
            self[key] = value

    def _owner(self):
        return self

    @contextlib.contextmanager
    def own_changes(self):
        """fastopt's own changes (state made, step views put in place) leave the count as it is."""
        self.own = True
        try:
            yield
        finally:
            self.own = False

    def __setitem__(self, key, value):
        self.generation += not self.own
        if type(value) is dict:  # (a plain dict of the caller's: counted from now on)
            value = _ParamState(self, value)
        super().__setitem__(key, value)

    def __missing__(self, key):
        value = self[key] = _ParamState(self)
        return value

    def __reduce__(self):  # pickles (and deep-copies) as torch's own state does
        return (collections.defaultdict, (dict, {k: dict(v) for k, v in self.items()}))


class _ParamState(dict):
    """One param's state dict, counting its changes into the optimizer's _State."""

    locals().update(_counting(dict))

    def __init__(self, owner, entries=()):
        super().__init__(entries)
        self._owner = weakref.ref(owner)

    def __reduce__(self):
        return (dict, (dict(self),))


def _has_master(group, p) -> bool:
    """Whether p keeps a float32 master copy: master_weights asked for, and 16-bit params."""
    return bool(group.get("master_weights")) and p.dtype in (torch.float16, torch.bfloat16)


def _check_grad(g) -> None:
    """A gradient fastopt can step with: dense (its layout may differ from its param's: see
    _Bucket.check_grads)."""
    if g.layout != torch.strided:
        raise RuntimeError(f"fastopt.torch: {'sparse' if g.is_sparse else str(g.layout)} gradients are not supported; "
                           "use torch.optim.SparseAdam or dense gradients")


class _Optimizer(torch.optim.Optimizer):
    """The shared machinery: buckets, the fused step, state dicts, GradScaler's handshake.

    A subclass sets ``_update`` (the fastopt.functional function: its row of the optimizer table
    names the state and says whether a step is counted), implements ``_hyper`` (the function's
    keyword arguments from a group) and optionally ``_init_state``.
    """

    _update = None
    _stepped = True        # has a 'step' in its state (from the table)
    _takes_step = True     # _update takes step= (from the table)
    _init_eagerly = False  # state made at construction (Adagrad), as torch does

    _torch = None  # the torch.optim class this one replaces: its constructor validates as torch's does

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        row = OPTIMIZERS[cls._update.__name__]
        cls._stepped, cls._takes_step = row.keeps_step, row.takes_step

    def __init__(self, params, defaults):
        if self._torch is not None:
            # torch's own constructor checks the hyper-parameters (its errors, before anything about
            # params) and gives its defaults (tensor betas as numbers); our extras join them
            accepted = inspect.signature(self._torch).parameters
            extras = {k: defaults[k] for k in ("l1_prox", "state_dtype", "master_weights")}
            defaults = {**self._torch([torch.zeros(1, requires_grad=True)],
                                      **{k: v for k, v in defaults.items() if k in accepted}).defaults, **extras}
        if defaults.get("differentiable"):
            raise ValueError(f"{type(self).__name__}: differentiable=True is not supported by fastopt's fused kernels")
        self._buckets: dict = {}
        self._merges: dict = {}  # {ids of param groups: (their values, the group standing for them)}
        self._shared = None      # a group's hyper-parameters that one call shares (see _shared_values)
        self._plan = None        # the steady state's step (see _steady_plan)
        self._native = None      # the same, checked and run in C (see _native_plan)
        self._native_wait = 0    # steps before the next native plan is made (see _plan_natively)
        self._unstepped: set = set()  # params whose state was made and that have not been stepped since
        super().__init__(params, defaults)
        self.state = _State(self.state)
        self._step_supports_amp_scaling = True  # GradScaler passes grad_scale / found_inf

    def __setstate__(self, state: dict) -> None:
        """torch's load_state_dict and unpickling (copy.deepcopy) set the state through here.  The
        entries a group of an older checkpoint lacks are filled as torch's own class fills them
        (its __setstate__, run on a stand-in sharing the groups), then from the defaults."""
        super().__setstate__(state)
        if self._torch is not None:
            stand_in = object.__new__(self._torch)
            self._torch.__setstate__(stand_in, {"param_groups": self.param_groups, "state": {},
                                                "defaults": dict(self.defaults)})
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        self.state = _State(self.state)
        self._buckets, self._merges, self._unstepped, self._plan, self._shared = {}, {}, set(), None, None
        self._native, self._native_wait = None, 0

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:  # (a refused group leaves the optimizer as it was)
            for p in group["params"]:
                real = _real_dtype(p.dtype)
                if real not in _GPU_DTYPES or (p.device.type == "cpu" and real not in _C_DTYPES):
                    raise TypeError(f"{type(self).__name__}: parameters of dtype {p.dtype} are not supported "
                                    f"(float32, float64, float16, bfloat16, complex64, complex128)")
                if p.is_complex() and (group.get("state_dtype") or group.get("master_weights")):
                    raise ValueError(f"{type(self).__name__}: state_dtype and master_weights are for real "
                                     f"16-bit parameters, not {p.dtype}")
            self._check_hyper(group)
        except Exception:
            self.param_groups.pop()
            raise
        if self._init_eagerly:
            for p in group["params"]:
                self._ensure_state(p, group)
        self._buckets.clear()
        self._merges.clear()

    def _check_hyper(self, group) -> None:
        """Validates a group's hyper-parameters by the library itself, on a one-element problem."""
        lr = group["lr"]
        if torch.is_tensor(lr) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        function = self._function(group)
        state = {r.arg: np.ones(1) for r in OPTIMIZERS[function.__name__].state}
        function(np.ones(1), np.ones(1), **state, **({"step": 1} if self._takes_step else {}), lr=float(lr),
                 **self._hyper(group, first=True))

    def load_state_dict(self, state_dict) -> None:
        extras = [{k: g[k] for k in _EXTRAS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, kept in zip(self.param_groups, extras):  # a group saved without fastopt's entries keeps ours
            for k, v in kept.items():
                group.setdefault(k, v)
        # torch casts loaded state to its param's dtype: master copies are float32 and state has
        # the group's state_dtype, so those come again from the saved tensors
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            for p, i in zip(group["params"], saved_group["params"]):
                for key, value in state_dict["state"].get(i, {}).items():
                    dtype = torch.float32 if key == "master_param" else None if key in ("step", "mu_product") \
                        else group.get("state_dtype")
                    if dtype is not None and torch.is_tensor(value):
                        self.state[p][key] = value.to(dtype=dtype, device=p.device, copy=True)
        self._unstepped.clear()
        self._buckets.clear()
        self._merges.clear()

    def state_dict(self) -> dict:
        """torch's layout; every parameter's own 'step' (and 'mu_product') as a tensor of its own,
        as torch's optimizers expect when they load it.  fastopt's own group entries (l1_prox,
        state_dtype, master_weights) appear only where they are not their defaults, so that the
        state dict has torch's keys (distributed checkpoints load by the keys of the loader's).
        Post-hooks get it so, as torch's get theirs."""
        post_hooks = self._optimizer_state_dict_post_hooks  # (theirs see the state dict in torch's layout)
        self._optimizer_state_dict_post_hooks = collections.OrderedDict()
        try:
            sd = super().state_dict()
        finally:
            self._optimizer_state_dict_post_hooks = post_hooks
        own = ("step", "mu_product")
        sd["state"] = {i: {k: (v.clone() if k in own and torch.is_tensor(v) else v) for k, v in s.items()}
                       if isinstance(s, dict) else s for i, s in sd["state"].items()}  # (a hook's own entries as they are)
        sd["param_groups"] = [{k: v for k, v in g.items() if not (k in _EXTRAS and v == _EXTRAS[k])}
                              for g in sd["param_groups"]]
        for hook in post_hooks.values():
            result = hook(self, sd)
            sd = sd if result is None else result
        return sd

    # ---- state ----

    def _state_keys(self, group) -> list[str]:
        """The state keys a group's steps use, as torch names them."""
        return [r.key for r in used_state(OPTIMIZERS[self._function(group).__name__], group)]

    def _function(self, group):
        """The fastopt.functional update this group steps with."""
        return type(self)._update

    def _init_state(self, key, p, group):
        return torch.zeros_like(p, dtype=group.get("state_dtype") or p.dtype, memory_format=torch.preserve_format)

    def _keeps_state(self, group, p) -> bool:
        """Whether p has optimizer state (SGD without momentum has none, not even an entry, as in torch)."""
        return self._stepped or bool(self._state_keys(group)) or _has_master(group, p)

    def _ensure_state(self, p, group) -> None:
        """Makes p's state, as torch's first step (or Adagrad's constructor) makes it."""
        keys = self._state_keys(group)
        if not self._keeps_state(group, p):
            return
        state = self.state[p]
        made = False
        if self._stepped and "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=_torch_optim._get_scalar_dtype())
        for k in keys:
            if state.get(k) is None:  # (None: reset by the user, e.g. SGD's momentum_buffer, as torch allows)
                state[k] = self._init_state(k, p, group)
                made = True
        if _has_master(group, p) and "master_param" not in state:
            state["master_param"] = p.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)
        if made:
            self._unstepped.add(p)

    # ---- the step ----

    def _fused_step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0:
            return loss  # GradScaler found an inf/NaN: torch's fused optimizers skip, step count included
        scale = float(grad_scale) if grad_scale is not None else None
        scales = self._scales(scale)
        if self._steady_step(scales):
            if self._native is None:
                self._plan_natively()
        else:
            plan = []
            for group, group_scale in (zip(self.param_groups, scales) if len(self.param_groups) == 1 else
                                       self._merged_groups(scales)):
                grads = [p.grad for p in group["params"]]
                if all(g is None for g in grads):
                    continue
                for bucket in self._buckets_of(group, grads):
                    self._step_bucket(group, bucket, grads, group_scale)
                plan.append((group, self._buckets.get(id(group))))
            self._plan, self._native = self._steady_plan(plan), None
            self._plan_natively()
        if scale is not None:  # the grads left unscaled, as torch's fused optimizers leave them
            _unscale([p.grad for g in self.param_groups for p in g["params"] if p.grad is not None], scale)
        return loss

    def _steady_plan(self, stepped):
        """What :meth:`_steady_step` needs to repeat this step, when it can: every param group
        stepped, each (merged) group's params all in its buckets (one per device and dtype), CPU or
        CUDA, not sharded, every param past its first step; else None.  stepped: (group stepped,
        its cached buckets)."""
        groups = self.param_groups
        position = {id(g): i for i, g in enumerate(groups)}
        entries, covered = [], []
        for group, cached in stepped:
            buckets = cached[4] if cached is not None else ()
            if not buckets or cached[3] is not None or any(b.sharded or b.any_fresh for b in buckets):
                return None  # (cached[3]: which params are members, None when all are)
            members = [position[id(g)] for g in group.get("_groups", [group])]
            covered += members
            # the grad scale of the entry's groups, one value (their scales must be equal to step together)
            entries += [(group, cached, bucket, members, operator.itemgetter(*members, members[0]))
                        for bucket in buckets]
        if sorted(covered) != list(range(len(groups))):
            return None
        params = list(map(_params, groups))
        return (self.state, self.state.generation, list(groups), list(map(self._shared_values(), groups)),
                list(map(len, params)), [p for ps in params for p in ps], entries)

    def _plan_natively(self) -> None:
        """Makes the native plan of the steady plan, but not for _native_wait more steps after a
        native plan that declined its first step or a plan that could not be made (a loop that
        changes what C compares each step, NAdam): making one costs tens of microseconds."""
        if self._native_wait:
            self._native_wait -= 1
            return
        self._native = self._native_plan(self._plan)
        if self._native is None:
            self._native_wait = _NATIVE_WAIT

    def _native_plan(self, plan):
        """The steady plan as ``fastopt._steady.Plan`` checks and runs it in C (csrc/python/steady.c),
        or None where only the Python steady step can take it: a GPU bucket, non-contiguous params
        (channels_last), NAdam's products, LAMB's norms, a hyper-parameter that may change in
        place.  Members at different steps (a param skipped on some step lags) take each its own."""
        if plan is None:
            return None
        state, generation, groups, _, _, _, entries = plan
        skip = [() for _ in groups]
        rows, address = [], _address
        for group, _, bucket, members, _ in entries:
            function = self._function(group)
            optimizer = OPTIMIZERS[function.__name__]
            merged = "_groups" in group
            if not bucket.cpu or not bucket.contiguous or bucket.copies or bucket.mu_products is not None or \
                    optimizer.name == "lamb":
                return None
            if bucket.options_key is None:  # (a value that may change in place: the struct is made every call)
                return None
            shared = bucket._options(self, group, optimizer, None, False)  # the struct of a steady call
            o = ffi.new(ffi.typeof(shared))  # the plan's own copy, which C writes each step
            ffi.memmove(o, shared, ffi.sizeof(ffi.typeof(shared).item))
            decayed = merged and "weight_decay" in group["_groups"][0]
            # what C reads each step: lr; a merged group's weight decays; a plain group's betas and
            # momentum, when they are the struct's fields as they are (a one-cycle schedule cycles them)
            read = ["lr"] + (["weight_decay"] if decayed else [])
            fields = dict(ffi.typeof(shared).item.fields)
            betas = group.get("betas")
            beta_at = (-1, -1)
            if not merged and type(betas) is tuple and len(betas) == 2 and "beta1" in fields and \
                    (o.beta1, o.beta2) == tuple(map(float, betas)):
                beta_at, read = (fields["beta1"].offset, fields["beta2"].offset), read + ["betas"]
            momentum_at = -1
            if not merged and "momentum" in fields and type(group.get("momentum")) in (float, int) and \
                    group["momentum"] > 0 and o.momentum == float(group["momentum"]):
                momentum_at, read = fields["momentum"].offset, read + ["momentum"]
            for i in members:
                keys = list(groups[i])
                skip[i] = tuple(sorted(keys.index(k) for k in read if k in keys))
            pointers = bucket.whole_call()
            state_arrays = [pointers.get(r.key, ffi.NULL) for r in optimizer.state]
            rows.append((
                optimizer.name, address(ffi.addressof(lib, f"fastopt_{optimizer.c_name}")), len(optimizer.state),
                _C_DTYPES[bucket.dtype], len(bucket.params), address(pointers["numel"]), address(pointers["params"]),
                address(pointers["grads"]), tuple(map(address, state_arrays + [ffi.NULL] * (3 - len(state_arrays)))),
                address(pointers["master_params"]) if bucket.masters else 0, address(o),
                fields["step"].offset if self._takes_step else -1,
                bucket.counts.ctypes.data if bucket.counts is not None else 0,
                -1 if merged else members[0],
                tuple(members[m] for m in group["_member_of"][bucket.index]) if merged else None, decayed,
                tuple(bucket.locals), tuple(bucket.pointers), tuple(bucket.held), tuple(bucket.held_pointers),
                bucket.contiguous, bucket.written, (bucket, o),  # (keep: what the addresses point into)
                beta_at, momentum_at, bucket.counts is not None and bucket.counts.dtype == np.float64))
        return _steady.Plan(state, generation, tuple(groups), tuple(tuple(g.items()) for g in groups),
                            tuple(skip), tuple(tuple(g["params"]) for g in groups),
                            (_profiler, _torch_optim, _increment_version, _unscale, _TENSOR_ADDRESS), tuple(rows))

    def _steady_step(self, scales) -> bool:
        """The step of a training loop's steady state: the same param groups, params, state and
        shared hyper-parameters as the planned step (lr and weight_decay may change), every param
        with a gradient; one call per planned bucket, skipping the search for buckets.  Returns
        False, having written nothing, when this step is not that (the general path runs)."""
        plan = self._plan
        if plan is None:
            return False
        state, generation, groups, values, lengths, params, entries = plan
        if self.state is not state or state.generation != generation or len(self.param_groups) != len(groups) \
                or not all(map(operator.is_, self.param_groups, groups)):
            return False
        now = list(map(_params, groups))  # (C-level loops: a model may have dozens of groups)
        if list(map(len, now)) != lengths or not all(map(operator.is_, itertools.chain.from_iterable(now), params)) \
                or not _same(list(map(self._shared, groups)), values):
            return False
        calls = []
        for group, cached, bucket, _, scales_of in entries:
            group_scales = set(scales_of(scales))
            grads = list(map(_grad, bucket.params))
            if self._buckets.get(id(group)) is not cached or _NoneType in map(type, grads) or \
                    len(group_scales) != 1 or not bucket.valid(self):
                return False
            scale, = group_scales
            calls.append((group, bucket, grads, scale))
        for group, bucket, grads, scale in calls:
            self._call(group, bucket, None, grads, scale, first=False)
        return True

    def _shared_values(self):
        """A getter of a group's hyper-parameters that one call shares (all but params, lr and
        weight_decay; the defaults' keys are fixed)."""
        if self._shared is None:
            self._shared = operator.itemgetter(*(k for k in self.defaults if k not in _PER_TENSOR))
        return self._shared

    def _merged_groups(self, scales):
        """(group, grad scale) pairs to step: the param groups whose hyper-parameters differ only in
        lr and weight_decay (no decay on biases and norms, layer-wise lr; what else a group holds,
        such as a scheduler's initial_lr, does not count) as one group, whose members take their
        own group's values per tensor (its "_groups" and "_member_of"); others as they are."""
        shared_values = self._shared_values()
        sets: dict = {}
        for group, group_scale in zip(self.param_groups, scales):
            shared = shared_values(group)  # the hyper-parameters one call shares
            row = (tuple(map(id, group["params"])), shared)
            try:
                key = (group_scale, shared)
                hash(key)
            except TypeError:  # (a tensor or a list among the values: a set of its own)
                key = id(group)
            entry = sets.setdefault(key, (group_scale, [], []))
            entry[1].append(group)
            entry[2].append(row)
        return [(groups[0] if len(groups) == 1 else self._merge(groups, rows), group_scale)
                for group_scale, groups, rows in sets.values()]

    def _merge(self, groups, rows):
        """One group standing for these (kept while they hold the same params and values, so
        that its buckets stay cached): their params in order, lr and weight_decay per member.
        rows: each group's params (their ids) and shared hyper-parameters."""
        key = tuple(map(id, groups))
        cached = self._merges.get(key)
        if cached is not None and all(map(_same, rows, cached[0])):
            return cached[1]
        merged = {k: groups[0][k] for k in self.defaults if k not in _PER_TENSOR}
        merged.update(params=[p for g in groups for p in g["params"]], lr=0.0, weight_decay=0.0, _groups=groups,
                      _member_of=np.repeat(np.arange(len(groups)), [len(g["params"]) for g in groups]))
        self._merges[key] = (rows, merged)
        self._buckets.pop(id(cached[1]), None) if cached is not None else None
        return merged

    def _scales(self, scale):
        """Each group's grad_scale for this step (the loss scale; LAMB adds its clipping)."""
        return [scale] * len(self.param_groups)

    _observed_step = torch.optim.Optimizer.profile_hook_step(_fused_step)

    def step(self, closure=None):
        """One fused update of every param group (see the class's formula); returns closure()'s loss.

        Params whose grad is None are skipped, their step counts unchanged, as torch skips them.
        Step hooks and the profiler's record_function run as torch.optim runs them, when there are
        any (torch wraps every step in them, which costs ~10 us a step on its own)."""
        if _is_compiling():  # under torch.compile: run whole, outside the graph (C through pointers)
            return self._eager_step(closure)
        native = self._native
        if closure is None and native is not None:
            if native(self):
                return None  # the steady step, checked and made in C (hooks and the profiler off)
            self._native = None  # (planned again after a step in Python; not soon if it never stepped)
            self._native_wait = _NATIVE_WAIT if native.steps == 0 else 0
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _profiler._is_profiler_enabled
                or _torch_optim._global_optimizer_pre_hooks or _torch_optim._global_optimizer_post_hooks):
            return self._observed_step(closure)
        return self._fused_step(closure)

    step.hooked = True  # tells torch.optim.Optimizer not to wrap it again

    @torch.compiler.disable
    def _eager_step(self, closure=None):
        """step() as Dynamo must not trace it (a graph break, then this, eagerly)."""
        return self._observed_step(closure)

    def _buckets_of(self, group, grads):
        """The group's buckets, rebuilt when a param gets its first gradient or what a bucket keeps
        no longer matches the params and the state."""
        params = group["params"]
        if type(self.state) is not _State:  # reassigned (a reset): counted from now on
            self.state = _State(self.state)
        cached = self._buckets.get(id(group))
        if cached is not None:
            ids, values, keys, members, buckets = cached  # members: None when every param is one
            if ids == tuple(map(id, params)) and \
                    (_same(values, tuple(group.values())) or keys == self._state_keys(group)) and \
                    (members is None or all(g is None or m for g, m in zip(grads, members))) and \
                    all(b.valid(self) for b in buckets):
                return buckets
        with self.state.own_changes():
            return self._rebuild(group, grads)

    def _rebuild(self, group, grads):
        params = group["params"]
        for p, g in zip(params, grads):
            if g is not None:
                _check_grad(_local(g))
                self._ensure_state(p, group)
        members = [not self._keeps_state(group, p) or bool(self.state.get(p)) for p in params]
        by = {}
        for i, (p, member) in enumerate(zip(params, members)):
            if member:
                by.setdefault((p.device, p.dtype, _is_sharded(p)), []).append(i)
        # A bucket binds its members' step counts (and NAdam's products) to its own arrays: another
        # cached bucket of the same params (a group merged with others, or again on its own) would
        # count from where it last stepped, so it goes.
        ids = set(map(id, params))
        for key in [k for k, cached in self._buckets.items() if ids.intersection(cached[0])]:
            del self._buckets[key]
        buckets = []
        for index in by.values():  # (members without a gradient now: checked as zeros of their layout)
            bucket_grads = [grads[i] if grads[i] is not None else torch.zeros_like(params[i]) for i in index]
            buckets.append(_Bucket(self, group, [params[i] for i in index], index, bucket_grads))
            buckets[-1].whole = index == list(range(len(params)))  # every param of the group, in order
        self._buckets[id(group)] = (tuple(map(id, params)), tuple(group.values()), self._state_keys(group),
                                    None if all(members) else members, buckets)
        return buckets

    def _step_bucket(self, group, bucket: _Bucket, grads, scale) -> None:
        mine = grads if bucket.whole else [grads[i] for i in bucket.index]
        if bucket.sharded:
            mine = [None if g is None else _local(g) for g in mine]
        if not bucket.any_fresh and all(g is not None for g in mine):
            self._call(group, bucket, None, mine, scale, first=False)
            return
        have = [g is not None for g in mine]
        calls = [(first, [i for i, (h, f) in enumerate(zip(have, bucket.fresh)) if h and f == first])
                 for first in (True, False)]  # (made before any call: a call clears fresh)
        for first, idx in calls:  # SGD's first momentum step is its own call
            if idx:
                self._call(group, bucket, np.array(idx), [mine[i] for i in idx], scale, first)

    def _call(self, group, bucket: _Bucket, idx, grads, scale, first: bool) -> None:
        """One fastopt call over the bucket's members at positions idx (None: all) and its bookkeeping:
        step counts, NAdam's mu_product, autograd's version counters."""
        grads = bucket.check_grads(range(len(grads)) if idx is None else idx, grads)
        function, counts = self._function(group), bucket.counts
        step = steps = None
        if self._takes_step:  # the step being taken: each member's count + 1
            if idx is None and (counts == counts[0]).all():  # (read each call: a count may be set in place)
                step = int(counts[0]) + 1
            else:
                steps = (counts if idx is None else counts[idx]).astype(np.int64) + 1
                step = int(steps[0])
                steps = None if (steps == step).all() else steps
        products = None if bucket.mu_products is None else bucket.mu_products if idx is None else \
            bucket.mu_products[idx]
        bucket.gather(idx)
        if bucket.cpu:
            out = bucket.run(self, group, function, idx, grads, scale, first, step, steps, products)
        else:  # CUDA tensors: fastopt.functional, written in place under no_grad as torch.optim writes them
            params, grads_in, state, masters = bucket.call_arrays(idx, grads)
            kwargs = self._hyper(group, first=first)
            kwargs.update({r.arg: state[r.key] for r in OPTIMIZERS[function.__name__].state if r.key in state})
            if self._takes_step:
                kwargs["step"] = step if steps is None else steps
            if products is not None:
                kwargs["mu_product"] = products
            if bucket.sharded and function is functional.lamb:  # trust ratios of whole tensors: sums over the shards
                device = params[0].device
                kwargs["sum_over"] = lambda sums: _all_reduce(torch.as_tensor(sums, device=device), bucket.shard_groups)
            lrs, decays = _per_tensor(group, bucket, idx)
            if decays is not None:
                kwargs["weight_decay"] = decays
            with torch.no_grad():
                out = function(params, grads_in, lr=float(group["lr"]) if lrs is None else lrs, grad_scale=scale,
                               master_params=masters, **kwargs)
        bucket.scatter(idx)
        if counts is not None:  # (in place: the params' step tensors are views of the same memory)
            if idx is None:
                counts += 1
            else:
                counts[idx] += 1
        if bucket.mu_products is not None:  # the products through this step, in their dtype
            bucket.mu_products[slice(None) if idx is None else idx] = out
        if bucket.any_fresh:
            for i in (range(len(bucket.params)) if idx is None else idx):
                self._unstepped.discard(bucket.params[i])
                bucket.fresh[i] = False
            bucket.any_fresh = any(bucket.fresh)
        if bucket.cpu:  # (tensors' own calls bump what they write: fastopt.functional)
            _increment_version(bucket.written if idx is None else bucket.written_by(idx))

    def _hyper(self, group, first: bool) -> dict:
        raise NotImplementedError


_EXTRAS = {"l1_prox": 0.0, "state_dtype": None, "master_weights": False}  # fastopt's group entries, their defaults


def _extras(defaults: dict, l1_prox, state_dtype, master_weights) -> dict:
    defaults.update(l1_prox=l1_prox, state_dtype=state_dtype, master_weights=bool(master_weights))
    return defaults


class SGD(_Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, weight decay (see :func:`fastopt.sgd`)."""

    _torch = torch.optim.SGD

    _update = staticmethod(functional.sgd)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, momentum=momentum, dampening=dampening,
                                              weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                              foreach=foreach, differentiable=differentiable, fused=fused),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        decay = group["weight_decay"]  # (torch's SGD takes a tensor: its value at each step)
        return dict(momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
                    weight_decay=float(decay) if torch.is_tensor(decay) else decay, maximize=group["maximize"],
                    first_step=first, l1_prox=group.get("l1_prox", 0.0))


class Adam(_Optimizer):
    """torch.optim.Adam (see :func:`fastopt.adam`; ``decoupled_weight_decay=True``: AdamW)."""

    _torch = torch.optim.Adam

    _update = staticmethod(functional.adam)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                              capturable=capturable, differentiable=differentiable, fused=fused,
                                              decoupled_weight_decay=decoupled_weight_decay),
                                         l1_prox, state_dtype, master_weights))

    def _function(self, group):
        return functional.adamw if group.get("decoupled_weight_decay", False) else functional.adam

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    amsgrad=group["amsgrad"], maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (see :func:`fastopt.adamw`)."""

    _torch = torch.optim.AdamW

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, l1_prox=l1_prox, state_dtype=state_dtype,
                         master_weights=master_weights)


class RMSprop(_Optimizer):
    """torch.optim.RMSprop: centered, momentum (see :func:`fastopt.rmsprop`)."""

    _torch = torch.optim.RMSprop

    _update = staticmethod(functional.rmsprop)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                              weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                              maximize=maximize, differentiable=differentiable),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum=group["momentum"], centered=group["centered"], maximize=group["maximize"],
                    l1_prox=group.get("l1_prox", 0.0))


class Adagrad(_Optimizer):
    """torch.optim.Adagrad (see :func:`fastopt.adagrad`); state made at construction, as torch does."""

    _torch = torch.optim.Adagrad

    _update = staticmethod(functional.adagrad)
    _init_eagerly = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                              initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                              maximize=maximize, differentiable=differentiable, fused=fused),
                                         l1_prox, state_dtype, master_weights))

    def _init_state(self, key, p, group):
        value = self.defaults["initial_accumulator_value"]  # (a complex param's real and imaginary parts, as torch)
        return torch.full_like(p, complex(value, value) if p.is_complex() else value,
                               dtype=group.get("state_dtype") or p.dtype, memory_format=torch.preserve_format)

    def _hyper(self, group, first):
        return dict(lr_decay=group["lr_decay"], eps=group["eps"], weight_decay=group["weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class NAdam(_Optimizer):
    """torch.optim.NAdam (see :func:`fastopt.nadam`); mu_product kept in the state, as torch does."""

    _torch = torch.optim.NAdam

    _update = staticmethod(functional.nadam)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              momentum_decay=momentum_decay,
                                              decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                                              foreach=foreach, capturable=capturable,
                                              differentiable=differentiable), l1_prox, state_dtype, master_weights))

    def _ensure_state(self, p, group):
        if "mu_product" not in self.state[p]:
            self.state[p]["mu_product"] = torch.tensor(1.0, dtype=_torch_optim._get_scalar_dtype())
        super()._ensure_state(p, group)

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum_decay=group["momentum_decay"], decoupled_weight_decay=group["decoupled_weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class RAdam(_Optimizer):
    """torch.optim.RAdam (see :func:`fastopt.radam`)."""

    _torch = torch.optim.RAdam

    _update = staticmethod(functional.radam)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              maximize=maximize, foreach=foreach, capturable=capturable,
                                              decoupled_weight_decay=decoupled_weight_decay,
                                              differentiable=differentiable), l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
                    l1_prox=group.get("l1_prox", 0.0))


class Adamax(_Optimizer):
    """torch.optim.Adamax (see :func:`fastopt.adamax`)."""

    _torch = torch.optim.Adamax

    _update = staticmethod(functional.adamax)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              foreach=foreach, maximize=maximize, differentiable=differentiable,
                                              capturable=capturable), l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class Lion(_Optimizer):
    """Lion (optax rules; see :func:`fastopt.lion`); state key 'exp_avg'."""

    _update = staticmethod(functional.lion)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3, *, maximize=False, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), weight_decay=group["weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class LAMB(_Optimizer):
    """LAMB (apex FusedLAMB rules; see :func:`fastopt.lamb`); state keys 'exp_avg', 'exp_avg_sq'.

    As apex, one gradient norm over every param group clips them, each by its own max_grad_norm;
    with sharded (DTensor, FSDP2) params the norm and each tensor's trust ratio are over the whole
    tensors, summed over the processes holding their shards."""

    _update = staticmethod(functional.lamb)
    _global_clip = False  # this step's clipping is in each group's grad_scale (see _scales)

    def _scales(self, scale):
        grads = [(p, p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None]
        sharded = [(p, g) for p, g in grads if _is_sharded(p)]
        self._global_clip = len(self.param_groups) > 1 or bool(sharded)
        if not self._global_clip:  # one group of whole tensors: the C call clips by its own norm
            return [scale]
        squares = 0.0
        by = {}
        for p, g in grads:
            by.setdefault((_is_sharded(p), g.device, g.dtype), []).append(_flat(_local(g).detach()))
        for (is_sharded, _, _), gs in by.items():
            if not is_sharded:
                squares += functional.global_norm(gs) ** 2
        if sharded:  # each process's shards: their squares summed over the processes
            local = torch.tensor([sum(functional.global_norm(gs) ** 2 for (sh, _, _), gs in by.items() if sh)],
                                 dtype=torch.float64)
            _all_reduce(local, _shard_groups(sharded[0][0]))
            squares += float(local)
        norm = squares ** 0.5 / (scale or 1.0)  # of the unscaled gradients, as apex clips them
        out = []
        for group in self.param_groups:
            limit = group["max_grad_norm"]
            factor = norm / limit if limit > 0 and norm > limit else 1.0
            out.append(None if scale is None and factor == 1.0 else (scale or 1.0) * factor)
        return out

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, *,
                 use_nvlamb=False, maximize=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              max_grad_norm=max_grad_norm, use_nvlamb=use_nvlamb, maximize=maximize),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    max_grad_norm=0.0 if self._global_clip else group["max_grad_norm"], use_nvlamb=group["use_nvlamb"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


# ---- torch.distributed's functional optimizers (ZeroRedundancyOptimizer(overlap_with_ddp=True)) ----

class _Functional:
    """A fastopt.torch optimizer as torch.distributed's functional optimizers are: made on a list of
    params (possibly empty, on a rank that owns none), stepped with a list of gradients, one per
    param (ZeRO's overlap with DDP steps each bucket's params from DDP's communication hook)."""

    optimizer_class: type = None

    def __init__(self, params, _allow_empty_param_list: bool = False, **defaults):
        params = list(params)
        if not params and not _allow_empty_param_list:
            raise ValueError(f"{self.optimizer_class.__name__}: got an empty parameter list")
        self.optimizer = self.optimizer_class([{"params": params}], **defaults)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def step(self, gradients) -> None:
        """One fused step of the params with these gradients (None: the param is skipped)."""
        params = self.optimizer.param_groups[0]["params"]
        if len(gradients) != len(params):
            raise ValueError(f"{type(self).__name__}.step: got {len(gradients)} gradients for {len(params)} params")
        kept = [p.grad for p in params]
        try:
            for p, g in zip(params, gradients):
                p.grad = g
            self.optimizer.step()
        finally:
            for p, g in zip(params, kept):
                p.grad = g


def register_functional_optimizers() -> None:
    """Registers each fastopt.torch optimizer with torch.distributed as its own functional
    optimizer, so that ``ZeroRedundancyOptimizer(..., optimizer_class=fastopt.torch.AdamW,
    overlap_with_ddp=True)`` works.  Called at import when torch.distributed.optim is loaded
    already; otherwise call it once before making such an optimizer (importing
    torch.distributed.optim takes seconds, which ``import fastopt.torch`` does not impose)."""
    from torch.distributed.optim.utils import register_functional_optim
    for cls in (globals()[row.class_name] for row in OPTIMIZERS.values()):
        register_functional_optim(cls, type(f"_Functional{cls.__name__}", (_Functional,), {"optimizer_class": cls}))


if "torch.distributed.optim.utils" in sys.modules:
    register_functional_optimizers()
