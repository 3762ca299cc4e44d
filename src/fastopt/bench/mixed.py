"""The mixed-precision benchmark: AdamW at 32M elements in each storage configuration, against
``torch.optim.AdamW(fused=True)`` on float32, in one interleaved run (see fastopt.bench.measure).

    python -m fastopt.bench.mixed [--size 32m] [--repeats 7] [--json out.json]

Per configuration: bytes moved per element (each buffer's reads and writes), the state's bytes
per element, the median step time, GB/s, and the speed-up over torch's fused float32 step.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import fastopt
from fastopt._arrays import BFLOAT16
from fastopt.bench.cases import parse_size
from fastopt.bench.measure import interleaved, summary


def configurations(n: int, seed: int = 0) -> dict:
    """{name: (step function, bytes moved per element, state bytes per element)}."""
    rng = np.random.default_rng(seed)
    p32 = rng.standard_normal(n).astype(np.float32)
    g32 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    bf16 = BFLOAT16

    def f32_state():
        return np.zeros(n, np.float32), np.zeros(n, np.float32)

    def bf16_state():
        return np.zeros(n, bf16), np.zeros(n, bf16)

    def q8_state():
        return fastopt.QuantizedState(n, 2048), fastopt.QuantizedState(n, 2048, signed=False)

    out = {}

    def add(name, params, grads, state, bytes_moved, state_bytes, **kwargs):
        m, v = state
        out[name] = (lambda: fastopt.adamw(params, grads, m, v, step=1, lr=1e-3, **kwargs), bytes_moved, state_bytes)
    # bytes per element: params (read + write, or write only with masters), grads read, masters r+w, state r+w
    add("fp32 params, fp32 state", p32.copy(), g32.copy(), f32_state(), 4 + 4 + 4 + 8 + 8, 8)
    add("bf16 params + fp32 master, fp32 state", p32.astype(bf16), g32.astype(bf16), f32_state(),
        2 + 2 + 8 + 8 + 8, 8, master_params=p32.copy())
    add("bf16 params + fp32 master, bf16 state", p32.astype(bf16), g32.astype(bf16), bf16_state(),
        2 + 2 + 8 + 4 + 4, 4, master_params=p32.copy())
    add("bf16 params + fp32 master, 8-bit state", p32.astype(bf16), g32.astype(bf16), q8_state(),
        2 + 2 + 8 + 2 + 2, 2 + 8 / 2048, master_params=p32.copy())
    add("bf16 params, bf16 state", p32.astype(bf16), g32.astype(bf16), bf16_state(), 2 + 2 + 2 + 4 + 4, 4)
    add("bf16 params (stochastic rounding), fp32 state", p32.astype(bf16), g32.astype(bf16), f32_state(),
        2 + 2 + 2 + 8 + 8, 8, stochastic_rounding=1)
    import torch
    param = torch.nn.Parameter(torch.from_numpy(p32.copy()))
    param.grad = torch.from_numpy(g32.copy())
    opt = torch.optim.AdamW([param], lr=1e-3, fused=True)
    out["torch fused, fp32"] = (opt.step, 4 + 4 + 4 + 8 + 8, 8)
    return out


def run(n: int, repeats: int) -> list[dict]:
    cfg = configurations(n)
    samples = interleaved({k: v[0] for k, v in cfg.items()}, repeats, min_time=0.05)
    torch_s = summary(samples["torch fused, fp32"])["median_s"]
    rows = []
    for name, (_, moved, state) in cfg.items():
        s = summary(samples[name])
        rows.append({"config": name, "elements": n, "bytes_per_element": moved, "state_bytes_per_element": state,
                     "state_smaller": 8 / state, **s, "GBps": moved * n / s["median_s"] / 1e9,
                     "x_torch_fused": torch_s / s["median_s"]})
    return rows


def report(rows) -> str:
    lines = [f"{'AdamW configuration':<46} {'B/elem':>6} {'state B':>8} {'median':>9} {'GB/s':>6} {'x torch fused':>13}"]
    for r in rows:
        lines.append(f"{r['config']:<46} {r['bytes_per_element']:>6} {r['state_bytes_per_element']:>8.3g} "
                     f"{r['median_s'] * 1e3:>7.2f}ms {r['GBps']:>6.1f} {r['x_torch_fused']:>12.2f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench.mixed", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="32m")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(parse_size(args.size), args.repeats)
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
