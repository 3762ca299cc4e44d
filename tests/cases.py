"""The optimizers under test, their flag combinations, and one way to call fastopt or the reference.

Every optimizer test is parametrized over CASES, so a new optimizer is tested by adding it here.
"""
from __future__ import annotations

import itertools

import numpy as np

import fastopt
from fastopt._optimizers import OPTIMIZERS, used_state
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
RMSPROP_FLAGS = _grid(lr=[1e-2], alpha=[0.9], momentum=[0.0, 0.9], centered=[False, True],
                      weight_decay=[0.0, 0.01], maximize=[False, True])
ADAGRAD_FLAGS = _grid(lr=[0.1], lr_decay=[0.0, 0.01], weight_decay=[0.0, 0.01], maximize=[False, True])
NADAM_FLAGS = _grid(lr=[2e-3], weight_decay=[0.0, 0.01], decoupled_weight_decay=[False, True],
                    maximize=[False, True])
RADAM_FLAGS = NADAM_FLAGS
ADAMAX_FLAGS = _grid(lr=[2e-3], weight_decay=[0.0, 0.01], maximize=[False, True])
LION_FLAGS = _grid(lr=[1e-3], weight_decay=[0.0, 0.1], maximize=[False, True])
LAMB_FLAGS = _grid(lr=[1e-2], weight_decay=[0.0, 0.01], max_grad_norm=[0.0, 1.0], use_nvlamb=[False, True],
                   maximize=[False, True])

FLAGS = {"sgd": SGD_FLAGS, "adam": ADAM_FLAGS, "adamw": ADAM_FLAGS, "rmsprop": RMSPROP_FLAGS, "adagrad": ADAGRAD_FLAGS,
         "nadam": NADAM_FLAGS, "radam": RADAM_FLAGS, "adamax": ADAMAX_FLAGS, "lion": LION_FLAGS, "lamb": LAMB_FLAGS}
assert set(FLAGS) == set(OPTIMIZERS), "each optimizer of the table needs its row of flags here"
# each optimizer's flags with every one on (the last row of its grid)
BUSIEST = {name: flags[-1] for name, flags in FLAGS.items()}
# the optimizers torch.optim has, with their torch.optim class
TORCH_CASES = {name: flags for name, flags in FLAGS.items() if OPTIMIZERS[name].in_torch}
TORCH_CLASS = {name: OPTIMIZERS[name].class_name for name in TORCH_CASES}
# fastopt's own extras on top of each optimizer's busiest flags: the fused L1 proximal step and
# loss scaling (a power of two, undone exactly, and not)
EXTRAS = [dict(l1_prox=0.01, grad_scale=1024.0), dict(l1_prox=0.5, grad_scale=3.0)]
CASES = {name: flags + [{**flags[-1], **extra} for extra in EXTRAS] for name, flags in FLAGS.items()}

# Each optimizer's state arrays (functional argument names), which take a step count, which state
# is >= 0: from the table every layer reads.
STATE = {name: [r.arg for r in row.state] for name, row in OPTIMIZERS.items()}
STEPPED = {name for name, row in OPTIMIZERS.items() if row.takes_step}
NON_NEGATIVE = {r.arg for row in OPTIMIZERS.values() for r in row.state if not r.signed}
# The optimizers that take 8-bit state (fastopt.QuantizedState in STATE's arrays), with flags that
# reach every branch of their 8-bit kernels; on the CPU (test_mixed.py) and the GPU (test_cuda.py).
Q8_CASES = [("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)), ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.1)),
            ("adam", dict(lr=1e-2, weight_decay=0.1)), ("adamw", dict(lr=1e-2, weight_decay=0.1, maximize=True)),
            ("adamw", dict(lr=1e-2, l1_prox=0.01, grad_scale=8.0)), ("lion", dict(lr=1e-3, weight_decay=0.1))]


def flag_id(flags: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in flags.items() if k not in ("lr", "betas", "eps", "alpha"))


def state_names(name: str, flags: dict) -> list[str]:
    """The state arrays this optimizer uses with these flags."""
    return [r.arg for r in used_state(OPTIMIZERS[name], flags)]


def make_arrays(name: str, flags: dict, n: int, dtype, rng: np.random.Generator) -> dict:
    """params, grads and state with values spread over several magnitudes (state non-zero, second
    moments >= 0, and a square average above its squared gradient average)."""
    def normal():
        return (rng.standard_normal(n) * np.exp2(rng.integers(-8, 4, n))).astype(dtype)
    arrays = {"params": normal(), "grads": normal()}
    for s in state_names(name, flags):
        arrays[s] = np.abs(normal()) if s in NON_NEGATIVE else normal()
    if "max_exp_avg_sqs" in arrays:
        arrays["max_exp_avg_sqs"] = arrays["exp_avg_sqs"] + np.abs(normal()) * (rng.random(n) < 0.5)
    if "grad_avgs" in arrays:
        arrays["square_avgs"] += arrays["grad_avgs"] ** 2
    return arrays


def call(module, name: str, arrays: dict, flags: dict, step: int = 3, mu_product: float | None = None, **extra):
    """Calls module.<name> (module: fastopt or fastopt.reference) on arrays, in place, with the
    keyword arguments extra too; returns what it returns (NAdam: the next mu_product; by default
    this test's stand-in for the previous one)."""
    a = arrays
    kwargs = dict(flags, **extra)
    if name == "sgd":
        kwargs["first_step"] = step == 1
    if name in STEPPED:
        kwargs["step"] = step
    if name == "nadam":
        kwargs["mu_product"] = mu_product if mu_product is not None else 1.0 if step == 1 else 0.5
    state = {s: a.get(s) for s in STATE[name]}
    return getattr(module, name)(a["params"], a["grads"], **state, **kwargs)


def copy(arrays: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else [x.copy() for x in v]) for k, v in arrays.items()}


def assert_close(actual, expected, dtype, name: str = "") -> None:
    """float64 to 1e-12 relative; float32 within 2 units in the last place.  LAMB's norms sum in
    blocks, not in NumPy's order, so its trust ratios differ in their last bits, which shows where
    p - lr * ratio * u cancels: its float64 results are also allowed 1e-12 of the largest |value|."""
    if np.dtype(dtype) == np.float32:
        np.testing.assert_array_max_ulp(actual, expected, maxulp=2)
    else:
        floor = 1e-12 * float(np.max(np.abs(expected), initial=0)) if name == "lamb" else 0
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=floor)


def sharded_lamb(flags: dict, dtype, device=None, host=None, sizes=(300, 5, 77), seed=0) -> tuple:
    """LAMB over tensors cut in two shards, each shard's call given sum_over (fastopt.lamb), as two
    processes would run it; returns (the shards' params joined, the params of one call over the
    whole tensors).  Each shard's sums over the elements it holds come from a first call on copies;
    then each shard's sum_over puts both shards' sums in place.  device/host move arrays to and
    from a GPU (None: NumPy arrays)."""
    device, host = device or (lambda a: a), host or (lambda a: a)
    rng = np.random.default_rng(seed)
    whole = [make_arrays("lamb", flags, n, dtype, rng) for n in sizes]
    shards = [[{k: v[:n // 3].copy() for k, v in a.items()} for a, n in zip(whole, sizes)],
              [{k: v[n // 3:].copy() for k, v in a.items()} for a, n in zip(whole, sizes)]]

    def run(shard, sum_over):
        lists = {k: [device(a[k]) for a in shard] for k in shard[0]}
        call(fastopt, "lamb", lists, flags, sum_over=sum_over)
        return [host(p) for p in lists["params"]]

    def put(sums, values):
        if isinstance(sums, np.ndarray):
            sums[...] = values
        else:
            sums.copy_to_device(values)
    own = []
    for shard in shards:
        run([{k: v.copy() for k, v in a.items()} for a in shard], lambda sums: own.append(host(sums).copy()))
    total = own[0] + own[1]
    got = [run(shard, lambda sums: put(sums, total)) for shard in shards]
    lists = {k: [device(a[k]) for a in whole] for k in whole[0]}
    call(fastopt, "lamb", lists, flags)
    return [np.concatenate([a, b]) for a, b in zip(*got)], [host(p) for p in lists["params"]]


__all__ = ["CASES", "FLAGS", "BUSIEST", "TORCH_CASES", "TORCH_CLASS", "Q8_CASES", "fastopt", "reference", "flag_id", "state_names", "make_arrays", "call", "copy", "sharded_lamb",
           "assert_close"]
