"""The drop-in benchmark: a whole ``optimizer.step()`` of ``fastopt.torch`` optimizers against
``torch.optim``'s fused CPU optimizers (and DeepSpeed's CPU Adam when importable), on the parameter
lists of a small MLP (20 tensors, 41,600 params) and GPT-2 small (148 tensors, 124M params), and on
fine-tuning recipes' param groups: gpt2-small-2groups (weight decay on matrices only), and
layer-wise lr decay times decay/no-decay: mlp20-lld (20 groups) and bert-base-lld (BERT-base, 28);
and a hyper-parameter search: mlp20-sweep16, 16 replicas of mlp20, each a group with its own lr and
weight decay.

    python -m fastopt.bench.torch_step [--optimizers adamw,adam,sgd,adagrad] [--repeats 15] [--new-grads]

Every variant steps its own copy of the same parameters with the same gradients; samples are
interleaved (see fastopt.bench.measure) and the medians reported with ratios taken in the same run.
With --new-grads each step first assigns new gradient tensors (two sets, alternating), as a
training loop's backward makes them: what an optimizer checks per gradient is then paid every step.
"""
from __future__ import annotations

import argparse
import json

from fastopt.bench.cases import GROUPED, MODELS, param_groups, shapes_of
from fastopt.bench.measure import interleaved, summary
from fastopt.bench.report import NOTES, SPREAD_FLAG

TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad"}
HYPER = {"sgd": dict(lr=1e-3, momentum=0.9), "adam": dict(lr=1e-3), "adamw": dict(lr=1e-3, weight_decay=1e-2),
         "adagrad": dict(lr=1e-2)}


def _params(torch, shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return params


def _with_new_grads(torch, params, step):
    """step, each call preceded by assigning new gradient tensors (two sets, alternating)."""
    sets = [[p.grad.clone() for p in params] for _ in range(2)]
    turn = [0]

    def stepped():
        turn[0] ^= 1
        for p, g in zip(params, sets[turn[0]]):
            p.grad = g
        step()
    return stepped


def steps(optimizer: str, model: str, new_grads: bool = False, host: bool = True) -> dict:
    """{variant: step function} for one optimizer on one model's parameter list; with host, also
    "fastopt host side": fastopt's step less its C calls, where the step is made natively."""
    import torch

    import fastopt.torch as ft
    grouped = model in GROUPED
    shapes = shapes_of(model)
    name, hyper = TORCH_NAMES[optimizer], HYPER[optimizer]

    def variant(make):
        params = _params(torch, shapes, 0)
        opt = make(param_groups(model, params, hyper["lr"]) if grouped else params)
        if opt is None:
            return None
        return _with_new_grads(torch, params, opt.step) if new_grads else opt.step

    def host_side(ps):
        """fastopt's optimizer whose steady step makes its checks, counts and version bumps but no
        C call (its native plan's dry mode): the host side of a step; None where the step has no
        native plan (NAdam, LAMB, ...)."""
        opt = getattr(ft, name)(ps, **hyper)
        for _ in range(2):
            opt.step()
        if opt._native is None:
            return None
        opt._native.dry = 1
        return opt
    out = {"fastopt": variant(lambda ps: getattr(ft, name)(ps, **hyper)),
           "torch fused": variant(lambda ps: getattr(torch.optim, name)(ps, fused=True, **hyper)),
           "torch foreach": variant(lambda ps: getattr(torch.optim, name)(ps, foreach=True, **hyper))}
    if optimizer in ("adam", "adamw"):
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            out["deepspeed"] = variant(lambda ps: DeepSpeedCPUAdam(ps, adamw_mode=optimizer == "adamw", **hyper))
        except Exception:  # not installed, or its op does not build here
            pass
    dry = variant(host_side) if host else None
    if dry is not None:
        out["fastopt host side"] = dry
    return out


def run(optimizers, models, repeats: int, new_grads: bool = False) -> list[dict]:
    rows = []
    for model in models:
        for optimizer in optimizers:
            fns = steps(optimizer, model, new_grads)
            stats = {k: summary(v) for k, v in interleaved(fns, repeats, min_time=0.02).items()}
            ours = stats["fastopt"]["median_s"]
            for variant, s in stats.items():
                rows.append({"model": model, "optimizer": optimizer, "variant": variant, **s,
                             "fastopt_speedup": s["median_s"] / ours})
    return rows


def report(rows) -> str:
    """The rows as a table; a time whose samples spread over SPREAD_FLAG, and a ratio resting on
    one (its own or fastopt's), marked "~" (uncertain: a busy machine), as fastopt-bench marks them."""
    lines = [f"{'model':<18} {'optimizer':<8} {'variant':<14} {'median step':>12} {'spread':>7} {'fastopt is':>11}"]
    ours = {(r["model"], r["optimizer"]): r["spread"] for r in rows if r["variant"] == "fastopt"}
    for r in rows:
        noisy = r["spread"] > SPREAD_FLAG
        ratio_noisy = noisy or ours.get((r["model"], r["optimizer"]), 0) > SPREAD_FLAG
        lines.append(f"{r['model']:<18} {r['optimizer']:<8} {r['variant']:<14} {r['median_s'] * 1e6:>10.1f}us"
                     f"{'~' if noisy else ' '}{r['spread']:>6.0%} {r['fastopt_speedup']:>10.2f}x"
                     f"{'~' if ratio_noisy else ''}")
    if any(r["spread"] > SPREAD_FLAG for r in rows):
        lines.append(NOTES["~"])
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench.torch_step", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="adamw,adam,sgd,adagrad")
    parser.add_argument("--models", default="mlp20,gpt2-small",
                        help=f"of {', '.join([*MODELS, *GROUPED])}")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--new-grads", action="store_true", help="assign new gradient tensors before each step")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.optimizers.split(","), args.models.split(","), args.repeats, args.new_grads)
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
