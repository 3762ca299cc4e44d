"""The drop-in benchmark: a whole ``optimizer.step()`` of ``fastopt.torch`` optimizers against
``torch.optim``'s fused CPU optimizers (and DeepSpeed's CPU Adam when importable), on the parameter
lists of a small MLP (20 tensors, 41,600 params) and GPT-2 small (148 tensors, 124M params).

    python -m fastopt.bench.torch_step [--optimizers adamw,adam,sgd,adagrad] [--repeats 15]

Every variant steps its own copy of the same parameters with the same gradients; samples are
interleaved (see fastopt.bench.measure) and the medians reported with ratios taken in the same run.
"""
from __future__ import annotations

import argparse
import json

from fastopt.bench.cases import MODELS
from fastopt.bench.measure import interleaved, summary

TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad"}
HYPER = {"sgd": dict(lr=1e-3, momentum=0.9), "adam": dict(lr=1e-3), "adamw": dict(lr=1e-3, weight_decay=1e-2),
         "adagrad": dict(lr=1e-2)}


def _params(torch, shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return params


def steps(optimizer: str, model: str) -> dict:
    """{variant: step function} for one optimizer on one model's parameter list."""
    import torch

    import fastopt.torch as ft
    shapes = MODELS[model]()
    name, hyper = TORCH_NAMES[optimizer], HYPER[optimizer]
    out = {"fastopt": getattr(ft, name)(_params(torch, shapes, 0), **hyper).step,
           "torch fused": getattr(torch.optim, name)(_params(torch, shapes, 0), fused=True, **hyper).step,
           "torch foreach": getattr(torch.optim, name)(_params(torch, shapes, 0), foreach=True, **hyper).step}
    if optimizer in ("adam", "adamw"):
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            out["deepspeed"] = DeepSpeedCPUAdam(_params(torch, shapes, 0), adamw_mode=optimizer == "adamw",
                                                **hyper).step
        except Exception:  # not installed, or its op does not build here
            pass
    return out


def run(optimizers, models, repeats: int) -> list[dict]:
    rows = []
    for model in models:
        for optimizer in optimizers:
            fns = steps(optimizer, model)
            stats = {k: summary(v) for k, v in interleaved(fns, repeats, min_time=0.02).items()}
            ours = stats["fastopt"]["median_s"]
            for variant, s in stats.items():
                rows.append({"model": model, "optimizer": optimizer, "variant": variant, **s,
                             "fastopt_speedup": s["median_s"] / ours})
    return rows


def report(rows) -> str:
    lines = [f"{'model':<11} {'optimizer':<8} {'variant':<14} {'median step':>12} {'spread':>7} {'fastopt is':>11}"]
    for r in rows:
        lines.append(f"{r['model']:<11} {r['optimizer']:<8} {r['variant']:<14} {r['median_s'] * 1e6:>10.1f}us "
                     f"{r['spread']:>6.0%} {r['fastopt_speedup']:>10.2f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench.torch_step", description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", default="adamw,adam,sgd,adagrad")
    parser.add_argument("--models", default="mlp20,gpt2-small")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.optimizers.split(","), args.models.split(","), args.repeats)
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
