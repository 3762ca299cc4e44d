"""fastopt.torch in the patterns of real training loops, against torch.optim itself: params added
mid-run, memory replaced behind a param, shared params, mixed dtypes in a group, channels_last
convolutions, very many tiny params, GradScaler skipping NaN steps, autograd's version counters."""
from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from cases import TORCH_CLASS  # noqa: E402


def twins(params, name="Adam", **kwargs):
    """(torch's optimizer over params, fastopt's over copies of them, the copies)."""
    ours = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in params]
    return getattr(torch.optim, name)(params, **kwargs), getattr(ft, name)(ours, **kwargs), ours


def give(params, ours, grads):
    for p, q, g in zip(params, ours, grads):
        p.grad = None if g is None else g.clone(memory_format=torch.preserve_format)
        q.grad = None if g is None else g.clone(memory_format=torch.preserve_format)


def run_both(a, b, params, ours, steps, event=lambda t: None):
    """steps of both optimizers on the same fresh gradients; event(t) first, each step."""
    for t in range(steps):
        event(t)
        give(params, ours, [torch.randn_like(p) for p in params])
        a.step()
        b.step()


def native_calls(opt, step=None) -> int:
    """The C calls opt's native steady step (fastopt._steady) makes in step() (opt.step)."""
    plan = opt._native
    before = plan.calls if plan is not None else 0
    (step or opt.step)()
    return plan.calls - before if plan is not None else 0


def assert_same(params, ours, a=None, b=None):
    for p, q in zip(params, ours):
        torch.testing.assert_close(q, p)
        if a is not None:
            sa, sb = a.state.get(p, {}), b.state.get(q, {})
            assert set(sa) == set(sb)
            for k in sa:
                torch.testing.assert_close(sb[k], sa[k], msg=k)


def test_mixed_dtypes_in_one_group():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(4, dtype=torch.float64))]
    a, b, ours = twins(params, lr=0.1)
    for t in range(6):
        give(params, ours, [torch.randn_like(p) if t % 3 or i else None for i, p in enumerate(params)])
        a.step()
        b.step()
    assert_same(params, ours, a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD", "Adagrad"])
def test_channels_last_weights_are_stepped_in_place(name):
    """Dense but not C-contiguous: state with the param's strides, the param's own memory written."""
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last)
    params = [torch.nn.Parameter(w.clone(memory_format=torch.preserve_format))]
    a, b, ours = twins(params, name, lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    where = ours[0].data_ptr()
    for _ in range(5):
        give(params, ours, [torch.randn_like(w)])
        a.step()
        b.step()
    assert_same(params, ours, a, b)
    assert ours[0].data_ptr() == where and not ours[0].is_contiguous()
    for k, s in b.state[ours[0]].items():
        if s.dim():
            assert s.stride() == a.state[params[0]][k].stride(), k


def test_a_channels_last_convolution_trains_as_with_torch():
    torch.manual_seed(0)
    m = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    m2 = copy.deepcopy(m)
    a, b = torch.optim.AdamW(m.parameters(), lr=0.01), ft.AdamW(m2.parameters(), lr=0.01)
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    for _ in range(5):
        for model, opt in ((m, a), (m2, b)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    assert_same(list(m.parameters()), list(m2.parameters()))


@pytest.mark.parametrize("name", ["Adam", "SGD", "Adagrad"])
def test_gradients_of_another_layout_and_params_not_dense_step_as_with_torch(name):
    """A gradient in another memory layout than its param's (C order for a channels_last weight,
    channels_last or transposed for a C-order one, as a loop assigning gradients by hand makes)
    is stepped as torch steps it; so are params not dense in memory (strided views with gaps, as
    torch's own tests make: stepped through a contiguous copy, written back), natively planned or
    not, through every later step."""
    def made():
        torch.manual_seed(2)
        ts = [torch.randn(*s, dtype=torch.float64) for s in ((4, 3, 2, 2), (4, 3, 2, 2), (3, 3), (10, 5, 2), (10, 2))]
        ts[0] = ts[0].to(memory_format=torch.channels_last)
        ts[3], ts[4] = ts[3][..., 0], ts[4][..., 0]  # (not dense: every other element)
        return [torch.nn.Parameter(t) for t in ts]
    params, ours = made(), made()
    assert ours[3].stride() == (10, 2)
    flags = dict(lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    a, b = getattr(torch.optim, name)(params, foreach=False, **flags), getattr(ft, name)(ours, **flags)
    for t in range(6):
        grads = [torch.randn(*p.shape, dtype=torch.float64) for p in params]  # (C order)
        if t % 2:
            grads[1] = grads[1].to(memory_format=torch.channels_last)
            grads[2] = grads[2].t().contiguous().t()
        give(params, ours, grads)
        a.step()
        b.step()
    assert_same(params, ours, a, b)
    assert ours[3].stride() == (10, 2) and ours[0].is_contiguous(memory_format=torch.channels_last)


def test_add_param_group_mid_run():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5))]
    a, b, ours = twins(params, lr=0.1)
    def event(t):
        if t == 3:
            extra = torch.randn(3)
            params.append(torch.nn.Parameter(extra.clone()))
            ours.append(torch.nn.Parameter(extra.clone()))
            a.add_param_group({"params": [params[-1]], "lr": 0.05, "weight_decay": 0.1})
            b.add_param_group({"params": [ours[-1]], "lr": 0.05, "weight_decay": 0.1})
    run_both(a, b, params, ours, 8, event)
    assert_same(params, ours, a, b)


def test_memory_replaced_behind_a_param_and_state_replaced_behind_the_optimizer():
    """p.data = ... and an engine assigning opt.state[p]: what fastopt caches is checked every step."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(2))]
    a, b, ours = twins(params, lr=0.1)
    def event(t):
        if t == 3:
            fresh = torch.randn(5)
            params[0].data, ours[0].data = fresh.clone(), fresh.clone()
        if t == 5:
            for opt, p in ((a, params[1]), (b, ours[1])):
                opt.state[p] = {k: v.clone() * (0.5 if k != "step" else 1) for k, v in opt.state[p].items()}
        if t == 6:  # an entry replaced inside the same dict, and a step count reset in place
            for opt, p in ((a, params[0]), (b, ours[0])):
                opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].clone() * 0.5
                opt.state[p]["step"].zero_()
    run_both(a, b, params, ours, 9, event)
    assert_same(params, ours, a, b)


def test_a_parameter_shared_by_two_modules():
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    m1 = torch.nn.Sequential(shared, torch.nn.Tanh(), shared)
    m2 = copy.deepcopy(m1)
    a, b = torch.optim.Adam(m1.parameters(), lr=0.1), ft.Adam(m2.parameters(), lr=0.1)
    x = torch.randn(3, 4)
    for _ in range(4):
        for model, opt in ((m1, a), (m2, b)):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert_same(list(m1.parameters()), list(m2.parameters()))


def test_ten_thousand_one_element_params():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(1)) for _ in range(10_000)]
    a, b, ours = twins(params, lr=0.1)
    for t in range(3):
        give(params, ours, [torch.randn(1) if (i + t) % 7 else None for i in range(len(params))])
        a.step()
        b.step()
    assert_same(params, ours, a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_grad_scaler_skips_the_nan_step_as_with_torch(name):
    torch.manual_seed(0)
    m1 = torch.nn.Linear(4, 2)
    m2 = copy.deepcopy(m1)
    kwargs = dict(lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    a, b = getattr(torch.optim, name)(m1.parameters(), **kwargs), getattr(ft, name)(m2.parameters(), **kwargs)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in range(2)]
    for t in range(6):
        x = torch.randn(3, 4)
        if t == 2:
            x[0, 0] = float("nan")
        for model, opt, scaler in ((m1, a, scalers[0]), (m2, b, scalers[1])):
            opt.zero_grad()
            scaler.scale(model(x).sum()).backward()
            scaler.step(opt)
            scaler.update()
    assert scalers[0].get_scale() == scalers[1].get_scale()
    assert_same(list(m1.parameters()), list(m2.parameters()), a, b)


def test_under_no_grad_and_with_params_made_in_inference_mode():
    with torch.inference_mode():
        start = torch.randn(5)
    params = [torch.nn.Parameter(start.clone())]
    a, b, ours = twins(params, "SGD", lr=0.1, momentum=0.9)
    with torch.no_grad():
        for _ in range(3):
            give(params, ours, [torch.randn(5)])
            a.step()
            b.step()
    assert_same(params, ours, a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD", "NAdam"])
def test_a_step_bumps_version_counters_as_torch_does(name):
    """A graph that saved a param before the step is refused after it, as with torch.optim."""
    for cls in (getattr(torch.optim, name), getattr(ft, name)):
        w = torch.nn.Parameter(torch.randn(3))
        opt = cls([w], lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
        saved = (w * w).sum()
        w.grad = torch.ones(3)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved.backward()


def test_the_functional_api_on_torch_tensors_acts_as_an_inplace_op():
    w = torch.randn(3, requires_grad=True)
    args = (torch.ones(3), torch.zeros(3), torch.zeros(3))
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match=r"fastopt.adam: params requires grad; update it under torch.no_grad"):
        fastopt.adam(w, *args, step=1)
    assert torch.equal(w.detach(), before)
    saved = (w * w).sum()
    with torch.no_grad():
        fastopt.adam(w, *args, step=1)
    assert not torch.equal(w.detach(), before)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


def test_sgd_without_momentum_keeps_no_state_and_adagrad_starts_from_the_constructor():
    p = torch.nn.Parameter(torch.randn(3))
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert opt.state_dict()["state"] == {} and len(opt.state) == 0
    # torch fills 'sum' from the constructor's initial_accumulator_value, even where a group sets one
    groups = [{"params": [torch.nn.Parameter(torch.randn(3))], "initial_accumulator_value": 0.5}]
    theirs = torch.optim.Adagrad(copy.deepcopy(groups), initial_accumulator_value=0.1)
    ours = ft.Adagrad(groups, initial_accumulator_value=0.1)
    assert torch.equal(ours.state[groups[0]["params"][0]]["sum"], next(iter(theirs.state.values()))["sum"])


def test_master_weights_follow_torch_on_float32_copies_with_grads_coming_and_going():
    """bfloat16 params with float32 masters and state: each master is what torch.optim makes of a
    float32 param given the same (bfloat16) gradients, each param at its own step."""
    torch.manual_seed(0)
    start = [torch.randn(7), torch.randn(3, 2)]
    ref = [torch.nn.Parameter(s.bfloat16().float()) for s in start]
    ours = [torch.nn.Parameter(s.bfloat16()) for s in start]
    a = torch.optim.AdamW(ref, lr=0.1)
    b = ft.AdamW(ours, lr=0.1, master_weights=True, state_dtype=torch.float32)
    for t in range(8):
        for i, (p, q) in enumerate(zip(ref, ours)):
            g = None if (t + i) % 3 == 0 else torch.randn_like(q)
            q.grad, p.grad = g, None if g is None else g.float()
        a.step()
        b.step()
    for p, q in zip(ref, ours):
        torch.testing.assert_close(b.state[q]["master_param"], p.detach())
        assert float(b.state[q]["step"]) == float(a.state[p]["step"])
        assert torch.equal(q.detach(), p.detach().bfloat16())


@pytest.mark.parametrize("name", ["LAMB", "Lion"])
def test_lamb_and_lion_with_grads_coming_and_going(name):
    """Not in torch.optim: each param against fastopt.reference stepped alone at its own step count
    (LAMB without its global clipping, which spans the call's tensors)."""
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in (6, 3, 1)]
    kwargs = dict(lr=1e-2, **({"max_grad_norm": 0.0} if name == "LAMB" else {}))
    opt = getattr(ft, name)(params, **kwargs)
    ref = [p.detach().numpy().copy() for p in params]
    state = [[np.zeros_like(r) for r in ref] for _ in range(2 if name == "LAMB" else 1)]
    steps = [0] * len(params)
    for t in range(9):
        for i, p in enumerate(params):
            p.grad = None if (t + i) % 3 == 0 else torch.randn_like(p)
        opt.step()
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            steps[i] += 1
            g = [p.grad.numpy()]
            if name == "LAMB":
                fastopt.reference.lamb([ref[i]], g, [state[0][i]], [state[1][i]], step=steps[i], **kwargs)
            else:
                fastopt.reference.lion([ref[i]], g, [state[0][i]], **kwargs)
    for p, r, s in zip(params, ref, steps):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
        if name == "LAMB":
            assert float(opt.state[p]["step"]) == s


def test_lamb_clips_by_one_norm_over_every_group():
    """apex FusedLAMB: one gradient norm over all param groups, each group clipped by its own
    max_grad_norm: the reference LAMB on gradients clipped by hand, per group."""
    import numpy as np
    from fastopt import reference
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in (7, 300, 5)]
    grads = [torch.randn_like(p) * 3 for p in params]
    groups = [{"params": params[:2], "max_grad_norm": 1.0}, {"params": params[2:], "max_grad_norm": 50.0}]
    opt = ft.LAMB(groups, lr=1e-2)
    expected = [p.detach().numpy().copy() for p in params]
    state = [(np.zeros_like(e), np.zeros_like(e)) for e in expected]
    for step in (1, 2):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        norm = float(np.sqrt(sum(np.sum(g.numpy() ** 2) for g in grads)))
        for idx, limit in (([0, 1], 1.0), ([2], 50.0)):
            factor = max(1.0, norm / limit)
            reference.lamb([expected[i] for i in idx], [grads[i].numpy() / factor for i in idx],
                           [state[i][0] for i in idx], [state[i][1] for i in idx], step=step, lr=1e-2,
                           max_grad_norm=0.0)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # (compiling takes tens of seconds)
def test_torch_compile_runs_the_step_whole_without_breaks_inside_fastopt():
    """Under torch.compile the step runs whole, outside the graph (torch.compiler.disable): no graph
    break comes from inside fastopt, and the compiled loop trains as the eager one does."""
    import torch._dynamo as dynamo

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        return model, ft.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def stepper(model, opt):
        def train_step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return train_step
    explained = dynamo.explain(stepper(*setup()))(x, y)
    package = os.path.dirname(fastopt.__file__)
    for b in explained.break_reasons:  # (torch's own break at backward() is in the test's frame)
        assert not any(frame.filename.startswith(package) for frame in b.user_stack), b.reason
    dynamo.reset()
    (eager_model, eager_opt), (compiled_model, compiled_opt) = setup(), setup()
    eager, compiled = stepper(eager_model, eager_opt), torch.compile(stepper(compiled_model, compiled_opt))
    for _ in range(3):
        eager(x, y)
        compiled(x, y)
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    dynamo.reset()


@pytest.mark.slow  # (importing torch.distributed.optim scripts torch's functional optimizers: seconds)
def test_functional_optimizers_for_zero_overlap_with_ddp():
    """Registered with torch.distributed, fastopt's optimizers are what torch's functional ones are
    (ZeroRedundancyOptimizer(overlap_with_ddp=True) steps them from DDP's hook, which torch allows
    only with NCCL): made on a list of params, stepped with a list of gradients (None: skipped), as
    torch's _FunctionalAdamW, with an empty list where a rank owns no params."""
    pytest.importorskip("torch.distributed")
    from torch.distributed.optim.utils import functional_optim_map
    ft.register_functional_optimizers()

    def as_functional_optim(cls, params, **kwargs):  # as ZeRO makes its local optimizer
        return functional_optim_map[cls](params, **kwargs, _allow_empty_param_list=True)
    torch.manual_seed(0)
    ours, theirs = ([torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in (5, 3)] for _ in range(2))
    for p, q in zip(ours, theirs):
        q.data.copy_(p.data)
    mine = as_functional_optim(ft.AdamW, ours, lr=1e-2, weight_decay=0.1)
    torchs = as_functional_optim(torch.optim.AdamW, theirs, lr=1e-2, weight_decay=0.1)
    assert type(mine).__name__ == "_FunctionalAdamW" and mine.optimizer_class is ft.AdamW
    for step in range(3):
        grads = [torch.randn(5, dtype=torch.float64), None if step == 1 else torch.randn(3, dtype=torch.float64)]
        mine.step(grads)
        torchs.step(grads)
        assert all(p.grad is None for p in ours)  # the gradients lent for the step are taken back
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    as_functional_optim(ft.AdamW, [], lr=1e-2).step([])
    with pytest.raises(ValueError, match="empty parameter list"):
        functional_optim_map[ft.AdamW]([], lr=1e-2)


@pytest.mark.parametrize("name", sorted(TORCH_CLASS.values()))
def test_param_groups_differing_in_lr_and_weight_decay_step_in_one_call_as_torch(name, monkeypatch):
    """A transformer recipe's groups: no weight decay on biases, layer-wise lr decay, a scheduler
    changing each group's lr, a group whose grads stop: one fused call a step for the groups that
    differ only in lr and weight_decay (each tensor with its group's), the trajectory of torch.optim's."""
    torch.manual_seed(0)
    layers = [(torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(6))) for _ in range(4)]
    params = [p for layer in layers for p in layer]

    def groups(ps):
        pairs = [ps[i:i + 2] for i in range(0, len(ps), 2)]
        return [{"params": [w], "lr": 1e-2 * 0.8 ** i, "weight_decay": 0.05} for i, (w, _) in enumerate(pairs)] + \
            [{"params": [b for _, b in pairs], "weight_decay": 0.0}]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
    a = getattr(torch.optim, name)(groups(params), foreach=False, **flags)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    b = getattr(ft, name)(groups(ours), **flags)
    sa, sb = (torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (a, b))
    calls = []
    run = ft._Bucket.run
    monkeypatch.setattr(ft._Bucket, "run", lambda self, *args: calls.append(1) or run(self, *args))
    for t in range(6):
        grads = [torch.randn_like(p) if t < 4 or i % 2 == 0 else None for i, p in enumerate(params)]
        give(params, ours, grads)
        calls.clear()
        a.step()
        in_c = native_calls(b)
        assert len(calls) + in_c == 1, calls
        sa.step()
        sb.step()
    for p, q in zip(params, ours):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RAdam", "Adamax", "SGD"])
def test_groups_merging_and_splitting_and_changing_their_params_keep_torchs_trajectory(name):
    """Groups merged in one call, split when one's betas (momentum) change, merged again when they
    are restored; a merged group's params list changed in place: each param keeps its own step
    count and state through all of it, as in torch.optim."""
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)) for _ in range(4)]
    extra = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    key, other = ("momentum", 0.5) if name == "SGD" else ("betas", (0.8, 0.99))
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))

    def make(cls, ps):
        return cls([{"params": ps[:2]}, {"params": ps[2:], "lr": 3e-2, "weight_decay": 0.1}], **flags)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params + [extra]]
    a = make(getattr(torch.optim, name), params + [extra])
    b = make(getattr(ft, name), ours)
    a.param_groups[1]["params"].pop(), b.param_groups[1]["params"].pop()  # (extra: added back later)
    default = a.param_groups[1][key]
    for t in range(9):
        if t == 2 or t == 4:  # split, then merged again
            for o in (a, b):
                o.param_groups[1][key] = other if t == 2 else default
        if t == 6:  # the merged group's params list changed in place
            a.param_groups[1]["params"].append(extra)
            b.param_groups[1]["params"].append(ours[-1])
        give(params + [extra], ours, [torch.randn_like(p) for p in params + [extra]])
        a.step()
        b.step()
    for p, q in zip(params + [extra], ours):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    for p, q in zip(params, ours):
        if name != "SGD":
            assert float(b.state[q]["step"]) == float(a.state[p]["step"]) == 9


@pytest.mark.parametrize("name", ["AdamW", "NAdam", "SGD"])
def test_the_steady_state_step_notices_every_change_between_steps(name, monkeypatch):
    """Past its first steps a training loop's step repeats the last one's buckets without
    searching for them; what a loop may change between two steps sends it back to the search:
    a param moved to the next group (the params in the same order), a hyper-parameter set, memory
    replaced behind a param, a grad None, state replaced, a group added. The trajectory is torch's."""
    torch.manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64)) for _ in range(6)]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
    extra = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))

    def make(cls, ps):
        return cls([{"params": ps[:3]}, {"params": ps[3:6], "lr": 3e-2, "weight_decay": 0.1}], **flags)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params + [extra]]
    a, b = make(getattr(torch.optim, name), params), make(getattr(ft, name), ours)
    searches = []
    search = ft._Optimizer._buckets_of
    monkeypatch.setattr(ft._Optimizer, "_buckets_of", lambda self, *args: searches.append(1) or search(self, *args))
    key = "momentum" if name == "SGD" else "eps"

    def event(t, o, ps):
        if t == 3:  # the last param of group 0 moves to group 1: the params' order is the same
            o.param_groups[1]["params"].insert(0, o.param_groups[0]["params"].pop())
        if t == 5:
            o.param_groups[0][key] = 0.5 if name == "SGD" else 1e-6
        if t == 7:
            ps[1].data = ps[1].data.clone()
        if t == 11:
            s = o.state[ps[2]]
            s["momentum_buffer" if name == "SGD" else "exp_avg"] = s["momentum_buffer" if name == "SGD"
                                                                       else "exp_avg"].clone() * 0.5
        if t == 13:
            o.add_param_group({"params": [ps[6]], "lr": 1e-3})
    steady = 0
    for t in range(16):
        event(t, a, params + [extra])
        event(t, b, ours)
        give(params + [extra], ours, [None if t == 9 and i == 4 else torch.randn_like(p)
                                      for i, p in enumerate(params + [extra])])
        searches.clear()
        a.step()
        b.step()
        steady += not searches
    for p, q in zip(params + [extra], ours):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    # the steps right after a change (and the first two) search; the others do not
    assert steady == 9, steady


def test_what_an_outside_review_found_a_loop_doing_is_followed_as_torch_follows_it():
    """A copied or unpickled optimizer steps; betas given as a list (a config file's) and changed in
    place take effect; a state tensor whose .data is replaced is stepped in its new memory."""
    import pickle
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(2)]
    a, b, ours = twins(params, "AdamW", lr=0.1)
    for o in (a, b):
        o.param_groups[0]["betas"] = [0.9, 0.999]
    run_both(a, b, params, ours, 2)
    for copied in (copy.deepcopy(b), pickle.loads(pickle.dumps(b))):
        for p in copied.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        copied.step()  # (its own copies of the params)
    for o in (a, b):
        o.param_groups[0]["betas"][0] = 0.0
    run_both(a, b, params, ours, 2)
    for o, ps in ((a, params), (b, ours)):
        o.state[ps[0]]["exp_avg"].data = o.state[ps[0]]["exp_avg"].data.clone()
    run_both(a, b, params, ours, 2)
    assert_same(params, ours, a, b)


def test_lamb_over_several_groups_with_an_infinite_gradient_steps_as_one_group_does():
    """Clipping by an infinite global norm reads every gradient as 0 (inf ones as NaN), as apex
    divides by it, whether the params are in one group or several: no error halfway through."""
    torch.manual_seed(4)
    grads = [torch.randn(3, 2), torch.tensor([1.0, float("inf")])]
    results = []
    for split in (False, True):
        params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2))]
        groups = [{"params": params[:1]}, {"params": params[1:]}] if split else params
        opt = ft.LAMB(groups, lr=0.1)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        results.append([p.detach().clone() for p in params])
    for one, several in zip(*results):
        torch.testing.assert_close(several, one, equal_nan=True)
    assert torch.isnan(results[1][1][1]) and torch.isfinite(results[1][0]).all()


def test_merged_groups_keep_their_options_struct_between_steps(monkeypatch):
    """The C options of a merged group are made once while its values stay (the members' lr and
    weight decay are read each call): a steady loop makes none per step; a list among the values,
    which may change in place, makes them each step."""
    from fastopt import _calls
    built = []
    options = _calls.options
    monkeypatch.setattr(_calls, "options", lambda *a, **k: built.append(1) or options(*a, **k))
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(3)]
    opt = ft.AdamW([{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(params)])
    for p in params:
        p.grad = torch.ones(3)
    opt.step()
    opt.step()
    built.clear()
    for _ in range(3):
        opt.step()
    assert built == []
    for g in opt.param_groups:
        g["betas"] = [0.9, 0.999]
    for _ in range(3):
        opt.step()
    assert len(built) == 9  # each group each step (a list cannot key a merge: the groups step apart)


NATIVE = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "RAdam", "Adamax"]  # the classes fastopt._steady steps


def two_groups(ps, **extra):
    """Matrices with weight decay, vectors without, at another lr: one merged call."""
    return [{"params": [p for p in ps if p.dim() == 2], "weight_decay": 0.05, **extra},
            {"params": [p for p in ps if p.dim() == 1], "lr": 2e-2, "weight_decay": 0.0, **extra}]


@pytest.mark.parametrize("name", NATIVE)
def test_a_steady_loop_is_stepped_in_c_on_torchs_trajectory(name, addresses_read_by):
    """From its second step a CPU loop's step is checked and made by fastopt._steady (one C call for
    the two merged groups), under a scheduler that changes each group's lr every step: each
    tensor's step count advanced, autograd's version counters bumped, the trajectory torch's."""
    torch.manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in ((4, 3), (4,), (2, 4), (2,))]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {}))
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a, b = getattr(torch.optim, name)(two_groups(params), **flags), getattr(ft, name)(two_groups(ours), **flags)
    sa, sb = (torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in (a, b))
    in_c = []
    for t in range(8):
        give(params, ours, [torch.randn_like(p) for p in params])
        versions = [q._version for q in ours]
        a.step()
        in_c.append(native_calls(b))
        assert [q._version for q in ours] > versions and all(q._version > v for q, v in zip(ours, versions))
        sa.step(), sb.step()
    assert in_c == [0] + [1] * 7
    assert_same(params, ours, a, b)
    if name != "SGD":
        assert [float(b.state[q]["step"]) for q in ours] == [8.0] * 4


def test_optimizers_the_native_step_does_not_take_step_in_python():
    """NAdam (its mu products), LAMB (its norms), a list among the values (it may change in
    place): the Python steady step, no native plan."""
    def plan_after_steps(opt, ps, grads=None):
        for _ in range(3):
            for i, p in enumerate(ps):
                p.grad = None if grads and i in grads else torch.ones_like(p)
            opt.step()
        return opt._native
    ps = [torch.nn.Parameter(torch.randn(3)) for _ in range(2)]
    assert plan_after_steps(ft.AdamW(ps), ps) is not None
    assert plan_after_steps(ft.NAdam(ps), ps) is None
    assert plan_after_steps(ft.LAMB(ps), ps) is None
    assert plan_after_steps(ft.AdamW([{"params": ps, "betas": [0.9, 0.99]}]), ps) is None


@pytest.mark.parametrize("name", ["AdamW", "RAdam", "Adagrad", "RMSprop", "SGD"])
def test_params_skipped_on_some_steps_lag_and_the_native_step_gives_each_its_own_step(name, addresses_read_by):
    """A loop where some params have no gradient on some steps (frozen for a while, a branch not
    taken, an expert not routed): each keeps its own count, as in torch; once every param has a
    gradient again the native step steps them all, each with its own step (bias corrections,
    Adagrad's lr decay), on torch's trajectory."""
    torch.manual_seed(8)
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in ((4, 3), (4,), (2, 4), (2,))]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {}),
                 **({"lr_decay": 0.1} if name == "Adagrad" else {}))
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a, b = getattr(torch.optim, name)(two_groups(params), foreach=False, **flags), getattr(ft, name)(two_groups(ours), **flags)
    skipped = {0: {1}, 1: {1, 2}, 2: {2}, 4: {0}}  # step: the params without a gradient
    in_c = []
    for t in range(70):  # (a plan declining its first step is made again 64 steps later)
        grads = [None if i in skipped.get(t, ()) else torch.randn_like(p) for i, p in enumerate(params)]
        give(params, ours, grads)
        a.step()
        in_c.append(native_calls(b))
    assert in_c[-3:] == [1, 1, 1], in_c
    assert_same(params, ours, a, b)
    if name != "SGD":
        assert len({float(b.state[q]["step"]) for q in ours}) > 1  # (the members are at different steps)


def _move_memory(o, ps):
    ps[1].data = ps[1].data.clone()


def _move_state_memory(o, ps):
    s = o.state[ps[0]]
    key = "momentum_buffer" if "momentum_buffer" in s else "exp_avg"
    s[key].data = s[key].data.clone() * 0.5


def _replace_state(o, ps):
    s = o.state[ps[0]]
    key = "momentum_buffer" if "momentum_buffer" in s else "exp_avg"
    s[key] = s[key].clone() * 0.5


def _reset_step_count(o, ps):
    if "step" not in o.state[ps[0]]:
        return False  # (SGD counts no steps)
    o.state[ps[0]]["step"].fill_(1.0)  # (an in-place op on the step tensor: a new version)


def _tensor_lr(o, ps):
    o.param_groups[0]["lr"] = torch.tensor(5e-3, dtype=torch.float64)


def _other_hyper(o, ps):
    g = o.param_groups[0]
    g["momentum" if "momentum" in g and g["momentum"] else "eps"] = 0.5 if "momentum" in g and g["momentum"] else 1e-3


def _group_weight_decay(o, ps):
    o.param_groups[1]["weight_decay"] = 0.3  # a merged member's: read per tensor


def _new_float_lr(o, ps):
    o.param_groups[1]["lr"] = 3e-2


def _param_to_other_group(o, ps):
    o.param_groups[1]["params"].insert(0, o.param_groups[0]["params"].pop())


def _group_added(o, ps):
    o.add_param_group({"params": [ps[-1]], "lr": 1e-3})


def _params_exchanged(o, ps):
    first, second = o.param_groups[0]["params"], o.param_groups[1]["params"]
    first[1], second[0] = second[0], first[1]  # (each group as long as it was)


def _groups_reordered(o, ps):
    o.param_groups.reverse()


def _grad_dropped(o, ps):
    ps[2].grad = None


def _checkpoint_reloaded(o, ps):
    o.load_state_dict(copy.deepcopy(o.state_dict()))


def _entry_added(o, ps):
    o.param_groups[0]["name"] = "matrices"  # (an entry no step reads: declined, then stepped alike)


EVENTS = {f.__name__.lstrip("_"): f for f in (
    _move_memory, _move_state_memory, _replace_state, _reset_step_count, _tensor_lr, _other_hyper,
    _group_weight_decay, _new_float_lr, _param_to_other_group, _params_exchanged, _group_added, _groups_reordered, _grad_dropped,
    _checkpoint_reloaded, _entry_added)}
# what the native step reads rather than declines (step counts: from memory, each its own)
READ_EACH_STEP = ("group_weight_decay", "new_float_lr", "reset_step_count")


@pytest.fixture(params=["torch's C function", "data_ptr()"])
def addresses_read_by(request, monkeypatch):
    """The two ways the native step reads a tensor's data pointer (where torch has its C function
    for it, and where it has not)."""
    if request.param == "data_ptr()":
        monkeypatch.setattr(ft, "_TENSOR_ADDRESS", 0)
    elif not ft._TENSOR_ADDRESS:
        pytest.skip("this torch has no C function for a tensor's data pointer")
    return request.param


def test_a_tensor_whose_data_pointer_torch_cannot_give_is_declined_not_a_crash():
    """torch's C function throws a C++ exception for a tensor without accessible storage (sparse
    here; a wrapper subclass, a fake tensor): the barrier turns it into "no address"."""
    if not ft._TENSOR_ADDRESS:
        pytest.skip("this torch has no C function for a tensor's data pointer")
    from fastopt import _steady
    t = torch.randn(5)
    assert _steady.tensor_address(ft._TENSOR_ADDRESS, t) == t.data_ptr()
    assert _steady.tensor_address(ft._TENSOR_ADDRESS, t.to_sparse()) is None
    assert _steady.tensor_address(ft._TENSOR_ADDRESS, "not a tensor") is None


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_the_native_step_declines_what_changed_and_torchs_trajectory_follows(name, event, addresses_read_by):
    """What a loop may change between two steps (after backward): the native step reads it (lr, a
    merged member's weight decay) or declines, writing nothing, and the Python step takes it;
    either way the trajectory is torch.optim's through the change and after."""
    torch.manual_seed(6)
    shapes = ((4, 3), (4,), (2, 4), (2,), (3,))
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in shapes]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a = getattr(torch.optim, name)(two_groups(params[:4]), foreach=False, **flags)
    b = getattr(ft, name)(two_groups(ours[:4]), **flags)
    in_c, applies = [], True
    for t in range(6):
        give(params, ours, [torch.randn_like(p) for p in params])
        if t == 3:
            applies = EVENTS[event](a, params) is not False
            EVENTS[event](b, ours)
        a.step()
        in_c.append(native_calls(b))
    assert in_c[:3] == [0, 1, 1]
    assert in_c[3] == (event in READ_EACH_STEP or not applies), in_c
    assert_same(params, ours, a, b)


def test_the_native_step_leaves_hooks_and_the_profiler_to_python_and_takes_grad_scaling_as_torch():
    """A step hook registered, the profiler on: the Python step (hook called, step recorded).
    GradScaler's scale and found-inf flag are taken natively as torch's fused optimizers take
    them: an inf step skipped (nothing written or counted), the others dividing by the scale, the
    gradients left unscaled."""
    torch.manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(3, 2)) for _ in range(2)]
    opt = ft.AdamW(params, lr=0.1)

    def step(grad=1.0):
        for p in params:
            p.grad = torch.full_like(p, grad)
        return native_calls(opt)
    assert [step() for _ in range(3)] == [0, 1, 1]
    calls = []
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    for register in (opt.register_step_pre_hook, opt.register_step_post_hook, register_optimizer_step_pre_hook,
                     register_optimizer_step_post_hook):
        handle = register(lambda o, args, kwargs: calls.append(register.__name__))
        assert step() == 0 and calls == [register.__name__]
        handle.remove()
        calls.clear()
        assert step() == 1
    with torch.autograd.profiler.profile() as prof:
        assert step() == 0
    assert any("AdamW.step" in e.name for e in prof.function_events)
    assert step() == 1
    plan, before = opt._native, [p.detach().clone() for p in params]
    counts = float(opt.state[params[0]]["step"])
    for scale in (torch.tensor(4.0), None):  # (None: GradScaler's after its unscale_, the flag alone)
        opt.grad_scale, opt.found_inf = scale, torch.tensor(1.0)
        assert step() == 0 and opt._native is plan  # skipped natively, as torch's fused optimizers skip it
        assert all(torch.equal(p, q) for p, q in zip(params, before)) and float(opt.state[params[0]]["step"]) == counts
    opt.grad_scale, opt.found_inf = torch.tensor(3.0), torch.tensor(0.0)  # (not a power of two: torch's division)
    for p in params:
        p.grad = torch.full_like(p, 0.7)
    expected = [p.grad / 3.0 for p in params]
    assert native_calls(opt) == 1
    assert all(torch.equal(p.grad, e) for p, e in zip(params, expected))
    opt.grad_scale = torch.tensor(4.0)  # (a power of two: undone in C, exactly)
    twin = copy.deepcopy(opt)
    for p in params:
        p.grad = torch.full_like(p, 4.0)
    versions = [p.grad._version for p in params]
    assert native_calls(opt) == 1
    assert all(torch.equal(p.grad, torch.full_like(p, 1.0)) for p in params)  # left unscaled
    assert all(p.grad._version > v for p, v in zip(params, versions))  # (written in place, as torch's division)
    del opt.grad_scale, opt.found_inf
    for p in twin.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    twin.step()  # (the unscaled gradients: the same update; a copy has no GradScaler attributes)
    assert all(torch.equal(p, q) for p, q in zip(params, twin.param_groups[0]["params"]))
    assert step() == 1


def test_the_native_step_declines_gradients_it_cannot_step_and_python_takes_them():
    """A gradient with another memory layout than its param's: the native step declines, the
    Python step steps it as torch does; a sparse one: the Python step raises, nothing written."""
    torch.manual_seed(8)
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = ft.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    plan = opt._native
    assert plan is not None and plan.calls == 2
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    theirs = torch.optim.SGD(twins, lr=0.1, momentum=0.9)
    theirs.load_state_dict(copy.deepcopy(opt.state_dict()))
    grads = [torch.randn(3, 3).t(), torch.randn(3)]  # (transposed: the same shape, other strides)
    for p, q, g in zip(params, twins, grads):
        p.grad, q.grad = g, g.clone()
    opt.step()
    theirs.step()
    assert plan.calls == 2
    assert_same(twins, params, theirs, opt)
    before = [p.detach().clone() for p in params] + [opt.state[p]["momentum_buffer"].clone() for p in params]
    params[0].grad = torch.eye(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    after = [p.detach() for p in params] + [opt.state[p]["momentum_buffer"] for p in params]
    assert all(torch.equal(x, y) for x, y in zip(before, after)) and plan.calls == 2


def test_a_native_step_refused_by_c_raises_as_the_python_step_and_writes_nothing():
    """A scheduler driving lr below 0 (C refuses it): the native step raises the C library's
    ValueError naming lr, writes nothing, counts nothing."""
    params = [torch.nn.Parameter(torch.ones(4)) for _ in range(2)]
    opt = ft.Adam(params, lr=0.1)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert opt._native.calls == 2
    before = [p.detach().clone() for p in params]
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="fastopt.adam: .*lr"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, before)) and float(opt.state[params[0]]["step"]) == 3


def test_a_gradient_resized_or_retyped_behind_its_param_is_refused_by_both_steps(addresses_read_by):
    """p.grad.data swapped for another dtype or resized in place: neither the native step nor the
    Python step reads past the gradient's memory; the step raises and writes nothing."""
    params = [torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64)),
              torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    for name in ("AdamW", "NAdam"):  # (NAdam: the Python steady step)
        opt = getattr(ft, name)([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
        for _ in range(3):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
        assert (opt._native is not None) == (name == "AdamW")
        before = [p.detach().clone() for p in params]
        for change in (lambda g: setattr(g, "data", g.data.float()), lambda g: g.resize_(2)):
            params[0].grad = torch.ones_like(params[0])
            change(params[0].grad)
            with pytest.raises(RuntimeError, match="size or dtype"):
                opt.step()
            assert all(torch.equal(p, q) for p, q in zip(params, before))


def test_the_native_plan_is_collected_with_a_cycle_through_it():
    """A param naming its optimizer (a cycle through the plan's references): the optimizer, its
    params and state are collected once dropped."""
    import gc
    import weakref
    p = torch.nn.Parameter(torch.ones(8))
    opt = ft.AdamW([p])
    for _ in range(3):
        p.grad = torch.ones_like(p)
        opt.step()
    assert opt._native is not None
    p.optimizer = opt
    gone = weakref.ref(opt)
    del opt, p
    gc.collect()
    assert gone() is None


def test_equal_hyper_parameters_and_empty_params_keep_the_native_step():
    """A value set again to an equal new object (a config reloaded) and a param of no elements:
    the native step goes on (both steps treat them as unchanged)."""
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(0))]
    opt = ft.AdamW(params, lr=0.1)
    in_c = []
    for t in range(6):
        if t == 3:
            opt.param_groups[0]["betas"] = tuple([0.9, 0.999])  # (a new tuple, equal)
            opt.param_groups[0]["eps"] = float("1e-8")
        for p in params:
            p.grad = torch.ones_like(p)
        in_c.append(native_calls(opt))
    assert in_c == [0, 1, 1, 1, 1, 1]


def test_channels_last_and_not_dense_params_take_the_python_step():
    """A bucket of non-contiguous params (channels_last weights; params not dense in memory) has
    no native plan: the Python step compares each gradient's strides with its param's."""
    for made in (torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last), torch.randn(4, 2)[:, 0]):
        w = torch.nn.Parameter(made)
        opt = ft.SGD([w], lr=0.1, momentum=0.9)
        for _ in range(3):
            w.grad = torch.ones_like(w)
            opt.step()
        assert opt._native is None


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_steps_under_inference_mode_follow_torch(name):
    """A loop stepping under torch.inference_mode from its first step (state made there: inference
    tensors, which have no version counter): torch's trajectory, the native step included."""
    torch.manual_seed(9)
    params = [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)) for _ in range(2)]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
    a, b, ours = twins(params, name, foreach=False, **flags)
    for t in range(5):
        give(params, ours, [torch.randn_like(p) for p in params])
        with torch.inference_mode():
            a.step()
            b.step()
    assert_same(params, ours)
    assert b._native is not None and b._native.calls == 4


@pytest.mark.parametrize("name", ["AdamW", "SGD", "RMSprop"])
def test_a_one_cycle_schedule_cycling_betas_or_momentum_stays_native_on_torchs_trajectory(name, monkeypatch):
    """OneCycleLR sets lr and betas (momentum) anew each step: a plain group's are read by the
    native step; merged groups' betas are compared, so those steps are Python's, without a native
    plan made again each step. Both follow torch.optim."""
    torch.manual_seed(10)
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in ((4, 3), (4,), (2, 4), (2,))]
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name != "AdamW" else {}))
    made = []
    plan = ft._Optimizer._native_plan
    monkeypatch.setattr(ft._Optimizer, "_native_plan", lambda self, p: made.append(1) or plan(self, p))
    for groups in (lambda ps: ps, two_groups):
        ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
        a = getattr(torch.optim, name)(groups(params), foreach=False, **flags)
        b = getattr(ft, name)(groups(ours), **flags)
        sa, sb = (torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=40) for o in (a, b))
        in_c = []
        made.clear()
        for t in range(30):
            give(params, ours, [torch.randn_like(p) for p in params])
            a.step()
            in_c.append(native_calls(b))
            sa.step(), sb.step()
        assert_same(params, ours, a, b)
        if groups is two_groups:
            assert sum(in_c) == 0 and len(made) <= 2, (in_c, made)
        else:
            assert in_c == [0] + [1] * 29


def test_sgd_takes_a_tensor_weight_decay_as_torch_does_changed_in_place_too():
    """torch's SGD takes weight_decay as a tensor; its value at each step counts (filled in place
    mid-run), in a group of its own and in groups merged into one call."""
    torch.manual_seed(9)
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in ((4, 3), (4,), (2, 4), (2,))]
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    decays = [torch.tensor(0.1, dtype=torch.float64) for _ in range(2)]

    def groups(ps, decay):
        return [{"params": ps[:2], "weight_decay": decay}, {"params": ps[2:], "lr": 0.05}]
    a = torch.optim.SGD(groups(params, decays[0]), lr=0.1, momentum=0.9, foreach=False)
    b = ft.SGD(groups(ours, decays[1]), lr=0.1, momentum=0.9)
    for t in range(6):
        if t == 3:
            for d in decays:
                d.fill_(0.5)
        give(params, ours, [torch.randn_like(p) for p in params])
        a.step()
        b.step()
    assert_same(params, ours, a, b)


@pytest.mark.parametrize("name", ["AdamW", "NAdam", "Adagrad", "SGD"])
def test_under_a_float64_default_dtype_step_counts_are_float64_as_torchs(name, addresses_read_by):
    """torch makes each param's step (and NAdam's mu_product) float64 under a float64 default
    dtype: so does fastopt, its state dict then torch's dtypes, natively stepped from the second
    step, on torch's trajectory."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(10)
        params = [torch.nn.Parameter(torch.randn(*s)) for s in ((4, 3), (4,))]
        ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
        flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
        a, b = getattr(torch.optim, name)(params, foreach=False, **flags), getattr(ft, name)(ours, **flags)
        in_c = []
        for t in range(4):
            give(params, ours, [torch.randn_like(p) for p in params])
            a.step()
            in_c.append(native_calls(b))
    finally:
        torch.set_default_dtype(default)
    assert_same(params, ours, a, b)
    for p, q in zip(params, ours):
        assert {k: v.dtype for k, v in a.state[p].items()} == {k: v.dtype for k, v in b.state[q].items()}
    assert in_c[1:] == ([0, 0, 0] if name == "NAdam" else [1, 1, 1])


COMPLEX_FLAGS = {"SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True),
                 "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True), "AdamW": dict(lr=0.01),
                 "RMSprop": dict(lr=0.01, centered=True, momentum=0.5), "Adagrad": dict(lr=0.1, lr_decay=0.01),
                 "NAdam": dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1), "RAdam": dict(lr=0.01),
                 "Adamax": dict(lr=0.01, weight_decay=0.1)}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", sorted(COMPLEX_FLAGS))
def test_complex_params_step_as_their_real_and_imaginary_parts_as_torch_steps_them(name, dtype):
    """torch steps a complex param as its real and imaginary parts (torch.view_as_real): so does
    fastopt, beside real params in the same group, natively from the second step, grads None on
    one step; every state tensor complex, as torch's."""
    torch.manual_seed(11)
    real = torch.float32 if dtype == torch.complex64 else torch.float64

    def made():
        torch.manual_seed(11)
        return [torch.nn.Parameter(torch.randn(5, 3, dtype=dtype)), torch.nn.Parameter(torch.randn(4, dtype=real)),
                torch.nn.Parameter(torch.randn(2, dtype=dtype))]
    params, ours = made(), made()
    a = getattr(torch.optim, name)(params, foreach=False, **COMPLEX_FLAGS[name])
    b = getattr(ft, name)(ours, **COMPLEX_FLAGS[name])
    in_c = []
    for t in range(70):  # (a plan that cannot be made, at the first step, is tried again 64 steps later)
        grads = [None if (t == 0 and i == 2) else torch.randn_like(p) for i, p in enumerate(params)]
        give(params, ours, grads)
        a.step()
        in_c.append(native_calls(b))
    assert_same(params, ours, a, b)
    assert in_c[-1] == (0 if name == "NAdam" else 2)  # (one call per dtype: the complex and the real params)


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_merged_groups_of_params_of_two_dtypes_step_natively_each_member_with_its_groups_values(name):
    """Two groups differing in lr and weight decay (one call), each with float64 and complex128
    params (two buckets, each with members of both groups): natively stepped, each tensor with its
    own group's lr and weight decay, on torch's trajectory."""
    def made():
        torch.manual_seed(12)
        return [torch.nn.Parameter(torch.randn(*s, dtype=d)) for s, d in
                (((3, 2), torch.float64), ((4,), torch.complex128), ((2, 2), torch.complex128), ((5,), torch.float64))]
    params, ours = made(), made()
    flags = dict(lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))

    def groups(ps):
        return [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "lr": 0.05, "weight_decay": 0.0}]
    a, b = getattr(torch.optim, name)(groups(params), foreach=False, **flags), getattr(ft, name)(groups(ours), **flags)
    in_c = []
    for t in range(5):
        give(params, ours, [torch.randn_like(p) for p in params])
        a.step()
        in_c.append(native_calls(b))
    assert in_c == [0, 2, 2, 2, 2]
    assert_same(params, ours, a, b)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_a_param_given_a_view_of_another_layout_at_the_same_address_is_followed(name, addresses_read_by):
    """p.data = a view of the same memory in another layout (transposed; with gaps): the same data
    pointer, so the checks of the steps (native and Python) compare layouts too; torch's trajectory."""
    def made():
        torch.manual_seed(13)
        bases = [torch.randn(6, 8, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)]
        return bases, [torch.nn.Parameter(bases[0].view(-1)[:24].view(6, 4)), torch.nn.Parameter(bases[1])]
    (base_a, params), (base_b, ours) = made(), made()
    flags = dict(lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    a, b = getattr(torch.optim, name)(params, foreach=False, **flags), getattr(ft, name)(ours, **flags)
    swaps = {3: lambda base, ps: setattr(ps[1], "data", ps[1].data.t()),  # (4, 4) transposed
             5: lambda base, ps: setattr(ps[0], "data", base[0][:, :4])}  # (6, 4) with gaps, the same address
    for t in range(8):
        if t in swaps:
            swaps[t](base_a, params)
            swaps[t](base_b, ours)
        give(params, ours, [torch.randn(*p.shape, dtype=torch.float64) for p in params])
        a.step()
        b.step()
    assert_same(params, ours, a, b)
    for x, y in zip(base_a, base_b):
        torch.testing.assert_close(y, x)


def test_a_step_count_written_without_a_version_bump_is_read_by_the_python_step_too():
    """state["step"].data.fill_(0) on one param (no version bump): the Python step (a hook forces
    it) reads each count as the native step does, on torch's trajectory."""
    torch.manual_seed(14)
    params = [torch.nn.Parameter(torch.randn(3, dtype=torch.float64)) for _ in range(3)]
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a, b = torch.optim.AdamW(params, lr=0.1, foreach=False), ft.AdamW(ours, lr=0.1)
    b.register_step_post_hook(lambda *_: None)
    for t in range(6):
        if t == 3:
            a.state[params[1]]["step"].data.fill_(0)
            b.state[ours[1]]["step"].data.fill_(0)
        give(params, ours, [torch.randn_like(p) for p in params])
        a.step()
        b.step()
    assert_same(params, ours, a, b)
