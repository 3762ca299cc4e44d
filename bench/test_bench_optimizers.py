"""pytest-benchmark suites for the cases of fastopt-bench: ``pytest bench/ --benchmark-only``.

Each benchmark checks its backend against fastopt.reference before timing it.  Pick sizes with
FASTOPT_BENCH_SIZES (default 4k,1m,32m,mlp20); compare with ``--benchmark-group-by=param:case``.
"""
import os

import numpy as np
import pytest

import fastopt
from fastopt.bench.cases import OPTIMIZERS, Problem, backends, shapes_of
from fastopt.bench.cli import matches

SIZES = os.environ.get("FASTOPT_BENCH_SIZES", "4k,1m,32m,mlp20").split(",")
CASES = [f"{o}-{d}-{s}" for o in OPTIMIZERS for d in ("float32", "float64") for s in SIZES]


@pytest.mark.parametrize("backend", list(backends()))
@pytest.mark.parametrize("case", CASES)
def test_step(benchmark, case, backend):
    opt, dtype, size = case.split("-", 2)
    if backend not in backends(OPTIMIZERS[opt]):
        pytest.skip(f"{backend} has no {opt}")
    problem = Problem(OPTIMIZERS[opt], dtype, shapes_of(size))
    start = problem.snapshot()
    problem.stepper(fastopt.reference)()
    expected = problem.snapshot()
    problem.restore(start)
    problem.step = 0
    make, checked = backends(OPTIMIZERS[opt])[backend]
    step = make(problem)
    if checked:
        step()
        assert matches(problem, expected, dtype), f"{backend} disagrees with the reference"
    benchmark.extra_info.update(numel=problem.numel, bytes_per_step=OPTIMIZERS[opt].bytes_per_element(
        np.dtype(dtype).itemsize) * problem.numel)
    benchmark(step)
