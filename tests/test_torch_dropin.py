"""fastopt.torch against torch.optim: 100-step trajectories for every flag, state dicts both ways,
GradScaler, schedulers, closures, hooks, param groups, and the errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from cases import TORCH_CASES, TORCH_CLASS, flag_id  # noqa: E402

NAMES = TORCH_CLASS
EXTRA = {"adagrad": dict(initial_accumulator_value=0.1)}


def model(dtype=torch.float32, seed=0, nudge=0.0):
    """The small model under test; nudge: every initial weight scaled by (1 + nudge)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16), torch.nn.Tanh(),
                            torch.nn.Linear(16, 4)).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1 + nudge)
    return m


def data(dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(128, 12, generator=generator, dtype=dtype), torch.randint(0, 4, (128,), generator=generator)


def train(m, opt, steps, x, y, scheduler=None):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        if scheduler:
            scheduler.step()


def assert_same_params(a, b, dtype, loose=False):
    """float32 to rounding (loose: a maximized loss runs away and rounding grows with it)."""
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    if loose and dtype == torch.float32:
        tol = dict(rtol=1e-3, atol=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, **tol)


# the busiest flags of each optimizer in the everyday tier, every combination in the slow one
CASES = [pytest.param(n, f, marks=() if f is flags[-1] else pytest.mark.slow, id=f"{n}-{flag_id(f)}")
         for n, flags in TORCH_CASES.items() for f in flags]


def distance(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,flags", CASES)
def test_100_steps_match_torch_optim(name, flags, dtype):
    """100 steps of real training (each gradient from the weights the step before made), fastopt
    against torch.optim.  Training feeds rounding back, and some of these runs (RMSprop at torch's
    lr, maximized losses) are chaotic: torch against itself from weights one rounding apart ends
    far apart.  So the bound is that distance: fastopt must stay within 10x of how far torch moves
    from itself under a one-rounding nudge of the start, and never beyond float rounding otherwise."""
    flags = {**flags, **EXTRA.get(name, {})}
    x, y = data(dtype)
    ulp = torch.finfo(dtype).eps
    runs = []
    for make, nudge in ((lambda ps: getattr(ft, NAMES[name])(ps, **flags), 0.0),
                        (lambda ps: getattr(torch.optim, NAMES[name])(ps, foreach=False, **flags), 0.0),
                        (lambda ps: getattr(torch.optim, NAMES[name])(ps, foreach=False, **flags), ulp)):
        m = model(dtype, nudge=nudge)
        train(m, make(m.parameters()), 100, x, y)
        runs.append(m)
    ours, theirs, nudged = runs
    floor = 1e-5 if dtype == torch.float32 else 1e-11
    if name == "nadam" and dtype == torch.float64:
        floor = 1e-6  # torch rounds mu_product to a float32 tensor every step; fastopt keeps a double
    assert distance(ours, theirs) <= max(10 * distance(theirs, nudged), floor)
    moved = distance(theirs, model(dtype))
    assert moved > 100 * floor  # the 100 steps went somewhere


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_lion_and_lamb_follow_the_reference(name):
    """Not in torch.optim: the same 30 steps through fastopt.reference on NumPy copies."""
    m = model(torch.float64)
    params = [p.detach().numpy().copy() for p in m.parameters()]
    state = [[np.zeros_like(p) for p in params] for _ in range(2 if name == "LAMB" else 1)]
    opt = getattr(ft, name)(m.parameters(), lr=1e-2)
    x, y = data(torch.float64)
    for step in range(1, 31):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        grads = [p.grad.numpy().copy() for p in m.parameters()]
        opt.step()
        if name == "Lion":
            fastopt.reference.lion(params, grads, state[0], lr=1e-2)
        else:
            fastopt.reference.lamb(params, grads, *state, step=step, lr=1e-2)
        for p, q in zip(m.parameters(), params):  # the next gradient is taken where fastopt stands
            np.testing.assert_allclose(p.detach().numpy(), q, rtol=1e-9, atol=1e-12)
            q[...] = p.detach().numpy()


@pytest.mark.parametrize("name", list(NAMES.values()))
def test_state_dicts_load_both_ways_and_training_continues(name):
    kwargs = dict(lr=1e-2) if name != "SGD" else dict(lr=1e-2, momentum=0.9)
    x, y = data()
    a = model()
    torch_opt = getattr(torch.optim, name)(a.parameters(), foreach=False, **kwargs)
    train(a, torch_opt, 10, x, y)
    # torch -> fastopt: continue 10 steps each; the same trajectory
    b = copy.deepcopy(a)
    ours = getattr(ft, name)(b.parameters(), **kwargs)
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    train(a, torch_opt, 10, x, y)
    train(b, ours, 10, x, y)
    assert_same_params(a, b, torch.float32)
    # fastopt -> torch: the same again
    c = copy.deepcopy(b)
    back = getattr(torch.optim, name)(c.parameters(), foreach=False, **kwargs)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    train(b, ours, 10, x, y)
    train(c, back, 10, x, y)
    assert_same_params(b, c, torch.float32)
    sd = ours.state_dict()
    assert set(sd["param_groups"][0]) >= set(torch_opt.state_dict()["param_groups"][0])
    if name != "SGD":
        steps = [s["step"] for s in sd["state"].values()]
        assert all(float(t) == 30 for t in steps) and len({id(t) for t in steps}) == len(steps)


@pytest.mark.parametrize("name", list(NAMES.values()))
def test_a_checkpoint_of_an_older_torch_loads_with_torchs_defaults_for_what_it_lacks(name):
    """Groups saved before torch had maximize, foreach, fused, differentiable, capturable,
    decoupled_weight_decay (...): torch's class fills them when it loads, and so does fastopt
    (torch's own defaults), and training goes on along torch's trajectory."""
    kwargs = dict(lr=1e-2) if name != "SGD" else dict(lr=1e-2, momentum=0.9)
    x, y = data(torch.float64)
    a = model(torch.float64)
    torch_opt = getattr(torch.optim, name)(a.parameters(), foreach=False, **kwargs)
    train(a, torch_opt, 3, x, y)
    old = copy.deepcopy(torch_opt.state_dict())
    newer = ("maximize", "foreach", "fused", "differentiable", "capturable", "decoupled_weight_decay",
             "initial_accumulator_value")
    for group in old["param_groups"]:
        for key in newer:
            group.pop(key, None)
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    ours = getattr(ft, name)(b.parameters(), **kwargs)
    theirs = getattr(torch.optim, name)(c.parameters(), foreach=False, **kwargs)
    ours.load_state_dict(copy.deepcopy(old))
    theirs.load_state_dict(copy.deepcopy(old))
    train(b, ours, 5, x, y)
    train(c, theirs, 5, x, y)
    assert_same_params(c, b, torch.float64)
    for key in (k for k in newer if k in theirs.param_groups[0]):
        assert ours.param_groups[0][key] == theirs.param_groups[0][key], key


def test_state_dict_hooks_see_what_torchs_see():
    """A pre-hook may put an entry of its own in opt.state (torch packs it as it is); post-hooks
    get the state dict in torch's layout (fastopt's default group entries left out, each step a
    tensor of its own), and what a post-hook returns is the state dict."""
    p = torch.nn.Parameter(torch.rand(2, 3))
    results = []
    for opt in (torch.optim.Adam([p]), ft.Adam([torch.nn.Parameter(p.detach().clone())])):
        opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("test", 1))
        seen = []
        opt.register_state_dict_post_hook(lambda o, sd: seen.append(sorted(sd["param_groups"][0])))
        opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 2})
        sd = opt.state_dict()
        results.append((sd["state"]["test"], sd["extra"], seen))
    assert results[0] == results[1]


@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD", "Adagrad"])
def test_grad_scaler_skips_steps_like_torch_fused(name):
    kwargs = dict(lr=1e-2, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    x, y = data()
    runs = []
    for make in (lambda ps: getattr(ft, name)(ps, **kwargs),
                 lambda ps: getattr(torch.optim, name)(ps, fused=True, **kwargs)):
        m = model()
        opt = make(m.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
        scales = []
        for step in range(12):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            scaler.scale(loss).backward()
            if step in (2, 7):  # an overflow: the step must be skipped and the scale backed off
                next(m.parameters()).grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        runs.append((m, scales, opt))
    (ours, our_scales, opt), (theirs, their_scales, topt) = runs
    assert our_scales == their_scales
    assert_same_params(ours, theirs, torch.float32)
    if name != "SGD":
        assert float(next(iter(opt.state.values()))["step"]) == 10


def test_lr_schedulers_work_unchanged():
    x, y = data()
    a, b = model(), model()
    oa, ob = ft.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2, foreach=False)
    sa = torch.optim.lr_scheduler.OneCycleLR(oa, max_lr=5e-2, total_steps=40)
    sb = torch.optim.lr_scheduler.OneCycleLR(ob, max_lr=5e-2, total_steps=40)
    train(a, oa, 40, x, y, sa)
    train(b, ob, 40, x, y, sb)
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    assert_same_params(a, b, torch.float32)


def test_closure_hooks_param_groups_and_params_without_grad():
    m = model()
    layers = list(m.parameters())
    opt = ft.SGD([{"params": layers[:2], "lr": 0.1}], lr=0.01, momentum=0.9)
    opt.add_param_group({"params": layers[2:4]})
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    x, y = data()
    frozen = [p.detach().clone() for p in layers[4:]]
    before = [p.detach().clone() for p in layers[:4]]

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == ["pre", "post"]
    for p, q in zip(layers[:2], before[:2]):  # group 0 at lr 0.1, first step: p - lr * g
        torch.testing.assert_close(p.detach(), q - 0.1 * p.grad)
    for p, q in zip(layers[2:4], before[2:]):
        torch.testing.assert_close(p.detach(), q - 0.01 * p.grad)
    for p, q in zip(layers[4:], frozen):  # in no group: untouched
        assert torch.equal(p.detach(), q)
    layers[0].grad = None  # a param without a gradient is skipped, as torch skips it
    w = layers[0].detach().clone()
    opt.step()
    assert torch.equal(layers[0].detach(), w)


def test_replaced_parameter_memory_is_followed():
    m = torch.nn.Linear(4, 4)
    opt = ft.SGD(m.parameters(), lr=1.0)
    m.weight.grad = torch.ones(4, 4)
    m.bias.grad = torch.ones(4)
    opt.step()
    m.weight.data = torch.zeros(4, 4)  # new memory behind the same Parameter
    opt.step()
    assert torch.equal(m.weight.detach(), -torch.ones(4, 4))


def test_errors():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="differentiable"):
        ft.Adam([p], differentiable=True)
    with pytest.raises(ValueError, match="state_dtype and master_weights are for real"):
        ft.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))], state_dtype=torch.float32)
    with pytest.raises(TypeError, match="int32"):
        ft.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.int32), requires_grad=False)])
    opt = ft.Adam([p])  # a refused group leaves the optimizer as it was
    with pytest.raises(TypeError, match="int32"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3, dtype=torch.int32), requires_grad=False)]})
    with pytest.raises(ValueError, match="lr must be"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "lr": float("nan")})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="Invalid learning rate"):  # torch's own checks and messages
        ft.AdamW([p], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0"):
        ft.Adam([p], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="lr must be"):  # fastopt's, for what torch checks only at step
        ft.SGD([p], lr=float("nan"))
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = ft.SGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_cuda_params_match_torch_fused_with_grad_scaler(name):
    """CUDA params with GradScaler and an injected inf: the same trajectory as torch's fused CUDA
    optimizer (torch has no fused CUDA Adagrad: its for-loop one there)."""
    kwargs = dict(lr=1e-2, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    theirs = dict(foreach=False) if name == "Adagrad" else dict(fused=True)
    x, y = (t.cuda() for t in data())
    runs = []
    for make in (lambda ps: getattr(ft, name)(ps, **kwargs),
                 lambda ps: getattr(torch.optim, name)(ps, **theirs, **kwargs)):
        m = model().cuda()
        opt, scaler = make(m.parameters()), torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
        for step in range(30):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.cross_entropy(m(x), y)).backward()
            if step == 5:
                next(m.parameters()).grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
        runs.append(m)
    for p, q in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("state_dtype", [None, torch.float32])
def test_bfloat16_cpu_params(state_dtype):
    """bfloat16 CPU parameters: the state in bfloat16 (torch's choice) or float32; 30 steps track
    torch.optim.AdamW on the same bfloat16 model within bfloat16's precision."""
    x, y = data()
    ours, theirs = model().to(torch.bfloat16), model().to(torch.bfloat16)
    opt = ft.AdamW(ours.parameters(), lr=1e-2, state_dtype=state_dtype)
    train(ours, opt, 30, x.to(torch.bfloat16), y)
    train(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-2, foreach=False), 30, x.to(torch.bfloat16), y)
    state = next(iter(opt.state.values()))
    assert state["exp_avg"].dtype == (state_dtype or torch.bfloat16)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert p.dtype == torch.bfloat16
        torch.testing.assert_close(p.float(), q.float(), rtol=0.05, atol=0.02)


def test_bfloat16_master_weights_are_torch_adamw_on_float32_copies():
    """master_weights=True on bfloat16 params: what mixed-precision training does by hand (torch's
    AdamW on float32 copies of the weights, bfloat16 gradients widened, the bfloat16 model written
    from the copies), in one fused step; a checkpoint keeps the copies and state float32."""
    x, y = data()
    xb = x.to(torch.bfloat16)
    ours, theirs = model().to(torch.bfloat16), model().to(torch.bfloat16)
    opt = ft.AdamW(ours.parameters(), lr=1e-2, master_weights=True, state_dtype=torch.float32)
    masters = [p.detach().float().requires_grad_() for p in theirs.parameters()]
    by_hand = torch.optim.AdamW(masters, lr=1e-2, foreach=False)
    for _ in range(30):
        train(ours, opt, 1, xb, y)
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(theirs(xb), y).backward()
        for w, p in zip(masters, theirs.parameters()):
            w.grad = p.grad.float()
        by_hand.step()
        with torch.no_grad():
            for w, p in zip(masters, theirs.parameters()):
                p.copy_(w)
    for p, q, w in zip(ours.parameters(), theirs.parameters(), masters):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32 and opt.state[p]["exp_avg"].dtype == torch.float32
        assert torch.equal(p, master.to(torch.bfloat16))
        torch.testing.assert_close(master, w.detach(), rtol=1e-3, atol=1e-4)
    again = ft.AdamW(ours.parameters(), lr=1e-2, master_weights=True, state_dtype=torch.float32)
    again.load_state_dict(opt.state_dict())
    for p in ours.parameters():
        for key in ("master_param", "exp_avg", "exp_avg_sq"):
            assert again.state[p][key].dtype == torch.float32
            assert torch.equal(again.state[p][key], opt.state[p][key])
    train(ours, again, 1, xb, y)  # and it steps on
