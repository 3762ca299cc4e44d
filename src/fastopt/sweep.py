"""Hyper-parameter search in one optimizer call a step: K replicas of a model, each with its own
learning rate and weight decay, stepped together.

The replicas are param groups of one :mod:`fastopt.optim` optimizer, and groups that differ only in
``lr`` and ``weight_decay`` step in one fused call (each tensor with its group's values), so K
configurations cost one call a step, not K::

    configs = fastopt.sweep.grid(lr=[1e-3, 3e-3, 1e-2], weight_decay=[0.0, 1e-2])
    search = fastopt.sweep.Sweep(initial_params, configs, fastopt.optim.AdamW)
    for batch in batches:
        for k, params in enumerate(search.replicas):          # each replica's own forward and backward,
            loss = loss_and_grads(params, batch, out=search.grads[k])   # its gradients into its buffers
            search.record(k, loss)
        search.step()                                         # one call for all K
    print(search.table())                                     # each configuration's loss, the best marked

examples/lr_sweep.py runs a grid and a random search on a small classifier.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from fastopt import optim

__all__ = ["grid", "random", "Sweep"]


def grid(**axes) -> list[dict]:
    """Every combination of the axes' values: ``grid(lr=[a, b], weight_decay=[c, d])`` gives four
    configurations, the last axis varying fastest."""
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not len(list(values)):
            raise TypeError(f"fastopt.sweep.grid: {name} must be a non-empty sequence of values")
    return [dict(zip(axes, values)) for values in itertools.product(*(list(v) for v in axes.values()))]


def random(n: int, *, seed: int = 0, **ranges) -> list[dict]:
    """n configurations drawn independently from ``name=(low, high)`` ranges: log-uniform where
    0 < low (learning rates, weight decays span decades), uniform where low is 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"fastopt.sweep.random: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"fastopt.sweep.random: n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    for name, bounds in ranges.items():
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2 and
                all(isinstance(b, (int, float, np.integer, np.floating)) and not isinstance(b, bool) for b in bounds)):
            raise TypeError(f"fastopt.sweep.random: {name} must be a (low, high) pair of numbers, got {bounds!r}")
        if not (0 <= bounds[0] <= bounds[1] and all(math.isfinite(b) for b in bounds)):
            raise ValueError(f"fastopt.sweep.random: {name} must be a (low, high) pair with 0 <= low <= high, "
                             f"got {bounds!r}")
    out = []
    for _ in range(n):
        config = {}
        for name, (low, high) in ranges.items():
            u = rng.random()
            config[name] = float(math.exp(math.log(low) + u * (math.log(high) - math.log(low)))) if low > 0 \
                else float(low + u * (high - low))
        out.append(config)
    return out


class Sweep:
    """K replicas of one model's parameters, replica k trained with configs[k].

    Args:
      params: the model's initial parameter arrays; each replica starts from copies of them.
      configs: one dict of hyper-parameters per replica (``lr``, ``weight_decay``, or any other
        argument of the optimizer: replicas that differ in more than lr and weight decay are
        stepped in one call per distinct set).
      optimizer: a :mod:`fastopt.optim` class (default AdamW).
      **shared: the optimizer's other arguments, the same for every replica.

    Attributes:
      replicas: replicas[k] is replica k's list of parameter arrays (updated in place).
      grads: grads[k] is replica k's list of gradient buffers: write into them, then :meth:`step`.
      optimizer: the fastopt.optim optimizer over all replicas (one param group each).
      losses: losses[k] is the list of losses :meth:`record` was given for replica k.
    """

    def __init__(self, params, configs, optimizer=optim.AdamW, **shared):
        params = [params] if isinstance(params, np.ndarray) else list(params)
        configs = list(configs)
        if not configs or not all(isinstance(c, dict) for c in configs):
            raise TypeError("fastopt.sweep.Sweep: configs must be a non-empty list of dicts of hyper-parameters")
        if not params or not all(isinstance(p, np.ndarray) for p in params):
            raise TypeError("fastopt.sweep.Sweep: params must be a non-empty list of NumPy arrays")
        self.configs = configs
        self.replicas = [[p.copy() for p in params] for _ in configs]
        try:
            self.optimizer = optimizer([{"params": r, **c} for r, c in zip(self.replicas, configs)], **shared)
        except (TypeError, ValueError) as error:  # name the configuration: the first one refused alone
            for k, config in enumerate(configs):
                try:
                    optimizer([{"params": [np.zeros(1, params[0].dtype)], **config}], **shared)
                except (TypeError, ValueError) as own:
                    raise type(own)(f"fastopt.sweep.Sweep: configs[{k}] = {config!r}: {own}") from None
            raise error
        n = len(params)
        self.grads = [self.optimizer.grads[k * n:(k + 1) * n] for k in range(len(configs))]
        self.losses: list[list[float]] = [[] for _ in configs]

    def step(self, grads=None) -> None:
        """One step of every replica (one optimizer call for those differing only in lr and
        weight decay).  grads: grads[k] replica k's gradients; default: the :attr:`grads` buffers."""
        if grads is not None:
            grads = list(grads)
            if len(grads) != len(self.replicas):
                raise ValueError(f"Sweep.step: grads has gradients for {len(grads)} replica(s), there are "
                                 f"{len(self.replicas)}")
            grads = [g for replica in grads for g in replica]
        self.optimizer.step(grads)

    def record(self, k: int, loss: float) -> None:
        """Notes replica k's loss at this step."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.replicas):
            raise ValueError(f"Sweep.record: k must be a replica's index, 0 to {len(self.replicas) - 1}, got {k!r}")
        self.losses[k].append(float(loss))

    def best(self) -> int | None:
        """The replica with the lowest last recorded loss; None when no replica has a finite one
        (a NaN or missing loss is never best).  Record what you select by: the validation loss,
        or (early stopping) the best one so far."""
        last = [ls[-1] if ls and math.isfinite(ls[-1]) else math.inf for ls in self.losses]
        return int(np.argmin(last)) if min(last) < math.inf else None

    def table(self) -> str:
        """Each configuration and its last loss, lowest first; the best marked."""
        keys = sorted({k for c in self.configs for k in c})
        best = self.best()
        order = sorted(range(len(self.configs)),
                       key=lambda k: self.losses[k][-1] if self.losses[k] and not math.isnan(self.losses[k][-1])
                       else math.inf)
        lines = ["  ".join(f"{k:>12}" for k in keys) + f"  {'loss':>10}"]
        for k in order:
            loss = self.losses[k][-1] if self.losses[k] else math.nan
            lines.append("  ".join(_cell(self.configs[k].get(key)) for key in keys) +
                         f"  {loss:>10.4g}" + ("  <- best" if k == best else ""))
        return "\n".join(lines)


def _cell(value) -> str:
    """A configuration's value in a table column: numbers to 4 digits, anything else as it prints."""
    if value is None:
        return " " * 12
    return f"{value:>12.4g}" if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
        else f"{str(value):>12}"
