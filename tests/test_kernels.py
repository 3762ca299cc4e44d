"""Every kernel and flag against fastopt.reference, over sizes, offsets, SIMD levels and threads."""
import numpy as np
import pytest

from cases import CASES, assert_close, call, copy, flag_id, make_arrays, sharded_lamb

import fastopt
from fastopt import reference

# From 2^17 elements a tensor's spans stream in prefetched chunks of 64 (csrc/dispatch/spans.h).
STREAMED = (1 << 17) + 9
SIZES = [0, 1, 3, 7, 8, 9, 63, 64, 65, 1000, 100003, STREAMED]
DTYPES = [np.float32, np.float64]
ALL_CASES = [(name, f) for name, flags in CASES.items() for f in flags]
CASE_IDS = [f"{name}[{flag_id(f)}]" for name, f in ALL_CASES]


def check_against_reference(name, flags, n, dtype, step=3, seed=0, offset=0):
    arrays = make_arrays(name, flags, n + offset, dtype, np.random.default_rng(seed))
    arrays = {k: v[offset:] for k, v in arrays.items()}  # views starting `offset` elements in
    expected = copy(arrays)
    call(reference, name, expected, flags, step)
    call(fastopt, name, arrays, flags, step)
    for k in arrays:
        assert_close(arrays[k], expected[k], dtype, name)
    return arrays


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,flags", ALL_CASES, ids=CASE_IDS)
def test_every_flag_matches_reference(name, flags, dtype, isa):
    for step in (1, 2, 10):
        check_against_reference(name, flags, 1000, dtype, step=step, seed=step)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_sizes_and_unaligned_offsets(name, n, dtype, isa):
    flags = CASES[name][-1]  # every flag on
    for offset in (0, 1, 3):
        check_against_reference(name, flags, n, dtype, offset=offset)


@pytest.mark.parametrize("name", list(CASES))
def test_every_isa_gives_the_same_bits(name):
    """Kernels are compiled without contraction: SIMD width changes nothing."""
    flags = CASES[name][-1]
    results = {}
    for isa in fastopt.info()["isas_available"]:
        fastopt.set_isa(isa)
        arrays = make_arrays(name, flags, STREAMED, np.float32, np.random.default_rng(7))
        call(fastopt, name, arrays, flags)
        results[isa] = arrays
    fastopt.set_isa(None)
    first = next(iter(results.values()))
    for isa, arrays in results.items():
        for k in arrays:
            assert np.array_equal(arrays[k].view(np.uint32), first[k].view(np.uint32)), (isa, k)


@pytest.mark.parametrize("name", list(CASES))
def test_thread_count_does_not_change_bits(name, threads):
    flags = CASES[name][-1]
    results = []
    for n_threads in (1, 2, 3):
        fastopt.set_num_threads(n_threads)
        sizes = [1, 70000, 5, 4096, 300001, 64]  # thread boundaries fall inside and between tensors
        rng = np.random.default_rng(3)
        lists = [make_arrays(name, flags, n, np.float64, rng) for n in sizes]
        arrays = {k: [a[k] for a in lists] for k in lists[0]}
        call(fastopt, name, arrays, flags)
        results.append(arrays)
    for k in results[0]:
        for a, b in zip(results[0][k], results[-1][k]):
            assert np.array_equal(a, b)
        for a, b in zip(results[0][k], results[1][k]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_list_of_tensors_matches_reference(name, dtype):
    """One multi-tensor call; the reference loops over the tensors (LAMB also clips by their joint norm)."""
    flags = CASES[name][-1]
    rng = np.random.default_rng(11)
    lists = [make_arrays(name, flags, n, dtype, rng) for n in (5, 0, 1000, 33, 100003, STREAMED)]
    arrays = {k: [a[k] for a in lists] for k in lists[0]}
    expected = copy(arrays)
    call(reference, name, expected, flags)
    call(fastopt, name, arrays, flags)
    for k in arrays:
        for got, e in zip(arrays[k], expected[k]):
            assert_close(got, e, dtype, name)


def test_multidimensional_arrays():
    flags = CASES["adamw"][-1]
    arrays = make_arrays("adamw", flags, 60, np.float32, np.random.default_rng(5))
    arrays = {k: v.reshape(3, 4, 5) for k, v in arrays.items()}
    expected = copy(arrays)
    call(reference, "adamw", expected, flags)
    call(fastopt, "adamw", arrays, flags)
    for k in arrays:
        assert_close(arrays[k], expected[k], np.float32)


def test_sgd_first_step_initialises_buffer_to_gradient():
    p, g = np.ones(5), np.full(5, 2.0)
    buf = np.full(5, 123.0)  # garbage: ignored on the first step
    fastopt.sgd(p, g, buf, lr=0.1, momentum=0.9, dampening=0.5, first_step=True)
    assert np.array_equal(buf, g)
    assert np.allclose(p, 1 - 0.1 * 2.0)
    fastopt.sgd(p, g, buf, lr=0.1, momentum=0.9, dampening=0.5)
    assert np.allclose(buf, 0.9 * 2.0 + 0.5 * 2.0)


def test_adam_first_step_moves_each_weight_by_lr():
    """With bias correction, Adam's first step is lr * sign(g) (up to eps): a known closed form."""
    p = np.zeros(4)
    g = np.array([3.0, -0.5, 1e-3, -100.0])
    fastopt.adam(p, g, np.zeros(4), np.zeros(4), step=1, lr=0.01, eps=1e-12)
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-8)


def test_adam_weight_decay_coupled_vs_decoupled():
    g = np.zeros(3)
    p1, p2 = np.ones(3), np.ones(3)
    fastopt.adamw(p1, g, np.zeros(3), np.zeros(3), step=1, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(p1, 1 - 0.1 * 0.5)  # zero gradient: pure decay
    fastopt.adam(p2, g, np.zeros(3), np.zeros(3), step=1, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(p2, 1 - 0.1, rtol=1e-6)  # decay became a gradient of 0.5: an Adam step


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("name,flags", [("sgd", dict(lr=0.05)), ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True,
                                                                               weight_decay=0.01, maximize=True)),
                                        ("adam", dict(lr=1e-2, weight_decay=0.1, l1_prox=0.01)),
                                        ("adamw", dict(lr=1e-2, maximize=True))])
def test_single_arrays_take_the_latency_path(name, flags, dtype, monkeypatch):
    """One NumPy array per role and float hyper-parameters: straight to C (fastopt._single), with
    the bits of the general path (the same call as a list of one)."""
    arrays = make_arrays(name, flags, 1000, dtype, np.random.default_rng(5))
    as_lists = {k: [v.copy()] for k, v in arrays.items()}
    call(fastopt, name, as_lists, flags)

    def general(*args):
        raise AssertionError("the general path")
    monkeypatch.setattr(fastopt._calls, "gather", general)
    call(fastopt, name, arrays, flags)
    for k in arrays:
        assert np.array_equal(arrays[k], as_lists[k][0]), k
    for other in (dict(flags, lr=1), dict(flags, grad_scale=2.0)):  # an int lr, an extra: the general path
        with pytest.raises(AssertionError, match="general"):
            call(fastopt, name, arrays, other)


@pytest.mark.parametrize("flags", [f for f in CASES["lamb"] if not f.get("max_grad_norm")], ids=flag_id)
def test_lamb_over_shards_with_sum_over_is_the_whole_step(flags):
    """fastopt.lamb(sum_over=...) on two shards of every tensor (the sums over both shards put in
    place, as an all_reduce would) gives the params of one call over the whole tensors: the trust
    ratios are of whole tensors (equal to their last bits: the sums add in another order)."""
    got, want = sharded_lamb(flags, np.float64)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_lamb_sum_over_must_be_a_function_and_clipping_off():
    p, g, m, v = (np.ones(4) for _ in range(4))
    with pytest.raises(TypeError, match="sum_over must be a function"):
        fastopt.lamb(p, g, m, v, step=1, max_grad_norm=0.0, sum_over=[1.0])
    with pytest.raises(ValueError, match="needs sums and max_grad_norm == 0"):
        fastopt.lamb(p, g, m, v, step=1, max_grad_norm=1.0, sum_over=lambda sums: None)
    assert (p == 1).all() and (m == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lamb_in_two_phases_is_the_whole_step(dtype):
    """fastopt_lamb's phased step (the moments and each tensor's sums of squares, then the params
    from those sums: what sharded tensors do around a sum over the processes) has the whole step's
    bits; a phase with max_grad_norm, or without sums, is refused."""
    from fastopt._native import ffi, lib
    rng = np.random.default_rng(9)
    sizes = [5, 40000, 3]
    whole = {k: [rng.standard_normal(n).astype(dtype) * (k != "v") + (k == "v") for n in sizes]
             for k in ("p", "g", "m", "v")}
    phased = {k: [a.copy() for a in v] for k, v in whole.items()}

    def c_call(arrays, phase, sums=None, max_grad_norm=0.0):
        lists = {k: ffi.new("void *[]", [ffi.from_buffer(a) for a in v]) for k, v in arrays.items()}
        o = ffi.new("fastopt_lamb_options *", {"common": {"lr": 1e-2, "weight_decay": 0.01}, "beta1": 0.9,
                                              "beta2": 0.999, "eps": 1e-6, "max_grad_norm": max_grad_norm,
                                              "step": 3, "phase": phase,
                                              "sums": ffi.NULL if sums is None else ffi.from_buffer("double[]", sums)})
        code = lib.FASTOPT_FLOAT32 if dtype == np.float32 else lib.FASTOPT_FLOAT64
        return lib.fastopt_lamb(code, len(sizes), ffi.new("size_t[]", sizes), lists["p"], lists["g"], lists["m"],
                                lists["v"], o)

    assert c_call(whole, lib.FASTOPT_LAMB_WHOLE) == 0
    sums = np.zeros(2 * len(sizes))
    assert c_call(phased, lib.FASTOPT_LAMB_MOMENTS, sums) == 0
    assert all(np.array_equal(a, b) for a, b in zip(phased["m"] + phased["v"], whole["m"] + whole["v"]))
    assert not any(np.array_equal(a, b) for a, b in zip(phased["p"], whole["p"]))  # (params not yet written)
    np.testing.assert_allclose(sums[0::2], [np.sum(p.astype(np.float64) ** 2) for p in phased["p"]], rtol=1e-12)
    assert c_call(phased, lib.FASTOPT_LAMB_APPLY, sums) == 0
    for k in whole:
        assert all(np.array_equal(a, b) for a, b in zip(phased[k], whole[k])), k
    before = [p.copy() for p in phased["p"]]
    assert c_call(phased, lib.FASTOPT_LAMB_MOMENTS, sums, max_grad_norm=1.0) == lib.FASTOPT_ERR_HYPERPARAMETER
    assert c_call(phased, lib.FASTOPT_LAMB_APPLY) == lib.FASTOPT_ERR_HYPERPARAMETER
    assert all(np.array_equal(a, b) for a, b in zip(phased["p"], before))
