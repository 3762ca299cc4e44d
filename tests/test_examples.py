"""The examples run (small sizes) and show what they claim."""
import os
import subprocess
import sys


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run(name):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick"], capture_output=True, text=True,
                          check=True).stdout


def test_linear_regression_same_losses():
    out = run("linear_regression.py")
    assert out.count("same losses: True") == 3, out


def test_sparse_logistic_exact_zeros():
    out = run("sparse_logistic.py")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("subgradient", "proximal"))}
    assert int(rows["subgradient"][-2]) == 0, out       # no exact zeros from the subgradient
    assert int(rows["proximal"][-2]) >= 100, out         # most of the 200 weights exactly zero
    assert "informative ones among them: 10 of 10" in out


def test_torch_mlp_trains_alike():
    import pytest
    pytest.importorskip("torch")
    out = run("torch_mlp.py")
    losses = [[float(x) for x in line.split()[1:]] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(losses) == 3 and all(len(row) == 3 and min(row) > 0 for row in losses), out
    assert losses[-1][2] < losses[0][2], out   # fastopt's run learns
    # (the example asserts fastopt's difference from torch is of the size of torch fused's own)
    assert "largest relative loss difference from torch" in out and "median optimizer step" in out, out


def test_lr_sweep_trains_every_configuration_together_as_alone(tmp_path):
    import re
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "lr_sweep.py"), "--quick"], capture_output=True,
                         text=True, check=True).stdout
    assert "the same weights: True" in out, out              # together equals one run per configuration
    rows = [line for line in out.splitlines() if re.match(r"\s+[0-9.e-]+\s+[0-9.e-]+\s+[0-9.]+", line)]
    assert len(rows) == 20 and rows[0].endswith("<- best"), out
    losses = [float(r.split()[2]) for r in rows]
    assert losses == sorted(losses) and losses[0] < 2.3, out  # below chance (ln 10): the best one learns
    calls = re.search(r"optimizer steps: together .* in (\d+) calls, .* in (\d+) calls", out)
    assert int(calls.group(2)) == 20 * int(calls.group(1)), out


def test_numpy_mlp_trains_the_digits_with_fastopt_as_with_plain_numpy():
    import re

    import pytest
    pytest.importorskip("sklearn")
    out = run("numpy_mlp.py")
    acc = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(NumPy \+ fastopt|plain NumPy|torch)\s+([0-9.]+)",
                                                            out, re.M)}
    assert acc["NumPy + fastopt"] > 0.9 and acc["plain NumPy"] > 0.9, out   # chance is 0.1
    assert abs(acc["NumPy + fastopt"] - acc["plain NumPy"]) < 0.04, out      # different masks, the same accuracy
    assert "the time of plain NumPy's" in out, out
