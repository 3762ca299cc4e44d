"""The benchmark CLI: runs, checks correctness before timing, writes its outputs (no timing asserts)."""
import csv
import json
import sys

import numpy as np
import pytest

import fastopt
from fastopt.bench import cases, cli


def test_quick_benchmark_runs_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "b"
    try:
        import matplotlib  # noqa: F401  (the plot, where the bench extra installed it)
        plot = ["--plot", f"{out}.png"]
    except ImportError:
        plot = []
    code = cli.main(["--quick", "--sizes", "4k,mlp20", "--repeats", "2", "--json", f"{out}.json",
                     "--csv", f"{out}.csv", *plot])
    assert code == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    backends = {r["backend"] for r in rows}
    assert {"roofline", "fastopt", "numpy"} <= backends
    assert not any(r["wrong"] for r in rows)
    for r in rows:
        assert r["median_s"] > 0 and r["gbps"] > 0
    assert {r["problem"] for r in rows if r["backend"] == "fastopt-prepared"} == {"mlp20"}  # (a list: prepared too)
    fastopt_row = next(r for r in rows if r["backend"] == "fastopt" and r["problem"] == "mlp20")
    assert fastopt_row["tensors"] == 20 and fastopt_row["numel"] == 41600
    assert fastopt_row["gbps"] == pytest.approx(7 * 4 * 41600 / fastopt_row["median_s"] / 1e9)
    assert len(list(csv.DictReader(open(f"{out}.csv")))) == len(rows)
    assert not plot or (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert "fastopt" in capsys.readouterr().out


@pytest.mark.slow  # half a minute: the README's main job, whole
def test_the_readme_main_job_runs(tmp_path):
    """`fastopt-bench --quick`, the README's first command, exactly: a smoke test (no timing asserts)."""
    import os
    import shutil
    import subprocess
    import sys
    exe = shutil.which("fastopt-bench") or os.path.join(os.path.dirname(sys.executable), "fastopt-bench")
    run = subprocess.run([exe, "--quick", "--json", str(tmp_path / "q.json")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "q.json").read_text())["rows"]
    assert {r["problem"] for r in rows} == {"4k", "1m", "32m", "mlp20"} and not any(r["wrong"] for r in rows)
    assert "adamw float32 32m" in run.stdout


def test_wrong_backend_is_reported_wrong(monkeypatch, capsys):
    def broken(problem):
        step = cases.fastopt_backend(problem)
        def wrong():
            step()
            problem.params[0] += 1e-3  # a fast wrong answer
        return wrong
    real = cases.backends
    monkeypatch.setattr(cli, "backends", lambda opt=None, **kw: {**real(opt, **kw), "broken": (broken, True)})
    rows = cli.run_case("adamw", "float32", "4k", repeats=1, on_sample=None)
    by = {r["backend"]: r for r in rows}
    assert by["broken"]["wrong"] and not by["fastopt"]["wrong"]


def test_model_shapes():
    gpt2 = cases.shapes_of("gpt2-small")
    assert len(gpt2) == 148
    assert sum(int(np.prod(s)) for s in gpt2) == 124_439_808
    assert cases.shapes_of("32m") == [(32 * 2**20,)]


@pytest.mark.parametrize("argv,words", [
    (["--optimizer", "adagrad9"], "unknown optimizer"),
    (["--dtype", "int8"], "unknown dtype"),
    (["--sizes", "lots"], "bad size"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit):
        cli.parse(argv)
    assert words in capsys.readouterr().err


def test_every_optimizer_has_a_checked_benchmark_row():
    for name in cases.OPTIMIZERS:
        rows = cli.run_case(name, "float32", "mlp20", repeats=1, on_sample=None)
        assert {r["backend"] for r in rows} >= {"roofline", "fastopt", "numpy"}
        assert not any(r["wrong"] for r in rows), name


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb"])
def test_param_groups_rows_step_in_one_fastopt_call_and_match_torch_and_numpy(name, monkeypatch):
    """mlp20-lld: 20 param groups (layer-wise lr, no decay on biases); fastopt steps them in one
    call (LAMB, whose clipping norm spans a call: one a group), NumPy and torch a call a group:
    every backend checked against the reference."""
    from fastopt import _calls
    calls = []
    run = _calls.run
    monkeypatch.setattr(_calls, "run", lambda *a, **k: calls.append(a[0]) or run(*a, **k))
    rows = cli.run_case(name, "float32", "mlp20-lld", repeats=1, on_sample=None)
    assert {r["backend"] for r in rows} >= {"roofline", "fastopt", "numpy", "fastopt-prepared"}
    assert not any(r["wrong"] for r in rows), [r["backend"] for r in rows if r["wrong"]]
    problem = cases.Problem(cases.OPTIMIZERS[name], "float32", cases.shapes_of("mlp20-lld"), grouped="mlp20-lld")
    assert len(problem.groups) == 20 and len(set(problem.per_tensor()["lr"])) == 10
    calls.clear()
    problem.stepper(fastopt)()
    assert calls == [name] * (20 if name == "lamb" else 1)  # (LAMB clips by a call's norm: a call per group)
    calls.clear()
    prepared = problem.stepper(fastopt, prepared=True)
    prepared()
    prepared()  # (the second call repeated from its options struct, past SGD's first step)
    assert calls == [name] * (20 if name == "lamb" else 1)


def test_a_hyper_parameter_search_row_steps_16_replicas_in_one_fastopt_call():
    """mlp20-sweep16: 16 replicas of mlp20, each a group with its own (lr, weight decay) of a 4x4
    grid; fastopt one call, every backend checked against the reference."""
    rows = cli.run_case("adamw", "float32", "mlp20-sweep16", repeats=1, on_sample=None)
    assert not any(r["wrong"] for r in rows), [r["backend"] for r in rows if r["wrong"]]
    assert next(r for r in rows if r["backend"] == "fastopt")["tensors"] == 320
    problem = cases.Problem(cases.OPTIMIZERS["adamw"], "float32", cases.shapes_of("mlp20-sweep16"),
                            grouped="mlp20-sweep16")
    per = problem.per_tensor()
    assert len(problem.groups) == 16 and len(set(zip(per["lr"], per["weight_decay"]))) == 16


@pytest.mark.parametrize("kernel", ["dropout", "mse_grad", "softmax_cross_entropy"])
def test_training_kernel_rows_are_checked_and_have_the_tables_columns(kernel):
    from fastopt.bench import training
    size = {"dropout": "64k", "mse_grad": "64k", "softmax_cross_entropy": "256x10"}[kernel]
    rows = training.run_case(kernel, "float32", size, repeats=1)
    assert {r["backend"] for r in rows} >= {"roofline", "fastopt", "numpy"}
    assert not any(r["wrong"] for r in rows), [r["backend"] for r in rows if r["wrong"]]
    ours = next(r for r in rows if r["backend"] == "fastopt")
    assert ours["gbps"] > 0 and ours["vs_numpy"] > 0 and ours["numel"] == (2560 if kernel == "softmax_cross_entropy"
                                                                          else 65536)


def test_deepspeed_backend_when_installed():
    if not cases.deepspeed_available():
        pytest.skip("DeepSpeed's CPU Adam is not installed, or its op is not built (it compiles at first use: "
                    "see fastopt.bench.cases.deepspeed_available)")
    rows = cli.run_case("adamw", "float32", "4k", repeats=1, on_sample=None)
    by = {r["backend"]: r for r in rows}
    assert "deepspeed" in by and not by["deepspeed"]["wrong"]


@pytest.mark.parametrize("layout", ["rich", "plain text (rich not installed)"])
def test_the_table_flags_what_it_cannot_vouch_for_and_fits_80_columns(capsys, monkeypatch, layout):
    """A noisy time, the ratios resting on it, and a share of the probe above 100% are marked and
    explained; in 80 columns no cell is cut, with rich or without it."""
    if layout == "rich":
        pytest.importorskip("rich")
    else:
        for name in ("rich", "rich.console", "rich.table"):
            monkeypatch.setitem(sys.modules, name, None)
    from fastopt.bench import report
    base = dict(optimizer="adamw", dtype="float32", problem="4k", numel=4096, tensors=1, wrong=False,
                elements_per_s=1e9, gbps=10.0, samples=5, min_s=1e-6)
    rows = [dict(base, backend="roofline", median_s=2e-6, spread=0.1, roofline_pct=100.0, vs_numpy=None, vs_torch=None),
            dict(base, backend="fastopt", median_s=1e-6, spread=0.6, roofline_pct=130.0, vs_numpy=5.0, vs_torch=9.0),
            dict(base, backend="numpy", median_s=5e-6, spread=0.1, roofline_pct=20.0, vs_numpy=1.0, vs_torch=1.8),
            dict(base, backend="torch-fused", median_s=9e-6, spread=0.1, roofline_pct=10.0, vs_numpy=0.5, vs_torch=1.0)]
    report.table(rows, "t", width=80)
    out = capsys.readouterr().out
    assert "1.0 us~" in out and "5.00x~" in out and "130%!" in out and "20%!" not in out
    assert "spread over 25%" in out and "read low" in out
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out


def test_an_interrupted_run_keeps_what_it_measured(tmp_path, monkeypatch, capsys):
    real = cli.run_case
    calls = []

    def run_case(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(cli, "run_case", run_case)
    code = cli.main(["--optimizer", "sgd", "--sizes", "4k,1m", "--repeats", "2", "--json", str(tmp_path / "i.json")])
    assert code == 130
    rows = json.loads((tmp_path / "i.json").read_text())["rows"]
    assert {r["problem"] for r in rows} == {"4k"}
    captured = capsys.readouterr()
    assert "interrupted: 1 of 2 cases measured" in captured.err and "sgd float32 4k" in captured.out


def test_the_drop_in_benchmark_runs_with_new_gradients_each_step():
    pytest.importorskip("torch")
    from fastopt.bench import torch_step
    rows = torch_step.run(["sgd"], ["mlp20"], repeats=2, new_grads=True)
    assert {r["variant"] for r in rows} >= {"fastopt", "torch fused", "torch foreach", "fastopt host side"}
    assert all(r["median_s"] > 0 for r in rows)


def test_the_drop_in_benchmark_marks_noisy_times_and_the_ratios_resting_on_them():
    pytest.importorskip("torch")
    from fastopt.bench import torch_step
    row = dict(model="mlp20", optimizer="adamw", median_s=1e-4, fastopt_speedup=1.0)
    quiet = [dict(row, variant="fastopt", spread=0.05), dict(row, variant="torch fused", spread=0.05)]
    assert "~" not in torch_step.report(quiet)
    noisy = [dict(row, variant="fastopt", spread=0.05), dict(row, variant="torch fused", spread=0.6)]
    lines = torch_step.report(noisy).splitlines()
    assert "~" not in lines[1] and lines[2].count("~") == 2 and lines[-1].startswith("~ :")
