"""50-step trajectories against torch.optim (foreach=False), for every flag combination."""
import numpy as np
import pytest

from cases import TORCH_CASES, TORCH_CLASS, call, flag_id, state_names

import fastopt
from fastopt._optimizers import OPTIMIZERS

torch = pytest.importorskip("torch")

TORCH_STATE = {r.arg: r.key for row in OPTIMIZERS.values() for r in row.state}
# float64 agrees to rounding; float32 drifts by rounding over 50 steps
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}
ALL_CASES = [(name, f) for name, flags in TORCH_CASES.items() for f in flags]


def trajectory(name, flags, dtype, steps=50, n=257, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]

    tp = torch.from_numpy(p0.copy()).requires_grad_()
    opt = getattr(torch.optim, TORCH_CLASS[name])([tp], foreach=False, **flags)
    p = p0.copy()
    state = {s: np.zeros_like(p) for s in state_names(name, flags)}
    mu_product = 1.0
    for t, g in enumerate(grads, start=1):
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        out = call(fastopt, name, {"params": p, "grads": g, **state}, flags, step=t, mu_product=mu_product)
        if name == "nadam":
            mu_product = out
    torch_state = opt.state[tp]
    if name == "nadam":  # torch keeps mu_product as a float32 scalar tensor; we keep a double
        assert mu_product == pytest.approx(float(torch_state["mu_product"]), rel=1e-6)
    return p, tp.detach().numpy(), {s: (a, torch_state[TORCH_STATE[s]].numpy()) for s, a in state.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", ALL_CASES, ids=[f"{n}[{flag_id(f)}]" for n, f in ALL_CASES])
def test_trajectory_matches_torch(name, flags, dtype):
    p, tp, state = trajectory(name, flags, dtype)
    tolerance = TOLERANCE[dtype]
    if name == "nadam" and dtype == np.float64:  # torch's float32 mu_product limits it to ~1e-7
        tolerance = dict(rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(p, tp, **tolerance)
    for s, (ours, theirs) in state.items():
        np.testing.assert_allclose(ours, theirs, **tolerance, err_msg=s)


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_trajectory_moves_away_from_start(name):
    """Guards the test above: 50 steps change the parameters well beyond its tolerance."""
    flags = TORCH_CASES[name][0]
    p, _, _ = trajectory(name, flags, np.float64)
    p0 = np.random.default_rng(0).standard_normal(257)
    assert np.abs(p - p0).max() > 1e-2


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(1)
    for norm_type in (2.0, 1.0, float("inf"), 3.0):
        for max_norm in (0.5, 1e6):  # clipping, and not
            grads = [rng.standard_normal(s).astype(np.float32) for s in ((7, 5), (300,), (1,), (64, 64))]
            tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g.copy())
            expected = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type))
            total = fastopt.clip_grad_norm(grads, max_norm, norm_type)
            assert total == pytest.approx(expected, rel=1e-6)
            for t, g in zip(tensors, grads):
                np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_unscale_matches_torch():
    grads = [np.array([1.0, 2.0, 4.0], np.float32), np.array([np.inf, 1.0], np.float32)]
    tensors = [torch.from_numpy(g.copy()) for g in grads]
    found_t = torch.zeros(1)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found_t, torch.tensor(0.25))
    found = np.zeros(1, np.float32)
    assert fastopt.unscale(grads, 0.25, found) is True
    assert found[0] == found_t.item() == 1.0
    for g, t in zip(grads, tensors):
        np.testing.assert_array_equal(g, t.numpy())


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_non_finite_gradients_propagate_as_in_torch(name):
    """inf and NaN in the gradient land where torch puts them, in params and state."""
    flags = TORCH_CASES[name][-1]
    g = np.array([1.0, np.nan, np.inf, -np.inf, 0.5, -0.0], np.float64)
    p0 = np.linspace(-1, 1, g.size)
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    opt = getattr(torch.optim, TORCH_CLASS[name])([tp], foreach=False, **flags)
    tp.grad = torch.from_numpy(g.copy())
    with np.errstate(all="ignore"):
        opt.step()
    arrays = {"params": p0.copy(), "grads": g, **{s: np.zeros_like(p0) for s in state_names(name, flags)}}
    with np.errstate(all="ignore"):
        call(fastopt, name, arrays, flags, step=1)
    ours, theirs = arrays["params"], tp.detach().numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
    for s in state_names(name, flags):
        t = opt.state[tp][TORCH_STATE[s]].numpy()
        np.testing.assert_array_equal(np.isnan(arrays[s]), np.isnan(t), err_msg=s)
        np.testing.assert_array_equal(np.isinf(arrays[s]), np.isinf(t), err_msg=s)
