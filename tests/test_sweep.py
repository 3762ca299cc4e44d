"""fastopt.sweep: K replicas with their own lr and weight decay in one optimizer call a step, each
exactly as its own training run; grid and random configurations."""
import math
import re

import numpy as np
import pytest

import fastopt
from fastopt import optim, sweep


def problem(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in ((5, 4), (4,), (30,))]


def gradients(params, t):
    return [p + np.cos(t + np.arange(p.size)).reshape(p.shape) for p in params]


@pytest.mark.parametrize("cls,shared", [(optim.AdamW, {}), (optim.SGD, dict(momentum=0.9)), (optim.Lion, {}),
                                        (optim.Adagrad, dict(initial_accumulator_value=0.1)),
                                        (optim.LAMB, dict(max_grad_norm=0.0))])
def test_replicas_step_in_one_call_each_as_its_own_run(cls, shared, monkeypatch):
    configs = sweep.grid(lr=[1e-3, 1e-2, 0.1], weight_decay=[0.0, 0.05])
    search = sweep.Sweep(problem(), configs, cls, **shared)
    calls = []  # (each one fastopt call: fastopt.optim's, prepared or not)
    update = optim.Optimizer._update
    monkeypatch.setattr(optim.Optimizer, "_update", lambda self, *a, **k: calls.append(a) or update(self, *a, **k))
    for t in range(1, 6):
        for k, params in enumerate(search.replicas):
            for buf, g in zip(search.grads[k], gradients(params, t)):
                buf[...] = g
            search.record(k, float(sum(np.sum(p * p) for p in params)))
        search.step()
    assert len(calls) == 5  # one call a step for the six replicas
    monkeypatch.setattr(optim.Optimizer, "_update", update)
    for config, replica in zip(configs, search.replicas):  # each its own optimizer, alone
        alone = problem()
        opt = cls(alone, **shared, **config)
        for t in range(1, 6):
            opt.step(gradients(alone, t))
        for a, b in zip(replica, alone):
            np.testing.assert_array_equal(a, b)


def test_lamb_replicas_that_clip_are_each_their_own_run():
    search = sweep.Sweep(problem(), sweep.grid(lr=[1e-3, 1e-2]), optim.LAMB, max_grad_norm=0.5)
    for t in range(1, 4):
        search.step([gradients(r, t) for r in search.replicas])
    for config, replica in zip(search.configs, search.replicas):
        alone = problem()
        opt = optim.LAMB(alone, max_grad_norm=0.5, **config)
        for t in range(1, 4):
            opt.step(gradients(alone, t))
        for a, b in zip(replica, alone):
            np.testing.assert_array_equal(a, b)


def test_gradients_can_be_passed_and_the_table_marks_the_lowest_loss():
    search = sweep.Sweep(problem(), [dict(lr=0.0), dict(lr=0.1), dict(lr=1e-3)], optim.SGD)
    for t in range(1, 4):
        search.step([gradients(r, t) for r in search.replicas])
        for k, r in enumerate(search.replicas):
            search.record(k, float(sum(np.sum(p * p) for p in r)))
    assert search.best() == 1
    lines = search.table().splitlines()
    assert lines[1].endswith("<- best") and "0.1" in lines[1] and len(lines) == 4
    np.testing.assert_array_equal(search.replicas[0][0], problem()[0])  # lr 0: unchanged
    search.record(1, math.nan)
    assert search.best() == 2  # a diverged replica is never the best
    fresh = sweep.Sweep(problem(), [dict(lr=0.1, betas=(0.9, 0.99)), dict(lr=0.2, betas=(0.8, 0.9))], optim.Adam)
    assert fresh.best() is None and "<- best" not in fresh.table()  # nothing recorded yet
    fresh.record(0, 1.0)
    assert "(0.9, 0.99)" in fresh.table() and fresh.table().splitlines()[1].endswith("<- best")


def test_grid_and_random_configurations():
    assert sweep.grid(lr=[1, 2], weight_decay=[0, 3]) == [dict(lr=1, weight_decay=0), dict(lr=1, weight_decay=3),
                                                          dict(lr=2, weight_decay=0), dict(lr=2, weight_decay=3)]
    drawn = sweep.random(200, lr=(1e-4, 1e-1), weight_decay=(0.0, 0.1), seed=1)
    lrs = np.array([c["lr"] for c in drawn])
    assert ((1e-4 <= lrs) & (lrs <= 1e-1)).all()
    assert 0.3 < np.mean(lrs < 1e-2 * 10 ** -0.5) < 0.7  # log-uniform: half below the middle decade
    assert all(0 <= c["weight_decay"] <= 0.1 for c in drawn)
    assert sweep.random(3, lr=(1e-3, 1e-2), seed=5) == sweep.random(3, lr=(1e-3, 1e-2), seed=5)


@pytest.mark.parametrize("make,error,words", [
    (lambda: sweep.grid(lr=0.1), TypeError, "lr must be a non-empty sequence"),
    (lambda: sweep.random(0, lr=(1e-3, 1e-2)), ValueError, "n must be an int >= 1"),
    (lambda: sweep.random(2, lr=(1e-2, 1e-3)), ValueError, "lr must be a (low, high) pair"),
    (lambda: sweep.random(2, lr=("a", "b")), TypeError, "lr must be a (low, high) pair of numbers"),
    (lambda: sweep.random(True, lr=(1e-3, 1e-2)), TypeError, "n must be an int"),
    (lambda: sweep.Sweep(problem(), [dict(lr=0.1)]).record(1, 0.5), ValueError, "k must be a replica's index"),
    (lambda: sweep.Sweep(problem(), []), TypeError, "configs must be a non-empty list"),
    (lambda: sweep.Sweep([], [dict(lr=0.1)]), TypeError, "params must be a non-empty list"),
    (lambda: sweep.Sweep(problem(), [dict(lr=0.1), dict(lr=-1.0)]), ValueError, "configs[1] = {'lr': -1.0}: "),
    (lambda: sweep.Sweep(problem(), [dict(momentum=0.9)], optim.Adam), ValueError, "configs[0] = {'momentum': 0.9}: "),
])
def test_bad_configurations_are_clear_errors(make, error, words):
    with pytest.raises(error, match=re.escape(words)):
        make()


def test_the_package_exports_it():
    assert fastopt.sweep is sweep
