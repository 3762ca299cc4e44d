"""Property-based tests (hypothesis): every optimizer and regularizer, both dtypes, every flag, with
random lengths (0 and odd included), random in-range hyper-parameters and values that include
subnormals, huge and tiny magnitudes, +-0, and inf and NaN in the gradients.  fastopt must equal
fastopt.reference: the same NaN and inf positions, and finite values within 2 ulp (float32) or
1e-12 relative (float64)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import CASES, call, copy, state_names

import fastopt
from fastopt import reference

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)  # examples: the profile's


@st.composite
def values(draw, n, dtype, non_negative=False, non_finite=False):
    """n values: normal ones over seven decades, and some of the special ones (tiny, subnormal, huge,
    +-0, and optionally inf/NaN), drawn from a seed so that large arrays are cheap to draw."""
    info = np.finfo(dtype)
    special = [0.0, -0.0, float(info.tiny), float(info.tiny) * 1e-3, float(info.max) / 8, float(info.eps),
               1e-30 if dtype == np.float64 else 1e-20]
    if non_finite:
        special += [np.inf, -np.inf, np.nan]
    chosen = draw(st.lists(st.sampled_from(special), min_size=1, max_size=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    mask = rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    x[mask] = rng.choice(np.array(chosen), int(mask.sum())) * rng.uniform(0.5, 2.0, int(mask.sum()))
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    return np.abs(x) if non_negative else x


def hyper(draw, name):
    """In-range hyper-parameters for the optimizer `name`, all its flags drawn."""
    flags = dict(draw(st.sampled_from(CASES[name])))
    flags["lr"] = draw(st.sampled_from([0.0, 1e-4, 1e-2, 0.5]))
    if "betas" in flags or name in ("nadam", "radam", "lion", "lamb"):
        flags["betas"] = (draw(st.sampled_from([0.0, 0.5, 0.9])), draw(st.sampled_from([0.0, 0.9, 0.999])))
    if "weight_decay" in flags:
        flags["weight_decay"] = draw(st.sampled_from([0.0, 1e-3, 0.1]))
    flags["l1_prox"] = draw(st.sampled_from([0.0, 0.0, 1e-3, 1.0]))
    flags["grad_scale"] = draw(st.sampled_from([None, 1024.0, 0.5, 3.0]))
    return flags


def assert_same(actual, expected, dtype, scale=None):
    """Same non-finite positions and values; finite ones within the documented tolerance, or, given
    `scale` (the operands' magnitude, for results that come through a reduction), within the same
    relative tolerance of the operands."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)])
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    if scale is not None:
        tol = 1e-6 if np.dtype(dtype) == np.float32 else 1e-12
        err = np.abs(actual[finite].astype(np.float64) - expected[finite])
        assert np.all(err <= tol * (np.abs(expected[finite]) + np.abs(scale[finite]))), err.max()
    elif np.dtype(dtype) == np.float32:
        np.testing.assert_array_max_ulp(actual[finite], expected[finite], maxulp=2)
    else:
        np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-12, atol=0)


@st.composite
def optimizer_case(draw):
    name = draw(st.sampled_from(list(CASES)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.sampled_from([0, 1, 2, 3, 7, 15, 16, 17, 63, 65, 129, 1000]))
    flags = hyper(draw, name)
    arrays = {"params": draw(values(n, dtype)), "grads": draw(values(n, dtype, non_finite=True))}
    for s in state_names(name, flags):
        arrays[s] = draw(values(n, dtype, non_negative=s in ("exp_avg_sqs", "max_exp_avg_sqs", "square_avgs",
                                                                  "state_sums")))
    if "max_exp_avg_sqs" in arrays:
        arrays["max_exp_avg_sqs"] = np.maximum(arrays["max_exp_avg_sqs"], arrays["exp_avg_sqs"])
    step = draw(st.integers(1, 10_000))
    return name, dtype, flags, arrays, step


@SETTINGS
@given(optimizer_case())
def test_every_optimizer_equals_reference(case):
    name, dtype, flags, arrays, step = case
    expected = copy(arrays)
    before = np.abs(arrays["params"].astype(np.float64))
    with np.errstate(all="ignore"):
        call(reference, name, expected, flags, step)
        call(fastopt, name, arrays, flags, step)
    for k in arrays:
        # LAMB's step goes through per-tensor norms, summed in another order than NumPy's
        assert_same(arrays[k], expected[k], dtype, scale=before if name == "lamb" and k == "params" else None)


@SETTINGS
@given(st.sampled_from([np.float32, np.float64]), st.sampled_from([0, 1, 5, 64, 1001]), st.data())
def test_regularizers_equal_reference(dtype, n, data):
    params, grads = data.draw(values(n, dtype)), data.draw(values(n, dtype, non_finite=True))
    l1, l2 = data.draw(st.sampled_from([0.0, 1e-3, 2.0])), data.draw(st.sampled_from([0.0, 1e-3, 2.0]))
    expected = grads.copy()
    with np.errstate(all="ignore"):
        reference.elastic_net_grad(expected, params, l1=l1, l2=l2)
        fastopt.elastic_net_grad(grads, params, l1=l1, l2=l2)
    assert_same(grads, expected, dtype)


@SETTINGS
@given(st.sampled_from([np.float32, np.float64]), st.lists(st.sampled_from([0, 1, 3, 100, 4097]), min_size=1,
                                                           max_size=4), st.data())
def test_norms_equal_reference(dtype, sizes, data):
    grads = [data.draw(values(n, dtype, non_finite=data.draw(st.booleans()))) for n in sizes]
    norm_type = data.draw(st.sampled_from([1.0, 2.0, 3.0, float("inf")]))
    with np.errstate(all="ignore"):
        got, want = fastopt.global_norm(grads, norm_type), reference.global_norm(grads, norm_type)
    flat = np.abs(np.concatenate([g.ravel() for g in grads]).astype(np.float64))
    if np.isnan(flat).any():
        assert np.isnan(got)
    elif np.isinf(flat).any():
        assert got == np.inf
    elif np.isfinite(want) and (want == 0 or 1e-280 < want < 1e300):
        # summed in another order (and with pow for general p): a few ulp of the sum
        assert got == pytest.approx(want, rel=1e-12 if norm_type in (1.0, 2.0, float("inf")) else 1e-10)
    else:  # the float64 reference over- or underflowed; fastopt rescales: the true norm is in
        big = flat.max()  # [max |x|, max |x| * n^(1/p)]
        with np.errstate(over="ignore"):  # the upper bound itself may overflow to inf
            assert big * (1 - 1e-12) <= got <= big * len(flat) ** (1 / norm_type) * (1 + 1e-12)


@SETTINGS
@given(st.sampled_from([np.float32, np.float64]), st.sampled_from([0, 1, 7, 300]), st.data())
def test_unscale_equals_reference(dtype, n, data):
    grads = data.draw(values(n, dtype, non_finite=data.draw(st.booleans())))
    inv_scale = data.draw(st.sampled_from([1.0, 0.5, 1 / 65536, 3.0]))
    expected = grads.copy()
    with np.errstate(all="ignore"):
        assert fastopt.unscale(grads, inv_scale) == reference.unscale(expected, inv_scale)
    assert_same(grads, expected, dtype)


@SETTINGS
@given(st.sampled_from([np.float32, np.float64]), st.lists(st.sampled_from([0, 1, 3, 100, 4097]), min_size=1,
                                                           max_size=3), st.data())
def test_clip_grad_norm_equals_reference(dtype, sizes, data):
    grads = [data.draw(values(n, dtype, non_finite=data.draw(st.booleans()))) for n in sizes]
    max_norm = data.draw(st.sampled_from([0.0, 1e-3, 1.0, 1e6]))
    norm_type = data.draw(st.sampled_from([1.0, 2.0, float("inf")]))
    expected = [g.copy() for g in grads]
    with np.errstate(all="ignore"):
        got, want = fastopt.clip_grad_norm(grads, max_norm, norm_type), reference.clip_grad_norm(expected, max_norm,
                                                                                                norm_type)
    assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want, rel=1e-12)
    for g, e in zip(grads, expected):  # the same coefficient, cast to the dtype, multiplies both
        assert_same(g, e, dtype)
