"""What the benchmark runs: optimizers (with the bytes each moves), problem shapes and backends.

A backend turns one problem's arrays into a step function; every backend of a case works on the
same memory, so the roofline probe, fastopt, NumPy and torch move exactly the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fastopt
from fastopt import reference
from fastopt._optimizers import OPTIMIZERS as ROWS
from fastopt._optimizers import Optimizer as Row
from fastopt._optimizers import used_state


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as the benchmark runs it: its row of the optimizer table, and its hyper-parameters."""
    row: Row
    hyper: dict = field(default_factory=dict)
    torch_fused: bool = False  # torch.optim has fused=True for it on the CPU
    n_in: int = 1              # arrays only read (grads)

    @property
    def name(self) -> str:     # fastopt / fastopt.reference function
        return self.row.name

    @property
    def torch_name(self) -> str | None:  # torch.optim class
        return self.row.class_name if self.row.in_torch else None

    @property
    def state(self) -> tuple[str, ...]:  # state arrays these hyper-parameters use, in positional order
        return tuple(r.arg for r in used_state(self.row, self.hyper))

    @property
    def torch_state(self) -> tuple[str, ...]:
        return tuple(r.key for r in used_state(self.row, self.hyper))

    @property
    def stepped(self) -> bool:  # takes step=
        return self.row.takes_step

    @property
    def n_inout(self) -> int:  # arrays read and written: params and state
        return 1 + len(self.state)

    def bytes_per_element(self, itemsize: int) -> int:
        return (self.n_in + 2 * self.n_inout) * itemsize


HYPER = {"sgd": dict(lr=1e-3, momentum=0.9), "adam": dict(lr=1e-3), "adamw": dict(lr=1e-3, weight_decay=1e-2),
         "rmsprop": dict(lr=1e-2), "adagrad": dict(lr=1e-2), "nadam": dict(lr=2e-3), "radam": dict(lr=1e-3),
         "adamax": dict(lr=2e-3), "lion": dict(lr=1e-4), "lamb": dict(lr=1e-3)}
TORCH_FUSED = ("sgd", "adam", "adamw", "adagrad")
OPTIMIZERS = {name: Optimizer(row, HYPER.get(name, dict(lr=1e-3)), torch_fused=name in TORCH_FUSED)
              for name, row in ROWS.items()}


def _gpt2_small() -> list[tuple[int, ...]]:
    """The 148 parameter tensors of GPT-2 small (124M parameters)."""
    d, vocab, ctx = 768, 50257, 1024
    layer = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [(vocab, d), (ctx, d)] + layer * 12 + [(d,), (d,)]


def _mlp20() -> list[tuple[int, ...]]:
    """A 10-layer MLP, 64 wide: 20 tensors, 41,600 parameters."""
    return [(64, 64), (64,)] * 10


def _bert_base() -> list[tuple[int, ...]]:
    """The 199 parameter tensors of BERT-base (110M parameters): embeddings, 12 encoder layers,
    the pooler."""
    d, ff = 768, 3072
    layer = [(d, d), (d,)] * 4 + [(d,), (d,), (d, ff), (ff,), (ff, d), (d,), (d,), (d,)]
    return [(30522, d), (512, d), (2, d), (d,), (d,)] + layer * 12 + [(d, d), (d,)]


MODELS = {"mlp20": _mlp20, "gpt2-small": _gpt2_small, "bert-base": _bert_base}


def _layers(model: str, params: list) -> list[list]:
    """A model's parameter list cut into its layers, embeddings first."""
    if model == "mlp20":
        return [params[i:i + 2] for i in range(0, len(params), 2)]
    if model == "gpt2-small":
        return [params[:2]] + [params[2 + 12 * i:2 + 12 * (i + 1)] for i in range(12)] + [params[-2:]]
    return [params[:5]] + [params[5 + 16 * i:5 + 16 * (i + 1)] for i in range(12)] + [params[-2:]]  # bert-base


def param_groups(model: str, params: list, lr: float) -> list[dict]:
    """The param groups a fine-tuning recipe makes of a model's parameter list (params in the
    order of MODELS[model]): "-2groups", weight decay on matrices only; "-lld", also layer-wise lr
    decay (0.9 a layer, the embeddings lowest): a decay and a no-decay group per layer."""
    if "-sweep" in model:  # K replicas of the model, each its own (lr, weight decay) of a grid
        k = int(model.rsplit("-sweep", 1)[1])
        per = len(params) // k
        side = int(round(k ** 0.5))
        return [{"params": params[r * per:(r + 1) * per], "lr": lr * 3.0 ** (r % side - side // 2),
                 "weight_decay": 0.0 if r // side == 0 else 10.0 ** (r // side - side)} for r in range(k)]
    if model.endswith("-2groups"):
        return [{"params": [p for p in params if p.ndim >= 2]},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    layers = _layers(model.rsplit("-", 1)[0], params)
    groups = []
    for depth, layer in enumerate(layers):
        scale = 0.9 ** (len(layers) - 1 - depth)
        groups += [{"params": [p for p in layer if p.ndim >= 2], "lr": lr * scale},
                   {"params": [p for p in layer if p.ndim < 2], "lr": lr * scale, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# param groups of MODELS (see param_groups); -sweep16: 16 replicas of the model, a hyper-parameter search
GROUPED = ("mlp20-lld", "gpt2-small-2groups", "bert-base-lld", "mlp20-sweep16")


def parse_size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def shapes_of(problem: str) -> list[tuple[int, ...]]:
    """A model name (grouped or not), or a size (e.g. 4k, 32m) for one flat tensor."""
    model = problem.rsplit("-", 1)[0] if problem in GROUPED else problem
    replicas = int(problem.rsplit("-sweep", 1)[1]) if problem in GROUPED and "-sweep" in problem else 1
    return MODELS[model]() * replicas if model in MODELS else [(parse_size(problem),)]


class Problem:
    """The arrays of one case: params, grads and state (lists, one entry per tensor)."""

    def __init__(self, opt: Optimizer, dtype, shapes, seed: int = 0, grouped: str | None = None):
        rng = np.random.default_rng(seed)
        self.opt, self.dtype, self.shapes = opt, np.dtype(dtype), shapes
        self.numel = sum(int(np.prod(s)) for s in shapes)
        self.params = [rng.standard_normal(s, dtype=np.float32).astype(dtype) for s in shapes]
        self.grads = [rng.standard_normal(s, dtype=np.float32).astype(dtype) for s in shapes]
        self.state = {name: [np.zeros(s, dtype) for s in shapes] for name in opt.state}
        self.step = 0
        # grouped (a name of GROUPED): its param groups, as (tensor indices, their hyper-parameters)
        self.groups = None
        if grouped is not None:
            where = {id(p): i for i, p in enumerate(self.params)}
            self.groups = [([where[id(p)] for p in g["params"]], {k: v for k, v in g.items() if k != "params"})
                           for g in param_groups(grouped, self.params, opt.hyper["lr"])]

    def per_tensor(self) -> dict:
        """The groups' lr and weight_decay, one per tensor (what one fastopt call takes for them)."""
        out = {}
        for key in ("lr", "weight_decay"):
            if key in self.opt.hyper or any(key in h for _, h in self.groups):
                values = np.empty(len(self.params))
                for index, h in self.groups:
                    values[index] = h.get(key, self.opt.hyper.get(key, 0.0))
                out[key] = values
        return out

    def arrays(self) -> list[list[np.ndarray]]:
        return [self.params, self.grads, *self.state.values()]

    def snapshot(self) -> list[list[np.ndarray]]:
        return [[a.copy() for a in arrays] for arrays in self.arrays()]

    def restore(self, snapshot) -> None:
        for arrays, saved in zip(self.arrays(), snapshot):
            for a, s in zip(arrays, saved):
                a[...] = s

    def stepper(self, module, prepared: bool = False):
        """A function taking one step of module.<optimizer> (fastopt or fastopt.reference) on these
        arrays: lists for a model, plain arrays for one tensor (the call a user makes); prepared:
        through fastopt.prepare (validated once: the call a training loop makes)."""
        fn, opt = getattr(module, self.opt.name), self.opt
        args = [a[0] if len(a) == 1 else a for a in self.arrays()]
        kwargs = dict(opt.hyper)  # one dict, updated in place: at 4K elements a merge is 10% of a call
        if prepared:
            return self._prepared(fn, args, kwargs)
        if opt.name == "nadam":
            kwargs["mu_product"] = 1.0  # carried from step to step
        calls = self._calls(module, args, kwargs)
        if len(calls) > 1:
            def step_groups():
                self.step += 1
                for group_args, group_kwargs in calls:
                    if opt.stepped:
                        group_kwargs["step"] = self.step
                    if opt.name == "sgd":
                        group_kwargs["first_step"] = self.step == 1
                    fn(*group_args, **group_kwargs)
            return step_groups

        args, kwargs = calls[0]

        def step():
            self.step += 1
            if opt.stepped:
                kwargs["step"] = self.step
            if opt.name == "sgd":
                kwargs["first_step"] = self.step == 1
            if opt.name == "nadam":
                kwargs["mu_product"] = fn(*args, **kwargs)
            else:
                fn(*args, **kwargs)
        return step

    def _calls(self, module, args, kwargs) -> list:
        """The (args, kwargs) of the calls one step makes: one; with param groups, one for every
        group in fastopt (each tensor its group's values), but a call per group, as torch makes
        them, for the reference and for LAMB clipping by its norm (a call's)."""
        if self.groups is None:
            return [(args, kwargs)]
        clips = self.opt.name == "lamb" and kwargs.get("max_grad_norm", 1.0) > 0
        if module is fastopt and not clips:
            kwargs.update(self.per_tensor())
            return [(args, kwargs)]
        return [([[a[i] for i in index] for a in self.arrays()], {**kwargs, **h}) for index, h in self.groups]

    def _prepared(self, fn, args, kwargs):
        """stepper's function through fastopt.prepare: the hyper-parameters fixed, step (and NAdam's
        mu_product) per call; SGD's first step a call of its own; param groups in one call, but
        LAMB's with clipping (its norm spans a call: a call per group, as the plain stepper's)."""
        opt, parts = self.opt, self._calls(fastopt, args, kwargs)
        firsts = (True, False) if opt.name == "sgd" else (False,)
        calls = {first: [fastopt.prepare(fn, *a, **k, **({"first_step": first} if opt.name == "sgd" else {}))
                         for a, k in parts] for first in firsts}
        carried = {"mu_product": 1.0} if opt.name == "nadam" else {}

        def step():
            self.step += 1
            for call in calls[self.step == 1 and opt.name == "sgd"]:
                out = call(**({"step": self.step} if opt.stepped else {}), **carried)
            if carried:
                carried["mu_product"] = out
        return step


def fastopt_backend(problem: Problem):
    return problem.stepper(fastopt)


def fastopt_prepared_backend(problem: Problem):
    return problem.stepper(fastopt, prepared=True)


def numpy_backend(problem: Problem):
    return problem.stepper(reference)


def torch_backend(mode: str):
    """torch.optim with foreach=True or fused=True, its tensors sharing the problem's memory."""
    def make(problem: Problem):
        import torch
        opt = problem.opt
        params = [torch.from_numpy(p) for p in problem.params]
        for p, g in zip(params, problem.grads):
            p.grad = torch.from_numpy(g)
        groups = params if problem.groups is None else \
            [{"params": [params[i] for i in index], **h} for index, h in problem.groups]
        optimizer = getattr(torch.optim, opt.torch_name)(groups, **{mode: True}, **opt.hyper)
        for i, p in enumerate(params):  # torch's state is the problem's state arrays
            state = {ts: torch.from_numpy(problem.state[s][i]) for s, ts in zip(opt.state, opt.torch_state)}
            if opt.name != "sgd":
                state["step"] = torch.tensor(float(problem.step))
            if opt.name == "nadam":
                state["mu_product"] = torch.ones(())
            optimizer.state[p] = state
        return optimizer.step
    return make


def roofline_backend(problem: Problem):
    """The STREAM-style probe: the same arrays read and written, trivial math (fastopt_stream)."""
    from fastopt._arrays import C_DTYPES
    from fastopt._native import ffi, lib
    dtype = C_DTYPES[problem.dtype]
    inout = [problem.params, *problem.state.values()]
    calls = [(p.size, ffi.from_buffer(g), [ffi.from_buffer(a[i]) for a in inout])
             for i, (p, g) in enumerate(zip(problem.params, problem.grads))]
    n_inout = problem.opt.n_inout

    def probe():
        for n, g, outs in calls:
            lib.fastopt_stream(dtype, n, g, n_inout, outs)
    return probe


def deepspeed_backend(problem: Problem):
    """DeepSpeed's CPU Adam (DeepSpeedCPUAdam, adamw_mode for AdamW), its state the problem's arrays."""
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    opt = problem.opt
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in problem.params]
    for p, g in zip(params, problem.grads):
        p.grad = torch.from_numpy(g)
    groups = params if problem.groups is None else \
        [{"params": [params[i] for i in index], **h} for index, h in problem.groups]
    optimizer = DeepSpeedCPUAdam(groups, adamw_mode=opt.name == "adamw", **opt.hyper)
    for i, p in enumerate(params):
        optimizer.state[p] = {"step": problem.step, **{ts: torch.from_numpy(problem.state[s][i])
                                                      for s, ts in zip(opt.state, opt.torch_state)}}
    return optimizer.step


def deepspeed_available() -> bool:
    """Whether DeepSpeed's CPU Adam can run here without compiling its op inside a timed case: built
    at install (DS_BUILD_CPU_ADAM=1), or compiled already by a first use (about 80 s and 2 GB on 2
    cores: ``python -c "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()"``)."""
    try:
        import os

        from deepspeed.git_version_info import installed_ops
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: F401
        if installed_ops.get("cpu_adam"):
            return True
        from torch.utils.cpp_extension import _get_build_directory
        return os.path.exists(os.path.join(_get_build_directory("cpu_adam", False), "cpu_adam.so"))
    except Exception:  # not installed, or no compiler for its op: either way, not a backend here
        return False


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def backends(opt: Optimizer | None = None, with_torch: bool | None = None, tensors: int = 1) -> dict:
    """name -> (make step function from a Problem, whether its result must match the reference):
    the backends that have this optimizer (all of them without one), for a problem of this many
    tensors (a list of them also through fastopt.prepare)."""
    out = {"roofline": (roofline_backend, False), "fastopt": (fastopt_backend, True),
           "numpy": (numpy_backend, True)}
    if tensors > 1:
        out["fastopt-prepared"] = (fastopt_prepared_backend, True)
    if (with_torch if with_torch is not None else torch_available()) and (opt is None or opt.torch_name):
        out["torch-foreach"] = (torch_backend("foreach"), True)
        if opt is None or opt.torch_fused:
            out["torch-fused"] = (torch_backend("fused"), True)
    if (opt is None or opt.name in ("adam", "adamw")) and deepspeed_available():
        out["deepspeed"] = (deepspeed_backend, True)
    return out
