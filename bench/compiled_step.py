"""A training step under torch.compile with fastopt.torch.AdamW against compiled torch.optim.AdamW:
graph breaks (torch.compile's explain) and the median compiled step, one after the other.

    python bench/compiled_step.py

The model: an MLP 64-256-256-10 on a batch of 128 (cross-entropy).  fastopt's step runs whole,
outside the graph (torch.compiler.disable); torch's is compiled with the model.
"""
import statistics
import time

import torch
import torch._dynamo as dynamo

import fastopt.torch as ft


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10))


def main() -> None:
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    for name, cls in (("torch.optim.AdamW", torch.optim.AdamW), ("fastopt.torch.AdamW", ft.AdamW)):
        model = make()
        opt = cls(model.parameters(), lr=1e-3)

        def train_step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        explained = dynamo.explain(train_step)(x, y)
        dynamo.reset()
        step = torch.compile(train_step)
        start = time.perf_counter()
        step(x, y)
        step(x, y)
        warm_up = time.perf_counter() - start
        samples = []
        for _ in range(9):
            start = time.perf_counter()
            for _ in range(50):
                step(x, y)
            samples.append((time.perf_counter() - start) / 50)
        print(f"{name:<20} graphs {explained.graph_count}, breaks {explained.graph_break_count}, "
              f"warm-up {warm_up:.1f} s, compiled step median {statistics.median(samples) * 1e3:.3f} ms")
        dynamo.reset()


if __name__ == "__main__":
    main()
