"""Stateful optimizers over NumPy arrays: torch.optim's shape, fastopt's kernels.

An optimizer owns its state and a gradient buffer per parameter (``opt.grads``, zeros to start):
write or accumulate gradients into them, or pass a list to ``step(grads)``.  Param groups carry
their own hyper-parameters, ``lr`` may be a schedule (see :mod:`fastopt.schedules`), and each
``step()`` is one C call per param group.

    opt = fastopt.optim.AdamW([w, b], lr=1e-3)
    for x, y in batches:
        opt.zero_grad()
        backprop(x, y, w, b, out=opt.grads)   # fills opt.grads[0], opt.grads[1]
        opt.step()
    opt.save("ckpt.npz")                       # resumes bit for bit with opt.load("ckpt.npz")
"""
from __future__ import annotations

import json

import numpy as np

from fastopt import functional
from fastopt._arrays import C_DTYPES
from fastopt._optimizers import OPTIMIZERS, used_state

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Lion", "LAMB"]


class Optimizer:
    """The base class: param groups, state, gradient buffers, step, state_dict, save and load.

    A subclass names its functional update (``update``); that optimizer's row of the table
    (fastopt._optimizers) names its state, as torch.optim's state dicts do, and which of it a
    group uses.
    """

    update = None                 # the fastopt.functional update
    group_scalars: tuple = ()     # per-group state kept across steps besides 'step' (e.g. NAdam's mu_product)

    @property
    def _row(self):
        return OPTIMIZERS[type(self).update.__name__]

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.state: list[dict] = []
        groups = [params] if isinstance(params, np.ndarray) else list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups and state ----

    def add_param_group(self, group: dict) -> None:
        """Adds a group: {"params": arrays, hyper-parameter: value, ...}; the rest from the defaults."""
        name = type(self).__name__
        params = group.get("params")
        params = [params] if isinstance(params, np.ndarray) else list(params or [])
        if not params:
            raise ValueError(f"{name}: a param group needs a non-empty 'params'")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{name}: unknown hyper-parameter(s) {sorted(unknown)}")
        seen = {id(p) for p in self.params}
        for p in params:
            if not isinstance(p, np.ndarray) or p.dtype not in C_DTYPES:
                raise TypeError(f"{name}: parameters must be float32/float64 numpy arrays, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears in more than one place")
            seen.add(id(p))
        first = len(self.params)
        new = {**self.defaults, **group, "params": params, "step": 0, "index": list(range(first, first + len(params)))}
        for k in self.group_scalars:
            new.setdefault(k, self.initial_group_scalar(k))
        self._check(new)
        self.param_groups.append(new)
        self.params += params
        self.grads += [np.zeros_like(p) for p in params]
        self.state += [{} for _ in params]

    def _check(self, group: dict) -> None:
        """Validates a group's hyper-parameters now, as torch's constructors do, by the library's
        own checks: the group's update run on one-element arrays (nothing of the group's is written)."""
        dtype = group["params"][0].dtype
        trial = {**group, "params": [np.ones(1, dtype)]}
        lr = group["lr"](1) if callable(group["lr"]) else group["lr"]
        hyper = {k: group[k] for k in self.defaults if k != "lr"}
        state = {name: [np.ones(1, dtype)] for name in self.used_state(group)}
        self.run(trial, [np.ones(1, dtype)], state, 1, lr, hyper, {})

    def used_state(self, group: dict) -> list[str]:
        """The state keys a group's steps use (torch's names: "exp_avg", "momentum_buffer", ...)."""
        return [r.key for r in used_state(self._row, group)]

    def initial_state(self, name: str, param: np.ndarray, group: dict) -> np.ndarray:
        return np.zeros_like(param)

    def initial_group_scalar(self, name: str):
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Sets every gradient buffer to zero."""
        for g in self.grads:
            g.fill(0)

    # ---- the step ----

    def step(self, grads=None, *, grad_scale=None, found_inf=None) -> None:
        """Takes one step of every param group: one fused C call per group.

        Args:
          grads: gradients in parameter order (all groups, as added); default ``self.grads``.
          grad_scale: the loss scale the gradients carry (divided out in the same pass).
          found_inf: a flag (bool, number or one-element array); when non-zero nothing changes,
            not even the step count (torch's fused optimizers with GradScaler).
        """
        if found_inf is not None and float(np.asarray(found_inf).reshape(-1)[0]) != 0:
            return
        grads = self.grads if grads is None else list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"{type(self).__name__}.step: got {len(grads)} gradients for {len(self.params)} parameters")
        for group in self.param_groups:
            step = group["step"] + 1
            lr = group["lr"](step) if callable(group["lr"]) else group["lr"]
            index = group["index"]
            state = {}
            for name in self.used_state(group):
                for i in index:
                    if name not in self.state[i]:
                        self.state[i][name] = self.initial_state(name, self.params[i], group)
                state[name] = [self.state[i][name] for i in index]
            hyper = {k: group[k] for k in self.defaults if k != "lr"}
            self.run(group, [grads[i] for i in index], state, step, lr, hyper,
                     dict(grad_scale=grad_scale))
            group["step"] = step

    def run(self, group, grads, state, step, lr, hyper, fused):
        """One call of the update over a group: state {key: arrays} passed as the update's arguments."""
        if self._row.takes_step:
            hyper["step"] = step
        arrays = {r.arg: state.get(r.key) for r in self._row.state}
        return type(self).update(group["params"], grads, **arrays, lr=lr, **hyper, **fused)

    # ---- checkpoints ----

    def state_dict(self) -> dict:
        """torch's layout: {"state": {index: {name: array}}, "param_groups": [{..., "params": [index]}]}.
        Arrays are copies; schedules (callable lr) are not saved."""
        groups = [{**{k: v for k, v in g.items() if k not in ("params", "index") and not callable(v)},
                   "params": list(g["index"])} for g in self.param_groups]
        state = {i: {k: a.copy() for k, a in s.items()} for i, s in enumerate(self.state) if s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores state and hyper-parameters (a schedule given at construction stays).  Checks
        everything before changing anything."""
        name = type(self).__name__
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: expected {len(self.param_groups)} param groups")
        for ours, theirs in zip(self.param_groups, groups):
            if list(theirs.get("params", [])) != ours["index"]:
                raise ValueError(f"{name}.load_state_dict: param groups hold different parameters")
        state = {int(i): s for i, s in state_dict.get("state", {}).items()}
        for i, s in state.items():
            if not 0 <= i < len(self.params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which does not exist")
            for k, a in s.items():
                a = np.asarray(a)
                if a.shape != self.params[i].shape or a.dtype != self.params[i].dtype:
                    raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} has shape {a.shape} "
                                     f"and dtype {a.dtype}, the parameter {self.params[i].shape} {self.params[i].dtype}")
        for ours, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params" and not callable(ours.get(k)):
                    ours[k] = tuple(v) if isinstance(v, list) else v
        self.state = [{k: np.array(a, copy=True) for k, a in state.get(i, {}).items()} for i in range(len(self.params))]

    def save(self, path) -> None:
        """Writes the state dict to one .npz file (arrays as they are; groups as JSON)."""
        sd = self.state_dict()
        arrays = {f"state/{i}/{k}": a for i, s in sd["state"].items() for k, a in s.items()}
        np.savez(path, param_groups=np.array(json.dumps(sd["param_groups"])), **arrays)

    def load(self, path) -> None:
        """Reads a file written by :meth:`save` into this optimizer (see :meth:`load_state_dict`)."""
        with np.load(path) as f:
            state: dict = {}
            for key in f.files:
                if key.startswith("state/"):
                    _, i, k = key.split("/", 2)
                    state.setdefault(int(i), {})[k] = f[key]
            groups = json.loads(str(f["param_groups"]))
        self.load_state_dict({"state": state, "param_groups": groups})


class SGD(Optimizer):
    """SGD with momentum (torch.optim.SGD arguments and defaults); see :func:`fastopt.sgd`."""
    update = functional.sgd

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, l1_prox=l1_prox))

    def run(self, group, grads, state, step, lr, hyper, fused):
        super().run(group, grads, state, step, lr, {**hyper, "first_step": step == 1}, fused)


class Adam(Optimizer):
    """Adam (torch.optim.Adam arguments and defaults); see :func:`fastopt.adam`."""
    update = functional.adam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, l1_prox=l1_prox))



class AdamW(Adam):
    """AdamW (torch.optim.AdamW arguments and defaults); see :func:`fastopt.adamw`."""
    update = functional.adamw

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, l1_prox=l1_prox)


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop arguments and defaults); see :func:`fastopt.rmsprop`."""
    update = functional.rmsprop

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, l1_prox=l1_prox))



class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad arguments and defaults); see :func:`fastopt.adagrad`."""
    update = functional.adagrad

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, l1_prox=l1_prox))

    def initial_state(self, name, param, group):
        return np.full_like(param, group["initial_accumulator_value"])

    def run(self, group, grads, state, step, lr, hyper, fused):
        hyper.pop("initial_accumulator_value")
        super().run(group, grads, state, step, lr, hyper, fused)


class NAdam(Optimizer):
    """NAdam (torch.optim.NAdam arguments and defaults); see :func:`fastopt.nadam`."""
    update = functional.nadam
    group_scalars = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, *,
                 decoupled_weight_decay=False, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, l1_prox=l1_prox))

    def initial_group_scalar(self, name):
        return 1.0

    def run(self, group, grads, state, step, lr, hyper, fused):
        group["mu_product"] = super().run(group, grads, state, step, lr, {**hyper, "mu_product": group["mu_product"]},
                                          fused)


class RAdam(Optimizer):
    """RAdam (torch.optim.RAdam arguments and defaults); see :func:`fastopt.radam`."""
    update = functional.radam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 decoupled_weight_decay=False, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                                      l1_prox=l1_prox))


class Lion(Optimizer):
    """Lion (optax.lion defaults, lr 1e-4); see :func:`fastopt.lion`."""
    update = functional.lion

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3, *, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                                      l1_prox=l1_prox))


class LAMB(Optimizer):
    """LAMB (apex FusedLAMB defaults); see :func:`fastopt.lamb`."""
    update = functional.lamb

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, *,
                 use_nvlamb=False, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      max_grad_norm=max_grad_norm, use_nvlamb=use_nvlamb, maximize=maximize,
                                      l1_prox=l1_prox))
