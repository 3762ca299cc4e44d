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
import operator

import numpy as np

from fastopt import functional
from fastopt._arrays import C_DTYPES, SUPPORTED
from fastopt._optimizers import OPTIMIZERS, used_state

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Lion", "LAMB"]


class Optimizer:
    """The base class: param groups, state, gradient buffers, step, state_dict, save and load.

    A subclass names its functional update (``update``); that optimizer's row of the table
    (fastopt._optimizers) names its state, as torch.optim's state dicts do, and which of it a
    group uses.  Each param's state also holds its own ``step`` count where torch keeps one (and
    NAdam's ``mu_product``), so state dicts load into torch.optim and back; a group's ``step``
    counts the steps the group took (what a schedule reads).
    """

    update = None                 # the fastopt.functional update

    @property
    def _row(self):
        return OPTIMIZERS[type(self).update.__name__]

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self._prepared: dict = {}  # {ids of a set of groups: _Kept, its last step's arrays and prepared call}
        self._kept = None          # the set being stepped (see _update)
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
                raise TypeError(f"{name}: parameters must be numpy arrays of {SUPPORTED}, got "
                                f"{type(p).__name__}{' of dtype ' + str(p.dtype) if isinstance(p, np.ndarray) else ''}")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears in more than one place")
            seen.add(id(p))
        first = len(self.params)
        new = {**self.defaults, **group, "params": params, "step": 0, "index": list(range(first, first + len(params)))}
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
        self.run(trial, [np.ones(1, dtype)], state, [{"step": 0.0}], lr, hyper, {})

    def used_state(self, group: dict) -> list[str]:
        """The state keys a group's steps use (torch's names: "exp_avg", "momentum_buffer", ...)."""
        return [r.key for r in used_state(self._row, group)]

    def initial_state(self, name: str, param: np.ndarray, group: dict) -> np.ndarray:
        return np.zeros_like(param)

    def zero_grad(self) -> None:
        """Sets every gradient buffer to zero."""
        for g in self.grads:
            g.fill(0)

    # ---- the step ----

    def step(self, grads=None, *, grad_scale=None, found_inf=None) -> None:
        """Takes one step of every param group: one fused C call for all the groups that differ
        only in lr and weight_decay (each tensor gets its group's), one per other set.

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
        for groups in self._sets():
            lrs, decays, index = [], [], []
            for group in groups:
                step = group["step"] + 1
                lr = group["lr"](step) if callable(group["lr"]) else group["lr"]
                lrs += [float(lr)] * len(group["index"])
                decays += [float(group.get("weight_decay", 0.0))] * len(group["index"])
                index += group["index"]
            state = {}
            for name in self.used_state(groups[0]):
                for i in index:
                    if name not in self.state[i]:
                        self.state[i][name] = self.initial_state(name, self.params[i], groups[0])
                state[name] = tuple(self.state[i][name] for i in index)
            hyper = {k: groups[0][k] for k in self.defaults if k != "lr"}
            if "weight_decay" in hyper and len(set(decays)) > 1:
                hyper["weight_decay"] = np.array(decays)
            # the same arrays as the last step: the call prepared then is made again (see _update)
            arrays = (tuple(self.params[i] for i in index), tuple(grads[i] for i in index), state)
            key = tuple(map(id, groups))
            kept = self._prepared.get(key)
            if kept is None or not _same_arrays(kept.arrays, arrays):
                kept = self._prepared[key] = _Kept(arrays)
            params, group_grads, state = kept.arrays
            self._kept = kept
            try:
                self.run({**groups[0], "params": params}, group_grads, state, [self.state[i] for i in index],
                         lrs[0] if len(set(lrs)) == 1 else np.array(lrs), hyper, dict(grad_scale=grad_scale))
            finally:
                self._kept = None
            for group in groups:
                group["step"] += 1

    def _sets(self) -> list[list[dict]]:
        """The param groups, in sets that one call can step: equal in every hyper-parameter but lr
        and weight_decay (a schedule is not compared: each group's gives its own lr).  LAMB
        clipping by its gradient norm is a set of its own: the norm is over one call's tensors."""
        sets: dict = {}
        for group in self.param_groups:
            key = tuple((k, repr(group[k])) for k in sorted(self.defaults) if k not in ("lr", "weight_decay"))
            if group.get("max_grad_norm"):
                key = id(group)
            sets.setdefault(key, []).append(group)
        return list(sets.values())

    def run(self, group, grads, state, param_states, lr, hyper, fused):
        """One call of the update over a group: state {key: arrays} passed as the update's
        arguments, each param's own step count (param_states[j]["step"], advanced here) as its
        step."""
        row = self._row
        if row.keeps_step:
            counts = [s.setdefault("step", 0.0) for s in param_states]
            uniform = counts.count(counts[0]) == len(counts)  # (the usual case: one int step, one C options struct)
            steps = np.array(counts, np.int64) + 1 if not uniform else None
            if row.takes_step:
                hyper["step"] = int(counts[0]) + 1 if uniform else steps
        arrays = {r.arg: state.get(r.key) for r in row.state}
        out = self._update(group["params"], grads, arrays, lr=lr, **hyper, **fused)
        if row.keeps_step:
            if uniform:
                count = float(counts[0]) + 1.0
                for s in param_states:
                    s["step"] = count
            else:
                for s, t in zip(param_states, steps):
                    s["step"] = float(t)
        return out

    def _update(self, params, grads, arrays: dict, **keywords):
        """``type(self).update(params, grads, **arrays, **keywords)``.  Over the very arrays of the
        step's set of groups (step() keeps them while they stay the same objects), the call is a
        :func:`fastopt.prepare` one, made again while the keywords fixed per call are equal: the
        arrays are validated once and, past its first call, the C options struct is reused."""
        kept, update = self._kept, type(self).update
        if kept is None or params is not kept.arrays[0] or grads is not kept.arrays[1]:
            return update(params, grads, **arrays, **keywords)
        fixed = {k: tuple(v) if isinstance(v, list) else v  # (a list, which may change in place: its values)
                 for k, v in keywords.items() if k not in functional._PER_CALL}
        if kept.call is None or not _equal(kept.fixed, fixed):
            kept.call, kept.fixed = functional.prepare(update, params, grads, **arrays, **fixed), fixed
        return kept.call(**{k: v for k, v in keywords.items() if k in functional._PER_CALL and v is not None})

    # ---- checkpoints ----

    def state_dict(self) -> dict:
        """torch.optim's layout and names: {"state": {index: {key: array}}, "param_groups": [{...,
        "params": [index]}]}, each param's "step" (and NAdam's "mu_product") a 0-d array of its own,
        as torch keeps a 0-d tensor; torch.optim loads it, and this optimizer loads torch's.
        Arrays are copies; schedules (callable lr) are not saved."""
        groups = [{**{k: v for k, v in g.items() if k not in ("params", "index") and not callable(v)},
                   "params": list(g["index"])} for g in self.param_groups]
        state = {i: {k: np.array(a, np.float32 if k == "step" else None, copy=True) for k, a in s.items()}
                 for i, s in enumerate(self.state) if s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores state and hyper-parameters (a schedule given at construction stays), from a
        state dict of this class or of its torch.optim counterpart (tensors become arrays; a
        group without its own "step" takes its params' largest).  Checks everything before
        changing anything."""
        name = type(self).__name__
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: expected {len(self.param_groups)} param groups")
        for ours, theirs in zip(self.param_groups, groups):
            if list(theirs.get("params", [])) != ours["index"]:
                raise ValueError(f"{name}.load_state_dict: param groups hold different parameters")
        state = {int(i): {k: _array(a) for k, a in s.items()} for i, s in state_dict.get("state", {}).items()}
        scalars = ("step", "mu_product")
        for i, s in state.items():
            if not 0 <= i < len(self.params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which does not exist")
            for k, a in s.items():
                if k in scalars:
                    if a.size != 1:
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} must be one number, "
                                         f"got shape {a.shape}")
                elif a.shape != self.params[i].shape or a.dtype != self.params[i].dtype:
                    raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} has shape {a.shape} "
                                     f"and dtype {a.dtype}, the parameter {self.params[i].shape} {self.params[i].dtype}")
        for ours, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params" and not callable(ours.get(k)) and (k in self.defaults or k == "step"):
                    ours[k] = tuple(v) if isinstance(v, list) else v
            if "step" not in theirs:
                ours["step"] = int(max((float(state.get(i, {}).get("step", 0)) for i in ours["index"]), default=0))
        self.state = [{k: (float(a) if k in scalars else np.array(a, copy=True)) for k, a in state.get(i, {}).items()}
                      for i in range(len(self.params))]

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


class _Kept:
    """A set of groups' arrays of the last step (params, grads, {state key: arrays}), the
    prepared call over them and the keywords it fixes."""

    def __init__(self, arrays: tuple):
        self.arrays, self.call, self.fixed = arrays, None, None


def _equal(a: dict, b: dict) -> bool:
    """Whether two calls' fixed keywords are the same values (arrays compared by identity)."""
    return a.keys() == b.keys() and all(x is y or (type(x) is type(y) and not isinstance(x, np.ndarray) and x == y)
                                        for x, y in ((a[k], b[k]) for k in a))


def _same_arrays(a: tuple, b: tuple) -> bool:
    """Whether two calls' (params, grads, {state key: arrays}) are the very same arrays."""
    return all(len(x) == len(y) and all(map(operator.is_, x, y)) for x, y in zip(a[:2], b[:2])) and \
        a[2].keys() == b[2].keys() and all(len(a[2][k]) == len(b[2][k]) and all(map(operator.is_, a[2][k], b[2][k]))
                                           for k in a[2])


def _array(a) -> np.ndarray:
    """A state value as an array: NumPy's, or a torch CPU tensor's values (torch's checkpoints)."""
    if type(a).__module__.startswith("torch"):
        a = a.detach().cpu()
        return a.float().numpy() if a.dtype.is_floating_point and a.element_size() == 2 else a.numpy()
    return np.asarray(a)


class SGD(Optimizer):
    """SGD with momentum (torch.optim.SGD arguments and defaults); see :func:`fastopt.sgd`."""
    update = functional.sgd

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, l1_prox=l1_prox))

    def step(self, grads=None, **kwargs) -> None:
        # a buffer is made on its param's first step with momentum: torch sets it to the gradient then
        self._fresh = {id(s) for s in self.state if "momentum_buffer" not in s}
        super().step(grads, **kwargs)

    def run(self, group, grads, state, param_states, lr, hyper, fused):
        """torch's first momentum step (the buffer := the gradient) for the params whose buffer
        was just made, the accumulating step for the others: one call each."""
        fresh = [id(s) in getattr(self, "_fresh", ()) for s in param_states]
        for first in (True, False):
            pick = [j for j, f in enumerate(fresh) if f == first]
            if len(pick) == len(fresh):
                return super().run(group, grads, state, param_states, lr, {**hyper, "first_step": first}, fused)
            if pick:  # (per-tensor lr and weight decay: the picked tensors')
                sub = {**group, "params": [group["params"][j] for j in pick]}
                part = {k: v[pick] if isinstance(v, np.ndarray) else v for k, v in hyper.items()}
                super().run(sub, [grads[j] for j in pick], {k: [v[j] for j in pick] for k, v in state.items()},
                            [param_states[j] for j in pick], lr[pick] if isinstance(lr, np.ndarray) else lr,
                            {**part, "first_step": first}, fused)


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

    def run(self, group, grads, state, param_states, lr, hyper, fused):
        hyper.pop("initial_accumulator_value")
        super().run(group, grads, state, param_states, lr, hyper, fused)


class NAdam(Optimizer):
    """NAdam (torch.optim.NAdam arguments and defaults); see :func:`fastopt.nadam`."""
    update = functional.nadam

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, *,
                 decoupled_weight_decay=False, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, l1_prox=l1_prox))

    def run(self, group, grads, state, param_states, lr, hyper, fused):
        """Each param's mu_product (the product of mu through its last step; 1 before its first),
        kept in float64."""
        products = np.array([s.get("mu_product", 1.0) for s in param_states], np.float64)
        out = super().run(group, grads, state, param_states, lr, {**hyper, "mu_product": products}, fused)
        for s, product in zip(param_states, out):
            s["mu_product"] = float(product)


class RAdam(Optimizer):
    """RAdam (torch.optim.RAdam arguments and defaults); see :func:`fastopt.radam`."""
    update = functional.radam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 decoupled_weight_decay=False, maximize=False, l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                                      l1_prox=l1_prox))


class Adamax(Optimizer):
    """Adamax (torch.optim.Adamax arguments and defaults); see :func:`fastopt.adamax`."""
    update = functional.adamax

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False,
                 l1_prox=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
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
