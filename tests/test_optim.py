"""fastopt.optim and fastopt.schedules: classes equal their functional updates, groups, schedules,
checkpoints (bit-exact resume in a new process), one C call per group, bad input."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cases import BUSIEST, TORCH_CLASS, call, state_names

from fastopt import _calls, functional, optim, schedules
from fastopt._optimizers import OPTIMIZERS

EXTRA = {"adagrad": dict(initial_accumulator_value=0.1)}  # a constructor's own argument

CLASSES = {name: (getattr(optim, row.class_name), dict(BUSIEST[name], **EXTRA.get(name, {})))
           for name, row in OPTIMIZERS.items()}


def problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((4, 3), (3,), (100,))]


def gradient(params, t):
    """A deterministic gradient for step t (a quadratic bowl plus a step-dependent ripple)."""
    return [p + np.sin(t + np.arange(p.size)).reshape(p.shape).astype(p.dtype) for p in params]


def functional_run(name, kwargs, params, steps):
    """The same training with functional calls and hand-kept state: what the class must equal."""
    kwargs = dict(kwargs)
    init = kwargs.pop("initial_accumulator_value", 0.0)
    arrays = {"params": params, **{s: [np.full_like(p, init) for p in params] for s in state_names(name, kwargs)}}
    mu = 1.0
    for t in range(1, steps + 1):
        arrays["grads"] = gradient(params, t)
        out = call(functional, name, arrays, kwargs, step=t, mu_product=mu)
        mu = out if name == "nadam" else mu
    return params


@pytest.mark.parametrize("name", list(CLASSES))
def test_class_equals_functional_updates(name):
    cls, kwargs = CLASSES[name]
    expected = functional_run(name, kwargs, problem(), 20)
    params = problem()
    opt = cls(params, **kwargs)
    for t in range(1, 21):
        opt.zero_grad()
        for buf, g in zip(opt.grads, gradient(params, t)):
            buf += g
        opt.step()
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(p, e)
    assert opt.param_groups[0]["step"] == 20


def test_param_groups_have_their_own_hyper_parameters():
    a, b = problem(), problem()
    opt = optim.AdamW([{"params": a[:2], "lr": 0.1}, {"params": a[2:], "weight_decay": 0.5}], lr=1e-2)
    for t in range(1, 6):
        opt.step(gradient(a, t))
    first = functional_run("adamw", dict(lr=0.1), b[:2], 5)
    second = functional_run("adamw", dict(lr=1e-2, weight_decay=0.5), b[2:], 5)
    for p, e in zip(a, first + second):
        np.testing.assert_array_equal(p, e)


def test_groups_that_differ_in_lr_and_weight_decay_step_in_one_c_call(monkeypatch):
    """One call for the groups that differ only in lr and weight_decay (no decay on biases,
    layer-wise lr); a group with other betas is a call of its own."""
    calls = []
    real = _calls.run
    params = problem() + problem(1)
    opt = optim.AdamW([{"params": params[:2], "weight_decay": 0.0}, {"params": params[2:3], "lr": 0.1},
                       {"params": params[3:], "betas": (0.8, 0.9)}])
    monkeypatch.setattr(_calls, "run", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    opt.step(gradient(params, 1))
    assert calls == ["adamw", "adamw"]


def test_schedule_as_lr():
    lr = schedules.linear_warmup(schedules.cosine(0.1, total_steps=10, min_lr=0.01), warmup_steps=3)
    params, expected = problem(), problem()
    opt = optim.SGD(params, lr=lr)
    for t in range(1, 15):
        opt.step(gradient(params, t))
        functional.sgd(expected, gradient(expected, t), lr=lr(t))
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(p, e)


def test_schedules():
    assert schedules.constant(0.1)(100) == 0.1
    s = schedules.step_decay(1.0, step_size=10, gamma=0.5)
    assert [s(1), s(10), s(11), s(25)] == [1.0, 1.0, 0.5, 0.25]
    assert schedules.exponential_decay(1.0, 0.5)(3) == 0.25
    c = schedules.cosine(1.0, total_steps=4, min_lr=0.2)
    assert c(1) == 1.0 and c(5) == pytest.approx(0.2) and c(100) == pytest.approx(0.2)
    assert c(3) == pytest.approx(0.6)
    w = schedules.linear_warmup(schedules.constant(0.4), warmup_steps=4)
    assert [w(1), w(2), w(4), w(5)] == [0.1, 0.2, 0.4, 0.4]
    j = schedules.join([schedules.constant(1.0), schedules.exponential_decay(0.5, 0.5)], [3])
    assert [j(1), j(3), j(4), j(5)] == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="total_steps"):
        schedules.cosine(1.0, total_steps=0)
    with pytest.raises(ValueError, match="lr must be"):
        schedules.constant(float("nan"))


def test_found_inf_skips_without_counting_the_step():
    params = problem()
    before = [p.copy() for p in params]
    opt = optim.Adam(params)
    opt.step(gradient(params, 1), found_inf=np.ones(1, np.float32))
    assert opt.param_groups[0]["step"] == 0
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_state_dict_round_trip_and_errors():
    params = problem()
    opt = optim.NAdam(params)
    for t in range(1, 4):
        opt.step(gradient(params, t))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1, 2] and sd["param_groups"][0]["step"] == 3
    assert set(sd["state"][0]) == {"exp_avg", "exp_avg_sq", "step", "mu_product"} and sd["state"][0]["step"] == 3
    other = optim.NAdam(problem())
    other.load_state_dict(sd)
    assert [s["mu_product"] for s in other.state] == [s["mu_product"] for s in opt.state]
    bad = {**sd, "state": {0: {"exp_avg": np.zeros(7)}}}
    with pytest.raises(ValueError, match="has shape"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="must be one number"):
        other.load_state_dict({**sd, "state": {0: {"step": np.zeros(2)}}})
    with pytest.raises(ValueError, match="expected 1 param groups"):
        other.load_state_dict({"param_groups": [], "state": {}})


TORCH_PAIRS = [(TORCH_CLASS[name], BUSIEST[name]) for name in TORCH_CLASS]


@pytest.mark.parametrize("name,hyper", TORCH_PAIRS)
@pytest.mark.parametrize("direction", ["torch to fastopt", "fastopt to torch"])
def test_checkpoints_move_between_torch_and_fastopt(name, hyper, direction):
    """Three steps in one library, its state dict loaded by the other, three more in both: the
    same parameters (float64; NAdam's products are float32 in torch, float64 here)."""
    torch = pytest.importorskip("torch")
    first, second = problem(1), problem(1)
    ours = getattr(optim, name)(first if direction == "fastopt to torch" else second, **hyper)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in (second if direction == "fastopt to torch" else first)]
    theirs = getattr(torch.optim, name)(tparams, **hyper)

    def torch_step(t):
        for tp, g in zip(tparams, gradient([tp.detach().numpy() for tp in tparams], t)):
            tp.grad = torch.tensor(g)
        theirs.step()

    for t in range(1, 4):
        if direction == "fastopt to torch":
            ours.step(gradient(ours.params, t))
        else:
            torch_step(t)
    if direction == "fastopt to torch":
        sd = ours.state_dict()
        sd["state"] = {i: {k: torch.as_tensor(a) for k, a in st.items()} for i, st in sd["state"].items()}
        theirs.load_state_dict(sd)
        with torch.no_grad():
            for tp, p in zip(tparams, ours.params):
                tp.copy_(torch.tensor(p))
    else:
        ours.load_state_dict(theirs.state_dict())
        for p, tp in zip(ours.params, tparams):
            p[...] = tp.detach().numpy()
    for t in range(4, 7):
        ours.step(gradient(ours.params, t))
        torch_step(t)
    for p, tp in zip(ours.params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-7 if name == "NAdam" else 1e-12, atol=1e-12)


@pytest.mark.parametrize("name,hyper", TORCH_PAIRS)
def test_state_keys_are_torchs(name, hyper):
    """A state dict names each param's state as torch.optim's does, its step count included."""
    torch = pytest.importorskip("torch")
    ours = getattr(optim, name)(problem(), **hyper)
    ours.step(gradient(problem(), 1))
    w = torch.nn.Parameter(torch.zeros(3))
    theirs = getattr(torch.optim, name)([w], **hyper)
    w.grad = torch.ones(3)
    theirs.step()
    assert set(ours.state_dict()["state"][0]) == set(theirs.state_dict()["state"][0])


@pytest.mark.parametrize("bad,error,words", [
    (lambda p: optim.Adam([]), ValueError, "empty parameter list"),
    (lambda p: optim.Adam(p, betaz=(0.9, 0.9)), TypeError, "betaz"),
    (lambda p: optim.Adam([{"params": p, "betaz": 1}]), ValueError, "unknown hyper-parameter"),
    (lambda p: optim.Adam([p[0], p[0]]), ValueError, "more than one place"),
    (lambda p: optim.Adam([np.zeros(3, np.int32)]), TypeError, "numpy arrays of float32, float64, float16.*int32"),
    (lambda p: optim.Adam(p).step([p[0]]), ValueError, "got 1 gradients for 3 parameters"),
    (lambda p: optim.Adam(p, lr=-1.0).step(), ValueError, "lr must be"),
])
def test_bad_input(bad, error, words):
    params = problem()
    before = [p.copy() for p in params]
    with pytest.raises(error, match=words):
        bad(params)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


RESUME = textwrap.dedent("""
    import sys, numpy as np, fastopt
    sys.path.insert(0, {tests!r})
    from test_optim import problem, gradient, CLASSES
    name, first, last, load, save = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    cls, kwargs = CLASSES[name]
    params = problem(dtype=np.float32)
    if load != "-":
        with np.load(load + ".params.npz") as f:
            params = [f[str(i)].copy() for i in range(len(params))]
    opt = cls(params, **kwargs)
    if load != "-":
        opt.load(load)
    for t in range(first, last + 1):
        opt.step(gradient(params, t))
    opt.save(save)
    np.savez(save + ".params.npz", **{{str(i): p for i, p in enumerate(params)}})
""")


@pytest.mark.parametrize("name", list(CLASSES))
def test_resume_is_bit_exact_in_a_new_process(name, tmp_path):
    """N steps in one go == k steps, save, load in a new process, N - k steps."""
    import os
    script = RESUME.format(tests=os.path.dirname(__file__))
    run = lambda *a: subprocess.run([sys.executable, "-c", script, name, *map(str, a)], check=True)
    run(1, 12, "-", tmp_path / "whole.npz")
    run(1, 5, "-", tmp_path / "half.npz")
    run(6, 12, tmp_path / "half.npz", tmp_path / "resumed.npz")
    with np.load(tmp_path / "whole.npz.params.npz") as a, np.load(tmp_path / "resumed.npz.params.npz") as b:
        for k in a.files:
            assert np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32))


@pytest.mark.parametrize("cls,kwargs,match", [(optim.AdamW, dict(lr=-1.0), "lr must be"),
                                              (optim.Adam, dict(betas=(1.5, 0.9)), r"betas\[0\]"),
                                              (optim.SGD, dict(lr=0.1, nesterov=True), "nesterov"),
                                              (optim.RMSprop, dict(alpha=2.0), "alpha")])
def test_bad_hyper_parameters_fail_at_construction(cls, kwargs, match):
    """As torch.optim's constructors do: not at the first step."""
    with pytest.raises(ValueError, match=match):
        cls(problem(), **kwargs)


def test_sgd_group_added_mid_run_with_its_own_lr_and_weight_decay():
    """SGD's first momentum step for the new group's params in the same set as the others' later
    steps: each with its own group's lr and weight decay, as separate optimizers give."""
    a, b, c = problem(), problem(), problem()
    opt = optim.SGD([{"params": a[:2]}], lr=0.05, momentum=0.9)
    alone = [optim.SGD([{"params": b[:2]}], lr=0.05, momentum=0.9), None]
    for t in range(1, 5):
        if t == 3:
            opt.add_param_group({"params": a[2:], "lr": 0.1, "weight_decay": 0.01})
            alone[1] = optim.SGD([{"params": c[2:]}], lr=0.1, momentum=0.9, weight_decay=0.01)
        g = gradient(a, t)
        opt.step(g[:len(opt.params)])
        alone[0].step(gradient(b, t)[:2])
        if alone[1] is not None:
            alone[1].step(gradient(c, t)[2:])
    for p, e in zip(a, b[:2] + c[2:]):
        np.testing.assert_array_equal(p, e)


def test_lamb_groups_that_clip_are_each_their_own_call():
    """LAMB's clipping norm is over a call's tensors: groups with max_grad_norm each clip by their
    own norm (one call each), as separate optimizers do."""
    a, b = problem(), problem()
    opt = optim.LAMB([{"params": a[:2]}, {"params": a[2:], "lr": 3e-2}], lr=1e-2, max_grad_norm=0.5)
    first, second = optim.LAMB(b[:2], lr=1e-2, max_grad_norm=0.5), optim.LAMB(b[2:], lr=3e-2, max_grad_norm=0.5)
    for t in range(1, 5):
        opt.step(gradient(a, t))
        g = gradient(b, t)
        first.step(g[:2])
        second.step(g[2:])
    for p, e in zip(a, b):
        np.testing.assert_array_equal(p, e)


class _Unprepared:
    """fastopt.optim's update without its prepared call: the functional call itself."""

    def _update(self, params, grads, arrays, **keywords):
        return type(self).update(params, grads, **arrays, **keywords)


@pytest.mark.parametrize("name", ["AdamW", "SGD", "NAdam"])
def test_steady_steps_repeat_their_prepared_call_and_changes_between_steps_are_followed(name, monkeypatch):
    """With the optimizer's own gradient buffers, a step after the first repeats the prepared C
    call (no functional call: _calls.run not entered); a change between steps (lr, betas or
    momentum, a group's weight decay, amsgrad or nesterov, a checkpoint loaded, a gradient buffer
    replaced, a group added) makes the call again; bit for bit the optimizer without it."""
    cls = getattr(optim, name)
    plain_cls = type("Plain" + name, (_Unprepared, cls), {})
    flags = {"SGD": dict(lr=0.1, momentum=0.9), "AdamW": dict(lr=0.01), "NAdam": dict(lr=0.01)}[name]
    a, b = problem(), problem()
    ours, plain = (c([{"params": p[:2]}, {"params": p[2:], "weight_decay": 0.1}], **flags)
                   for c, p in ((cls, a), (plain_cls, b)))
    extra = problem(2)[:1]
    events = {
        3: lambda o: o.param_groups[0].update(lr=0.05),
        4: lambda o: [g.update(**({"momentum": 0.5} if name == "SGD" else {"betas": (0.8, 0.99)}))
                      for g in o.param_groups],
        5: lambda o: o.param_groups[1].update(weight_decay=0.3),
        6: lambda o: [g.update(**({"nesterov": True} if name == "SGD" else {"amsgrad": True} if name == "AdamW" else {}))
                      for g in o.param_groups],
        7: lambda o: o.load_state_dict(o.state_dict()),
        8: lambda o: o.grads.__setitem__(1, np.zeros_like(o.grads[1])),
        9: lambda o: o.add_param_group({"params": [e.copy() for e in extra]}),
    }
    entered = []
    real = _calls.run
    monkeypatch.setattr(_calls, "run", lambda *args, **kw: entered.append(args[0]) or real(*args, **kw))
    for t in range(1, 13):
        for o in (ours, plain):
            if t in events:
                events[t](o)
            for buf, g in zip(o.grads, gradient(o.params, t)):
                buf[...] = g
        entered.clear()
        ours.step()
        if t in (3, 11, 12) and name != "NAdam":  # (NAdam's mu products: its call is made whole each step;
            assert entered == [], t                #  SGD's second step is its first without new buffers)
        plain.step()
        for p, q in zip(ours.params, plain.params):
            np.testing.assert_array_equal(p, q)


def test_a_list_hyper_parameter_changed_in_place_is_followed():
    """betas given as a list (a config file's) and changed in place between steps: the prepared
    call is made again, bit for bit the optimizer without it."""
    plain_cls = type("PlainAdamW", (_Unprepared, optim.AdamW), {})
    a, b = problem(), problem()
    ours, plain = optim.AdamW(a, lr=0.1, betas=[0.9, 0.999]), plain_cls(b, lr=0.1, betas=[0.9, 0.999])
    for t in range(1, 7):
        if t == 3:
            for o in (ours, plain):
                o.param_groups[0]["betas"][0] = 0.5
        ours.step(gradient(a, t))
        plain.step(gradient(b, t))
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
