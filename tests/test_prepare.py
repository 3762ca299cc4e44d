"""fastopt.prepare: a call validated once and stepped many times gives the bits of the plain
calls; what it trusts is checked where it is cheap, and documented where it is not."""
import numpy as np
import pytest

from cases import CASES, STATE, STEPPED, call, copy, make_arrays

import fastopt
from fastopt import _arrays

NAMES = sorted(CASES)


def arrays_for(name, flags, n=3, seed=0):
    rng = np.random.default_rng(seed)
    per = [make_arrays(name, flags, size, np.float32, rng) for size in (50, 7, 300)[:n]]
    return {k: [p[k] for p in per] for k in per[0]}


@pytest.mark.parametrize("name", NAMES)
def test_a_prepared_call_equals_the_plain_calls_and_skips_the_checks(name, monkeypatch):
    flags = dict(CASES[name][-3])
    flags.pop("lr", None)
    ours, plain = arrays_for(name, flags), None
    plain = copy(ours)
    state = {s: ours[s] for s in STATE[name] if s in ours}
    step = fastopt.prepare(getattr(fastopt, name), ours["params"], ours["grads"], **state, **flags)
    checks = []
    gather = _arrays.gather
    monkeypatch.setattr(fastopt._calls, "gather", lambda *a: checks.append(1) or gather(*a))
    mu, mu_plain, prepared_checks = 1.0, 1.0, []
    for t in range(1, 6):
        lr = 1e-2 / t
        for g, h in zip(ours["grads"], plain["grads"]):  # new gradients, written into the same buffers
            g[...] = h[...] = np.sin(t + np.arange(g.size, dtype=np.float32))
        kwargs = dict(step=t, lr=lr) if name in STEPPED else dict(lr=lr)
        if name == "nadam":
            kwargs["mu_product"] = mu
        before = len(checks)
        out = step(**kwargs)
        prepared_checks.append(len(checks) - before)
        out_plain = call(fastopt, name, plain, flags, step=t, mu_product=mu_plain, lr=lr) if name != "sgd" else \
            call(fastopt, name, plain, flags, step=2, lr=lr)
        if name == "nadam":
            mu, mu_plain = out, out_plain
    assert prepared_checks == [1, 0, 0, 0, 0]  # validated at the first call only
    for role in ours:
        for a, b in zip(ours[role], plain[role]):
            np.testing.assert_array_equal(a, b, err_msg=role)


def test_only_per_call_keywords_may_change_and_update_must_be_an_optimizer():
    p, g, m, v = (np.ones(4, np.float32) for _ in range(4))
    step = fastopt.prepare(fastopt.adam, p, g, m, v)
    with pytest.raises(TypeError, match=r"\['amsgrad'\] cannot change per call"):
        step(step=1, amsgrad=True)
    with pytest.raises(TypeError, match=r"adam takes no keyword\(s\) \['weigth_decay'\]"):
        step(step=1, weigth_decay=0.1)
    with pytest.raises(TypeError, match=r"adam takes no keyword\(s\) \['weigth_decay'\]"):
        fastopt.prepare(fastopt.adam, p, g, m, v, weigth_decay=0.1)
    with pytest.raises(TypeError, match="takes keywords only"):
        step(1)
    with pytest.raises(TypeError, match="update must be a fastopt optimizer"):
        fastopt.prepare(np.add, p, g)
    with pytest.raises(ValueError, match="lr must be"):  # hyper-parameters are checked at every call
        step(step=1, lr=-1.0)
    assert (p == 1).all()


def test_a_torch_tensor_whose_memory_moved_is_an_error():
    torch = pytest.importorskip("torch")
    p, g, m, v = (torch.ones(8) for _ in range(4))
    step = fastopt.prepare(fastopt.adamw, [p], [g], [m], [v])
    step(step=1)
    p.data = torch.zeros(8)
    with pytest.raises(ValueError, match="has new memory or a new shape since it was prepared"):
        step(step=2)
    assert (p == 0).all()
    q, h, n, w = (torch.ones(8) for _ in range(4))
    step = fastopt.prepare(fastopt.adamw, [q], [h], [n], [w])
    step(step=1)
    h.resize_(4)  # (the same memory, fewer elements)
    with pytest.raises(ValueError, match="a new shape"):
        step(step=2)


def test_a_prepared_call_checks_autograd_as_every_call_does():
    torch = pytest.importorskip("torch")
    p = torch.ones(8, requires_grad=True)
    g, m, v = (torch.ones(8) for _ in range(3))
    step = fastopt.prepare(fastopt.adamw, [p], [g], [m], [v])
    with torch.no_grad():
        step(step=1)
    with pytest.raises(RuntimeError, match="requires grad; update it under torch.no_grad"):
        step(step=2)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb"])
def test_a_prepared_gpu_call_makes_its_views_once(name, monkeypatch):
    """On the GPU path (a GPU, or the simulator): the arrays' views are made at the first call only,
    and the prepared steps equal plain calls."""
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("the GPU path needs a GPU or NUMBA_ENABLE_CUDASIM=1")
    from fastopt.cuda import _launch
    flags = dict(CASES[name][-3])
    flags.pop("lr", None)
    host = arrays_for(name, flags)
    dev, plain = ({k: [cuda.to_device(a) for a in v] for k, v in host.items()} for _ in range(2))
    state = {s: dev[s] for s in STATE[name] if s in dev}
    step = fastopt.prepare(getattr(fastopt, name), dev["params"], dev["grads"], **state, **flags)
    views = []
    view = _launch.view
    monkeypatch.setattr(_launch, "view", lambda a: views.append(1) or view(a))
    made = []
    for t in range(1, 4):
        before = len(views)
        step(**({"step": t} if name != "sgd" else {}), lr=1e-2)
        made.append(len(views) - before)
        call(fastopt, name, plain, flags, step=t if name != "sgd" else 2, lr=1e-2)
    assert made[0] > 0 and made[1:] == [0, 0]
    for role in dev:
        for a, b in zip(dev[role], plain[role]):
            np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host(), err_msg=role)


def test_a_host_call_is_repeated_from_its_options_with_each_calls_step_lr_and_weight_decay(monkeypatch):
    """Past its first call a prepared host call over NumPy arrays sets step, lr and weight_decay
    in its kept options struct and calls C (no Python validation, no new struct): the bits of the
    plain calls, with lr and weight_decay changed, given and then left to the prepared value, a
    grad_scale call in between (the full path), and a bad lr refused by C with nothing written."""
    rng = np.random.default_rng(3)
    ours = [[rng.standard_normal(n).astype(np.float32) for n in (5, 40)] for _ in range(4)]
    for v in ours[3]:
        np.abs(v, out=v)
    plain = [[a.copy() for a in role] for role in ours]
    step = fastopt.prepare(fastopt.adamw, *ours, lr=1e-2, weight_decay=0.1)
    full_calls = []
    run = fastopt._calls.run
    monkeypatch.setattr(fastopt._calls, "run", lambda *a, **k: full_calls.append(1) or run(*a, **k))
    calls = [dict(step=1), dict(step=2, lr=3e-3), dict(step=3), dict(step=4, weight_decay=0.5),
             dict(step=5, lr=2e-3, grad_scale=2.0), dict(step=6, lr=1e-3), dict(step=7, lr=1)]
    full = []
    for kwargs in calls:
        before = len(full_calls)
        step(**kwargs)
        full.append(len(full_calls) - before)
        fastopt.adamw(*plain, **{"lr": 1e-2, "weight_decay": 0.1, **kwargs})
    assert full == [1, 0, 0, 0, 1, 0, 0]
    for role, mine in zip(plain, ours):
        for a, b in zip(role, mine):
            np.testing.assert_array_equal(b, a)
    before = [a.copy() for role in ours for a in role]
    with pytest.raises(ValueError, match="fastopt.adamw: .*lr"):
        step(step=8, lr=-1.0)
    assert all((a == b).all() for a, b in zip(before, [a for role in ours for a in role]))


def test_torch_tensors_are_never_repeated_from_the_struct_and_per_tensor_values_are(monkeypatch):
    """Torch tensors (memory and autograd checked each call): the full path every call.  Per-tensor
    lr and weight_decay: repeated, each call's values (their length checked) in the struct."""
    torch = pytest.importorskip("torch")
    full_calls = []
    run = fastopt._calls.run
    monkeypatch.setattr(fastopt._calls, "run", lambda *a, **k: full_calls.append(1) or run(*a, **k))
    tensors = fastopt.prepare(fastopt.adamw, *([torch.ones(3)] for _ in range(4)))
    ours = [[np.ones(3, np.float32) for _ in range(2)] for _ in range(4)]
    plain = [[a.copy() for a in role] for role in ours]
    arrays = fastopt.prepare(fastopt.adamw, *ours)
    for t in (1, 2, 3):
        tensors(step=t)
        lrs = [1e-3 * t, 2e-3]
        arrays(step=t, lr=lrs, weight_decay=np.array([0.1, 0.2 * t]))
        fastopt.adamw(*plain, step=t, lr=lrs, weight_decay=np.array([0.1, 0.2 * t]))
    assert len(full_calls) == 3 + 1 + 3  # torch's every call, the arrays' first, the plain calls
    for role, mine in zip(plain, ours):
        for a, b in zip(role, mine):
            np.testing.assert_array_equal(b, a)
    with pytest.raises(ValueError, match="lr has 3 values, one per tensor"):
        arrays(step=4, lr=[1e-3] * 3)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_a_gpu_call_is_repeated_from_its_options_and_launched_from_the_rows_c_writes(name, monkeypatch):
    """Past its first call a prepared GPU call sets step, lr and weight_decay in its kept options
    struct, lets C check them and write the kernel's constants, and launches once (no Python
    validation, no views): the bits of the plain calls through lr changes, per-tensor lr and weight
    decay, a grad_scale call in between (the full path); a bad lr refused by C, nothing launched."""
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("the GPU path needs a GPU or NUMBA_ENABLE_CUDASIM=1")
    from fastopt.cuda import _launch
    flags = {"momentum": 0.9} if name == "sgd" else {}
    host = arrays_for(name, flags)
    dev, plain = ({k: [cuda.to_device(a) for a in v] for k, v in host.items()} for _ in range(2))
    state = {s: dev[s] for s in STATE[name] if s in dev}
    step = fastopt.prepare(getattr(fastopt, name), dev["params"], dev["grads"], **state, **flags)
    full_calls, launches = [], []
    run, launch = fastopt._calls.run, _launch.Call.launch
    monkeypatch.setattr(fastopt._calls, "run", lambda *a, **k: full_calls.append(1) or run(*a, **k))
    monkeypatch.setattr(_launch.Call, "launch", lambda self, *a, **k: launches.append(1) or launch(self, *a, **k))
    calls = [dict(lr=1e-2), dict(lr=3e-3), dict(lr=[1e-2, 2e-3, 5e-3]), dict(lr=1e-2, weight_decay=[0.1, 0.0, 0.2]),
             dict(lr=2e-3, grad_scale=2.0), dict(lr=1e-3)]
    full, launched = [], []
    for t, kwargs in enumerate(calls, 1):
        kwargs = {**kwargs, **({"step": t} if name != "sgd" else {})}
        before, launches_before = len(full_calls), len(launches)
        step(**kwargs)
        full.append(len(full_calls) - before)
        launched.append(len(launches) - launches_before)
        call(fastopt, name, plain, flags, **kwargs)
    assert full == [1, 0, 0, 0, 1, 0] and launched == [1] * len(calls)
    for role in dev:
        for a, b in zip(dev[role], plain[role]):
            np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host(), err_msg=role)
    before = [a.copy_to_host() for role in dev.values() for a in role]
    launches.clear()
    with pytest.raises(ValueError, match=f"fastopt.{name}: .*lr"):
        step(**({"step": 7} if name != "sgd" else {}), lr=-1.0)
    assert launches == []
    assert all((a == b.copy_to_host()).all() for a, b in zip(before, [a for role in dev.values() for a in role]))
