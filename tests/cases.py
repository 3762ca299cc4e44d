"""The optimizers under test, their flag combinations, and one way to call fastopt or the reference.

Every optimizer test is parametrized over CASES, so a new optimizer is tested by adding it here.
"""
from __future__ import annotations

import itertools

import numpy as np

import fastopt
from fastopt import reference


def _grid(**axes):
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


# Hyper-parameter combinations: every flag, on and off.
SGD_FLAGS = [
    f for f in _grid(lr=[0.05], momentum=[0.0, 0.9], dampening=[0.0, 0.3], nesterov=[False, True],
                     weight_decay=[0.0, 0.01], maximize=[False, True])
    if not (f["nesterov"] and (f["momentum"] == 0 or f["dampening"] != 0))
    and not (f["momentum"] == 0 and f["dampening"] != 0)
]
ADAM_FLAGS = _grid(lr=[1e-2], betas=[(0.9, 0.999)], eps=[1e-8], weight_decay=[0.0, 0.1],
                   amsgrad=[False, True], maximize=[False, True])

CASES = {"sgd": SGD_FLAGS, "adam": ADAM_FLAGS, "adamw": ADAM_FLAGS}


def flag_id(flags: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in flags.items() if k not in ("lr", "betas", "eps"))


def state_names(name: str, flags: dict) -> list[str]:
    if name == "sgd":
        return ["momentum_buffers"] if flags["momentum"] != 0 else []
    return ["exp_avgs", "exp_avg_sqs"] + (["max_exp_avg_sqs"] if flags["amsgrad"] else [])


def make_arrays(name: str, flags: dict, n: int, dtype, rng: np.random.Generator) -> dict:
    """params, grads and state with values spread over several magnitudes (state non-zero, v >= 0)."""
    def normal():
        return (rng.standard_normal(n) * np.exp2(rng.integers(-8, 4, n))).astype(dtype)
    arrays = {"params": normal(), "grads": normal()}
    for s in state_names(name, flags):
        arrays[s] = normal()
    if "exp_avg_sqs" in arrays:
        arrays["exp_avg_sqs"] = np.abs(arrays["exp_avg_sqs"])
    if "max_exp_avg_sqs" in arrays:
        arrays["max_exp_avg_sqs"] = arrays["exp_avg_sqs"] + np.abs(normal()) * (rng.random(n) < 0.5)
    return arrays


def call(module, name: str, arrays: dict, flags: dict, step: int = 3) -> None:
    """Calls module.<name> (module: fastopt or fastopt.reference) on arrays, in place."""
    fn = getattr(module, name)
    a = arrays
    if name == "sgd":
        fn(a["params"], a["grads"], a.get("momentum_buffers"), first_step=step == 1, **flags)
    else:
        fn(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], step=step,
           max_exp_avg_sqs=a.get("max_exp_avg_sqs"), **flags)


def copy(arrays: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else [x.copy() for x in v]) for k, v in arrays.items()}


def assert_close(actual, expected, dtype) -> None:
    """float64 to 1e-12 relative; float32 within 2 units in the last place."""
    if np.dtype(dtype) == np.float32:
        np.testing.assert_array_max_ulp(actual, expected, maxulp=2)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)


__all__ = ["CASES", "fastopt", "reference", "flag_id", "state_names", "make_arrays", "call", "copy",
           "assert_close"]
