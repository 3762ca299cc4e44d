"""The GPU benchmark: fastopt's CUDA kernels against torch.optim's fused CUDA optimizers and the
device-to-device copy bandwidth, all in one run on PyTorch CUDA tensors.

    python -m fastopt.bench.gpu [--repeats 20] [--json out.json]
    python -m fastopt.bench.gpu --profile      # where a 20-tensor step's host time goes
    NUMBA_ENABLE_CUDASIM=1 python -m fastopt.bench.gpu --host-path   # any machine: the Python side alone

Rows: fp32 AdamW on 256M elements (GB/s counting every byte read and written, and the share of
the copy bandwidth measured on the same GPU in the same run), a GPT-2-small parameter list (148
tensors, 124M params) and a 20-tensor MLP (41,600 params), each against
``torch.optim.AdamW(fused=True)`` stepping the same shapes; ``prepared``: the same step through
``fastopt.prepare`` over Numba views of the tensors.  Times are medians of CUDA-event
timings of back-to-back steps, after a warm-up that compiles the kernels.
"""
from __future__ import annotations

import argparse
import json
import statistics

from fastopt.bench.cases import MODELS


def _time(torch, fn, repeats: int, inner: int) -> float:
    """Median seconds per fn() call, timed by CUDA events over `inner` calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return statistics.median(times)


def _adamw_pair(torch, shapes, dtype):
    """(fastopt step, torch fused step, fastopt prepared step) over independent copies of the same
    problem; the prepared one over Numba views of the tensors (a prepared call over torch tensors
    checks their memory every call; over other device arrays it is repeated, see fastopt.prepare)."""
    import fastopt
    from numba import cuda
    params = [torch.randn(s, device="cuda", dtype=dtype) for s in shapes]
    grads = [torch.randn_like(p) for p in params]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    step = [0]

    def ours():
        step[0] += 1
        fastopt.adamw(params, grads, m, v, step=step[0], lr=1e-3, weight_decay=1e-2)

    theirs_params = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(theirs_params, grads):
        p.grad = g.clone()
    opt = torch.optim.AdamW(theirs_params, lr=1e-3, weight_decay=1e-2, fused=True)
    copies = [[cuda.as_cuda_array(t.clone()) for t in role] for role in (params, grads, m, v)]
    call, at = fastopt.prepare(fastopt.adamw, *copies, weight_decay=1e-2), [0]

    def prepared():
        at[0] += 1
        call(step=at[0], lr=1e-3)
    return ours, opt.step, prepared


def _copy_bandwidth(torch, n: int, repeats: int) -> float:
    """GB/s of a float32 device-to-device copy of n elements, counting the read and the write."""
    src, dst = torch.empty(n, device="cuda"), torch.empty(n, device="cuda")
    return 2 * 4 * n / _time(torch, lambda: dst.copy_(src), repeats, 5) / 1e9


def run(repeats: int = 20) -> dict:
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("fastopt.bench.gpu: torch sees no CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 256 << 20
    out = {"gpu": torch.cuda.get_device_name(), "repeats": repeats, "rows": []}
    copy_gbs = out["copy_GBps"] = _copy_bandwidth(torch, n, repeats)
    for label, shapes, inner in (("adamw-256m", [(n,)], 5), ("gpt2-small", MODELS["gpt2-small"](), 10),
                                 ("mlp20", MODELS["mlp20"](), 200)):
        ours, theirs, prepared = _adamw_pair(torch, shapes, torch.float32)
        t_ours, t_theirs = _time(torch, ours, repeats, inner), _time(torch, theirs, repeats, inner)
        t_prepared = _time(torch, prepared, repeats, inner)
        elements = sum(int(torch.Size(s).numel()) for s in shapes)
        gbs = 7 * 4 * elements / t_ours / 1e9  # params, m, v read and written; grads read
        out["rows"].append({"case": label, "tensors": len(shapes), "elements": elements,
                            "fastopt_s": t_ours, "torch_fused_s": t_theirs, "fastopt_GBps": gbs,
                            "of_copy": gbs / copy_gbs, "x_torch_fused": t_theirs / t_ours,
                            "prepared_s": t_prepared, "prepared_x_torch_fused": t_theirs / t_prepared})
        torch.cuda.empty_cache()
    return out


def profile(steps: int = 200) -> None:
    """Prints the host time of a 20-tensor AdamW step (fastopt and torch fused, synchronized at the
    end), then cProfile's 30 costliest functions of fastopt's step."""
    import cProfile
    import pstats
    import time

    import torch
    ours, theirs, prepared = _adamw_pair(torch, MODELS["mlp20"](), torch.float32)
    for fn, name in ((ours, "fastopt"), (theirs, "torch fused"), (prepared, "fastopt prepared")):
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        print(f"mlp20 {name}: {(time.perf_counter() - start) / steps * 1e6:.1f} us per step (host clock)")
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [ours() for _ in range(steps)])
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def host_path(steps: int = 200) -> list[dict]:
    """The host side of a steady-state GPU step, on any machine: fastopt.adamw (plain, and through
    fastopt.prepare) and lamb over the tensor counts of mlp20 and GPT-2 small (148), device arrays of
    one element each, the kernel
    launches replaced by a counter.  What remains is fastopt's Python cost per step (checks,
    constants, table look-up, argument packing short of the launch itself) and the launches a step
    makes.  Run it under NUMBA_ENABLE_CUDASIM=1 where there is no GPU (the simulator's device
    arrays stand in for real ones: their own cost is not fastopt's, and is small next to it)."""
    import time

    import numpy as np
    from numba import cuda

    import fastopt
    from fastopt.cuda import _launch

    counted = []
    launch = _launch.Call.launch
    _launch.Call.launch = lambda self, kernel, blocks, *args, **kw: counted.append(kernel)
    rows = []
    try:
        for model, n in (("mlp20", len(MODELS["mlp20"]())), ("gpt2-small", len(MODELS["gpt2-small"]()))):
            arrays = [[cuda.to_device(np.ones(1, np.float32)) for _ in range(n)] for _ in range(4)]
            # (LAMB without its clipping: the clipping norm is read back from kernels, which do not run here)
            variants = (("adamw", fastopt.adamw, {}), ("lamb", fastopt.lamb, {"max_grad_norm": 0.0}),
                        ("adamw prepared", fastopt.prepare(fastopt.adamw, *arrays), {}))
            for name, update, extra in variants:
                if name.endswith("prepared"):
                    update = (lambda prepared: lambda *_, **kw: prepared(**kw))(update)
                update(*arrays, step=1, **extra)  # the first call checks the arrays and uploads the table
                times = []
                counted.clear()
                for t in range(2, steps + 2):
                    start = time.perf_counter()
                    update(*arrays, step=t, lr=1e-3, **extra)
                    times.append(time.perf_counter() - start)
                rows.append({"model": model, "tensors": n, "optimizer": name,
                             "host_us": statistics.median(times) * 1e6, "launches": len(counted) / steps})
    finally:
        _launch.Call.launch = launch
    return rows


def report(result: dict) -> str:
    lines = [f"{result['gpu']}: device-to-device copy {result['copy_GBps']:.0f} GB/s (read + write)",
             f"{'case':<12} {'tensors':>7} {'fastopt':>11} {'torch fused':>12} {'GB/s':>7} {'of copy':>8} "
             f"{'x torch':>8} {'prepared':>11} {'x torch':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['case']:<12} {r['tensors']:>7} {r['fastopt_s'] * 1e6:>9.1f}us "
                     f"{r['torch_fused_s'] * 1e6:>10.1f}us {r['fastopt_GBps']:>7.0f} {r['of_copy']:>7.1%} "
                     f"{r['x_torch_fused']:>7.2f}x {r['prepared_s'] * 1e6:>9.1f}us {r['prepared_x_torch_fused']:>7.2f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", action="store_true", help=profile.__doc__.split(",")[0])
    parser.add_argument("--host-path", action="store_true", help="the host side of a step, launches counted "
                        "(any machine; NUMBA_ENABLE_CUDASIM=1 without a GPU)")
    args = parser.parse_args(argv)
    if args.profile:
        return profile()
    if args.host_path:
        rows = host_path()
        print(f"{'model':<11} {'tensors':>7} {'optimizer':<15} {'host time':>10} {'launches':>9}")
        for r in rows:
            print(f"{r['model']:<11} {r['tensors']:>7} {r['optimizer']:<15} {r['host_us']:>8.1f}us "
                  f"{r['launches']:>9.1f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return None
    result = run(args.repeats)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
