"""Learning-rate schedules: functions of the step (1 on the first step) returning the learning rate.

The learning rate is a runtime scalar of every kernel, so a schedule costs nothing but its own
arithmetic: no recompilation, no re-allocation.  Schedules compose: :func:`linear_warmup` and
:func:`join` take other schedules.  Pass one as ``lr=`` to any ``fastopt.optim`` optimizer, or call
it yourself and pass the number to a functional update.

    lr = schedules.linear_warmup(schedules.cosine(3e-4, total_steps=10_000), warmup_steps=500)
    opt = fastopt.optim.AdamW(params, lr=lr)
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

Schedule = Callable[[int], float]

__all__ = ["Schedule", "constant", "step_decay", "exponential_decay", "cosine", "linear_warmup", "join"]


def _check(name: str, value: float, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"fastopt.schedules: {name} must be a finite number >= {low}, got {value!r}")
    return float(value)


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    lr = _check("lr", lr)
    return lambda step: lr


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** ((step - 1) // step_size)``: multiplied by gamma every step_size steps
    (torch's StepLR, counted in steps)."""
    lr, gamma = _check("lr", lr), _check("gamma", gamma)
    if not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"fastopt.schedules: step_size must be an int >= 1, got {step_size!r}")
    return lambda step: lr * gamma ** ((step - 1) // step_size)


def exponential_decay(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** (step - 1)`` (torch's ExponentialLR, counted in steps)."""
    lr, gamma = _check("lr", lr), _check("gamma", gamma)
    return lambda step: lr * gamma ** (step - 1)


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """``min_lr + (lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2`` with ``t = min(step - 1,
    total_steps)``: from lr down to min_lr over total_steps, then min_lr (torch's CosineAnnealingLR
    without restarts)."""
    lr, min_lr = _check("lr", lr), _check("min_lr", min_lr)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"fastopt.schedules: total_steps must be an int >= 1, got {total_steps!r}")
    return lambda step: min_lr + (lr - min_lr) * (1 + math.cos(math.pi * min(step - 1, total_steps) / total_steps)) / 2


def linear_warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    """``schedule(1) * step / warmup_steps`` for the first warmup_steps steps, then
    ``schedule(step - warmup_steps)``: a linear ramp into any schedule."""
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"fastopt.schedules: warmup_steps must be an int >= 0, got {warmup_steps!r}")
    return lambda step: schedule(1) * step / warmup_steps if step <= warmup_steps else schedule(step - warmup_steps)


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[i]`` from step ``boundaries[i-1] + 1`` on, each restarted at its own step 1
    (optax.join_schedules)."""
    if len(boundaries) != len(schedules) - 1 or list(boundaries) != sorted(boundaries):
        raise ValueError("fastopt.schedules: join needs one increasing boundary between each two schedules")
    starts = [0, *boundaries]

    def joined(step: int) -> float:
        i = sum(step > b for b in boundaries)
        return schedules[i](step - starts[i])
    return joined
