"""The CUDA backend against the NumPy reference: every optimizer and flag, 16-bit params, found_inf,
norms, LAMB, the array protocols, streams and errors.

Without a GPU (CI), conftest.py turns on Numba's CUDA simulator: the same kernels run as Python on
host memory, at small sizes, and must agree with the reference bit for bit.  On a GPU the sizes
grow and the tolerance allows for the FMA contraction of NVVM.  PTX for sm_80 and sm_90 is built
for every kernel and signature in either case.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
ml_dtypes = pytest.importorskip("ml_dtypes")

import fastopt  # noqa: E402
from fastopt.cuda import _arrays, _prims  # noqa: E402
from cases import CASES, NON_NEGATIVE, Q8_CASES, STATE, TORCH_CLASS, assert_close, sharded_lamb, call, flag_id, make_arrays, reference, state_names  # noqa: E402

SIM = _prims.SIMULATOR
# NumPy scalars warn where the device computes inf - inf in silence (the simulator runs on them)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # the simulator is slow
SIZES = [200, 7, 0, 129] if SIM else [1 << 20 | 3, 4097, 0, 1000]
Q8_FIRST = 600  # the 8-bit tests' first tensor under the simulator (with one of 3 and one over a block)
BF16 = ml_dtypes.bfloat16


class CAIArray:
    """A test double for a foreign GPU array: host memory behind __cuda_array_interface__ (under the
    simulator host memory is device memory), with an optional device id and producer stream."""

    def __init__(self, host, readonly=False, device=None, stream=None):
        self.host = host
        address = host.ctypes.data
        if not SIM:  # a real GPU needs device memory behind the interface
            self.device_copy = cuda.to_device(np.ascontiguousarray(host))
            address = self.device_copy.device_ctypes_pointer.value
        self.cai = {"shape": host.shape, "typestr": host.dtype.str, "data": (address, readonly),
                    "version": 3, "strides": None if host.flags.c_contiguous else host.strides}
        if stream is not None:
            self.cai["stream"] = stream
        if device is not None:
            self.device = type("Device", (), {"id": device})()

    @property
    def __cuda_array_interface__(self):
        return self.cai

    def result(self):
        return self.host if SIM else self.device_copy.copy_to_host()


class DLPackArray:
    """A test double for a DLPack-only GPU array (such as JAX's): NumPy's capsule and a CUDA device
    under the simulator; on a real GPU a torch CUDA tensor's capsule and device."""

    def __init__(self, host):
        self.host = host
        self.tensor = None if SIM else pytest.importorskip("torch").from_numpy(host).cuda()

    def __dlpack__(self, stream=None):
        return (self.host if SIM else self.tensor).__dlpack__()

    def __dlpack_device__(self):
        return (2, 0) if SIM else self.tensor.__dlpack_device__()

    def result(self):
        return self.host if SIM else self.tensor.cpu().numpy()


def to_gpu(x):
    return cuda.to_device(x)


def gpu_lists(arrays: dict) -> dict:
    return {k: [to_gpu(a) for a in v] for k, v in arrays.items()}


def to_host(v):
    return [a.copy_to_host() for a in v]


def lists(name, flags, dtype, rng) -> dict:
    """One make_arrays() per tensor size, as lists per role."""
    per = [make_arrays(name, flags, n, dtype, rng) for n in SIZES]
    return {k: [p[k] for p in per] for k in per[0]}


def assert_match(got, want, dtype, exact=True):
    """Bit for bit under the simulator (unless not exact: LAMB's norms sum in another order than
    the reference's), else to the rounding NVVM's FMA contraction allows: a few ulps of the
    operands, which where p - lr * u cancels is many ulps of the result."""
    for g, w in zip(got, want):
        if SIM and not exact:
            assert_close(g, w, dtype)
        elif SIM:
            np.testing.assert_array_equal(g, w)
        else:
            eps = np.finfo(dtype).eps
            scale = max(1.0, float(np.max(np.abs(w), initial=0)))
            np.testing.assert_allclose(g, w, rtol=1e-12 if np.dtype(dtype) == np.float64 else 1e-5,
                                       atol=16 * eps * scale)


def assert_mostly_close(got, want, fraction, rtol=1e-2, atol=1e-6):
    """16-bit results on a GPU: NVVM's FMA contraction moves a float32 value across a rounding tie
    now and then, and where that 16-bit rounding feeds the next step (16-bit state, Lion's sign,
    RMSprop's sqrt of a tiny square) the two runs part by more than a rounding there.  All but
    `fraction` of the elements must agree to rtol/atol, and NaN and inf must sit at the same places."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    finite = np.isfinite(want)
    off = ~np.isclose(got[finite], want[finite], rtol=rtol, atol=atol)
    assert off.sum() <= fraction * got.size, f"{off.sum()} of {got.size} elements differ by more than rtol={rtol}"


def test_assert_mostly_close_allows_only_its_fraction():
    """The GPU tests' tolerance for rounding flips in 16-bit results: a fraction, not a blank cheque."""
    want = np.linspace(1, 2, 10_000)
    got = want.copy()
    got[:2] *= 1.5
    assert_mostly_close(got, want, fraction=2e-4)
    with pytest.raises(AssertionError, match="3 of 10000"):
        got[2] *= 1.5
        assert_mostly_close(got, want, fraction=2e-4)
    got = want.copy()
    got[5] = np.nan
    with pytest.raises(AssertionError):
        assert_mostly_close(got, want, fraction=1.0)


def cuda_call(name, arrays, flags, step=3):
    """call() with a NAdam mu_product the reference also gets."""
    return call(fastopt, name, arrays, flags, step=step, mu_product=0.5 if step > 1 else None)


def _grid(flags: list) -> list:
    """An optimizer's flag combinations to run: all on a GPU; under the simulator (slow: a Python
    thread per CUDA thread) every other one and the last three (the busiest, with fastopt's
    extras), which still turns each flag on and off; the C kernels run the whole grid."""
    if not SIM:
        return flags
    picked = flags[::2] + flags[-3:]
    return [f for i, f in enumerate(picked) if f not in picked[:i]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", [(n, f) for n, fl in CASES.items() for f in _grid(fl)],
                         ids=[f"{n}-{flag_id(f)}" for n, fl in CASES.items() for f in _grid(fl)])
def test_optimizer_matches_reference(name, flags, dtype):
    rng = np.random.default_rng(7)
    host = lists(name, flags, dtype, rng)
    dev = gpu_lists(host)
    for step in (1, 2):
        got = cuda_call(name, dev, flags, step)
        want = call(reference, name, host, flags, step=step, mu_product=0.5 if step > 1 else None)
        if name == "nadam":
            assert got == pytest.approx(want, rel=1e-15)
    for role in host:
        if SIM or not flags.get("centered"):
            assert_match(to_host(dev[role]), host[role], dtype, exact=name != "lamb")
            continue
        # centered RMSprop divides by sqrt(v - m^2): where that difference cancels to a few ulps,
        # FMA's rounding of m^2 is all that is left of it (about 1 element in 10,000)
        eps = np.finfo(dtype).eps
        for g, w in zip(to_host(dev[role]), host[role]):
            scale = max(1.0, float(np.max(np.abs(w), initial=0)))
            assert_mostly_close(g, w, fraction=2e-4, rtol=1e-12 if dtype == np.float64 else 1e-5,
                                atol=16 * eps * scale)


@pytest.mark.parametrize("flags", [f for f in CASES["lamb"] if not f.get("max_grad_norm") and f.get("weight_decay")],
                         ids=flag_id)
def test_lamb_over_shards_with_sum_over_is_the_whole_step(flags):
    """The GPU path of fastopt.lamb(sum_over=...): each tensor's sums over its shard, handed to
    sum_over as a device array between the launches, then the trust ratios from what it leaves
    there: two shards give the params of one call over the whole tensors."""
    got, want = sharded_lamb(flags, np.float64, device=to_gpu, host=lambda a: a.copy_to_host())
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def _round(x, dtype):
    return x.astype(dtype).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_16_bit_params_with_float32_state(name, dtype):
    """Math in float32 on the widened values, one rounding (to nearest even) when stored: exactly
    the float32 reference on the same values, rounded."""
    flags = CASES[name][0]
    np_dtype = np.float16 if dtype == "float16" else BF16
    rng = np.random.default_rng(3)
    host = lists(name, flags, np.float32, rng)
    for role in ("params", "grads"):
        host[role] = [_round(a, np_dtype) for a in host[role]]
    dev = {role: [to_gpu(a.astype(np_dtype).view(np.uint16) if dtype == "bfloat16" else a.astype(np_dtype))
                  if role in ("params", "grads") else to_gpu(a) for a in v] for role, v in host.items()}
    if dtype == "bfloat16":
        dev["params"] = [fastopt.cuda.bfloat16(a) for a in dev["params"]]
        dev["grads"] = [fastopt.cuda.bfloat16(a) for a in dev["grads"]]
    cuda_call(name, dev, flags)
    call(reference, name, host, flags, step=3, mu_product=0.5)
    got = [(a.array if dtype == "bfloat16" else a).copy_to_host() for a in dev["params"]]
    got = [g.view(BF16) if dtype == "bfloat16" else g for g in got]
    want = [w.astype(np_dtype) for w in host["params"]]
    for g, w in zip(got, want):
        if SIM and name != "lamb":
            np.testing.assert_array_equal(g.view(np.uint16), w.view(np.uint16))
        elif SIM:  # one rounding apart where LAMB's norms moved the float32 result across a tie
            np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32), rtol=1e-2, atol=1e-6)
        else:
            assert_mostly_close(g, w, fraction=1e-4)
    for role in STATE[name]:
        if role in host and host[role] is not None:
            assert_match(to_host(dev[role]), host[role], np.float32, exact=name != "lamb")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_state(dtype):
    """State in the params' 16-bit type (torch's own default): within the 16-bit type's precision
    of the float32 reference."""
    np_dtype = np.float16 if dtype == "float16" else BF16
    rng = np.random.default_rng(5)
    p32 = [_round(rng.standard_normal(n).astype(np.float32), np_dtype) for n in SIZES]
    g32 = [_round(rng.standard_normal(n).astype(np.float32), np_dtype) for n in SIZES]
    m32, v32 = [np.zeros_like(p) for p in p32], [np.zeros_like(p) for p in p32]

    def dev(xs):
        arrays = [to_gpu(x.astype(np_dtype).view(np.uint16) if dtype == "bfloat16" else x.astype(np_dtype)) for x in xs]
        return [fastopt.cuda.bfloat16(a) for a in arrays] if dtype == "bfloat16" else arrays
    dp, dg, dm, dv = dev(p32), dev(g32), dev(m32), dev(v32)
    for step in (1, 2, 3):
        fastopt.adamw(dp, dg, dm, dv, step=step, lr=1e-2)
        reference.adamw(p32, g32, m32, v32, step=step, lr=1e-2)
    for a, w in zip(dp, p32):
        got = (a.array.copy_to_host().view(BF16) if dtype == "bfloat16" else a.copy_to_host()).astype(np.float32)
        if SIM:
            np.testing.assert_allclose(got, w, rtol=1e-2 if dtype == "bfloat16" else 2e-3, atol=1e-2)
        else:  # at a million elements: where v = 0.001 g^2 rounds to 0 in float16 (|g| < 0.0055)
            assert_mostly_close(got, w, fraction=5e-3, rtol=1e-2 if dtype == "bfloat16" else 2e-3, atol=1e-2)


# ---- mixed precision: the GPU kernels against the C kernels (tested against the reference) ----

# (params, state, master weights, stochastic rounding)
MIXED = [("float32", "bfloat16", False, False), ("float16", "float16", False, False),
         ("float16", "bfloat16", False, False), ("float16", "float32", True, False),
         ("float16", "bfloat16", True, False), ("bfloat16", "bfloat16", False, False),
         ("bfloat16", "float32", True, False), ("bfloat16", "bfloat16", True, False),
         ("bfloat16", "float32", False, True), ("bfloat16", "bfloat16", False, True)]
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": BF16}


def gpu_of(x):
    """A GPU copy of a host array; bfloat16 as its bits, marked with fastopt.cuda.bfloat16."""
    return fastopt.cuda.bfloat16(to_gpu(x.view(np.uint16))) if x.dtype == BF16 else to_gpu(x)


def host_of(a):
    return a.array.copy_to_host().view(BF16) if isinstance(a, fastopt.cuda.bfloat16) else a.copy_to_host()


def bits(x):
    return x.view(np.uint16) if x.dtype.itemsize == 2 else x


@pytest.mark.parametrize("combo", MIXED, ids=[f"{p}-state_{s}{'-master' if m else ''}{'-sr' if r else ''}"
                                              for p, s, m, r in MIXED])
@pytest.mark.parametrize("name", list(CASES))
def test_mixed_precision_matches_the_cpu_kernels(name, combo):
    """16-bit params and state, float32 master weights, stochastic rounding: two steps on the GPU
    give the C kernels' bits (LAMB: its norms sum in another order, so within a rounding)."""
    p_dtype, s_dtype, master, sr = combo
    flags = CASES[name][-1]  # the busiest flags, with l1_prox and grad_scale
    rng = np.random.default_rng(11)
    host = lists(name, flags, np.float32, rng)
    host = {k: [a.astype(NP_DTYPES[p_dtype if k in ("params", "grads") else s_dtype]) for a in v]
            for k, v in host.items()}
    if master:
        host["master_params"] = [a.astype(np.float32) for a in host["params"]]
    dev = {k: [gpu_of(a) for a in v] for k, v in host.items()}
    for step in (1, 2):
        extra = {"stochastic_rounding": (1234, step)} if sr else {}
        for arrays in (host, dev):
            call(fastopt, name, arrays, flags, step=step, master_params=arrays.get("master_params"), **extra)
    for role in host:
        for got, want in zip(dev[role], host[role]):
            got = host_of(got)
            if not SIM:
                assert_mostly_close(got, want, fraction=1e-4)
            elif name == "lamb":
                np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-6)
            else:
                np.testing.assert_array_equal(bits(got), bits(want), err_msg=role)


@pytest.mark.parametrize("block", [256, 2048])
@pytest.mark.parametrize("p_dtype", ["float32", "bfloat16-master", "float16"])
@pytest.mark.parametrize("name,flags", Q8_CASES, ids=[f"{n}-{flag_id(f)}" for n, f in Q8_CASES])
def test_8_bit_state_matches_the_cpu_kernels(name, flags, p_dtype, block):
    """8-bit state on the GPU (fastopt.QuantizedState(..., like=a GPU array)): three steps give the
    C kernels' codes, scales, params and master weights, bit for bit."""
    rng = np.random.default_rng(4)
    sizes = [Q8_FIRST, 3, block + 17] if SIM else [5000, 3, 2048 * 3 + 17]
    dtype = {"float32": np.float32, "bfloat16-master": BF16, "float16": np.float16}[p_dtype]
    params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
    masters = [p.astype(np.float32) for p in params] if p_dtype == "bfloat16-master" else None
    states = state_names(name, flags)
    q = {s: [fastopt.QuantizedState(n, block, signed=s not in NON_NEGATIVE) for n in sizes] for s in states}
    dev_params = [gpu_of(p) for p in params]
    dev_masters = [to_gpu(m) for m in masters] if masters else None
    dev_q = {s: [fastopt.QuantizedState(n, block, signed=s not in NON_NEGATIVE, like=p) for n, p in zip(sizes, dev_params)]
             for s in states}
    for step in (1, 2, 3):
        grads = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
        call(fastopt, name, {"params": params, "grads": grads, **q}, flags, step=step, master_params=masters)
        call(fastopt, name, {"params": dev_params, "grads": [gpu_of(g) for g in grads], **dev_q}, flags, step=step,
             master_params=dev_masters)
    exact = np.testing.assert_array_equal if SIM else lambda a, b: np.testing.assert_allclose(
        a.astype(np.float32), b.astype(np.float32), rtol=1e-2, atol=1e-6)
    for s in states:
        for a, b in zip(dev_q[s], q[s]):
            np.testing.assert_array_equal(_arrays.to_host(a.absmax), b.absmax) if SIM else None
            exact(a.dequantize(), b.dequantize())
            twin = a.copy()  # on the GPU too, its own memory
            assert twin.nbytes == b.nbytes and _arrays.is_gpu_array(twin.codes)
            np.testing.assert_array_equal(twin.dequantize(), a.dequantize())
    for got, want in zip(dev_params, params):
        exact(bits(host_of(got)), bits(want)) if SIM else exact(host_of(got), want)
    for got, want in zip(dev_masters or [], masters or []):
        exact(got.copy_to_host(), want)


def test_found_inf_skips_8_bit_and_master_steps():
    """A set device flag: nothing written, 8-bit codes and scales, params and master copies included."""
    rng = np.random.default_rng(6)
    p = gpu_of(rng.standard_normal(300).astype(BF16))
    master = to_gpu(rng.standard_normal(300).astype(np.float32))
    m, v = (fastopt.QuantizedState(300, signed=s, like=p) for s in (True, False))
    g = gpu_of(rng.standard_normal(300).astype(BF16))
    fastopt.adamw(p, g, m, v, step=1, master_params=master)
    before = [bits(host_of(p)), master.copy_to_host(), m.dequantize(), v.dequantize()]
    fastopt.adamw(p, g, m, v, step=2, master_params=master, found_inf=to_gpu(np.ones(1, np.float32)))
    for a, b in zip([bits(host_of(p)), master.copy_to_host(), m.dequantize(), v.dequantize()], before):
        np.testing.assert_array_equal(a, b)


def _mixed_arrays(p_dtype=np.float32):
    rng = np.random.default_rng(2)
    host = [rng.standard_normal(50).astype(np.float32).astype(p_dtype) for _ in range(2)]
    state = [np.zeros(50, np.float32) for _ in range(2)]
    return [gpu_of(host[0]), gpu_of(host[1]), to_gpu(state[0]), to_gpu(state[1])]


MIXED_BAD = {
    "float16 masters": (dict(p_dtype=BF16), lambda a: dict(master_params=to_gpu(np.zeros(50, np.float16))),
                        TypeError, "master_params are float32"),
    "masters of float32": (dict(), lambda a: dict(master_params=to_gpu(np.zeros(50, np.float32))), ValueError,
                           "master_params are for float16/bfloat16"),
    "host masters": (dict(p_dtype=BF16), lambda a: dict(master_params=np.zeros(50, np.float32)), TypeError,
                     "host memory"),
    "stochastic float16": (dict(p_dtype=np.float16), lambda a: dict(stochastic_rounding=1), ValueError,
                           "stochastic_rounding is for bfloat16"),
    "stochastic with masters": (dict(p_dtype=BF16), lambda a: dict(stochastic_rounding=1,
                                master_params=to_gpu(np.zeros(50, np.float32))), ValueError, "without master_params"),
    "8-bit with amsgrad": (dict(), lambda a: dict(amsgrad=True, q8=True,
                                                  max_exp_avg_sqs=fastopt.QuantizedState(50, signed=False, like=a[0])), ValueError, "8-bit state is supported"),
    "8-bit codes of another shape": (dict(), lambda a: dict(q8=True, q8_size=49), ValueError, "shape"),
}


@pytest.mark.parametrize("case", list(MIXED_BAD))
def test_bad_mixed_precision_calls_raise_and_write_nothing(case):
    setup, make, error, message = MIXED_BAD[case]
    arrays = _mixed_arrays(**setup)
    kwargs = make(arrays)
    if kwargs.pop("q8", False):
        n = kwargs.pop("q8_size", 50)
        arrays[2:] = [fastopt.QuantizedState(n, signed=s, like=arrays[0]) for s in (True, False)]
    before = [host_of(x) if not isinstance(x, fastopt.QuantizedState) else x.dequantize() for x in arrays]
    with pytest.raises(error, match=message):
        fastopt.adamw(*arrays, step=1, **kwargs)
    for x, b in zip(arrays, before):
        after = host_of(x) if not isinstance(x, fastopt.QuantizedState) else x.dequantize()
        np.testing.assert_array_equal(bits(after), bits(b))


def test_found_inf_on_the_device_skips_the_step():
    rng = np.random.default_rng(1)
    host = lists("adamw", CASES["adamw"][0], np.float32, rng)
    dev = gpu_lists(host)
    flag = to_gpu(np.ones(1, np.float32))
    fastopt.adamw(dev["params"], dev["grads"], dev["exp_avgs"], dev["exp_avg_sqs"], step=1, found_inf=flag)
    for role in host:
        assert_match(to_host(dev[role]), host[role], np.float32)
    flag.copy_to_device(np.zeros(1, np.float32))
    fastopt.adamw(dev["params"], dev["grads"], dev["exp_avgs"], dev["exp_avg_sqs"], step=1, found_inf=flag)
    reference.adamw(host["params"], host["grads"], host["exp_avgs"], host["exp_avg_sqs"], step=1)
    assert_match(to_host(dev["params"]), host["params"], np.float32)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, None])
def test_unscale_sets_the_flag(bad):
    grads = [np.linspace(-3, 3, n).astype(np.float32) for n in SIZES]
    if bad is not None:
        grads[-1][5] = bad
    dev = [to_gpu(g) for g in grads]
    flag = to_gpu(np.zeros(1, np.float32))
    assert fastopt.unscale(dev, 0.25, found_inf=flag) is None  # nothing synchronized
    want = [g.copy() for g in grads]
    found = reference.unscale(want, 0.25)
    assert flag.copy_to_host()[0] == (1.0 if found else 0.0)
    assert_match(to_host(dev), want, np.float32)
    assert fastopt.unscale([to_gpu(g) for g in grads], 0.5) is found  # its own flag, read back


@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norms(norm_type, dtype):
    rng = np.random.default_rng(2)
    grads = [(rng.standard_normal(n) * 3).astype(dtype) for n in SIZES]
    dev = [to_gpu(g) for g in grads]
    norm = fastopt.global_norm(dev, norm_type)
    assert norm == pytest.approx(reference.global_norm(grads, norm_type), rel=1e-12)
    assert fastopt.global_norm(dev, norm_type) == norm  # deterministic: the same bits again
    total = fastopt.clip_grad_norm(dev, 1.0, norm_type)
    assert total == norm
    reference.clip_grad_norm(grads, 1.0, norm_type)
    for g, w in zip(to_host(dev), grads):
        np.testing.assert_allclose(g, w, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-30)


def test_float64_norm_is_rescued_from_overflow_and_underflow():
    for scale in (1e200, 1e-200):
        grads = [np.full(n, scale) for n in SIZES]
        want = reference.global_norm(grads)
        assert fastopt.global_norm([to_gpu(g) for g in grads]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.1), (0.1, 0.2)])
def test_elastic_net_grad(l1, l2):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    params = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    params[0][:3] = 0
    dev = [to_gpu(g) for g in grads]
    fastopt.elastic_net_grad(dev, [to_gpu(p) for p in params], l1=l1, l2=l2)
    reference.elastic_net_grad(grads, params, l1=l1, l2=l2)
    assert_match(to_host(dev), grads, np.float32)


# ---- dropout and the losses: the C kernels' bits (the simulator), close on a GPU ----

def gpu_bits(x):
    """A GPU copy of a host array (16-bit floats through their bits; bfloat16 marked as such)."""
    if x.dtype == BF16:
        return _arrays.bfloat16(to_gpu(x.view(np.uint16)))
    return to_gpu(x)


def host_bits(a, dtype):
    a = a.array if isinstance(a, _arrays.bfloat16) else a
    return a.copy_to_host().view(dtype)


def same_bits_or_close(got, want, rtol):
    if SIM:
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_masks_are_the_cpus(dtype, p):
    """The same (seed, counter) drops the same elements on the GPU as on the CPU, bit for bit."""
    n = 263 if SIM else 1 << 20 | 5
    x = np.random.default_rng(5).standard_normal(n).astype(dtype)
    want_mask = np.zeros(n, np.uint8)
    want = fastopt.dropout(x, p, seed=2 ** 40 + 9, counter=2 ** 33 + 1, mask=want_mask)
    dx, mask = gpu_bits(x), to_gpu(np.full(n, 7, np.uint8))
    out = fastopt.dropout(dx, p, seed=2 ** 40 + 9, counter=2 ** 33 + 1, out=dx, mask=mask)  # in place
    assert out is dx
    assert np.array_equal(mask.copy_to_host(), want_mask)
    assert np.array_equal(host_bits(dx, dtype).view(np.uint8), want.view(np.uint8))  # x * scale: exact on both
    back = fastopt.dropout_backward(gpu_bits(x), p, seed=2 ** 40 + 9, counter=2 ** 33 + 1)
    assert np.array_equal(host_bits(back, dtype).view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, BF16])
def test_mse_grad_is_the_cpus(dtype):
    rng = np.random.default_rng(6)
    pred, target = (rng.standard_normal(300 if SIM else 1 << 20).astype(dtype) for _ in range(2))
    want_loss, want = fastopt.mse_grad(pred, target)
    loss, grad = fastopt.mse_grad(gpu_bits(pred), gpu_bits(target))
    same_bits_or_close(host_bits(grad, dtype), want, 1e-6)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    summed, _ = fastopt.mse_grad(gpu_bits(pred), gpu_bits(target), reduction="sum")
    assert summed == pytest.approx(want_loss * pred.size, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_is_the_cpus(dtype, smoothing):
    rng = np.random.default_rng(7)
    rows, classes = (9, 37) if SIM else (4096, 1000)
    logits = (rng.standard_normal((rows, classes)) * 4).astype(dtype)
    labels = rng.integers(0, classes, rows)
    labels[2] = -100
    want_loss, want = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    dx = gpu_bits(logits)
    loss, grad = fastopt.softmax_cross_entropy(dx, to_gpu(labels), label_smoothing=smoothing, out=dx)  # in place
    same_bits_or_close(host_bits(grad, dtype), want, 1e-5)
    assert loss == (want_loss if SIM else pytest.approx(want_loss, rel=1e-6))
    summed, _ = fastopt.softmax_cross_entropy(gpu_bits(logits), to_gpu(labels), label_smoothing=smoothing,
                                              reduction="sum")
    assert summed == pytest.approx(want_loss * (rows - 1), rel=1e-12)


def test_gpu_dropout_and_losses_refuse_bad_arguments_and_write_nothing():
    logits = to_gpu(np.ones((3, 4), np.float32))
    out = to_gpu(np.full((3, 4), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"labels\[1\] is 4, outside \[0, 4\)"):
        fastopt.softmax_cross_entropy(logits, to_gpu(np.array([0, 4, 1])), out=out)
    with pytest.raises(TypeError, match="labels has dtype int32, expected int64"):
        fastopt.softmax_cross_entropy(logits, to_gpu(np.array([0, 1, 1], np.int32)), out=out)
    with pytest.raises(TypeError, match="labels must be a GPU array"):
        fastopt.softmax_cross_entropy(logits, np.array([0, 1, 1]), out=out)
    x = to_gpu(np.ones(12, np.float32))
    with pytest.raises(ValueError, match="mask has shape"):
        fastopt.dropout(x, 0.5, seed=1, counter=1, out=out.reshape(12), mask=to_gpu(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="p must be in"):
        fastopt.dropout(x, 2.0, seed=1, counter=1, out=out.reshape(12))
    assert (out.copy_to_host() == 2).all()


# ---- array protocols and streams ----

def test_cuda_array_interface_and_dlpack_arrays():
    rng = np.random.default_rng(6)
    p, g = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    want = [x.copy() for x in (p, g, m, v)]
    arrays = [CAIArray(p), DLPackArray(g), CAIArray(m), DLPackArray(v)]
    fastopt.adamw(*arrays, step=1)
    reference.adamw(*want, step=1)
    assert_match([arrays[i].result() for i in (0, 2, 3)], [want[0], want[2], want[3]], np.float32)
    assert _arrays.view(DLPackArray(g)).dtype == "float32"


def test_stream_resolution():
    views = [_arrays.view(CAIArray(np.zeros(3, np.float32)))]
    assert _arrays.stream_handle(None, views) == 0
    assert _arrays.stream_handle(None, [_arrays.view(CAIArray(np.zeros(3, np.float32), stream=1234))]) == 1234
    assert _arrays.stream_handle(None, [_arrays.view(CAIArray(np.zeros(3, np.float32), stream=1))]) == 0
    assert _arrays.stream_handle(77, views) == 77
    assert _arrays.stream_handle(type("TorchStream", (), {"cuda_stream": 88})(), views) == 88
    assert _arrays.stream_handle(type("CupyStream", (), {"ptr": 99})(), views) == 99
    with pytest.raises(TypeError, match="stream"):
        _arrays.stream_handle("default", views)


# ---- errors: clear, and nothing written ----

def _adamw_arrays(n=50):
    rng = np.random.default_rng(9)
    return [rng.standard_normal(n).astype(np.float32) for _ in range(4)]


BAD = {
    "host and device": (lambda a: [to_gpu(a[0]), a[1], to_gpu(a[2]), to_gpu(a[3])], {}, TypeError, "host memory"),
    "device and host": (lambda a: [a[0], to_gpu(a[1]), a[2], a[3]], {}, TypeError, "grads is on a GPU but params"),
    "two devices": (lambda a: [CAIArray(a[0]), CAIArray(a[1], device=1), CAIArray(a[2]), CAIArray(a[3])], {},
                    ValueError, "cuda:1"),
    "dtype": (lambda a: [to_gpu(a[0]), to_gpu(a[1].astype(np.float64)), to_gpu(a[2]), to_gpu(a[3])], {},
              TypeError, "grads has dtype float64"),
    "state dtype": (lambda a: [to_gpu(a[0]), to_gpu(a[1]), to_gpu(a[2].astype(np.float16)), to_gpu(a[3])], {},
                    TypeError, "exp_avg_sqs has dtype float32, expected float16"),
    "state dtype combination": (lambda a: [to_gpu(a[0]), to_gpu(a[1]), to_gpu(a[2].astype(np.float16)),
                                           to_gpu(a[3].astype(np.float16))], {}, TypeError, "float16"),
    "shape": (lambda a: [to_gpu(a[0]), to_gpu(a[1][:-1]), to_gpu(a[2]), to_gpu(a[3])], {}, ValueError, "shape"),
    "strided": (lambda a: [CAIArray(a[0][::2]), CAIArray(a[1][::2]), CAIArray(a[2][::2]), CAIArray(a[3][::2])], {},
                ValueError, "not C-contiguous"),
    "read-only": (lambda a: [CAIArray(a[0], readonly=True), CAIArray(a[1]), CAIArray(a[2]), CAIArray(a[3])], {},
                  ValueError, "read-only"),
    "overlap": (lambda a: (lambda same: [same, CAIArray(a[1]), same, CAIArray(a[3])])(CAIArray(a[0])), {},
                ValueError, "overlap"),
    "lr": (lambda a: [to_gpu(x) for x in a], {"lr": -1.0}, ValueError, "lr must be"),
    "found_inf": (lambda a: [to_gpu(x) for x in a], {"found_inf": to_gpu(np.zeros(2, np.float32))}, TypeError,
                  "found_inf"),
    "integer": (lambda a: [to_gpu(a[0].astype(np.int32))] + [to_gpu(x) for x in a[1:]], {}, TypeError,
                "supported on GPUs"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_error_and_writes_nothing(case):
    make, kwargs, error, message = BAD[case]
    arrays = make(_adamw_arrays())

    def contents(x):
        return x.copy_to_host() if hasattr(x, "copy_to_host") else x.result() if hasattr(x, "result") else np.array(x)
    before = [contents(x) for x in arrays]
    with pytest.raises(error, match=message):
        fastopt.adamw(*arrays, step=1, **kwargs)
    for x, b in zip(arrays, before):
        np.testing.assert_array_equal(contents(x), b)


def test_a_repeated_call_is_validated_and_its_table_uploaded_once(monkeypatch):
    """A training loop's calls: the same tensors every step.  The second call reuses the first's
    validation and device table; a call that differs in anything validation reads (here one
    read-only array) is checked again, and still raises and writes nothing."""
    from fastopt.cuda import _launch
    checks = []
    check = _launch.Call._check
    monkeypatch.setattr(_launch.Call, "_check", lambda self: (checks.append(self.fn), check(self))[1])
    p, g, m, v = (to_gpu(a) for a in _adamw_arrays(300))
    want = [a.copy_to_host() for a in (p, g, m, v)]
    for step in (1, 2, 3):
        fastopt.adamw([p], [g], [m], [v], step=step)
        reference.adamw(*want, step=step)
    assert checks == ["adamw"]
    assert_match([p.copy_to_host(), m.copy_to_host()], [want[0], want[2]], np.float32)
    before = p.copy_to_host()
    bad = CAIArray(np.zeros(300, np.float32), readonly=True)
    with pytest.raises(ValueError, match="read-only"):
        fastopt.adamw([p], [g], [m], [bad], step=4)
    assert checks == ["adamw", "adamw"]
    np.testing.assert_array_equal(p.copy_to_host(), before)


def test_every_launch_matches_a_declared_signature(monkeypatch):
    """On a GPU the kernels are compiled for fastopt.cuda.signatures() only: every launch must fit
    (the types of a launch do not depend on the sizes: the smallest run)."""
    import numba
    from fastopt.cuda import _launch, signatures
    monkeypatch.setattr(sys.modules[__name__], "SIZES", [5, 0, 7])
    monkeypatch.setattr(sys.modules[__name__], "Q8_FIRST", 5)
    _launch.LAUNCHES = launches = []
    try:
        for name, flags in CASES.items():
            for dtype in (np.float32, np.float64):
                rng = np.random.default_rng(0)
                cuda_call(name, gpu_lists(lists(name, flags[-1], dtype, rng)), flags[-1])
        test_16_bit_params_with_float32_state("adamw", "bfloat16")
        test_16_bit_state("float16")
        for combo in MIXED:
            test_mixed_precision_matches_the_cpu_kernels("lamb", combo)
            test_mixed_precision_matches_the_cpu_kernels("adamw", combo)
        by_kernel = {_launch.kernel_of(name, True): (name, flags) for name, flags in Q8_CASES}  # (flags: same types)
        for name, flags in by_kernel.values():
            for p_dtype in ("float32", "bfloat16-master", "float16"):
                test_8_bit_state_matches_the_cpu_kernels(name, flags, p_dtype, 256)
        test_unscale_sets_the_flag(np.inf)
        test_norms(3.0, np.float32)
        test_elastic_net_grad(0.1, 0.2)
        x = to_gpu(np.ones(9, np.float32))
        fastopt.dropout(x, 0.5, seed=1, counter=2, out=x, mask=to_gpu(np.zeros(9, np.uint8)))
        fastopt.mse_grad(x, to_gpu(np.zeros(9, np.float32)))
        fastopt.softmax_cross_entropy(to_gpu(np.ones((3, 3), np.float32)), to_gpu(np.arange(3)))
    finally:
        _launch.LAUNCHES = None
    declared = signatures()

    def type_of(x):
        return numba.typeof(x._ary if type(x).__name__ == "FakeCUDAArray" else x)
    seen = set()
    for kernel, args in launches:
        name = (getattr(kernel, "py_func", None) or kernel.fn).__name__
        sig = tuple(type_of(a) for a in args)
        assert sig in declared[name], (name, sig)
        seen.add(name)
    assert seen == set(declared)


def test_kernels_use_only_functions_defined_above_them():
    """On a GPU each kernel compiles when its decorator runs, mid-import: every module-level function
    it calls, directly or through device functions, must already be defined (a later one is a
    NameError there, though the simulator and the PTX build, which compile after the import, pass)."""
    import ast
    import inspect
    from fastopt.cuda import _kernels
    tree = ast.parse(inspect.getsource(_kernels))
    defined = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}

    def callees(fn, seen):
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id in defined and node.id not in seen:
                seen.add(node.id)
                callees(defined[node.id], seen)
        return seen
    kernels = [f for f in defined.values()
               if any(getattr(getattr(d, "func", None), "id", None) == "kernel" for d in f.decorator_list)]
    assert len(kernels) == len(fastopt.cuda.signatures())
    for k in kernels:
        late = sorted(name for name in callees(k, set()) if defined[name].lineno > k.lineno)
        assert not late, f"{k.name} calls {late}, defined below it"


# ---- PTX: every kernel builds for sm_80 and sm_90 (every signature for sm_90) ----

def test_every_kernel_compiles_to_ptx():
    script = ("import sys, fastopt.cuda as c\n"
              "cc = (int(sys.argv[1]), 0)\n"
              "out = c.compile_ptx(cc, every_signature=cc == (9, 0))\n"
              "assert all('.target sm_%d%d' % cc in ptx for ptx in out.values()), cc\n"
              "print(len(out))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    # one process per compute capability, side by side
    builds = [subprocess.Popen([sys.executable, "-c", script, major], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for major in ("8", "9")]
    counts = []
    for build in builds:
        out, err = build.communicate(timeout=600)
        assert build.returncode == 0, err[-3000:]
        counts.append(int(out.split()[-1]))
    from fastopt._optimizers import OPTIMIZERS
    from fastopt.cuda import _launch
    signatures = fastopt.cuda.signatures()
    declared = sum(len(sigs) for sigs in signatures.values())
    assert counts == [len(signatures), declared]  # sm_80: a signature of each kernel; sm_90: all of them
    # every optimizer's kernel for each of the 8 (params, state) storage pairs of fastopt.cuda
    assert all(len(signatures[_launch.kernel_of(name, False)]) == 8 for name in OPTIMIZERS)


# ---- on a real GPU: torch CUDA tensors, torch.optim, a non-default stream ----

gpu = pytest.mark.skipif(SIM, reason="needs a CUDA GPU (the simulator has no torch CUDA tensors or streams)")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", list(TORCH_CLASS))
def test_torch_tensor_trajectory_matches_torch_optim(name, device):
    """The functional API on torch tensors, 20 steps of the busiest flags, against torch.optim: on
    the CPU (the C kernels) and, on a GPU, CUDA tensors (these kernels)."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and (SIM or not torch.cuda.is_available()):
        pytest.skip("needs a CUDA GPU")
    from cases import TORCH_CASES
    flags = TORCH_CASES[name][-1]
    torch.manual_seed(0)
    params = [torch.randn(n, device=device) for n in (4097, 33, 1000)]
    ours = {"params": [p.clone() for p in params]}
    ours.update({s: [torch.zeros_like(p) for p in params] for s in state_names(name, flags)})
    opt = getattr(torch.optim, TORCH_CLASS[name])(
        [torch.nn.Parameter(p) for p in params], foreach=False, **flags)
    torch_params = [p for g in opt.param_groups for p in g["params"]]
    mu_product = 1.0
    for step in range(1, 21):
        ours["grads"] = [torch.randn_like(p) for p in params]
        for p, g in zip(torch_params, ours["grads"]):
            p.grad = g.clone()
        opt.step()
        mu_product = call(fastopt, name, ours, flags, step=step, mu_product=mu_product)
    for a, b in zip(ours["params"], torch_params):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


@gpu
def test_launches_on_the_current_torch_stream():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    side = torch.cuda.Stream()
    p = torch.zeros(1 << 24, device="cuda")
    with torch.cuda.stream(side):
        g = torch.ones_like(p)
        for _ in range(20):          # queue work so the update would race if it ran elsewhere
            g = g * 1.0 + 0.0
        fastopt.sgd(p, g, lr=1.0)
        result = p.sum()
    torch.cuda.synchronize()
    assert result.item() == -(1 << 24)


def test_gpu_benchmark_report_formats_a_result():
    from fastopt.bench import gpu
    result = {"gpu": "H100", "copy_GBps": 3000.0, "repeats": 1, "rows": [
        {"case": "adamw-256m", "tensors": 1, "elements": 1 << 28, "fastopt_s": 2.6e-3, "torch_fused_s": 2.8e-3,
         "fastopt_GBps": 2890.0, "of_copy": 0.963, "x_torch_fused": 1.08, "prepared_s": 2.55e-3,
         "prepared_x_torch_fused": 1.1}]}
    text = gpu.report(result)
    assert "96.3%" in text and "1.08x" in text and "3000 GB/s" in text and "2550.0us" in text and "1.10x" in text


def test_the_host_path_benchmark_counts_one_launch_for_adamw():
    """python -m fastopt.bench.gpu --host-path: the steady-state step's Python cost, launches
    replaced by a counter (runs without a GPU: under the simulator)."""
    from fastopt.bench import gpu
    rows = {(r["model"], r["optimizer"]): r for r in gpu.host_path(steps=3)}
    assert rows["mlp20", "adamw"]["launches"] == 1 and rows["gpt2-small", "adamw"]["launches"] == 1
    assert rows["gpt2-small", "adamw"]["tensors"] == 148
    assert rows["mlp20", "lamb"]["launches"] == 3  # moments, trust ratios, params
    assert all(r["host_us"] > 0 for r in rows.values())
