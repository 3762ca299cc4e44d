"""Dropout and the loss gradients on the CPU: against the NumPy reference bit for bit (dropout's
every mask bit, MSE's gradient), against torch (F.dropout's rule applied with our mask and its
autograd, F.mse_loss, F.cross_entropy with label smoothing and ignore_index), across SIMD levels and
thread counts, the keep rate statistically, and bad arguments refused before anything is written."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastopt
from fastopt import reference

ml_dtypes = pytest.importorskip("ml_dtypes")
DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
SEED = 0x0123456789ABCDEF  # (high bits set: the key's both words matter)


def data(n, dtype, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(dtype)


# ---- dropout ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 2047, 2049, 4100, 70_001])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_dropout_is_the_reference_bit_for_bit(dtype, n, p):
    x = data(n, dtype)
    x[:3] = [np.inf, -np.inf, np.nan][:min(3, n)]  # dropped inf and NaN give NaN, as x * 0
    mask = np.full(n, 7, np.uint8)
    y = fastopt.dropout(x, p, seed=SEED, counter=2 ** 40 + 3, mask=mask)
    want_mask = np.zeros(n, np.uint8)
    want = reference.dropout(x, p, seed=SEED, counter=2 ** 40 + 3, mask=want_mask)
    assert np.array_equal(mask, want_mask)
    assert np.array_equal(y.view(np.uint8), want.view(np.uint8))
    if p == 0:
        assert mask.all()
    if p == 1:
        assert not mask.any()


def test_dropout_words_are_philox_at_the_documented_counter_and_key():
    """The reference's words are Philox-4x32-10 with counter (e // 4, counter) and the tagged key,
    checked against the generator's own known-answer vectors through reference.philox4x32."""
    words = reference.dropout_words(12, seed=(5 << 32) | 9, counter=(7 << 32) | 3)
    for e in (0, 5, 11):
        block = reference.philox4x32([[e // 4], [0], [3], [7]], (9, 5 ^ reference.DROPOUT_KEY))
        assert words[e] == block[e % 4][0]
    # Random123's known answer (counter 0, key 0): the generator itself
    kat = reference.philox4x32([[0], [0], [0], [0]], (0, 0))
    assert [int(w[0]) for w in kat] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_dropout_in_place_and_the_same_on_every_isa_and_thread_count(threads):
    x = data(300_001, np.float32, 1)
    want = reference.dropout(x, 0.25, seed=3, counter=9)
    results = []
    for isa in fastopt.info()["isas_available"]:
        for n in (1, 2):
            fastopt.set_isa(isa)
            fastopt.set_num_threads(n)
            y = x.copy()
            assert fastopt.dropout(y, 0.25, seed=3, counter=9, out=y) is y
            results.append(y)
    fastopt.set_isa(None)
    for y in results:
        assert np.array_equal(y, want)


def test_dropout_keeps_one_minus_p_and_counters_give_independent_masks():
    n, p = 1_000_000, 0.3
    masks = []
    for counter in range(3):
        m = np.zeros(n, np.uint8)
        fastopt.dropout(np.ones(n, np.float32), p, seed=11, counter=counter, mask=m)
        masks.append(m.astype(np.float64))
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(m.mean() - (1 - p)) < 5 * sigma, m.mean()
    # consecutive counters (and neighbouring elements) are uncorrelated: |r| within 5 sigma of 0
    for a, b in [(masks[0], masks[1]), (masks[1], masks[2]), (masks[0][:-1], masks[0][1:])]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)
    # a different seed, another mask
    other = np.zeros(n, np.uint8)
    fastopt.dropout(np.ones(n, np.float32), p, seed=12, counter=0, mask=other)
    assert (other != masks[0]).mean() > 0.3


def test_dropout_and_its_backward_are_torchs_rule_and_autograd():
    """With our mask, torch's dropout rule (x * mask / (1 - p)) and autograd through it give our
    forward and backward."""
    torch = pytest.importorskip("torch")
    p = 0.4
    x = data((64 * 33), np.float32, 2).reshape(64, 33)
    mask = np.zeros(x.shape, np.bool_)
    y = fastopt.dropout(x, p, seed=5, counter=1, mask=mask)
    xt = torch.tensor(x, requires_grad=True)
    noise = torch.tensor(mask, dtype=torch.float32).div_(1 - p)
    yt = xt * noise
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-7, atol=0)
    dy = data(x.size, np.float32, 3).reshape(x.shape)
    yt.backward(torch.tensor(dy))
    dx = fastopt.dropout_backward(dy, p, seed=5, counter=1)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-7, atol=0)
    # and on torch tensors themselves, a new tensor back
    out = fastopt.dropout(torch.tensor(x), p, seed=5, counter=1)
    assert isinstance(out, torch.Tensor) and np.array_equal(out.numpy(), y)


@pytest.mark.parametrize("bad, error, match", [
    (dict(p=1.5), ValueError, "p must be in"),
    (dict(p=float("nan")), ValueError, "p must be in"),
    (dict(seed=-1), ValueError, "seed must be in"),
    (dict(counter=2 ** 64), ValueError, "counter must be in"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(out=np.zeros(9, np.float32)), ValueError, "out has shape"),
    (dict(out=np.zeros(10, np.float64)), TypeError, "out has dtype"),
    (dict(mask=np.zeros(10, np.int32)), TypeError, "mask must be a uint8 or bool"),
    (dict(mask=np.zeros(9, np.uint8)), ValueError, "mask has shape"),
])
def test_dropout_refuses_bad_arguments_and_writes_nothing(bad, error, match):
    x = data(10, np.float32)
    before = x.copy()
    out = bad.get("out", np.full(10, 3.0, np.float32))
    out_before = out.copy()
    mask = bad.get("mask", np.full(10, 9, np.uint8))
    mask_before = mask.copy()
    kwargs = dict(p=0.5, seed=1, counter=1, out=out, mask=mask)
    kwargs.update(bad)
    with pytest.raises(error, match=match):
        fastopt.dropout(x, **kwargs)
    assert np.array_equal(x, before) and np.array_equal(out, out_before) and np.array_equal(mask, mask_before)


# ---- the mean squared error ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_grad_is_the_reference(dtype, reduction):
    pred, target = data(4101, dtype, 4).reshape(3, 1367), data(4101, dtype, 5).reshape(3, 1367)
    loss, grad = fastopt.mse_grad(pred, target, reduction=reduction)
    want_loss, want = reference.mse_grad(pred, target, reduction=reduction)
    assert np.array_equal(grad.view(np.uint8), want.view(np.uint8))
    assert loss == pytest.approx(want_loss, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_grad_is_torchs_mse_loss_and_its_gradient(dtype, reduction):
    torch = pytest.importorskip("torch")
    pred, target = data(999, dtype, 6), data(999, dtype, 7)
    pt = torch.tensor(pred, requires_grad=True)
    loss_t = torch.nn.functional.mse_loss(pt, torch.tensor(target), reduction=reduction)
    loss_t.backward()
    out = pred.copy()
    loss, grad = fastopt.mse_grad(out, target, reduction=reduction, out=out)  # in place
    assert grad is out
    assert np.array_equal(grad, pt.grad.numpy())  # torch's (pred - target) * (2 / n): the same bits
    assert loss == pytest.approx(float(loss_t.detach()), rel=1e-6 if dtype == "float32" else 1e-13)


def test_mse_grad_is_the_same_on_every_isa_and_thread_count(threads):
    pred, target = data(1_000_003, np.float32, 8), data(1_000_003, np.float32, 9)
    results = set()
    for isa in fastopt.info()["isas_available"]:
        for n in (1, 2):
            fastopt.set_isa(isa)
            fastopt.set_num_threads(n)
            loss, grad = fastopt.mse_grad(pred, target)
            results.add((loss, grad.tobytes()))
    fastopt.set_isa(None)
    assert len(results) == 1


def test_mse_grad_refuses_bad_arguments_and_writes_nothing():
    pred, target, out = data(8, np.float32), data(8, np.float32, 1), np.full(8, 5.0, np.float32)
    for kwargs, error, match in [(dict(target=data(7, np.float32)), ValueError, "target has shape"),
                                 (dict(target=data(8, np.float64)), TypeError, "target has dtype"),
                                 (dict(reduction="none"), ValueError, "reduction must be"),
                                 (dict(out=out[:4]), ValueError, "out has shape")]:
        args = {"target": target, "out": out, **kwargs}
        with pytest.raises(error, match=match):
            fastopt.mse_grad(pred, **args)
        assert (out == 5).all()


# ---- softmax cross-entropy ----

def logits_and_labels(rows, classes, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, classes)) * scale).astype(dtype), rng.integers(0, classes, rows)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows, classes", [(64, 10), (5, 1), (33, 1000)])
def test_softmax_cross_entropy_is_torchs_cross_entropy(dtype, smoothing, reduction, rows, classes):
    torch = pytest.importorskip("torch")
    logits, labels = logits_and_labels(rows, classes, dtype)
    labels[1] = -100  # ignored: no loss, zero gradient, not counted in the mean
    xt = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(xt, torch.tensor(labels), label_smoothing=smoothing,
                                               reduction=reduction)
    loss_t.backward()
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=smoothing, reduction=reduction)
    tol = dict(rtol=2e-6, atol=2e-7 / rows) if dtype == "float32" else dict(rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    assert loss == pytest.approx(float(loss_t.detach()), rel=tol["rtol"], abs=1e-6 if dtype == "float32" else 1e-15)
    assert not grad[1].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_against_the_reference_in_place_and_with_extreme_logits(dtype):
    logits, labels = logits_and_labels(40, 17, dtype, 1)
    logits[0, :] = np.float32(1e4) if dtype != np.float16 else 6e4  # huge, equal: stable, uniform softmax
    logits[2, 3] = -np.inf                                      # a class that cannot be: probability 0
    want_loss, want = reference.softmax_cross_entropy(logits, labels)
    out = logits.copy()
    loss, grad = fastopt.softmax_cross_entropy(out, labels, out=out)
    assert grad is out and np.isfinite(loss)
    wide = np.float64 if dtype == np.float64 else np.float32
    eps = {np.float32: 1e-6, np.float64: 1e-14}.get(dtype, 1e-2)
    np.testing.assert_allclose(grad.astype(wide), want.astype(wide), rtol=eps, atol=eps / 40)
    assert loss == pytest.approx(want_loss, rel=eps * 10)
    assert grad[2, 3] == 0 or labels[2] == 3


def test_softmax_cross_entropy_is_the_same_on_every_isa_and_thread_count(threads):
    logits, labels = logits_and_labels(3000, 301, np.float32, 2)
    results = set()
    for isa in fastopt.info()["isas_available"]:
        for n in (1, 2):
            fastopt.set_isa(isa)
            fastopt.set_num_threads(n)
            loss, grad = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.05)
            results.add((loss, grad.tobytes()))
    fastopt.set_isa(None)
    assert len(results) == 1


def test_softmax_cross_entropy_every_row_ignored_is_nan_as_torch():
    torch = pytest.importorskip("torch")
    logits, _ = logits_and_labels(4, 3, np.float32)
    labels = np.full(4, -100)
    loss, grad = fastopt.softmax_cross_entropy(logits, labels)
    xt = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(xt, torch.tensor(labels))
    loss_t.backward()
    assert math.isnan(loss) and math.isnan(float(loss_t.detach()))
    assert np.array_equal(grad, xt.grad.numpy())
    assert fastopt.softmax_cross_entropy(logits, labels, reduction="sum")[0] == 0


def test_softmax_cross_entropy_takes_other_integer_labels_and_torch_tensors():
    torch = pytest.importorskip("torch")
    logits, labels = logits_and_labels(16, 5, np.float32, 3)
    want = fastopt.softmax_cross_entropy(logits, labels)
    for other in (labels.astype(np.int32), labels.astype(np.uint8), list(labels), torch.tensor(labels)):
        loss, grad = fastopt.softmax_cross_entropy(logits, other)
        assert loss == want[0] and np.array_equal(grad, want[1])
    loss, grad = fastopt.softmax_cross_entropy(torch.tensor(logits), torch.tensor(labels))
    assert isinstance(grad, torch.Tensor) and loss == want[0] and np.array_equal(grad.numpy(), want[1])


@pytest.mark.parametrize("change, error, match", [
    (dict(labels=[0, 1, 5, 2]), ValueError, r"labels\[2\] is 5, outside \[0, 5\)"),
    (dict(labels=[0, -1, 1, 2]), ValueError, r"labels\[1\] is -1"),
    (dict(labels=[0, 1, 2]), ValueError, r"labels has shape \(3,\), expected \(4,\)"),
    (dict(labels=np.zeros(4)), TypeError, "labels must be an array of integers"),
    (dict(logits=np.zeros(20, np.float32)), ValueError, "logits must be 2-D"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing must be in"),
    (dict(reduction="none"), ValueError, "reduction must be"),
    (dict(ignore_index=2.5), TypeError, "ignore_index must be an integer"),
    (dict(out=np.zeros((4, 4), np.float32)), ValueError, "out has shape"),
])
def test_softmax_cross_entropy_refuses_bad_arguments_and_writes_nothing(change, error, match):
    logits, _ = logits_and_labels(4, 5, np.float32, 4)
    out = np.full((4, 5), 2.0, np.float32)
    kwargs = dict(logits=logits, labels=[0, 1, 2, 3], out=out)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        fastopt.softmax_cross_entropy(kwargs.pop("logits"), kwargs.pop("labels"), **kwargs)
    assert (out == 2).all()


def test_the_c_api_refuses_overlaps_and_bad_reductions():
    from fastopt._native import ffi, lib
    x = np.zeros(16, np.float32)
    loss = ffi.new("double *")
    buf = ffi.from_buffer("float[]", x)
    assert lib.fastopt_mse_grad(lib.FASTOPT_FLOAT32, 8, buf, buf + 4, buf + 2, lib.FASTOPT_MEAN, loss) == \
        lib.FASTOPT_ERR_OVERLAP
    assert lib.fastopt_mse_grad(lib.FASTOPT_FLOAT32, 8, buf, buf + 8, buf, 7, loss) == lib.FASTOPT_ERR_ARGUMENT
    labels = np.zeros(2, np.int64)
    assert lib.fastopt_softmax_cross_entropy(lib.FASTOPT_FLOAT32, 2, 4, buf, ffi.from_buffer("int64_t[]", labels),
                                             ffi.cast("float *", ffi.from_buffer("int64_t[]", labels)), 0.0, -100,
                                             lib.FASTOPT_MEAN, loss) == lib.FASTOPT_ERR_OVERLAP
    assert lib.fastopt_dropout(lib.FASTOPT_FLOAT32, 8, buf, buf + 4, ffi.NULL, 0.5, 0, 0) == lib.FASTOPT_ERR_OVERLAP


@pytest.mark.parametrize("dtype, offset", [("float32", 1e20), ("float32", 1e30), ("float64", 1e12), ("float64", 1e8)])
def test_softmax_cross_entropy_of_logits_with_a_large_common_offset_is_torchs(dtype, offset):
    """The loss is computed from the logits less their max: a common offset cancels exactly."""
    torch = pytest.importorskip("torch")
    logits = np.array([[offset, offset], [offset, offset - 1]], dtype=dtype)
    labels = np.array([0, 1])
    for smoothing in (0.0, 0.2):
        loss, _ = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
        want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                                 label_smoothing=smoothing).item()
        rel = 1e-6 if dtype == "float32" else 1e-14
        assert loss == pytest.approx(want, rel=rel)
        assert reference.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)[0] == pytest.approx(want, rel=rel)
