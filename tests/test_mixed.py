"""Mixed precision on the CPU: float16/bfloat16 params and grads, float32/bfloat16 state, float32
master weights, stochastic rounding; every optimizer against the reference."""
from __future__ import annotations

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import fastopt  # noqa: E402
from cases import CASES, NON_NEGATIVE, Q8_CASES, STATE, call, flag_id, make_arrays, reference, state_names  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALF = {"float16": F16, "bfloat16": BF16}


def bits(a):
    return a.view(np.uint16)


# ---- conversions: exact and round-to-nearest-even, at every SIMD level ----

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_16_bit_value_survives_a_zero_step(dtype, isa):
    """p - 0 * g for all 65,536 bit patterns: widened and narrowed back unchanged (NaNs stay NaN)."""
    p = np.arange(1 << 16, dtype=np.uint16).view(HALF[dtype])
    before = p.copy()
    fastopt.sgd(p, np.zeros_like(p), lr=0.0)
    nan = np.isnan(before.astype(np.float32))
    np.testing.assert_array_equal(bits(p)[~nan], bits(before)[~nan])
    assert np.isnan(p[nan].astype(np.float32)).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_narrowing_rounds_to_nearest_even(dtype, isa):
    """params written from float32 master copies: NumPy's / ml_dtypes' rounding, bit for bit, over
    normal, subnormal, overflowing, tie and special values."""
    rng = np.random.default_rng(0)
    exps = rng.integers(-30, 20, 20000).astype(np.float32)
    master = (rng.standard_normal(20000).astype(np.float32) * np.exp2(exps)).astype(np.float32)
    ties = (np.arange(1, 2001, dtype=np.float32) + 0.5) * np.float32(2.0 ** -10)  # halfway cases in float16
    master = np.concatenate([master, ties, -ties, np.float32([0.0, -0.0, np.inf, -np.inf, 65504, 65520, 70000,
                                                              1e-8, 6e-8, 3e-5, 1e38, 3.4e38])])
    p = master.astype(HALF[dtype])
    fastopt.sgd(p, np.zeros_like(p), lr=0.0, master_params=master)
    np.testing.assert_array_equal(bits(p), bits(master.astype(HALF[dtype])))


# ---- every optimizer ----

COMBOS = [("float16", "float32", False), ("bfloat16", "float32", False), ("float16", "float32", True),
          ("bfloat16", "float32", True), ("bfloat16", "bfloat16", False), ("float16", "float16", False),
          ("bfloat16", "bfloat16", True), ("float32", "bfloat16", False)]
FLAGS = [(name, flags) for name, cases in CASES.items() for flags in (cases[0], cases[-1])]


def _setup(name, flags, p_dtype, s_dtype, master, n=777, seed=0):
    """(fastopt arrays, float64 reference arrays on the same starting values)."""
    rng = np.random.default_rng(seed)
    base = make_arrays(name, flags, n, np.float32, rng)
    p16 = base["params"].astype(np.dtype(p_dtype) if p_dtype == "float32" else HALF[p_dtype])
    ours = {"params": p16, "grads": base["grads"].astype(p16.dtype)}
    s_np = np.float32 if s_dtype == "float32" else HALF[s_dtype]
    for k, v in base.items():
        if k not in ("params", "grads"):
            ours[k] = v.astype(s_np)
    ref = {k: v.astype(np.float32).astype(np.float64) for k, v in ours.items()}
    if master:
        ours["master"] = p16.astype(np.float32)
    return ours, ref


@pytest.mark.parametrize("p_dtype,s_dtype,master", COMBOS, ids=[f"{p}-state_{s}{'-master' if m else ''}"
                                                                 for p, s, m in COMBOS])
@pytest.mark.parametrize("name,flags", FLAGS, ids=[f"{n}-{flag_id(f)}" for n, f in FLAGS])
def test_mixed_precision_matches_the_float64_reference(name, flags, p_dtype, s_dtype, master):
    """Three steps from the same values; the tolerance is the storage's: params and state within
    a few units of their own last place (float32 math, then one rounding per store), the params
    also within a few units of the state's last place of the distance they moved.  Two cases
    are ill-conditioned in any 16-bit state and skipped: centered RMSprop's variance s - ga^2
    cancels (these arrays put it near 0), and Lion's sign flips where its argument rounds across 0
    (checked on 99% of the elements instead)."""
    if name == "rmsprop" and flags.get("centered") and s_dtype != "float32":
        pytest.skip("centered RMSprop: s - ga^2 cancels in 16-bit state")
    ours, ref = _setup(name, flags, p_dtype, s_dtype, master)
    masters = ours.pop("master", None)
    start = ref["params"].copy()
    for step in (1, 2, 3):
        call(fastopt, name, ours, flags, step=step, mu_product=0.5, master_params=masters)
        call(reference, name, ref, flags, step=step, mu_product=0.5)
    ulp = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}
    p_ulp = ulp["float32" if masters is not None else p_dtype]          # where the params are kept
    eps = max(p_ulp, ulp[s_dtype], ulp[p_dtype])                        # every rounding of a stored value
    lr = flags.get("lr", 1e-3)
    size = np.abs(ref["params"]) + np.abs(ref["grads"]) + 1.0
    got_p = (masters if masters is not None else ours["params"]).astype(np.float64)
    moved = np.abs(ref["params"] - start)  # a stored value's rounding is relative to the steps it enters
    bound = 16 * (p_ulp * np.abs(ref["params"]) + eps * (lr * 3 * size + moved))
    within = np.abs(got_p - ref["params"]) <= bound
    assert np.mean(within) >= 0.99 if name == "lion" else np.all(within), np.max(np.abs(got_p - ref["params"]) / bound)
    for s in STATE[name]:
        if s in ours and ours[s] is not None:
            err = np.abs(ours[s].astype(np.float64) - ref[s])
            s_bound = 16 * eps * (np.abs(ref[s]) + size ** 2)
            assert np.all(err <= s_bound), (s, np.max(err / s_bound))


@pytest.mark.parametrize("p_dtype,master", [("float32", False), ("bfloat16", True)])
@pytest.mark.parametrize("s_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", [n for n in CASES if n != "lamb"])  # LAMB's trust ratio is per tensor
def test_streamed_spans_give_the_bits_of_short_ones(name, s_dtype, p_dtype, master, isa):
    """float32 params, and 16-bit params with float32 masters, from 2^17 elements stream in
    prefetched chunks (csrc/dispatch/spans.h): the same bits as the same elements updated as
    tensors too short to stream."""
    flags = CASES[name][-1]
    ours, _ = _setup(name, flags, p_dtype, s_dtype, master, n=(1 << 17) + 5)
    pieces = {k: [v[i:i + 40000].copy() for i in range(0, v.size, 40000)] for k, v in ours.items()}
    for arrays in (ours, pieces):
        call(fastopt, name, arrays, flags, **({"master_params": arrays["master"]} if master else {}))
    for k, v in ours.items():
        np.testing.assert_array_equal(bits(v), bits(np.concatenate(pieces[k])), err_msg=k)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_state_and_masters_are_exactly_the_float32_reference(name):
    """With float32 state and master weights, the math is the float32 reference's on the widened
    values, bit for bit; the bfloat16 params are its rounding."""
    flags = CASES[name][0]
    ours, _ = _setup(name, flags, "bfloat16", "float32", True)
    masters = ours.pop("master")
    ref = {k: (v.astype(np.float32) if k != "params" else masters.copy()) for k, v in ours.items()}
    ref["grads"] = ours["grads"].astype(np.float32)
    call(fastopt, name, ours, flags, step=3, mu_product=0.5, master_params=masters)
    call(reference, name, ref, flags, step=3, mu_product=0.5)
    if name == "lamb":  # LAMB's norms sum in another order than the reference's
        np.testing.assert_array_max_ulp(masters, ref["params"], maxulp=2)
    else:
        np.testing.assert_array_equal(masters, ref["params"])
    np.testing.assert_array_equal(bits(ours["params"]), bits(masters.astype(BF16)))


# ---- stochastic rounding ----

def test_stochastic_rounding_is_unbiased_and_reproducible():
    """A step far below bfloat16's resolution at 1.0 (2^-8): round-to-nearest never moves, the
    stochastic rounding moves the right share of elements, so the mean moves by the step."""
    n, lr = 200_000, 1e-4
    g = np.ones(n, BF16)

    def run(seed, step, sr=True):
        p = np.ones(n, BF16)
        fastopt.sgd(p, g, lr=lr, stochastic_rounding=(seed, step) if sr else None)
        return p
    assert np.all(run(0, 0, sr=False).astype(np.float32) == 1.0)
    p = run(7, 1).astype(np.float64)
    moved = np.mean(p < 1.0)
    share = lr / 2.0 ** -8                      # down by one ulp below 1.0 (2^-8) with this probability
    sigma = np.sqrt(share * (1 - share) / n)
    assert abs(moved - share) < 5 * sigma
    assert abs(p.mean() - (1 - lr)) < 5 * sigma * 2.0 ** -8
    np.testing.assert_array_equal(bits(run(7, 1)), bits(run(7, 1).copy()))   # same seed, same step: same bits
    assert not np.array_equal(bits(run(7, 1)), bits(run(7, 2)))               # another step: other bits
    assert not np.array_equal(bits(run(7, 1)), bits(run(8, 1)))               # another seed: other bits


def test_philox_matches_the_random123_known_answers():
    m = 0xFFFFFFFF
    for counter, key, want in [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
                               ((m, m, m, m), (m, m), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
                               ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
                                (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]:
        assert [int(w[0]) for w in reference.philox4x32([[c] for c in counter], key)] == list(want)


def test_stochastic_rounding_gives_the_reference_bits(isa, threads):
    """Every rounding bit as fastopt.reference.stochastic_round_bf16 specifies it, per tensor of a
    call, at every SIMD level and thread count (spans and threads start at any element)."""
    rng = np.random.default_rng(3)
    sizes, seed, counter, lr = (5003, 17, 20_000, (1 << 17) + 3), (5 << 32) + 12345, 77, 1e-3
    p0 = [rng.standard_normal(n).astype(BF16) for n in sizes]
    p0[0][:3] = [np.inf, -np.inf, np.nan]  # kept, not dithered; NaN stays NaN
    g = [rng.standard_normal(n).astype(BF16) for n in sizes]
    want = []
    for t, (p, gi) in enumerate(zip(p0, g)):
        x = [p.astype(np.float32)]
        reference.sgd(x, [gi.astype(np.float32)], lr=lr)
        want.append(reference.stochastic_round_bf16(x[0], seed, counter, tensor=t))
    for n_threads in (1, 2):
        fastopt.set_num_threads(n_threads)
        p = [a.copy() for a in p0]
        fastopt.sgd(p, g, lr=lr, stochastic_rounding=(seed, counter))
        for got, w in zip(p, want):
            np.testing.assert_array_equal(bits(got), w)


def test_stochastic_rounding_is_thread_count_independent(threads):
    p0 = np.random.default_rng(0).standard_normal(1 << 19).astype(BF16)
    g = np.random.default_rng(1).standard_normal(1 << 19).astype(BF16)
    out = []
    for t in (1, 2):
        fastopt.set_num_threads(t)
        p, m, v = p0.copy(), np.zeros(p0.size, np.float32), np.zeros(p0.size, np.float32)
        fastopt.adamw(p, g, m, v, step=5, lr=1e-3, stochastic_rounding=123)
        out.append(bits(p))
    np.testing.assert_array_equal(*out)


# ---- a 1,000-step toy training ----

def _linear_regression(p_dtype, steps=1000, master=False, sr=False, state=np.float32):
    """Full-batch AdamW on least squares; returns the final loss (float64, on the float32 data)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    w_true = rng.standard_normal(64).astype(np.float32)
    y = x @ w_true + 0.01 * rng.standard_normal(512).astype(np.float32)
    w = np.zeros(64, p_dtype)
    masters = w.astype(np.float32) if master else None
    m, v = np.zeros(64, state), np.zeros(64, state)
    for step in range(1, steps + 1):
        wf = (masters if master else w).astype(np.float32)
        grad = (2 / len(x)) * (x.T @ (x @ wf - y))
        fastopt.adamw(w, grad.astype(p_dtype), m, v, step=step, lr=1e-2, weight_decay=0.0, master_params=masters,
                      stochastic_rounding=step and 99 if sr else None)
    wf = w.astype(np.float64)
    return float(np.mean((x.astype(np.float64) @ wf - y) ** 2))


def test_bf16_training_reaches_the_float32_loss():
    """1,000 steps: bfloat16 weights with float32 masters (or stochastic rounding, or bfloat16
    state) end within a stated margin of float32 training; plain bfloat16 stalls above it."""
    f32 = _linear_regression(np.float32)
    noise_floor = 1e-4                                   # the data's noise: 0.01^2
    assert f32 < 2 * noise_floor
    assert _linear_regression(BF16, master=True) < f32 + 2e-3          # bf16 params only in the forward pass
    assert _linear_regression(BF16, master=True, state=BF16) < f32 + 2e-3
    assert _linear_regression(BF16, sr=True) < f32 + 5e-3
    plain = _linear_regression(BF16)
    assert plain > _linear_regression(BF16, master=True)                 # what master weights are for


# ---- bad combinations ----

@pytest.mark.parametrize("case,kwargs,error,message", [
    ("float16 masters", dict(master_params="f16"), TypeError, "master_params are float32"),
    ("masters of float32", dict(params="f32", master_params="f32m"), ValueError, "master_params are for float16"),
    ("float16 state for float32", dict(params="f32", state="f16"), TypeError, "state_dtype float16"),
    ("stochastic float16", dict(params="f16", stochastic_rounding=1), ValueError, "stochastic_rounding is for bfloat16"),
    ("stochastic with masters", dict(master_params="f32m", stochastic_rounding=1), ValueError,
     "stochastic_rounding is for bfloat16 params without"),
    ("mixed state", dict(state_mix=True), TypeError, "the dtype of the first state array"),
    ("sgd without counter", dict(sgd=True, stochastic_rounding=5), TypeError, r"\(seed, counter\)"),
])
def test_bad_combinations_raise_and_write_nothing(case, kwargs, error, message):
    n = 64
    dtype = {"f16": F16, "f32": np.dtype(np.float32)}.get(kwargs.pop("params", None), BF16)
    p = np.linspace(-1, 1, n).astype(dtype)
    g = np.ones(n, dtype)
    s_dtype = F16 if kwargs.pop("state", None) == "f16" else np.float32
    m, v = np.zeros(n, s_dtype), np.zeros(n, BF16 if kwargs.pop("state_mix", False) else s_dtype)
    master = kwargs.get("master_params")
    if master is not None:
        kwargs["master_params"] = p.astype(F16 if master == "f16" else np.float32)
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises(error, match=message):
        if kwargs.pop("sgd", False):
            fastopt.sgd(p, g, lr=0.1, **kwargs)
        else:
            fastopt.adamw(p, g, m, v, step=1, **kwargs)
    for a, b in zip((p, m, v), before):
        np.testing.assert_array_equal(bits(a) if a.dtype.itemsize == 2 else a, bits(b) if b.dtype.itemsize == 2 else b)


# ---- 8-bit state ----

@pytest.mark.parametrize("block", [256, 2048])
@pytest.mark.parametrize("p_dtype", ["float32", "bfloat16-master"])
@pytest.mark.parametrize("name,flags", Q8_CASES, ids=[f"{n}-{flag_id(f)}" for n, f in Q8_CASES])
def test_8_bit_state_is_the_reference_on_dequantized_state(name, flags, p_dtype, block, isa):
    """Each step: the float32 reference on the dequantized state, then quantized back (absmax per
    block, nearest code value): params, codes and scales equal bit for bit, at every SIMD level."""
    rng = np.random.default_rng(4)
    sizes = [5000, 3, 2048 * 3 + 17]
    p32 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    states = state_names(name, flags)
    q = {s: [fastopt.QuantizedState(n, block, signed=s not in NON_NEGATIVE) for n in sizes] for s in states}
    q_ref = {s: [x.copy() for x in v] for s, v in q.items()}
    masters = [p.copy() for p in p32] if p_dtype != "float32" else None
    params = [p.astype(BF16) for p in p32] if masters else [p.copy() for p in p32]
    ref_p = [p.copy() for p in p32]
    for step in (1, 2, 3):
        grads32 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        grads = [g.astype(BF16) for g in grads32] if masters else grads32
        call(fastopt, name, {"params": params, "grads": grads, **q}, flags, step=step, master_params=masters)
        deq = {s: [x.dequantize() for x in v] for s, v in q_ref.items()}
        call(reference, name, {"params": ref_p, "grads": [g.astype(np.float32) for g in grads], **deq}, flags,
             step=step)
        for s in states:
            for x, d in zip(q_ref[s], deq[s]):
                x.quantize_(d)
    for s in states:
        for a, b in zip(q[s], q_ref[s]):
            np.testing.assert_array_equal(a.absmax, b.absmax)
            np.testing.assert_array_equal(a.codes, b.codes)
    for got, want in zip(masters if masters else params, ref_p):
        np.testing.assert_array_equal(got, want)


def test_8_bit_code_is_the_dynamic_code():
    signed, unsigned = fastopt.quant8.code(True), fastopt.quant8.code(False)
    for c in (signed, unsigned):
        assert c.size == 256 and np.all(np.diff(c) > 0) and c[-1] == 1.0 and 0.0 in c
    assert signed[0] < -0.99 and unsigned[0] == 0.0
    assert np.isclose(np.min(np.abs(signed[signed != 0])), 5.5e-7, rtol=1e-3)  # the finest step: 1e-6 scale
    q = fastopt.QuantizedState(1000, 256)
    assert q.nbytes == 1000 + 4 * 4                      # 1 byte an element, 4 a block: ~3.9x under float32
    for signed in (True, False):  # bitsandbytes' create_dynamic_map in float64, to 1.5 float32 ulps (2 roundings)
        edges = [np.linspace(0.1, 1, (1 << i if signed else 1 << (i + 1)) + 1) * 10.0 ** (i - 6) for i in range(7)]
        pos = np.concatenate([(e[:-1] + e[1:]) / 2 for e in edges])
        want = np.sort(np.concatenate([pos, -pos if signed else [], [0.0, 1.0]]))
        got = fastopt.quant8.code(signed)
        np.testing.assert_array_less(np.abs(got - want), 1.5 * np.spacing(np.abs(want).astype(np.float32)))


@pytest.mark.parametrize("signed", [True, False])
def test_8_bit_codes_are_the_nearest_code_values(signed):
    """code_of (the kernels' gather-free arithmetic): every code value maps to its own code, and any
    x to the nearest code value but within float32 rounding of a midpoint (where either neighbour
    may come).  Midpoints, the floats beside them, both ends, zero and NaN included."""
    c = fastopt.quant8.code(signed)
    mids = ((c[:-1] + c[1:]) * np.float32(0.5)).astype(np.float32)
    rng = np.random.default_rng(5)
    low = -1 if signed else 0
    x = np.concatenate([rng.uniform(low, 1, 1 << 18), np.exp(rng.uniform(-25, 0, 1 << 18)) * (
        rng.choice([-1, 1], 1 << 18) if signed else 1), c, mids, np.nextafter(mids, 2), np.nextafter(mids, -2),
        [0.0, -0.0, 1.0, np.nextafter(1, 2), low, np.nextafter(low, -2)]]).astype(np.float32)
    got = fastopt.quant8.code_of(x, signed)
    np.testing.assert_array_equal(fastopt.quant8.code_of(c, signed), np.arange(256))
    nearest = np.searchsorted(mids, x, side="left")
    off = got != nearest
    extra = np.abs(c[got] - x) - np.abs(c[nearest] - x)  # how much further than the nearest
    assert np.all(np.abs(got.astype(int) - nearest) <= 1) and off.mean() < 1e-3
    np.testing.assert_array_less(extra[off], 4e-7 * np.abs(x[off]) + 1e-12)
    assert fastopt.quant8.code_of(np.float32(np.nan), signed) == 255


@pytest.mark.parametrize("case", ["adagrad", "rmsprop", "nadam", "radam", "lamb", "amsgrad", "signedness",
                                  "mixed", "float64"])
def test_8_bit_state_where_unsupported_raises(case):
    n = 300
    p = np.ones(n, np.float64 if case == "float64" else np.float32)
    g = np.ones_like(p)
    m, v = fastopt.QuantizedState(n), fastopt.QuantizedState(n, signed=False)
    before = [p.copy(), m.codes.copy(), v.codes.copy()]
    with pytest.raises((TypeError, ValueError), match="8-bit|signed|QuantizedState|float64|dtype"):
        if case == "adagrad":
            fastopt.adagrad(p, g, m, step=1)
        elif case == "rmsprop":
            fastopt.rmsprop(p, g, v)
        elif case in ("nadam", "radam", "lamb"):
            getattr(fastopt, case)(p, g, m, v, step=1)
        elif case == "amsgrad":
            fastopt.adam(p, g, m, v, step=1, amsgrad=True, max_exp_avg_sqs=fastopt.QuantizedState(n, signed=False))
        elif case == "signedness":
            fastopt.adam(p, g, m, fastopt.QuantizedState(n), step=1)
        elif case == "mixed":
            fastopt.adam(p, g, m, np.zeros(n, np.float32), step=1)
        else:
            fastopt.adam(p, g, m, v, step=1)
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(m.codes, before[1])
    np.testing.assert_array_equal(v.codes, before[2])


def test_8_bit_training_reaches_the_float32_loss():
    """The 1,000-step least squares of above with 8-bit AdamW state (and bfloat16 params with float32
    masters): within a stated margin of float32 training."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    y = x @ rng.standard_normal(64).astype(np.float32) + 0.01 * rng.standard_normal(512).astype(np.float32)
    losses = {}
    for label, p_dtype in (("float32", np.float32), ("8-bit", np.float32), ("8-bit bf16", BF16)):
        w = np.zeros(64, p_dtype)
        masters = w.astype(np.float32) if p_dtype is BF16 else None
        if label == "float32":
            m, v = np.zeros(64, np.float32), np.zeros(64, np.float32)
        else:
            m, v = fastopt.QuantizedState(64), fastopt.QuantizedState(64, signed=False)
        for step in range(1, 1001):
            wf = (masters if masters is not None else w).astype(np.float32)
            grad = ((2 / len(x)) * (x.T @ (x @ wf - y))).astype(p_dtype)
            fastopt.adamw(w, grad, m, v, step=step, lr=1e-2, weight_decay=0.0, master_params=masters)
        wf = (masters if masters is not None else w).astype(np.float64)
        losses[label] = float(np.mean((x.astype(np.float64) @ wf - y) ** 2))
    assert losses["float32"] < 2e-4
    assert losses["8-bit"] < losses["float32"] + 2e-3
    assert losses["8-bit bf16"] < losses["float32"] + 2e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, F16, BF16])
def test_single_array_calls_take_the_fast_path(dtype, monkeypatch):
    """One array per role, state in the params' dtype: validated by the short path (about 0.3 us an
    array), never the general one; the general one still takes mixed state."""
    def general(*args):
        raise AssertionError("the general path")
    monkeypatch.setattr(fastopt._arrays, "_gather", general)
    p, g, m, v = (np.ones(64, dtype) for _ in range(4))
    fastopt.adamw(p, g, m, v, step=1, lr=1e-3)
    fastopt.sgd(p, g, m, lr=0.1, momentum=0.9)
    assert p.astype(np.float32)[0] != 1
    with pytest.raises(AssertionError, match="general"):
        other = np.float32 if dtype == BF16 else BF16
        fastopt.adamw(p, g, np.ones(64, other), np.ones(64, other), step=1)
