"""Bad input: each case raises a TypeError/ValueError naming the argument, and writes nothing."""
import inspect
import math
import re

import ml_dtypes
import numpy as np
import pytest
from cases import BUSIEST, call, make_arrays

import fastopt
from fastopt._optimizers import OPTIMIZERS


def adam_args(n=16, dtype=np.float32, k=None):
    """Fresh params, grads, exp_avgs, exp_avg_sqs (or lists of k of each)."""
    rng = np.random.default_rng(0)
    make = lambda: rng.standard_normal(n).astype(dtype)
    if k is None:
        return [make(), make(), make(), np.abs(make())]
    return [[make() for _ in range(k)] for _ in range(4)]


def read_only(a):
    a.flags.writeable = False
    return a


def unaligned(n=16):
    raw = np.zeros(n * 4 + 1, np.uint8)
    return raw[1:].view(np.float32)


def overlapping_views():
    buf = np.zeros(32, np.float32)
    p, g, _, _ = adam_args()
    return [p, g, buf[0:16], buf[8:24]]


def case(fn, args, kwargs=None):
    return (fn, args, kwargs or {})


A = fastopt.adam
CASES = {
    # (function, positional arrays, keywords): exception, words the message must contain
    "params int32": (case(A, [np.zeros(16, np.int32), *adam_args()[1:]], {"step": 1}), TypeError, "params has dtype int32"),
    "grads other dtype": (case(A, [adam_args()[0], np.zeros(16), *adam_args()[2:]], {"step": 1}), TypeError, "grads has dtype float64"),
    "shape mismatch": (case(A, [*adam_args()[:2], np.zeros(15, np.float32), adam_args()[3]], {"step": 1}), ValueError, "exp_avgs has shape (15,)"),
    "2-d shape mismatch": (case(A, [np.zeros((4, 4), np.float32), *adam_args()[1:]], {"step": 1}), ValueError, "grads has shape (16,)"),
    "non-contiguous": (case(A, [adam_args()[0], np.zeros(32, np.float32)[::2], *adam_args()[2:]], {"step": 1}), ValueError, "grads is not C-contiguous"),
    "negative stride": (case(A, [np.zeros(16, np.float32)[::-1], *adam_args()[1:]], {"step": 1}), ValueError, "params is not C-contiguous"),
    "read-only state": (case(A, [*adam_args()[:3], read_only(np.zeros(16, np.float32))], {"step": 1}), ValueError, "exp_avg_sqs is read-only"),
    "read-only params": (case(A, [read_only(np.zeros(16, np.float32)), *adam_args()[1:]], {"step": 1}), ValueError, "params is read-only"),
    "unaligned": (case(A, [*adam_args()[:2], unaligned(), adam_args()[3]], {"step": 1}), ValueError, "exp_avgs is not aligned"),
    "same array twice": (case(A, (lambda a: [a[0], a[1], a[0], a[3]])(adam_args()), {"step": 1}), ValueError, "overlap"),
    "overlapping views": (case(A, overlapping_views(), {"step": 1}), ValueError, "exp_avgs[0] and exp_avg_sqs[0] overlap"),
    "grad aliases state": (case(A, (lambda a: [a[0], a[2], a[2], a[3]])(adam_args()), {"step": 1}), ValueError, "overlap"),
    "same param twice in a list": (case(A, (lambda a: [[a[0][0], a[0][0]], *a[1:]])(adam_args(k=2)), {"step": 1}), ValueError, "params[0] and params[1] overlap"),
    "list lengths differ": (case(A, (lambda a: [a[0], a[1][:1], a[2], a[3]])(adam_args(k=2)), {"step": 1}), ValueError, "grads has 1 arrays, params has 2"),
    "bad entry in a list": (case(A, (lambda a: [a[0], [a[1][0], np.zeros(16)], a[2], a[3]])(adam_args(k=2)), {"step": 1}), TypeError, "grads[1] has dtype float64"),
    "empty list": (case(A, [[], [], [], []], {"step": 1}), ValueError, "params is an empty list"),
    "None grads": (case(A, [adam_args()[0], None, *adam_args()[2:]], {"step": 1}), TypeError, "grads is None"),
    "python floats": (case(A, [[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], {"step": 1}), TypeError, "params must be an array or a list of arrays, got a list of floats"),
    "negative lr": (case(A, adam_args(), {"step": 1, "lr": -1.0}), ValueError, "lr must be a finite number >= 0"),
    "nan lr": (case(A, adam_args(), {"step": 1, "lr": float("nan")}), ValueError, "lr must be"),
    "inf lr": (case(A, adam_args(), {"step": 1, "lr": float("inf")}), ValueError, "lr must be"),
    "beta1 = 1": (case(A, adam_args(), {"step": 1, "betas": (1.0, 0.999)}), ValueError, "betas[0] must be in [0, 1)"),
    "beta2 < 0": (case(A, adam_args(), {"step": 1, "betas": (0.9, -0.1)}), ValueError, "betas[1] must be in [0, 1)"),
    "eps < 0": (case(A, adam_args(), {"step": 1, "eps": -1e-8}), ValueError, "eps must be a finite number >= 0"),
    "negative weight_decay": (case(A, adam_args(), {"step": 1, "weight_decay": -0.1}), ValueError, "weight_decay must be"),
    "step 0": (case(A, adam_args(), {"step": 0}), ValueError, "step must be >= 1"),
    "float step": (case(A, adam_args(), {"step": 1.5}), TypeError, "step must be an integer"),
    "string lr": (case(A, adam_args(), {"step": 1, "lr": "0.1"}), TypeError, "lr must be a real number"),
    "betas not a pair": (case(A, adam_args(), {"step": 1, "betas": 0.9}), TypeError, "betas must be a pair"),
    "amsgrad without max": (case(A, adam_args(), {"step": 1, "amsgrad": True}), ValueError, "max_exp_avg_sqs is required"),
    "adamw negative lr": (case(fastopt.adamw, adam_args(), {"step": 1, "lr": -1e-3}), ValueError, "fastopt.adamw: lr"),
    "sgd without buffers": (case(fastopt.sgd, adam_args()[:2], {"lr": 0.1, "momentum": 0.9}), ValueError, "momentum_buffers is required"),
    "sgd nesterov dampening": (case(fastopt.sgd, adam_args()[:3], {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}), ValueError, "nesterov requires"),
    "sgd nesterov no momentum": (case(fastopt.sgd, adam_args()[:2], {"lr": 0.1, "nesterov": True}), ValueError, "nesterov requires"),
    "sgd negative momentum": (case(fastopt.sgd, adam_args()[:3], {"lr": 0.1, "momentum": -0.5}), ValueError, "momentum must be"),
    "sgd lr missing": (case(fastopt.sgd, adam_args()[:2], {}), TypeError, "lr"),
    "rmsprop centered without grad_avgs": (case(fastopt.rmsprop, adam_args()[:3], {"centered": True}), ValueError, "grad_avgs is required"),
    "rmsprop momentum without buffers": (case(fastopt.rmsprop, adam_args()[:3], {"momentum": 0.9}), ValueError, "momentum_buffers is required"),
    "rmsprop alpha > 1": (case(fastopt.rmsprop, adam_args()[:3], {"alpha": 1.5}), ValueError, "alpha must be in [0, 1]"),
    "adagrad negative lr_decay": (case(fastopt.adagrad, adam_args()[:3], {"step": 1, "lr_decay": -1.0}), ValueError, "lr_decay must be"),
    "adagrad eps < 0": (case(fastopt.adagrad, adam_args()[:3], {"step": 1, "eps": -1.0}), ValueError, "eps must be"),
    "nadam mu_product > 1": (case(fastopt.nadam, adam_args(), {"step": 2, "mu_product": 1.5}), ValueError, "mu_product must be in [0, 1]"),
    "radam step 0": (case(fastopt.radam, adam_args(), {"step": 0}), ValueError, "step must be >= 1"),
    "lion beta > 1": (case(fastopt.lion, adam_args()[:3], {"betas": (0.9, 1.5)}), ValueError, "betas[1] must be in [0, 1]"),
    "lamb negative max_grad_norm": (case(fastopt.lamb, adam_args(), {"step": 1, "max_grad_norm": -1.0}), ValueError, "max_grad_norm must be"),
    "lamb read-only state": (case(fastopt.lamb, [*adam_args()[:3], read_only(np.zeros(16, np.float32))], {"step": 1}), ValueError, "exp_avg_sqs is read-only"),
    "negative l1_prox": (case(A, adam_args(), {"step": 1, "l1_prox": -0.1}), ValueError, "l1_prox must be"),
    "zero grad_scale": (case(A, adam_args(), {"step": 1, "grad_scale": 0.0}), ValueError, "grad_scale must be > 0"),
    "found_inf float64 array": (case(A, adam_args(), {"step": 1, "found_inf": np.zeros(1)}), TypeError, "found_inf must be"),
    "found_inf string": (case(A, adam_args(), {"step": 1, "found_inf": "no"}), TypeError, "found_inf must be"),
    "l2_grad negative lam": (case(fastopt.l2_grad, adam_args()[:2], {"lam": -1.0}), ValueError, "lam must be"),
    "l1_grad shape mismatch": (case(fastopt.l1_grad, [np.zeros(16, np.float32), np.zeros(8, np.float32)], {"lam": 0.1}), ValueError, "params has shape (8,)"),
    "elastic read-only grads": (case(fastopt.elastic_net_grad, [read_only(np.zeros(16)), np.zeros(16)], {"l1": 0.1, "l2": 0.1}), ValueError, "grads is read-only"),
    "global_norm norm_type 0": (case(fastopt.global_norm, [np.zeros(4)], {"norm_type": 0.0}), ValueError, "norm_type must be > 0"),
    "global_norm int grads": (case(fastopt.global_norm, [np.zeros(4, np.int64)]), TypeError, "grads has dtype int64"),
    "clip negative max_norm": (case(fastopt.clip_grad_norm, [np.ones(4), -1.0]), ValueError, "max_norm must be"),
    "clip read-only": (case(fastopt.clip_grad_norm, [read_only(np.ones(4)), 0.1]), ValueError, "grads is read-only"),
    "unscale read-only flag": (case(fastopt.unscale, [np.ones(4), 0.5, read_only(np.zeros(1, np.float32))]), TypeError, "found_inf must be a writable"),
    "unscale nan inv_scale": (case(fastopt.unscale, [np.ones(4), float("nan")]), ValueError, "inv_scale must be finite"),
    "sgd buffer is param": (case(fastopt.sgd, (lambda a: [a[0], a[1], a[0]])(adam_args()), {"lr": 0.1, "momentum": 0.9}), ValueError, "overlap"),
    "dropout p above 1": (case(fastopt.dropout, [np.ones(8, np.float32), 1.5], {"seed": 0, "counter": 0}), ValueError, "p must be in [0, 1]"),
    "dropout negative seed": (case(fastopt.dropout, [np.ones(8, np.float32), 0.5], {"seed": -1, "counter": 0}), ValueError, "seed must be in [0, 2**64)"),
    "dropout int32 mask": (case(fastopt.dropout, [np.ones(8, np.float32), 0.5], {"seed": 0, "counter": 0, "mask": np.zeros(8, np.int32)}), TypeError, "mask must be a uint8 or bool array"),
    "mse target shape": (case(fastopt.mse_grad, [np.ones(8, np.float32), np.ones(7, np.float32)]), ValueError, "target has shape (7,)"),
    "mse reduction none": (case(fastopt.mse_grad, [np.ones(8, np.float32), np.ones(8, np.float32)], {"reduction": "none"}), ValueError, "reduction must be 'mean' or 'sum'"),
    "xent label out of range": (case(fastopt.softmax_cross_entropy, [np.ones((2, 3), np.float32), np.array([0, 3])]), ValueError, "labels[1] is 3, outside [0, 3)"),
    "xent float labels": (case(fastopt.softmax_cross_entropy, [np.ones((2, 3), np.float32), np.zeros(2)]), TypeError, "labels must be an array of integers"),
    "xent 1-d logits": (case(fastopt.softmax_cross_entropy, [np.ones(3, np.float32), np.array([0])]), ValueError, "logits must be 2-D"),
}


def snapshot(x):
    if isinstance(x, np.ndarray):
        return x.tobytes()
    if isinstance(x, (list, tuple)):
        return [snapshot(a) for a in x]
    return x


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_and_writes_nothing(name):
    (fn, args, kwargs), error, words = CASES[name]
    before = snapshot(args)
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert words in str(info.value), str(info.value)
    assert snapshot(args) == before


def test_settings_errors():
    with pytest.raises(ValueError, match=r"threads must be in \[1, 256\]"):
        fastopt.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastopt.set_num_threads(2.0)
    with pytest.raises(ValueError, match="SIMD level 'sse9' is unknown"):
        fastopt.set_isa("sse9")
    assert fastopt.info()["isa"] == fastopt.info()["isas_available"][-1]


def test_the_docs_table_lists_every_case():
    """docs/errors.md has one row per case above, and no other."""
    import os
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "errors.md")) as f:
        rows = [line.split("|")[1].strip() for line in f if line.startswith("| ") and not line.startswith("| case")]
    assert rows == list(CASES)


def test_an_array_from_another_library_is_a_type_error():
    """Mixed devices/libraries: a GPU array (here Numba's, under its simulator) or an object that is
    no array among host arrays is refused by name, and nothing is written."""
    cuda = pytest.importorskip("numba.cuda")
    p, g, m, v = adam_args()
    before = snapshot([p, m, v])
    with pytest.raises(TypeError, match="grads is on a GPU but params is in host memory"):
        fastopt.adam(p, cuda.to_device(g), m, v, step=1)
    with pytest.raises(TypeError, match="exp_avgs must be a numpy.ndarray, got memoryview"):
        fastopt.adam(p, g, memoryview(m), v, step=1)
    assert snapshot([p, m, v]) == before


def test_torch_cpu_tensors_are_host_arrays():
    """PyTorch CPU tensors go where NumPy arrays go (zero-copy views, bfloat16 included), alone or
    mixed with NumPy arrays, with the same results and the same checks."""
    torch = pytest.importorskip("torch")
    p, g, m, v = adam_args()
    ours = [torch.from_numpy(x.copy()) for x in (p, g, m, v)]
    fastopt.adam(ours[0], g, *ours[2:], step=1, grad_scale=torch.tensor([2.0]), found_inf=torch.zeros(1))
    fastopt.adam(p, g, m, v, step=1, grad_scale=2.0)
    for t, x in zip(ours, (p, g, m, v)):
        np.testing.assert_array_equal(t.numpy(), x)
    bf = [torch.from_numpy(x).to(torch.bfloat16) for x in (p, g, m, v)]
    ref = [x.numpy() if x.dtype != torch.bfloat16 else x.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
           for x in bf]
    fastopt.adamw(*[[x] for x in bf], step=2)
    fastopt.adamw([ref[0]], [ref[1]], [ref[2]], [ref[3]], step=2)
    np.testing.assert_array_equal(bf[0].view(torch.int16).numpy(), ref[0].view(np.int16))
    flag = torch.zeros(1)
    assert fastopt.unscale(torch.tensor([1.0, float("inf")]), 0.5, found_inf=flag) and flag.item() == 1.0
    with pytest.raises(ValueError, match="grads is not C-contiguous"):
        fastopt.sgd(torch.zeros(4, 4), torch.zeros(4, 4).t(), lr=0.1)


# A value out of range for each bounded hyper-parameter, and the words of its error.
OUT_OF_RANGE = {"lr": (-1.0, "lr must be"), "eps": (-1e-8, "eps must be"), "weight_decay": (-0.1, "weight_decay must be"),
                "betas": ((0.9, 1.5), "betas[1] must be"), "momentum": (-0.5, "momentum must be"),
                "alpha": (1.5, "alpha must be"), "lr_decay": (-0.1, "lr_decay must be"),
                "momentum_decay": (-1.0, "momentum_decay must be"), "max_grad_norm": (-1.0, "max_grad_norm must be")}


@pytest.mark.parametrize("name,arg", [(name, arg) for name in OPTIMIZERS for arg in OUT_OF_RANGE
                                      if arg in inspect.signature(getattr(fastopt, name)).parameters])
def test_every_bounded_hyper_parameter_is_checked_before_writing(name, arg):
    """Every optimizer of the table, each hyper-parameter it bounds: a ValueError naming it, and
    params and state unchanged (NaN too: it is in no range)."""
    flags = dict(BUSIEST[name])
    arrays = make_arrays(name, flags, 33, np.float32, np.random.default_rng(0))
    before = {k: v.tobytes() for k, v in arrays.items()}
    value, words = OUT_OF_RANGE[arg]
    for bad in (value, (value[0], math.nan) if arg == "betas" else math.nan):
        with pytest.raises(ValueError, match=re.escape(words)):
            call(fastopt, name, arrays, flags, **{arg: bad})
        assert {k: v.tobytes() for k, v in arrays.items()} == before


@pytest.mark.parametrize("seed", range(40))
def test_the_overlap_check_over_many_tensors_finds_exactly_the_overlaps(seed):
    """C's overlap check (its extents sorted by address) against every pair, on fake device
    addresses (fastopt_common.constant_rows: C checks the call and reads no buffer): up to 300
    tensors a role, addresses in order, reversed or shuffled, spanning the high bytes; a written
    buffer must share memory with no other, read-only ones (grads) may."""
    from fastopt._native import ffi, lib
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    numel = rng.integers(0, 64, n) * 4  # (0: an empty tensor, not checked)
    roles = ["params", "grads", "exp_avgs", "exp_avg_sqs"]
    start = int(rng.integers(1, 1 << 20)) << int(rng.integers(8, 44))
    spans = [(r, t) for r in range(4) for t in range(n)]
    order = rng.permutation(len(spans)) if seed % 3 else np.arange(len(spans))[::1 if seed % 2 else -1]
    lo, at = {}, start
    for i in order:  # laid out one after another, then some moved onto others
        r, t = spans[i]
        lo[r, t], at = at, at + int(numel[t]) * 4 + int(rng.integers(0, 3)) * 64
    for _ in range(int(rng.integers(0, 3))):
        (r, t), (q, u) = (spans[i] for i in rng.integers(0, len(spans), 2))
        lo[r, t] = lo[q, u] + int(rng.integers(0, max(1, int(numel[u])))) * 4
    extents = [(lo[r, t], lo[r, t] + int(numel[t]) * 4, roles[r] != "grads", roles[r], t)
               for r in range(4) for t in range(n) if numel[t]]
    expected = any(a[0] < b[1] and b[0] < a[1] and (a[2] or b[2])
                   for i, a in enumerate(extents) for b in extents[i + 1:])
    lists = [ffi.new("void *[]", [ffi.cast("void *", lo[r, t]) for t in range(n)]) for r in range(4)]
    o = ffi.new("fastopt_adam_options *")
    o.common.lr, o.beta1, o.beta2, o.eps, o.step = 1e-3, 0.9, 0.999, 1e-8, 1
    rows = np.zeros((n, lib.FASTOPT_CONSTANTS_ROW))
    o.common.constant_rows = ffi.from_buffer("double[]", rows)
    status = lib.fastopt_adam(lib.FASTOPT_FLOAT32, n, ffi.new("size_t[]", numel.tolist()), *lists, ffi.NULL, o)
    assert status == (lib.FASTOPT_ERR_OVERLAP if expected else lib.FASTOPT_OK), ffi.string(lib.fastopt_last_error())
