"""Regularization gradients, norms, clipping, unscaling, and the fused extras of every optimizer."""
import numpy as np
import pytest

from cases import CASES, call, copy, make_arrays

import fastopt
from fastopt import reference


def sample(n, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    x[::7] = 0.0  # sign(0) = 0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,kwargs", [("l2_grad", dict(lam=0.1)), ("l1_grad", dict(lam=0.1)),
                                       ("elastic_net_grad", dict(l1=0.1, l2=0.01))])
def test_regularization_gradients_match_reference(fn, kwargs, dtype, isa):
    params = [sample(n, dtype, n) for n in (1, 100, 70001)]
    grads = [sample(p.size, dtype, 99) for p in params]
    expected = [g.copy() for g in grads]
    getattr(reference, fn)(expected, params, **kwargs)
    getattr(fastopt, fn)(grads, params, **kwargs)
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)


def test_l1_grad_formula():
    g = np.zeros(4)
    fastopt.l1_grad(g, np.array([-2.0, 0.0, 3.0, -0.0]), lam=0.5)
    np.testing.assert_array_equal(g, [-0.5, 0.0, 0.5, 0.0])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_norm_matches_reference(norm_type, dtype):
    grads = [sample(n, dtype, n) for n in (3, 0, 100000, 17)]
    assert fastopt.global_norm(grads, norm_type) == pytest.approx(reference.global_norm(grads, norm_type), rel=1e-12)


def test_global_norm_is_the_same_bits_for_any_thread_count_and_isa(threads):
    grads = [sample(n, np.float32, n) for n in (5, 300001, 16385, 1)]
    results = set()
    for isa in fastopt.info()["isas_available"]:
        fastopt.set_isa(isa)
        for n in (1, 2, 3, 7):
            fastopt.set_num_threads(n)
            results.add(fastopt.global_norm(grads))
    fastopt.set_isa(None)
    assert len(results) == 1


def test_global_norm_does_not_overflow_or_underflow():
    big = np.full(1000, 3e38, np.float32)  # float32 max is 3.4e38: squares overflow float32
    assert fastopt.global_norm(big) == pytest.approx(3e38 * np.sqrt(1000), rel=1e-6)
    huge = np.full(1000, 1e300)  # squares overflow float64: rescaled
    assert fastopt.global_norm(huge) == pytest.approx(1e300 * np.sqrt(1000), rel=1e-12)
    tiny = np.full(1000, 1e-300)  # squares underflow float64: rescaled
    assert fastopt.global_norm(tiny) == pytest.approx(1e-300 * np.sqrt(1000), rel=1e-12)
    assert fastopt.global_norm([np.zeros(3)]) == 0.0
    sub = np.array([1.17e-311, -3e-312])  # subnormal: the rescaling itself must not overflow
    assert fastopt.global_norm(sub, 1.0) == pytest.approx(1.17e-311 + 3e-312, rel=1e-9)
    assert fastopt.global_norm(sub) == pytest.approx(np.hypot(1.17e-311, 3e-312), rel=1e-9)


def test_global_norm_propagates_non_finite():
    assert np.isnan(fastopt.global_norm(np.array([1.0, np.nan, np.inf])))
    assert np.isinf(fastopt.global_norm(np.array([1.0, np.inf], np.float32)))
    assert np.isinf(fastopt.global_norm(np.array([1.0, -np.inf]), float("inf")))


def test_clip_grad_norm_clips_to_max_norm():
    grads = [np.full(100, 3.0), np.full(44, -4.0)]
    total = fastopt.clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(np.sqrt(100 * 9 + 44 * 16))
    assert fastopt.global_norm(grads) == pytest.approx(1.0, rel=1e-5)
    before = [g.copy() for g in grads]
    fastopt.clip_grad_norm(grads, 10.0)  # already within: untouched
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)


def test_unscale_multiplies_and_flags():
    grads = [np.array([2.0, 4.0], np.float32), np.array([8.0], np.float32)]
    assert fastopt.unscale(grads, 0.5) is False
    np.testing.assert_array_equal(grads[0], [1.0, 2.0])
    flag = np.zeros(1, np.float32)
    assert fastopt.unscale([np.array([np.nan, 1.0])], 0.5, flag) is True and flag[0] == 1.0
    assert fastopt.unscale([np.array([1.0])], 0.5, flag) is False and flag[0] == 1.0  # left as it is


OPTIMIZERS = list(CASES)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("found_inf", [True, 1.0, np.ones(1, np.float32)])
def test_found_inf_skips_the_step_and_writes_nothing(name, found_inf):
    flags = CASES[name][-1]
    arrays = make_arrays(name, flags, 1000, np.float32, np.random.default_rng(0))
    before = copy(arrays)
    call(fastopt, name, arrays, {**flags, "found_inf": found_inf})
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k])
    call(fastopt, name, arrays, {**flags, "found_inf": np.zeros(1, np.float32)})  # not found: a step
    assert not np.array_equal(arrays["params"], before["params"])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_grad_scale_equals_unscaled_gradients(name):
    """A power-of-two loss scale is undone exactly: scaled grads + grad_scale == plain grads."""
    flags = {k: v for k, v in CASES[name][-1].items() if k not in ("grad_scale", "l1_prox")}
    a = make_arrays(name, flags, 1000, np.float32, np.random.default_rng(0))
    b = copy(a)
    b["grads"] = b["grads"] * np.float32(65536)
    call(fastopt, name, a, flags)
    call(fastopt, name, b, {**flags, "grad_scale": 65536.0})
    for k in a:
        if k != "grads":
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_l1_prox_gives_exact_zeros(name):
    flags = {k: v for k, v in CASES[name][-1].items() if k not in ("grad_scale", "l1_prox")}
    arrays = make_arrays(name, flags, 1000, np.float64, np.random.default_rng(0))
    call(fastopt, name, arrays, {**flags, "l1_prox": 1e6})  # threshold lr * 1e6: far above every weight
    assert np.count_nonzero(arrays["params"]) == 0


def test_l1_prox_soft_thresholds_after_the_update():
    p = np.array([1.0, -1.0, 0.05, -0.05, 0.0])
    fastopt.sgd(p, np.zeros(5), lr=0.1, l1_prox=1.0)  # zero gradient: only the threshold lr*l1 = 0.1
    np.testing.assert_array_equal(p, [0.9, -0.9, 0.0, -0.0, 0.0])
