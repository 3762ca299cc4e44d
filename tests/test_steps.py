"""Per-tensor step counts: tensors at different steps in one call, each with its own bias correction.

torch.optim keeps one step count per parameter (a parameter whose gradient is None is skipped and
its count stays), so one fused call may cover tensors at different steps.  That call must give what
one call per tensor, at its own step, gives: bit for bit on the CPU and under the CUDA simulator.
"""
from __future__ import annotations

import numpy as np
import pytest

from cases import CASES, STATE, STEPPED, call, copy, flag_id, make_arrays

import fastopt

SIZES = [257, 3, 0, 1000, 64]
STEPS = [1, 7, 7, 2, 30]           # repeats and gaps: constants are made once per distinct step
PRODUCTS = [1.0, 0.3, 0.3, 0.8, 0.05]  # NAdam: each tensor's product of mu before this step
# LAMB's global-norm clipping spans the call's tensors, so it is compared without it
STEPPED_CASES = [(n, f) for n in sorted(STEPPED) for f in CASES[n] if f.get("max_grad_norm", 0) == 0]


def lists(name, flags, dtype, seed=3):
    rng = np.random.default_rng(seed)
    per = [make_arrays(name, flags, n, dtype, rng) for n in SIZES]
    return {k: [p[k] for p in per] for k in per[0]}


def one_by_one(name, flags, arrays, steps, products):
    """Each tensor alone, with its own step (and NAdam product): what the per-tensor call must give."""
    out = []
    for i in range(len(SIZES)):
        single = {k: [v[i]] for k, v in arrays.items()}
        out.append(call(fastopt, name, single, flags, step=steps[i], mu_product=products[i]))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", STEPPED_CASES, ids=[f"{n}-{flag_id(f)}" for n, f in STEPPED_CASES])
def test_one_call_at_per_tensor_steps_equals_a_call_per_tensor(name, flags, dtype, isa):
    arrays = lists(name, flags, dtype)
    expected = copy(arrays)
    want = one_by_one(name, flags, expected, STEPS, PRODUCTS)
    got = call(fastopt, name, arrays, flags, step=np.array(STEPS), mu_product=np.array(PRODUCTS))
    for role in arrays:
        for a, b in zip(arrays[role], expected[role]):
            np.testing.assert_array_equal(a, b, err_msg=role)
    if name == "nadam":  # each tensor's product through this step, for its next call
        np.testing.assert_array_equal(got, np.array(want))


def test_steps_differ_in_effect():
    """Guards the test above: the same call at one shared step gives other params."""
    name, flags = "adam", CASES["adam"][0]
    a, b = lists(name, flags, np.float64), lists(name, flags, np.float64)
    call(fastopt, name, a, flags, step=np.array(STEPS))
    call(fastopt, name, b, flags, step=STEPS[0])
    assert any(not np.array_equal(x, y) for x, y in zip(a["params"], b["params"]))


def test_nadam_products_keep_their_dtype():
    """A float32 product per tensor is rounded to float32 after its multiplication, as torch's
    float32 mu_product tensor is; a float64 one is not."""
    name, flags = "nadam", CASES["nadam"][0]
    for dtype in (np.float32, np.float64):
        arrays = lists(name, flags, np.float64)
        out = call(fastopt, name, arrays, flags, step=np.array(STEPS), mu_product=np.array(PRODUCTS, dtype))
        assert out.dtype == dtype
        mu = np.array([0.9 * (1.0 - 0.5 * 0.96 ** (t * 4e-3)) for t in STEPS])  # Python's float arithmetic
        np.testing.assert_array_equal(out, np.array(PRODUCTS, dtype) * mu.astype(dtype))


@pytest.mark.parametrize("bad,error,match", [
    ([1, 2], ValueError, "step has 2 values, one per tensor"),
    ([1, 0, 1, 1, 1], ValueError, r"steps\[1\] must be >= 1"),
    ([1.0] * 5, TypeError, "step must be an integer, or a non-empty sequence of integers"),
    ([], TypeError, "step must be an integer"),
])
def test_bad_steps_are_clear_errors_and_write_nothing(bad, error, match):
    name, flags = "adam", CASES["adam"][0]
    arrays = lists(name, flags, np.float32)
    before = copy(arrays)
    with pytest.raises(error, match=match):
        call(fastopt, name, arrays, flags, step=bad)
    for role in arrays:
        for a, b in zip(arrays[role], before[role]):
            np.testing.assert_array_equal(a, b)


def test_optimizers_without_steps_refuse_them_in_c():
    """sgd, rmsprop and lion count no steps: the C API refuses steps (it would otherwise ignore them)."""
    from fastopt._native import ffi, lib
    steps = ffi.new("int64_t[]", [1])
    o = ffi.new("fastopt_sgd_options *", [[0.1]])
    o.common.steps = steps
    p = np.zeros(1, np.float32)
    status = lib.fastopt_sgd(lib.FASTOPT_FLOAT32, 1, ffi.new("size_t[]", [1]), ffi.new("void *[]", [ffi.from_buffer(p)]),
                             ffi.new("void *[]", [ffi.from_buffer(p.copy())]), ffi.NULL, o)
    assert status == lib.FASTOPT_ERR_ARGUMENT
    assert "counts no steps" in ffi.string(lib.fastopt_last_error()).decode()


@pytest.mark.parametrize("name", ["adam", "nadam", "lamb"])
def test_per_tensor_steps_on_the_gpu_path_match_the_cpu(name):
    """The CUDA kernels read per-tensor constant rows: one launch, the CPU's bits (simulator)."""
    cuda = pytest.importorskip("numba.cuda")
    from fastopt.cuda import _prims
    if not _prims.SIMULATOR:
        pytest.skip("compares bit for bit under the simulator; tests/test_cuda.py covers GPUs")
    flags = next(f for f in CASES[name] if f.get("max_grad_norm", 0) == 0)
    host = lists(name, flags, np.float64)
    dev = {k: [cuda.to_device(a) for a in v] for k, v in host.items()}
    call(fastopt, name, host, flags, step=np.array(STEPS), mu_product=np.array(PRODUCTS))
    call(fastopt, name, dev, flags, step=np.array(STEPS), mu_product=np.array(PRODUCTS))
    for role in host:
        for d, h in zip(dev[role], host[role]):
            np.testing.assert_array_equal(d.copy_to_host(), h, err_msg=role)


@pytest.mark.parametrize("storage", ["8-bit state", "bfloat16 params with float32 masters"])
def test_per_tensor_steps_with_8_bit_state_and_master_weights(storage):
    """The other storage paths read the same per-tensor constants: one call equals a call per tensor."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    sizes = [300, 5, 2048]
    steps = [1, 4, 9]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    start = [rng.standard_normal(n).astype(np.float32) for n in sizes]

    def state():
        if storage == "8-bit state":
            return {"params": [p.copy() for p in start],
                    "exp_avgs": [fastopt.QuantizedState(n) for n in sizes],
                    "exp_avg_sqs": [fastopt.QuantizedState(n, signed=False) for n in sizes], "master_params": None}
        return {"params": [p.astype(ml_dtypes.bfloat16) for p in start],
                "exp_avgs": [np.zeros(n, np.float32) for n in sizes], "exp_avg_sqs": [np.zeros(n, np.float32) for n in sizes],
                "master_params": [p.copy() for p in start]}

    def grads_for(s):
        return [g.astype(s["params"][0].dtype) for g in grads]

    together, alone = state(), state()
    fastopt.adamw(together["params"], grads_for(together), together["exp_avgs"], together["exp_avg_sqs"],
                  step=steps, lr=1e-2, master_params=together["master_params"])
    for i, t in enumerate(steps):
        pick = {k: None if v is None else [v[i]] for k, v in alone.items()}
        fastopt.adamw(pick["params"], [grads_for(alone)[i]], pick["exp_avgs"], pick["exp_avg_sqs"], step=t, lr=1e-2,
                      master_params=pick["master_params"])
    for i in range(len(sizes)):
        np.testing.assert_array_equal(together["params"][i], alone["params"][i])
        if storage == "8-bit state":
            np.testing.assert_array_equal(together["exp_avgs"][i].codes, alone["exp_avgs"][i].codes)
            np.testing.assert_array_equal(together["exp_avg_sqs"][i].absmax, alone["exp_avg_sqs"][i].absmax)
        else:
            np.testing.assert_array_equal(together["master_params"][i], alone["master_params"][i])


def test_per_tensor_steps_with_8_bit_state_on_the_gpu_path_match_the_cpu():
    cuda = pytest.importorskip("numba.cuda")
    from fastopt.cuda import _prims
    if not _prims.SIMULATOR:
        pytest.skip("compares bit for bit under the simulator; tests/test_cuda.py covers GPUs")
    rng = np.random.default_rng(9)
    sizes, steps = [300, 5], [2, 6]
    start = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    host_p = [p.copy() for p in start]
    host_m, host_v = [fastopt.QuantizedState(n) for n in sizes], [fastopt.QuantizedState(n, signed=False) for n in sizes]
    dev_p, dev_g = [cuda.to_device(p) for p in start], [cuda.to_device(g) for g in grads]
    dev_m = [fastopt.QuantizedState(n, like=p) for n, p in zip(sizes, dev_p)]
    dev_v = [fastopt.QuantizedState(n, signed=False, like=p) for n, p in zip(sizes, dev_p)]
    fastopt.adamw(host_p, grads, host_m, host_v, step=steps, lr=1e-2)
    fastopt.adamw(dev_p, dev_g, dev_m, dev_v, step=steps, lr=1e-2)
    for i in range(len(sizes)):
        np.testing.assert_array_equal(dev_p[i].copy_to_host(), host_p[i])
        np.testing.assert_array_equal(dev_m[i].codes.copy_to_host(), host_m[i].codes)


# ---- per-tensor hyper-parameters: param groups that differ in lr and weight decay, in one call ----

LRS = [1e-2, 3e-3, 3e-3, 0.1, 0.0]
DECAYS = [0.0, 0.01, 0.01, 0.1, 0.5]
# every optimizer, its busiest flags (LAMB without its clipping, which spans the call's tensors)
HYPER_CASES = [(n, dict(f, max_grad_norm=0.0) if n == "lamb" else f) for n, f in
               ((n, CASES[n][-3]) for n in sorted(CASES))]


def _hyper_call(name, flags, arrays, lrs, decays, steps, products):
    kwargs = dict(lr=lrs) if decays is None else dict(lr=lrs, weight_decay=decays)
    return call(fastopt, name, arrays, flags, step=steps, mu_product=products, **kwargs)


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "cuda-simulator"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", HYPER_CASES, ids=[f"{n}-{flag_id(f)}" for n, f in HYPER_CASES])
def test_per_tensor_lr_and_weight_decay_equal_a_call_per_tensor(name, flags, dtype, gpu):
    """lr and weight_decay given one per tensor (with per-tensor steps where the optimizer counts
    them): the bits of one call per tensor with its own values, on the CPU and on the GPU path."""
    if gpu:
        cuda = pytest.importorskip("numba.cuda")
        if not cuda.is_available():
            pytest.skip("the GPU path needs a GPU or NUMBA_ENABLE_CUDASIM=1")
    decays = DECAYS if "weight_decay" in flags else None
    stepped = name in STEPPED

    def run(arrays, lrs, decays, steps, products):  # on the path under test (GPU: to the device and back)
        if not gpu:
            return _hyper_call(name, flags, arrays, lrs, decays, steps, products)
        device = {k: [cuda.to_device(a) for a in v] for k, v in arrays.items()}
        _hyper_call(name, flags, device, lrs, decays, steps, products)
        for k, v in device.items():
            for a, d in zip(arrays[k], v):
                a[...] = d.copy_to_host()
    arrays = lists(name, flags, dtype)
    expected = copy(arrays)
    for i in range(len(SIZES)):
        run({k: [v[i]] for k, v in expected.items()}, LRS[i], None if decays is None else decays[i],
            STEPS[i] if stepped else 1, PRODUCTS[i])
    run(arrays, np.array(LRS), decays, np.array(STEPS) if stepped else 1, np.array(PRODUCTS))
    for role in arrays:
        for a, b in zip(arrays[role], expected[role]):
            np.testing.assert_array_equal(a, b, err_msg=role)


@pytest.mark.parametrize("bad,error,match", [
    ([0.1, 0.1], ValueError, "lr has 2 values, one per tensor of params"),
    ([0.1, -1.0, 0.1, 0.1, 0.1], ValueError, r"lr\[1\] must be a finite number >= 0"),
    ([0.1, float("nan"), 0.1, 0.1, 0.1], ValueError, r"lr\[1\] must be"),
    ([-1.0, 0.1, 0.1, 0.1, 0.1], ValueError, r"lr\[0\] must be a finite number >= 0"),  # (the first named too)
    (["a"] * 5, TypeError, "lr must be a real number, or a non-empty sequence of real numbers"),
    ([], TypeError, "lr must be a real number, or a non-empty sequence of real numbers"),
])
def test_bad_per_tensor_lr_is_a_clear_error_and_writes_nothing(bad, error, match):
    arrays = lists("adam", {}, np.float32)
    before = copy(arrays)
    with pytest.raises(error, match=match):
        call(fastopt, "adam", arrays, {}, lr=bad)
    for role in arrays:
        for a, b in zip(arrays[role], before[role]):
            np.testing.assert_array_equal(a, b)
