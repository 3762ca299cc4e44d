"""50-step trajectories against torch.optim (foreach=False), for every flag combination."""
import numpy as np
import pytest

from cases import CASES, flag_id, state_names

import fastopt

torch = pytest.importorskip("torch")

TORCH_STATE = {"momentum_buffers": "momentum_buffer", "exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq",
               "max_exp_avg_sqs": "max_exp_avg_sq"}
TORCH_CLASS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
# float64 agrees to rounding; float32 drifts by rounding over 50 steps
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}
ALL_CASES = [(name, f) for name, flags in CASES.items() for f in flags]


def trajectory(name, flags, dtype, steps=50, n=257, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]

    tp = torch.from_numpy(p0.copy()).requires_grad_()
    opt = getattr(torch.optim, TORCH_CLASS[name])([tp], foreach=False, **flags)
    p = p0.copy()
    state = {s: np.zeros_like(p) for s in state_names(name, flags)}
    for t, g in enumerate(grads, start=1):
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        if name == "sgd":
            fastopt.sgd(p, g, state.get("momentum_buffers"), first_step=t == 1, **flags)
        else:
            getattr(fastopt, name)(p, g, state["exp_avgs"], state["exp_avg_sqs"], step=t,
                                   max_exp_avg_sqs=state.get("max_exp_avg_sqs"), **flags)
    torch_state = opt.state[tp]
    return p, tp.detach().numpy(), {s: (a, torch_state[TORCH_STATE[s]].numpy()) for s, a in state.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", ALL_CASES, ids=[f"{n}[{flag_id(f)}]" for n, f in ALL_CASES])
def test_trajectory_matches_torch(name, flags, dtype):
    p, tp, state = trajectory(name, flags, dtype)
    assert not np.array_equal(p, np.zeros_like(p))
    np.testing.assert_allclose(p, tp, **TOLERANCE[dtype])
    for s, (ours, theirs) in state.items():
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype], err_msg=s)


def test_trajectory_moves_away_from_start():
    """Guards the test above: 50 steps change the parameters well beyond the tolerance."""
    flags = CASES["adamw"][0]
    p, _, _ = trajectory("adamw", flags, np.float64)
    p0 = np.random.default_rng(0).standard_normal(257)
    assert np.abs(p - p0).max() > 0.1
