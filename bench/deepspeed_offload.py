"""fastopt inside DeepSpeed ZeRO-Offload, against DeepSpeed's own CPU Adam, on the same model.

ZeRO-2 with ``offload_optimizer: cpu`` keeps the fp32 master partition and the optimizer state on
the host and runs the client optimizer there: the step DeepSpeedCPUAdam exists for.  Both engines
train the same model on the same data; their steps alternate, so a busy machine slows both alike.
Prints the median ``engine.step()`` and the median of the optimizer's own step inside it, and each
engine's largest parameter difference from torch.optim.AdamW.

    pip install deepspeed==0.19.8              # DS_BUILD_OPS=0: its CPU Adam is compiled at first use
    python bench/deepspeed_offload.py [--steps 30] [--threads 1]

One process, world size 1, gloo, no launcher.  The first run compiles DeepSpeed's cpu_adam
extension (about 80 s and 2 GB of memory on 2 cores), kept in TORCH_EXTENSIONS_DIR.
"""
from __future__ import annotations

import argparse
import copy
import os
import socket
import statistics
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a world of one process, set before deepspeed is imported
for key, value in dict(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
                       LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1").items():
    os.environ.setdefault(key, value)

import deepspeed  # noqa: E402
import torch  # noqa: E402
from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: E402

import fastopt  # noqa: E402
import fastopt.torch  # noqa: E402

HYPER = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def config(batch: int) -> dict:
    """ZeRO-2 with the optimizer offloaded to the host; the two keys that let a client optimizer
    other than DeepSpeedCPUAdam run there (docs/distributed.md)."""
    return {"train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": 1, "gradient_clipping": 0.0,
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
            "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 10**9}


def timed(opt, sink: list):
    """opt.step, each call's wall time appended to sink (the ZeRO wrapper calls it)."""
    step = opt.step

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = step(*args, **kwargs)
        sink.append(time.perf_counter() - start)
        return out
    opt.step = wrapper
    return opt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4, help="hidden layers (the model has depth + 1 Linear)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and fastopt (DeepSpeedCPUAdam "
                                                                 "follows OMP_NUM_THREADS); 0: their defaults")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        fastopt.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [m for _ in range(args.depth) for m in (torch.nn.Linear(args.width, args.width), torch.nn.GELU())]
    base = torch.nn.Sequential(*layers, torch.nn.Linear(args.width, args.width))
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(args.batch, args.width, generator=gen), torch.randn(args.batch, args.width, generator=gen))
            for _ in range(args.steps)]

    reference = copy.deepcopy(base)
    opt = torch.optim.AdamW(reference.parameters(), **HYPER)
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        opt.step()

    makers = {"fastopt.torch.AdamW": lambda ps: fastopt.torch.AdamW(ps, **HYPER),
              "DeepSpeedCPUAdam": lambda ps: DeepSpeedCPUAdam(ps, adamw_mode=True, **HYPER)}
    engines, inner, outer = {}, {}, {}
    for name, make in makers.items():
        model = copy.deepcopy(base)
        inner[name], outer[name] = [], []
        engines[name] = deepspeed.initialize(model=model, optimizer=timed(make(model.parameters()), inner[name]),
                                             config=config(args.batch))[0]
    for x, y in data:  # the engines' steps alternate
        for name, engine in engines.items():
            engine.backward(torch.nn.functional.mse_loss(engine(x), y))
            start = time.perf_counter()
            engine.step()
            outer[name].append(time.perf_counter() - start)

    n = sum(p.numel() for p in base.parameters())
    print(f"DeepSpeed {deepspeed.__version__}, torch {torch.__version__}, ZeRO-2 offload_optimizer=cpu, "
          f"{n / 1e6:.2f}M params, {args.steps} steps, threads {torch.get_num_threads()}; medians from step 2")
    print(f"{'client optimizer':<22} {'engine.step':>12} {'optimizer step':>15} {'max |p - torch|':>16}")
    for name, engine in engines.items():
        diff = max((a - b).abs().max().item() for a, b in zip(engine.module.parameters(), reference.parameters()))
        print(f"{name:<22} {statistics.median(outer[name][1:]) * 1e3:>10.2f}ms "
              f"{statistics.median(inner[name][1:]) * 1e3:>13.2f}ms {diff:>16.2e}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
