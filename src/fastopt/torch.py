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
through ``load_state_dict`` (torch casts other state to the param's dtype).  Sparse
gradients, complex parameters and ``differentiable=True`` raise; ``foreach``, ``fused`` and
``capturable`` are accepted for compatibility and change nothing (every step here is fused).
"""
from __future__ import annotations

import torch
import torch.autograd.profiler as _profiler
import torch.optim.optimizer as _torch_optim

from fastopt import functional
from fastopt._arrays import Prepared, gather, host_view
from fastopt._native import ffi, lib

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Lion", "LAMB"]

_C_DTYPES = {torch.float32: lib.FASTOPT_FLOAT32, torch.float64: lib.FASTOPT_FLOAT64,
             torch.float16: lib.FASTOPT_FLOAT16, torch.bfloat16: lib.FASTOPT_BFLOAT16}
_GPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class _Bucket:
    """The params of one group that share a device, a dtype and a step count, with their state:
    one fastopt call per step.  On the CPU the pointer arrays of params and state are built once;
    only the gradients' pointers are refreshed each step."""

    def __init__(self, opt, group, params, index):
        self.params, self.index = params, index  # index: positions in the step's grads (None: all)
        self.device, self.dtype = params[0].device, params[0].dtype
        first = opt.state[params[0]]
        self.step_tensor = first.get("step")
        self.step = int(self.step_tensor.item()) if self.step_tensor is not None else 0
        for p in params:  # one step tensor for the bucket: one increment a step, not one per param
            if self.step_tensor is not None:
                opt.state[p]["step"] = self.step_tensor
        self.keys = opt._state_keys(group)
        self.state = {k: [opt.state[p][k] for p in params] for k in self.keys}
        self.masters = [opt.state[p]["master_param"] for p in params] if _has_master(group, params[0]) else None
        self.mu_product = float(first["mu_product"]) if "mu_product" in first else 1.0
        if "mu_product" in first:
            self.mu_tensor = first["mu_product"]
            for p in params:
                opt.state[p]["mu_product"] = self.mu_tensor
        self.cpu = self.device.type == "cpu"
        if self.cpu:
            # the checks of an ordinary call, once, on zero-copy NumPy views of the same memory
            views = [("params", params, True), ("grads", [p.grad for p in params], False)] + \
                [(k, v, True, "state") for k, v in self.state.items()] + \
                ([("master_params", self.masters, True, "master")] if self.masters else [])
            gather(opt._function(group).__name__, [(n, [host_view(t) for t in ts], *rest) for n, ts, *rest in views])
            code = _C_DTYPES[self.dtype]
            numel = ffi.new("size_t[]", [p.numel() for p in params])
            self.grad_addresses = ffi.new("uintptr_t[]", len(params))
            self.checked_grads = [None] * len(params)

            def prepared(tensors, addresses=None, dtype_code=code):
                addresses = addresses or ffi.new("uintptr_t[]", [t.data_ptr() for t in tensors])
                return Prepared(dtype_code, numel, ffi.cast("void *const *", addresses), (addresses, tensors))
            self.roles = {"params": prepared(params), "grads": prepared(None, self.grad_addresses)}
            self.roles.update({k: prepared(v, dtype_code=_C_DTYPES[v[0].dtype]) for k, v in self.state.items()})
            if self.masters:
                self.roles["master_params"] = prepared(self.masters, dtype_code=lib.FASTOPT_FLOAT32)

    def master_params(self):
        """The float32 master copies as the fastopt call takes them, or None."""
        if not self.masters:
            return None
        return self.roles["master_params"] if self.cpu else self.masters

    def arrays(self, grads):
        """(params, grads, {state key: arrays}) as the fastopt call takes them this step."""
        if self.index is not None:
            grads = [grads[j] for j in self.index]
        if not self.cpu:
            return self.params, grads, self.state
        addresses, checked = self.grad_addresses, self.checked_grads
        for i, g in enumerate(grads):
            if g is not checked[i]:  # a new gradient tensor: torch has checked its device, dtype, shape
                if g.is_sparse or not g.is_contiguous():
                    raise RuntimeError(_sparse_or_strided(g))
                checked[i] = g
            addresses[i] = g.data_ptr()
        return self.roles["params"], self.roles["grads"], {k: self.roles[k] for k in self.state}


def _has_master(group, p) -> bool:
    """Whether p keeps a float32 master copy: master_weights asked for, and 16-bit params."""
    return bool(group.get("master_weights")) and p.dtype in (torch.float16, torch.bfloat16)


def _sparse_or_strided(g) -> str:
    if g.is_sparse:
        return "fastopt.torch: sparse gradients are not supported; use torch.optim.SparseAdam or dense gradients"
    return "fastopt.torch: a gradient is not contiguous; fastopt needs dense, contiguous gradients"


class _Optimizer(torch.optim.Optimizer):
    """The shared machinery: buckets, the fused step, state dicts, GradScaler's handshake.

    A subclass sets ``_update`` (the fastopt.functional function), ``_positional`` (torch state keys
    in the function's positional order), and implements ``_state_keys`` (those a group uses),
    ``_hyper`` (the function's keyword arguments from a group) and optionally ``_init_state``.
    """

    _update = None
    _positional: tuple = ()
    _keyword: dict = {}    # torch state key -> keyword argument of _update
    _stepped = True        # has a 'step' in its state
    _takes_step = True     # _update takes step=
    _init_eagerly = False  # state made at construction (Adagrad), as torch does

    def __init__(self, params, defaults):
        if defaults.get("differentiable"):
            raise ValueError(f"{type(self).__name__}: differentiable=True is not supported by fastopt's fused kernels")
        self._buckets: dict = {}
        super().__init__(params, defaults)
        self._step_supports_amp_scaling = True  # GradScaler passes grad_scale / found_inf

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(f"{type(self).__name__}: complex parameters are not supported")
            if p.dtype not in _GPU_DTYPES or (p.device.type == "cpu" and p.dtype not in _C_DTYPES):
                raise TypeError(f"{type(self).__name__}: parameters of dtype {p.dtype} are not supported "
                                f"(float32, float64, float16, bfloat16)")
        self._check_hyper(group)
        if self._init_eagerly:
            for p in group["params"]:
                self._ensure_state(p, group)
        self._buckets.clear()

    def _check_hyper(self, group) -> None:
        """Validates a group's hyper-parameters by the library itself, on a one-element problem."""
        import numpy as np
        keys = [k for k in self._positional if k in self._state_keys(group)]
        one = {k: np.ones(1) for k in ("params", "grads", *keys, *self._keyword)}
        kwargs = {kw: one[key] for key, kw in self._keyword.items() if key in self._state_keys(group)}
        if self._takes_step:
            kwargs["step"] = 1
        self._function(group)(one["params"], one["grads"], *[one[k] if k in keys else None for k in self._positional],
                              lr=float(group["lr"]), **kwargs, **self._hyper(group, first=True))

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        # torch casts loaded state to its param's dtype: master copies are float32 and state has
        # the group's state_dtype, so those come again from the saved tensors
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            for p, i in zip(group["params"], saved_group["params"]):
                for key, value in state_dict["state"].get(i, {}).items():
                    dtype = torch.float32 if key == "master_param" else None if key in ("step", "mu_product") \
                        else group.get("state_dtype")
                    if dtype is not None and torch.is_tensor(value):
                        self.state[p][key] = value.to(dtype=dtype, device=p.device, copy=True)
        self._buckets.clear()

    def state_dict(self) -> dict:
        """torch's layout; every parameter gets its own 'step' (and 'mu_product') tensor, as torch's
        own optimizers expect when they load it."""
        sd = super().state_dict()
        sd["state"] = {i: {k: (v.clone() if k in ("step", "mu_product") else v) for k, v in s.items()}
                       for i, s in sd["state"].items()}
        return sd

    # ---- state ----

    def _state_keys(self, group) -> list[str]:
        return list(self._positional)

    def _function(self, group):
        """The fastopt.functional update this group steps with."""
        return type(self)._update

    def _init_state(self, key, p, group):
        return torch.zeros_like(p, dtype=group.get("state_dtype") or p.dtype, memory_format=torch.contiguous_format)

    def _ensure_state(self, p, group) -> None:
        state = self.state[p]
        if self._stepped and "step" not in state:
            state["step"] = torch.tensor(0.0)
        for k in self._state_keys(group):
            if k not in state:
                state[k] = self._init_state(k, p, group)
        if _has_master(group, p) and "master_param" not in state:
            state["master_param"] = p.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)

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
        for group in self.param_groups:
            buckets, grads = self._buckets_of(group)
            for bucket in buckets:
                self._step_bucket(group, bucket, grads, scale)
        return loss

    _observed_step = torch.optim.Optimizer.profile_hook_step(_fused_step)

    def step(self, closure=None):
        """One fused update of every param group (see the class's formula); returns closure()'s loss.

        Step hooks and the profiler's record_function run as torch.optim runs them, when there are
        any (torch wraps every step in them, which costs ~10 us a step on its own)."""
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _profiler._is_profiler_enabled
                or _torch_optim._global_optimizer_pre_hooks or _torch_optim._global_optimizer_post_hooks):
            return self._observed_step(closure)
        return self._fused_step(closure)

    step.hooked = True  # tells torch.optim.Optimizer not to wrap it again

    def _buckets_of(self, group):
        """(the group's buckets, the gradients of its params that have one), buckets rebuilt when
        the params with gradients, or the memory behind them, changed."""
        params = group["params"]
        grads = [p.grad for p in params]
        if any(g is None for g in grads):  # params without a gradient are skipped, as torch skips them
            params = [p for p, g in zip(params, grads) if g is not None]
            grads = [g for g in grads if g is not None]
        key = (id(group), tuple(map(id, params)))
        pointers = [p.data_ptr() for p in params]
        cached = self._buckets.get(key)
        if cached is not None and cached[0] == pointers:
            return cached[1], grads
        by = {}
        for i, (p, g) in enumerate(zip(params, grads)):
            if g.is_sparse:
                raise RuntimeError(_sparse_or_strided(g))
            fresh = not self.state[p]
            self._ensure_state(p, group)
            s = self.state[p]
            by.setdefault((p.device, p.dtype, int(s["step"]) if "step" in s else 0, fresh), []).append(i)
        buckets = []
        for (_, _, _, fresh), index in by.items():
            bucket = _Bucket(self, group, [params[i] for i in index], None if len(by) == 1 else index)
            bucket.fresh = fresh
            buckets.append(bucket)
        self._buckets[key] = (pointers, buckets)
        return buckets, grads

    def _step_bucket(self, group, bucket: _Bucket, grads, scale) -> None:
        params, grads, state = bucket.arrays(grads)
        kwargs = self._hyper(group, first=bucket.fresh)
        for key, kw in self._keyword.items():
            if key in state:
                kwargs[kw] = state[key]
        if self._takes_step:
            kwargs["step"] = bucket.step + 1
        if hasattr(bucket, "mu_tensor"):
            kwargs["mu_product"] = bucket.mu_product
        if scale is not None:
            kwargs["grad_scale"] = scale
        if bucket.masters:
            kwargs["master_params"] = bucket.master_params()
        positional = [state.get(k) for k in self._positional]
        out = self._function(group)(params, grads, *positional, lr=float(group["lr"]), **kwargs)
        bucket.fresh = False
        if self._stepped:
            bucket.step += 1
            bucket.step_tensor.add_(1)
        if hasattr(bucket, "mu_tensor"):
            bucket.mu_product = out
            bucket.mu_tensor.fill_(out)

    def _hyper(self, group, first: bool) -> dict:
        raise NotImplementedError


def _extras(defaults: dict, l1_prox, state_dtype, master_weights) -> dict:
    defaults.update(l1_prox=l1_prox, state_dtype=state_dtype, master_weights=bool(master_weights))
    return defaults


class SGD(_Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, weight decay (see :func:`fastopt.sgd`)."""

    _update = staticmethod(functional.sgd)
    _positional = ("momentum_buffer",)
    _stepped = _takes_step = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, momentum=momentum, dampening=dampening,
                                              weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                              foreach=foreach, differentiable=differentiable, fused=fused),
                                         l1_prox, state_dtype, master_weights))

    def _state_keys(self, group):
        return ["momentum_buffer"] if group["momentum"] != 0 else []

    def _hyper(self, group, first):
        return dict(momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"], first_step=first,
                    l1_prox=group.get("l1_prox", 0.0))


class Adam(_Optimizer):
    """torch.optim.Adam (see :func:`fastopt.adam`; ``decoupled_weight_decay=True``: AdamW)."""

    _update = staticmethod(functional.adam)
    _positional = ("exp_avg", "exp_avg_sq")
    _keyword = {"max_exp_avg_sq": "max_exp_avg_sqs"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                              capturable=capturable, differentiable=differentiable, fused=fused,
                                              decoupled_weight_decay=decoupled_weight_decay),
                                         l1_prox, state_dtype, master_weights))

    def _state_keys(self, group):
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])

    def _function(self, group):
        return functional.adamw if group.get("decoupled_weight_decay", False) else functional.adam

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    amsgrad=group["amsgrad"], maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (see :func:`fastopt.adamw`)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, l1_prox=l1_prox, state_dtype=state_dtype,
                         master_weights=master_weights)


class RMSprop(_Optimizer):
    """torch.optim.RMSprop: centered, momentum (see :func:`fastopt.rmsprop`)."""

    _update = staticmethod(functional.rmsprop)
    _positional = ("square_avg", "grad_avg", "momentum_buffer")
    _takes_step = False

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                              weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                              maximize=maximize, differentiable=differentiable),
                                         l1_prox, state_dtype, master_weights))

    def _state_keys(self, group):
        return ["square_avg"] + (["momentum_buffer"] if group["momentum"] > 0 else []) + \
            (["grad_avg"] if group["centered"] else [])

    def _hyper(self, group, first):
        return dict(alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum=group["momentum"], centered=group["centered"], maximize=group["maximize"],
                    l1_prox=group.get("l1_prox", 0.0))


class Adagrad(_Optimizer):
    """torch.optim.Adagrad (see :func:`fastopt.adagrad`); state made at construction, as torch does."""

    _update = staticmethod(functional.adagrad)
    _positional = ("sum",)
    _init_eagerly = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                              initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                              maximize=maximize, differentiable=differentiable, fused=fused),
                                         l1_prox, state_dtype, master_weights))

    def _init_state(self, key, p, group):
        return torch.full_like(p, group["initial_accumulator_value"], dtype=group.get("state_dtype") or p.dtype,
                               memory_format=torch.contiguous_format)

    def _hyper(self, group, first):
        return dict(lr_decay=group["lr_decay"], eps=group["eps"], weight_decay=group["weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class NAdam(_Optimizer):
    """torch.optim.NAdam (see :func:`fastopt.nadam`); mu_product kept in the state, as torch does."""

    _update = staticmethod(functional.nadam)
    _positional = ("exp_avg", "exp_avg_sq")

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
            self.state[p]["mu_product"] = torch.tensor(1.0)
        super()._ensure_state(p, group)

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum_decay=group["momentum_decay"], decoupled_weight_decay=group["decoupled_weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class RAdam(_Optimizer):
    """torch.optim.RAdam (see :func:`fastopt.radam`)."""

    _update = staticmethod(functional.radam)
    _positional = ("exp_avg", "exp_avg_sq")

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


class Lion(_Optimizer):
    """Lion (optax rules; see :func:`fastopt.lion`); state key 'exp_avg'."""

    _update = staticmethod(functional.lion)
    _positional = ("exp_avg",)
    _stepped = _takes_step = False

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3, *, maximize=False, l1_prox=0.0,
                 state_dtype=None, master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), weight_decay=group["weight_decay"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))


class LAMB(_Optimizer):
    """LAMB (apex FusedLAMB rules; see :func:`fastopt.lamb`); state keys 'exp_avg', 'exp_avg_sq'.
    Trust ratios are per tensor over a bucket's one call."""

    _update = staticmethod(functional.lamb)
    _positional = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, *,
                 use_nvlamb=False, maximize=False, l1_prox=0.0, state_dtype=None,
                 master_weights=False):
        super().__init__(params, _extras(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              max_grad_norm=max_grad_norm, use_nvlamb=use_nvlamb, maximize=maximize),
                                         l1_prox, state_dtype, master_weights))

    def _hyper(self, group, first):
        return dict(betas=tuple(map(float, group["betas"])), eps=group["eps"], weight_decay=group["weight_decay"],
                    max_grad_norm=group["max_grad_norm"], use_nvlamb=group["use_nvlamb"],
                    maximize=group["maximize"], l1_prox=group.get("l1_prox", 0.0))
