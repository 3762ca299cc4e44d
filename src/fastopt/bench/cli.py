"""fastopt-bench: fastopt against the NumPy baseline, torch.optim and the memory roofline.

    fastopt-bench --quick          AdamW float32, 4 problems (under a minute)
    fastopt-bench                  4 optimizers, float32, 5 problems up to 8M elements (a few minutes)
    fastopt-bench --full           every optimizer, float32 and float64, up to 64M elements and
                                   GPT-2 small (an hour or more, and ~13 GB of memory at 64M float64)
    fastopt-bench --optimizer adamw --dtype float32 --sizes 4k,1m,32m,mlp20 --plot bench.png
    fastopt-bench --training       dropout, MSE and softmax cross-entropy with their gradients
                                   (fastopt.bench.training; --full runs them too)

Each finished case is written to --json/--csv at once and progress goes to stderr, so an
interrupted run (Ctrl-C) keeps what it measured and prints its table.  Times whose samples spread
over 25% (interquartile range over the median) are marked "~", with the ratios that rest on them (a
busy machine: rerun); a share of the roofline probe over 100% is marked "!" (the probe, taken at
its best sample, read low).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import time

import numpy as np

import fastopt
from fastopt.bench import measure, report, training
from fastopt.bench.cases import GROUPED, OPTIMIZERS, Problem, backends, shapes_of

FULL = dict(optimizers=",".join(OPTIMIZERS), dtypes="float32,float64",
            sizes="4k,64k,1m,8m,32m,64m,mlp20,gpt2-small", repeats=7)
DEFAULT = dict(optimizers="adamw,adam,sgd,lion", dtypes="float32", sizes="4k,64k,1m,8m,mlp20", repeats=7)
QUICK = dict(optimizers="adamw", dtypes="float32", sizes="4k,1m,32m,mlp20", repeats=5)
TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-6), "float64": dict(rtol=1e-9, atol=1e-12)}


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    meta = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "fastopt": fastopt.info()}
    with contextlib.suppress(ImportError):
        import torch
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    return meta


def matches(problem: Problem, expected, dtype: str) -> bool:
    return all(np.allclose(a, e, **TOLERANCE[dtype]) for arrays, saved in zip(problem.arrays(), expected)
               for a, e in zip(arrays, saved))


def run_case(opt_name: str, dtype: str, size: str, repeats: int, on_sample) -> list[dict]:
    """One (optimizer, dtype, problem): check every backend against the reference, then time them."""
    opt = OPTIMIZERS[opt_name]
    problem = Problem(opt, dtype, shapes_of(size), grouped=size if size in GROUPED else None)
    start = problem.snapshot()
    problem.stepper(fastopt.reference)()
    expected = problem.snapshot()

    steps, wrong = {}, set()
    for name, (make, checked) in backends(opt, tensors=len(problem.shapes)).items():
        problem.restore(start)
        problem.step = 0
        step = make(problem)
        if checked:
            step()  # a fast wrong answer is reported as wrong, not fast
            if not matches(problem, expected, dtype):
                wrong.add(name)
        steps[name] = step
    del start, expected

    samples = measure.interleaved(steps, repeats, on_sample=on_sample)
    del steps
    case = {"optimizer": opt_name, "dtype": dtype, "problem": size, "tensors": len(problem.shapes)}
    return measure.rows_of(samples, case, problem.numel, wrong,
                           opt.bytes_per_element(np.dtype(dtype).itemsize) * problem.numel)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="fastopt-bench", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n" + "\n".join(__doc__.splitlines()[1:]).strip("\n"))
    scope = ap.add_mutually_exclusive_group()
    scope.add_argument("--quick", action="store_true", help="AdamW float32 at 4k, 1m, 32m and a small MLP (< 1 minute)")
    scope.add_argument("--full", action="store_true", help="every optimizer, float32 and float64, 4k to 64m, mlp20 and "
                       "gpt2-small (an hour or more)")
    ap.add_argument("--optimizer", help=f"comma-separated, of {','.join(OPTIMIZERS)}")
    ap.add_argument("--dtype", help="comma-separated: float32, float64")
    ap.add_argument("--sizes", help="comma-separated element counts (4k, 32m, ...) or models (mlp20, gpt2-small, "
                    f"bert-base) or their param groups ({', '.join(GROUPED)}: one fastopt call, a torch call each)")
    ap.add_argument("--training", action="store_true", help="the training-loop kernels (dropout, mse_grad, "
                    "softmax_cross_entropy) instead of the optimizers")
    ap.add_argument("--threads", type=int, help="threads for fastopt and torch (default: all cores)")
    ap.add_argument("--repeats", type=int, help="timed samples per backend (default 7, quick 5)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--csv", metavar="PATH")
    ap.add_argument("--plot", metavar="PATH", help="PNG of GB/s against size, with the roofline")
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else FULL if args.full else DEFAULT
    args.optimizers = (args.optimizer or defaults["optimizers"]).split(",")
    args.dtypes = (args.dtype or defaults["dtypes"]).split(",")
    args.size_list = (args.sizes or defaults["sizes"]).split(",")
    args.repeats = args.repeats or defaults["repeats"]
    for o in args.optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")
    for d in args.dtypes:
        if d not in TOLERANCE:
            ap.error(f"unknown dtype {d!r}; choose from float32, float64")
    for s in args.size_list:
        try:
            shapes_of(s)
        except (KeyError, ValueError):
            ap.error(f"bad size {s!r}: an element count like 4096, 4k, 32m, or a model: mlp20, gpt2-small")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def _progress(total: int):
    """A progress bar on a terminal's stderr (rich), advanced once per timed sample; elsewhere a line
    per case on stderr (see main)."""
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        return contextlib.nullcontext(lambda description=None: None)
    console = Console(stderr=True)
    if not console.is_terminal:
        return contextlib.nullcontext(lambda description=None: None)

    @contextlib.contextmanager
    def bar():
        with Progress(transient=True, console=console) as p:
            task = p.add_task("benchmarking", total=total)
            yield lambda description=None: p.update(task, advance=1, description=description)
    return bar()


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        fastopt.set_num_threads(args.threads)
        with contextlib.suppress(ImportError):
            import torch
            torch.set_num_threads(args.threads)
    # (run, name, dtype, size, backends timed): optimizers, the training kernels, or both (--full)
    cases = [] if args.training else [(run_case, o, d, s, len(backends(OPTIMIZERS[o], tensors=len(shapes_of(s)))))
                                      for o in args.optimizers for d in args.dtypes for s in args.size_list]
    if args.training or args.full:
        per = 3 + training.torch_available()
        cases += [(training.run_case, k, d, s, per) for k in training.KERNELS for d in args.dtypes
                  for s in training.SIZES[k]]
    meta = machine()
    title = (f"fastopt {meta['fastopt']['version']} ({meta['fastopt']['isa']}, {meta['fastopt']['num_threads']} threads) "
             f"on {meta['cpu']}, {meta['cores']} cores; median of {args.repeats}")
    rows, interrupted, started = [], False, time.monotonic()
    try:
        with _progress(sum(n for *_, n in cases) * args.repeats) as advance:
            for i, (run, o, d, s, _) in enumerate(cases, 1):
                at = time.monotonic()
                rows += run(o, d, s, args.repeats, lambda o=o, d=d, s=s: advance(f"{o} {d} {s}"))
                gc.collect()  # one problem's arrays alive at a time
                print(f"[{i}/{len(cases)}] {o} {d} {s}: {time.monotonic() - at:.0f} s "
                      f"({time.monotonic() - started:.0f} s in all)", file=sys.stderr, flush=True)
                _write(args, rows, meta)  # each finished case kept, whatever happens next
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted: {len({(r['optimizer'], r['dtype'], r['problem']) for r in rows})} of {len(cases)} "
              f"cases measured, kept below" + (" and in the output files" if args.json or args.csv else ""),
              file=sys.stderr)
    report.table(rows, title)
    if args.plot and rows:
        report.plot(args.plot, rows, title)
    wrong = [r for r in rows if r["wrong"]]
    for r in wrong:
        print(f"WRONG: {r['backend']} disagrees with fastopt.reference on {r['optimizer']} {r['dtype']} {r['problem']}",
              file=sys.stderr)
    if interrupted:
        return 130
    return 1 if any(r["backend"] == "fastopt" for r in wrong) else 0


def _write(args, rows, meta) -> None:
    if args.json:
        report.write_json(args.json, rows, meta)
    if args.csv:
        report.write_csv(args.csv, rows)
