"""fastopt.torch against torch.optim over torch's own optimizer test grid.

The grid is torch's ``optim_db`` (torch/testing/_internal/common_optimizers.py): for every optimizer
fastopt.torch also has (matched by class name), every ``OptimizerInput`` torch tests on the CPU
(with the global "cliquey" flags expanded as torch's own tests expand them, plus an explicit
``foreach=True``), float32 and float64, and several gradient schedules.  torch.optim and fastopt
step identical parameters with identical gradients; after every step every param and every tensor
of ``opt.state[p]`` (keys and values; ``step`` as a float) must agree.

Also: per-group hyper-parameters, state_dict round trips both ways mid-run, 0-d tensor lr, lr
schedulers (torch's ``scheduler_inputs`` plus StepLR/ExponentialLR), and torch's error inputs
(fastopt must raise the same exception type).  A summary of counts is printed at the end of the
session (terminal summary).

Run:  python -m pytest -q test_torch_grid.py
"""
from __future__ import annotations

import collections
import contextlib
import copy
import io
import re
import sys
import types
import unittest
import warnings

import pytest

torch = pytest.importorskip("torch")

try:  # torch.testing._internal.common_utils imports expecttest (a torch test-only dependency)
    import expecttest  # noqa: F401
except ImportError:
    _stub = types.ModuleType("expecttest")
    _stub.TestCase = unittest.TestCase
    _stub.ACCEPT = False
    sys.modules["expecttest"] = _stub

from torch.testing._internal.common_optimizers import (  # noqa: E402
    OptimizerErrorEnum,
    _get_optim_inputs_including_global_cliquey_kwargs,
    optim_db,
)

import fastopt.torch as ft  # noqa: E402

# ----------------------------------------------------------------------------------------------
# configuration

INFOS = {info.optim_cls.__name__: info for info in optim_db if info.optim_cls.__name__ in ft.__all__}
NAMES = sorted(INFOS)
DTYPES = (torch.float32, torch.float64)
SHAPES = ((4, 3), (3,), (1,), ())  # a 2-D weight, a bias, a 1-element tensor, a 0-d tensor
STEPS = 24
# fastopt aims at near-bitwise equality with torch's for-loop; the session summary prints the
# largest normalized difference seen, per optimizer and dtype, so a drift shows before it fails.
TOL = {torch.float32: dict(rtol=5e-6, atol=5e-7), torch.float64: dict(rtol=2e-13, atol=1e-14)}
TOL.update({torch.complex64: TOL[torch.float32], torch.complex128: TOL[torch.float64]})
SCHEDULES = ("dense", "late", "intermittent", "all_none", "zero_grad_subset", "accumulate")
# deliberately rejected by fastopt.torch (module docstring): kwarg -> exception type at construction
DOCUMENTED_REJECTIONS = {"differentiable": ValueError}


def _dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def _desc_id(desc):
    return re.sub(r"[^A-Za-z0-9&=._-]+", "_", desc).strip("_")


# ----------------------------------------------------------------------------------------------
# session summary (printed by a terminal-summary hook registered from an autouse fixture)

COUNTS: collections.Counter = collections.Counter()
FAILS: list = []   # (test kind, ident, first line of the failure)
NOTES: collections.Counter = collections.Counter()  # differences that do not fail a test (error messages, empty state entries)
MAXDIFF: dict = {}  # (optimizer, dtype) -> largest |fastopt - torch| / (atol + rtol*|torch|) seen


class _Tally:
    status = None


@contextlib.contextmanager
def tally(kind, ident):
    rec = _Tally()
    try:
        yield rec
    except pytest.skip.Exception as e:
        COUNTS[f"{kind}: skipped ({e.msg})"] += 1
        raise
    except AssertionError as e:
        COUNTS[f"{kind}: MISMATCH"] += 1
        FAILS.append((kind, ident, str(e).strip().splitlines()[0][:300]))
        raise
    except Exception as e:  # noqa: BLE001
        COUNTS[f"{kind}: ERROR"] += 1
        FAILS.append((kind, ident, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"))
        raise
    else:
        COUNTS[f"{kind}: {rec.status or 'equal'}"] += 1


class _SummaryPlugin:
    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section("fastopt.torch vs torch.optim grid summary")
        for key in sorted(COUNTS):
            tr.write_line(f"{COUNTS[key]:6d}  {key}")
        if MAXDIFF:
            tr.write_line("largest normalized diff on compared steps (1.0 = tolerance), by optimizer/dtype:")
            for (name, dt), v in sorted(MAXDIFF.items()):
                tr.write_line(f"    {name:8s} {dt:8s} {v:.3g}")
        if NOTES:
            tr.write_line(f"{len(NOTES)} distinct notes (not failures), with counts:")
            for line, n in sorted(NOTES.items()):
                tr.write_line(f"    {n:4d}x {line}")
        if FAILS:
            tr.write_line(f"{len(FAILS)} mismatches/errors (kind | test | first line):")
            for kind, ident, line in FAILS:
                tr.write_line(f"    {kind} | {ident} | {line}")


@pytest.fixture(scope="session", autouse=True)
def _grid_summary(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("fastopt-grid-summary"):
        pm.register(_SummaryPlugin(), "fastopt-grid-summary")
    yield


# ----------------------------------------------------------------------------------------------
# comparison helpers


def _close(actual, expected, what, ctx):
    """assert_close(fastopt's, torch's) with TOL of the tensor's dtype; a fast path first."""
    tol = ctx.get("tol") or TOL.get(expected.dtype, TOL[torch.float32])
    if actual.shape == expected.shape and actual.dtype == expected.dtype:
        d = (actual.detach() - expected.detach()).abs()
        bound = tol["atol"] + tol["rtol"] * expected.detach().abs()
        both_nan = actual.isnan() & expected.isnan()
        if bool(((d <= bound) | both_nan).all()):
            if d.numel():
                r = float((d / bound).max())
                key = (ctx["name"], _dtype_id(ctx["dtype"]))
                MAXDIFF[key] = max(MAXDIFF.get(key, 0.0), r)
            return
    torch.testing.assert_close(actual.detach(), expected.detach(), **tol, equal_nan=True,
                               msg=lambda m: f"{ctx['where']}: {what} differs: {' '.join(m.split())}")


def compare(P, Q, a, b, ctx):
    """Every param and every entry of opt.state[p]: torch (a, params P) vs fastopt (b, params Q)."""
    for i, (p, q) in enumerate(zip(P, Q)):
        _close(q, p, f"param[{i}] shape={tuple(p.shape)}", ctx)
        sa, sb = a.state.get(p, {}), b.state.get(q, {})
        if set(sa) != set(sb):
            raise AssertionError(f"{ctx['where']}: state keys of param[{i}] differ: "
                                 f"torch {sorted(sa)} vs fastopt {sorted(sb)}")
        for k in sorted(sa):
            x, y = sa[k], sb[k]
            if k == "step":
                fx, fy = float(x), float(y)
                if fx != fy:
                    raise AssertionError(f"{ctx['where']}: state['step'] of param[{i}] differs: "
                                         f"torch {fx} vs fastopt {fy}")
            elif torch.is_tensor(x):
                if not torch.is_tensor(y):
                    raise AssertionError(f"{ctx['where']}: state[{k!r}] of param[{i}]: torch has a tensor, "
                                         f"fastopt {type(y).__name__}")
                _close(y, x, f"state[{k!r}] of param[{i}]", ctx)
            elif x != y:
                raise AssertionError(f"{ctx['where']}: state[{k!r}] of param[{i}] differs: {x!r} vs {y!r}")


def _as_float(v):
    return float(v) if torch.is_tensor(v) or isinstance(v, (int, float)) else v


def compare_groups(a, b, ctx):
    """Hyper-parameters torch's param groups hold (defaults included) must be in fastopt's, equal."""
    if len(a.param_groups) != len(b.param_groups):
        raise AssertionError(f"{ctx['where']}: {len(a.param_groups)} vs {len(b.param_groups)} param groups")
    for gi, (ga, gb) in enumerate(zip(a.param_groups, b.param_groups)):
        for k, v in ga.items():
            if k == "params":
                continue
            if k not in gb:
                raise AssertionError(f"{ctx['where']}: param_groups[{gi}] lacks torch's key {k!r}")
            w = gb[k]
            if isinstance(v, (tuple, list)):
                same = len(v) == len(w) and all(_as_float(x) == _as_float(y) for x, y in zip(v, w))
            else:
                same = _as_float(v) == _as_float(w)
            if not same:
                raise AssertionError(f"{ctx['where']}: param_groups[{gi}][{k!r}]: torch {v!r} vs fastopt {w!r}")


# ----------------------------------------------------------------------------------------------
# building and stepping a pair


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def _twin(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _spec(params, groups):
    """params as given to the optimizer: a list, or param groups [(indices, overrides), ...]."""
    if groups is None:
        return list(params)
    return [dict(params=[params[i] for i in idx], **copy.deepcopy(over)) for idx, over in groups]


class Pair:
    """torch.optim's optimizer (a) on params P and fastopt's (b) on an identical copy Q."""

    def __init__(self, name, dtype, kwargs, groups=None):
        self.name, self.dtype, self.kwargs, self.groups = name, dtype, kwargs, groups
        self.P = make_params(dtype)
        self.Q = _twin(self.P)
        try:
            self.a = INFOS[name].optim_cls(_spec(self.P, groups), **copy.deepcopy(kwargs))
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"torch rejects these kwargs on CPU: {type(e).__name__}")
        self.b = getattr(ft, name)(_spec(self.Q, groups), **copy.deepcopy(kwargs))
        self.gen = torch.Generator().manual_seed(1234)
        self.t = 0
        self.ctx = dict(name=name, dtype=dtype, where="after construction")
        compare_groups(self.a, self.b, self.ctx)
        compare(self.P, self.Q, self.a, self.b, self.ctx)

    def set_grads(self, schedule):
        t, n = self.t, len(SHAPES)
        gs = [torch.randn(s, generator=self.gen, dtype=self.dtype) for s in SHAPES]  # same stream always
        if schedule == "dense":
            mask = [True] * n
        elif schedule == "late":  # param[1] gets its first gradient at step 6
            mask = [i != 1 or t >= 6 for i in range(n)]
        elif schedule == "intermittent":  # param[2] has no gradient every third step
            mask = [i != 2 or t % 3 != 2 for i in range(n)]
        elif schedule == "all_none":  # steps where no param has a gradient
            mask = [t not in (4, 5, 13)] * n
        elif schedule == "zero_grad_subset":  # zero_grad(set_to_none=True), then a varying subset
            for opt in (self.a, self.b):
                opt.zero_grad(set_to_none=True)
            r = torch.rand(n, generator=torch.Generator().manual_seed(100 + t))
            mask = (r < 0.6).tolist()
        elif schedule == "accumulate":  # zero_grad(set_to_none=False), grads accumulated in place
            for opt in (self.a, self.b):
                opt.zero_grad(set_to_none=False)
            for ps in (self.P, self.Q):
                for p, g in zip(ps, gs):
                    if p.grad is None:
                        p.grad = g.clone()
                    else:
                        p.grad.add_(g)
            return
        else:
            raise ValueError(schedule)
        for ps in (self.P, self.Q):
            for p, g, m in zip(ps, gs, mask):
                if schedule == "zero_grad_subset":
                    if m:
                        p.grad = g.clone()
                else:
                    p.grad = g.clone() if m else None

    def step(self, schedule, schedulers=()):
        self.set_grads(schedule)
        try:
            self.a.step()
        except Exception as e:  # noqa: BLE001  (e.g. torch's fused SGD with momentum when a param
            # gets its first gradient after the others: its momentum_buffer_list holds a None)
            pytest.skip(f"torch's own step raises on CPU: {type(e).__name__}: {str(e)[:60]}")
        self.b.step()
        for sa, sb in schedulers:
            if isinstance(sa, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sa.step(1.0)  # a flat "loss": the plateau reduction fires after `patience` steps
                sb.step(1.0)
            else:
                sa.step()
                sb.step()
        self.t += 1
        self.ctx["where"] = f"step {self.t} ({schedule})"
        compare(self.P, self.Q, self.a, self.b, self.ctx)
        for gi, (ga, gb) in enumerate(zip(self.a.param_groups, self.b.param_groups)):
            if float(ga["lr"]) != float(gb["lr"]):
                raise AssertionError(f"{self.ctx['where']}: lr of group {gi}: torch {float(ga['lr'])} "
                                     f"vs fastopt {float(gb['lr'])}")


# ----------------------------------------------------------------------------------------------
# the grid


def _grid_inputs():
    """(name, desc, kwargs) of torch's CPU grid for each optimizer, cliquey flags expanded."""
    out = []
    for name in NAMES:
        info = INFOS[name]
        seen = []
        for oi in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, info):
            out.append((name, oi.desc, oi.kwargs))
            if not any(oi.kwargs.get(f) for f in ("foreach", "fused", "differentiable")):
                seen.append(oi)
        for oi in seen:  # foreach=True: accepted by fastopt, and torch runs it on the CPU too
            out.append((name, f"{oi.desc} & foreach", {**oi.kwargs, "foreach": True}))
    return out


GRID = _grid_inputs()
RUNNABLE = [g for g in GRID if not any(g[2].get(k) for k in DOCUMENTED_REJECTIONS)]
REJECTED = [g for g in GRID if any(g[2].get(k) for k in DOCUMENTED_REJECTIONS)]
BASE = [g for g in GRID if not any(g[2].get(f) for f in ("foreach", "fused", "differentiable"))]


def _ids(grid):
    return [f"{n}-{_desc_id(d)}" for n, d, _ in grid]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name,desc,kwargs", RUNNABLE, ids=_ids(RUNNABLE))
def test_grid(name, desc, kwargs, dtype, schedule):
    with tally("grid", f"{name}[{desc}] {_dtype_id(dtype)} {schedule}"):
        pair = Pair(name, dtype, kwargs)
        for _ in range(STEPS):
            pair.step(schedule)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name,desc,kwargs", REJECTED, ids=_ids(REJECTED))
def test_documented_rejection(name, desc, kwargs, dtype):
    """differentiable=True: torch runs it, fastopt documents a ValueError at construction."""
    with tally("documented rejection", f"{name}[{desc}] {_dtype_id(dtype)}") as rec:
        flag = next(k for k in DOCUMENTED_REJECTIONS if kwargs.get(k))
        INFOS[name].optim_cls(make_params(dtype), **copy.deepcopy(kwargs))  # torch accepts it
        with pytest.raises(DOCUMENTED_REJECTIONS[flag]):
            getattr(ft, name)(make_params(dtype), **copy.deepcopy(kwargs))
        rec.status = "rejected as documented"


SPARSE = [n for n in NAMES if INFOS[n].supports_sparse]
COMPLEX = [n for n in NAMES if INFOS[n].supports_complex]


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # torch's sparse Adagrad
@pytest.mark.parametrize("name", SPARSE)
def test_documented_rejection_sparse_grad(name):
    """torch supports sparse gradients here; fastopt documents a RuntimeError (at the step)."""
    with tally("documented rejection", f"{name} sparse grad") as rec:
        def run(cls):
            p = torch.nn.Parameter(torch.randn(5, 2))
            opt = cls([p], lr=0.1)
            p.grad = torch.sparse_coo_tensor([[0, 3]], torch.ones(2, 2), (5, 2), check_invariants=True)
            opt.step()
        run(INFOS[name].optim_cls)
        with pytest.raises(RuntimeError, match="sparse"):
            run(getattr(ft, name))
        rec.status = "rejected as documented"


COMPLEX_GRID = [g for g in BASE if g[0] in COMPLEX]


@pytest.mark.parametrize("dtype", (torch.complex64, torch.complex128), ids=_dtype_id)
@pytest.mark.parametrize("name,desc,kwargs", COMPLEX_GRID, ids=_ids(COMPLEX_GRID))
def test_complex(name, desc, kwargs, dtype):
    """torch steps complex params as their real and imaginary parts (torch.view_as_real); fastopt
    too, over the grid's inputs, a param without a gradient every third step."""
    with tally("complex", f"{name}[{desc}] {_dtype_id(dtype)}"):
        pair = Pair(name, dtype, kwargs)
        for _ in range(STEPS):
            pair.step("intermittent")


# ----------------------------------------------------------------------------------------------
# param groups, tensor lr, schedulers, state_dict round trips


def _lr_of(kwargs, name):
    lr = kwargs.get("lr", INFOS[name].optim_cls.__init__.__defaults__[0])
    return float(lr)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name,desc,kwargs", BASE, ids=_ids(BASE))
def test_param_groups(name, desc, kwargs, dtype):
    """Two groups with their own lr and weight_decay over the grid's kwargs (the defaults)."""
    with tally("param groups", f"{name}[{desc}] {_dtype_id(dtype)}"):
        lr = _lr_of(kwargs, name)
        groups = [((0, 3), dict(lr=lr * 0.5, weight_decay=0.05)),
                  ((1, 2), dict(lr=lr * 3.0, weight_decay=0.0))]
        pair = Pair(name, dtype, kwargs, groups=groups)
        for _ in range(STEPS):
            pair.step("dense")


def _tensor_lr_inputs():
    out = []
    for name in NAMES:
        out.append((name, "tensor lr", {"lr": torch.tensor(0.01)}))
        if "cpu" in INFOS[name].supports_fused_on:
            out.append((name, "tensor lr & fused", {"lr": torch.tensor(0.01), "fused": True}))
        out.append((name, "tensor lr & foreach", {"lr": torch.tensor(0.01), "foreach": True}))
    return out


TENSOR_LR = _tensor_lr_inputs()


@pytest.mark.parametrize("schedule", ("dense", "intermittent"))
@pytest.mark.parametrize("dtype,lr_dtype", [(torch.float32, "float32"), (torch.float64, "float32"),
                                            (torch.float64, "param_dtype")],
                         ids=["float32", "float64-lr_float32", "float64-lr_float64"])
@pytest.mark.parametrize("name,desc,kwargs", TENSOR_LR, ids=_ids(TENSOR_LR))
def test_tensor_lr(name, desc, kwargs, dtype, schedule, lr_dtype):
    """lr as a 0-d tensor (torch.tensor(0.01), float32 as in torch's grid, or of the params' dtype),
    under ExponentialLR (which writes the tensor in place)."""
    if lr_dtype == "param_dtype":
        kwargs = dict(kwargs, lr=kwargs["lr"].to(dtype))
    with tally("tensor lr", f"{name}[{desc}] {_dtype_id(dtype)} {schedule} lr:{lr_dtype}"):
        pair = Pair(name, dtype, kwargs)
        if dtype == torch.float64 and lr_dtype == "float32":
            # documented difference: torch computes lr / (1 - beta1^t) in the lr tensor's float32,
            # fastopt its per-step scalars in double; float64 params then agree to float32's rounding
            pair.ctx["tol"] = dict(rtol=1e-6, atol=1e-7)
        scheds = [(torch.optim.lr_scheduler.ExponentialLR(pair.a, gamma=0.9),
                   torch.optim.lr_scheduler.ExponentialLR(pair.b, gamma=0.9))]
        for _ in range(STEPS):
            pair.step(schedule, scheds)


def _scheduler_inputs():
    out = []
    for name in NAMES:
        makers = [[lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5)],
                  [lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)]]
        makers += [list(m) for m in INFOS[name].scheduler_inputs]
        for i, m in enumerate(makers):
            out.append((name, i, m))
    return out


SCHED = _scheduler_inputs()


def _sched_id(entry):
    name, i, makers = entry
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return f"{name}-{i}-" + "+".join(type(m(probe)).__name__ for m in makers)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("entry", SCHED, ids=[_sched_id(e) for e in SCHED])
def test_lr_scheduler(entry, dtype):
    """torch's scheduler_inputs for the optimizer (plus StepLR, ExponentialLR), over two groups."""
    name, _, makers = entry
    with tally("lr scheduler", f"{_sched_id(entry)} {_dtype_id(dtype)}"):
        lr = _lr_of({}, name)
        groups = [((0, 1), dict(lr=lr)), ((2, 3), dict(lr=lr * 2))]
        pair = Pair(name, dtype, {}, groups=groups)
        scheds = [(m(pair.a), m(pair.b)) for m in makers]
        for _ in range(STEPS):
            pair.step("dense", scheds)


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def compare_state_dicts(sa, sb, ctx):
    """torch's state_dict vs fastopt's: same state entries (index, keys, values), same groups.
    Empty entries (a param with no state) are equivalent to absent ones, and only noted."""
    empty_a = {i for i, v in sa["state"].items() if not v}
    empty_b = {i for i, v in sb["state"].items() if not v}
    if empty_a != empty_b:
        NOTES.update([f"{ctx['name']}: empty state_dict['state'] entries: torch {sorted(empty_a)} "
                     f"vs fastopt {sorted(empty_b)}"])
    sa = dict(sa, state={i: v for i, v in sa["state"].items() if v})
    sb = dict(sb, state={i: v for i, v in sb["state"].items() if v})
    if sorted(sa["state"]) != sorted(sb["state"]):
        raise AssertionError(f"{ctx['where']}: state_dict['state'] indices differ: "
                             f"torch {sorted(sa['state'])} vs fastopt {sorted(sb['state'])}")
    for i in sa["state"]:
        xa, xb = sa["state"][i], sb["state"][i]
        if set(xa) != set(xb):
            raise AssertionError(f"{ctx['where']}: state_dict['state'][{i}] keys: {sorted(xa)} vs {sorted(xb)}")
        for k in xa:
            if k == "step":
                if float(xa[k]) != float(xb[k]):
                    raise AssertionError(f"{ctx['where']}: state_dict['state'][{i}]['step']: "
                                         f"torch {float(xa[k])} vs fastopt {float(xb[k])}")
            elif torch.is_tensor(xa[k]):
                _close(xb[k], xa[k], f"state_dict['state'][{i}][{k!r}]", ctx)
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        if ga["params"] != gb["params"]:
            raise AssertionError(f"{ctx['where']}: param_groups params {ga['params']} vs {gb['params']}")


@pytest.mark.parametrize("schedule", ("dense", "late"))
@pytest.mark.parametrize("direction", ("torch_to_fastopt", "fastopt_to_torch"))
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name,desc,kwargs", BASE, ids=_ids(BASE))
def test_state_dict_roundtrip(name, desc, kwargs, dtype, direction, schedule):
    """Mid-run, one side's state_dict (through torch.save/torch.load(weights_only=True)) is loaded
    into a fresh optimizer of the other library on the same params; the run continues."""
    with tally("state_dict roundtrip", f"{name}[{desc}] {_dtype_id(dtype)} {direction} {schedule}"):
        pair = Pair(name, dtype, kwargs)
        half = STEPS // 2
        for _ in range(half):
            pair.step(schedule)
        pair.ctx["where"] = f"state_dict at step {half}"
        compare_state_dicts(pair.a.state_dict(), pair.b.state_dict(), pair.ctx)
        # both sides load the source's state dict, so both went through a load (torch's load casts
        # state such as NAdam's mu_product to the params' dtype) and must continue alike
        source = pair.a if direction == "torch_to_fastopt" else pair.b
        saved = _roundtrip(source.state_dict())
        pair.a = INFOS[name].optim_cls(pair.P, **copy.deepcopy(kwargs))
        pair.a.load_state_dict(copy.deepcopy(saved))
        pair.b = getattr(ft, name)(pair.Q, **copy.deepcopy(kwargs))
        pair.b.load_state_dict(copy.deepcopy(saved))
        pair.ctx["where"] = f"after load_state_dict at step {half}"
        compare(pair.P, pair.Q, pair.a, pair.b, pair.ctx)
        for _ in range(STEPS - half):
            pair.step(schedule)


# ----------------------------------------------------------------------------------------------
# error inputs


def _error_inputs():
    out = []
    for name in NAMES:
        info = INFOS[name]
        for i, e in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            if e.error_on in (OptimizerErrorEnum.CONSTRUCTION_ERROR, OptimizerErrorEnum.STEP_ERROR):
                out.append((name, i, e, "literal"))
                if e.optimizer_error_input.params is None:
                    out.append((name, i, e, "with_params"))
    return out


ERRORS = _error_inputs()


def _raise_or_warn(cls, params, kwargs, error_on):
    """(exception or warning raised by the construction / the step, or None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = cls(params, **kwargs)
            if error_on == OptimizerErrorEnum.STEP_ERROR:
                opt.step()
        except Exception as e:  # noqa: BLE001
            return e
    return caught[0].message if caught else None


@pytest.mark.parametrize("name,index,err,params_mode", ERRORS,
                         ids=[f"{n}-{i}-{_desc_id(e.optimizer_error_input.desc)}-{m}" for n, i, e, m in ERRORS])
def test_error_inputs(name, index, err, params_mode):
    """torch's error inputs: fastopt raises (or warns) the same exception type.  'literal' passes
    the params exactly as torch's test_errors does (params=None for hyper-parameter checks);
    'with_params' substitutes a real parameter list for None so the hyper-parameter check itself
    is what is tested."""
    oi = err.optimizer_error_input
    with tally("error input", f"{name}[{oi.desc}] {params_mode}") as rec:
        def params():
            if oi.params is None and params_mode == "with_params":
                return [torch.nn.Parameter(torch.randn(2, 2))]
            return oi.params

        expected = _raise_or_warn(INFOS[name].optim_cls, params(), copy.deepcopy(oi.kwargs), err.error_on)
        if not isinstance(expected, err.error_type):
            pytest.skip(f"torch itself does not raise {err.error_type.__name__} in this mode")
        got = _raise_or_warn(getattr(ft, name), params(), copy.deepcopy(oi.kwargs), err.error_on)
        if not isinstance(got, err.error_type):
            raise AssertionError(f"expected {err.error_type.__name__} ({err.error_regex!r}); fastopt gave "
                                 f"{type(got).__name__ if got is not None else 'nothing'}: {got}")
        if not re.search(err.error_regex, str(got)):
            rec.status = "same type, different message"
            NOTES.update([f"{name}[{oi.desc}] {params_mode}: {type(got).__name__} {str(got)[:120]!r} "
                          f"does not match torch's {err.error_regex!r}"])
        else:
            rec.status = "same type and message"
