"""fastopt's functional updates: in place, one C call per call, lists of arrays allowed.

Each array argument is one array or a list of arrays (a multi-tensor update: params[i], grads[i]
and the state arrays [i] belong together): NumPy arrays or PyTorch CPU tensors (zero-copy views),
or GPU arrays (see :mod:`fastopt.cuda`).  Every array of a call has the shape of its params
entry, is C-contiguous, and every written array is writable and shares memory with no other array
of the call.  A call that raises has modified nothing.

dtypes: params and grads float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``); the math
runs in float32 registers for the 16-bit types, stored back rounded to nearest even.  The state
arrays share one dtype, the params' own or (mixed precision) float32 or bfloat16: the state dtype
is the dtype of the state arrays you pass.

Every optimizer also takes these keywords, fused into its one pass:

- ``l1_prox=lam``: after the update, the proximal step of an L1 penalty (soft thresholding),
  ``p = sign(p) * max(|p| - lr * lam, 0)``: exact zeros, which subgradient L1 never reaches.
- ``grad_scale=s``: gradients are read as ``grad / s`` (loss scaling, like torch's fused optimizers;
  a power-of-two scale is undone exactly).  The grads themselves are not written.
- ``found_inf=f``: a flag (bool, number, or a one-element float32 array that C reads) from
  :func:`unscale` or a GradScaler; when it is non-zero the step is skipped and nothing is written.
- ``master_params=w``: float32 master copies of float16/bfloat16 params, updated in the same pass;
  the params are then written from them (rounded), never read.
- ``stochastic_rounding=seed``: bfloat16 params without master copies are rounded stochastically
  (up with probability the dropped fraction; unbiased), with bits from Philox-4x32-10 keyed by the
  seed and counted by the step (:func:`fastopt.reference.stochastic_round_bf16` gives each bit):
  the same seed and step give the same result.  Optimizers without a
  step count take ``(seed, counter)``, a new counter each call.
- 8-bit state: SGD's momentum buffers, Adam/AdamW's (without amsgrad) and Lion's state may be
  :class:`fastopt.QuantizedState` objects (blockwise dynamic quantization), quantized and
  dequantized in the update's own pass; see :mod:`fastopt.quant8`.
- ``stream=s``: GPU arrays only: the CUDA stream to launch on (see :mod:`fastopt.cuda`).
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from fastopt._arrays import (UNUSED, Prepared, array_or_list, bump_versions, gather, host_view, integer, pair, pointer,
                             real, torch_written)
from fastopt.cuda._arrays import is_gpu_array
from fastopt.quant8 import QuantizedState
from fastopt._native import check, ffi, lib
# One NumPy array per role, Python-float hyper-parameters, no extras: sgd, adam and adamw go
# through fastopt._single (csrc/python/single.c), which checks the arrays' buffers in C and calls
# the C API at a third of the general path's Python cost; it returns False for anything else, or
# anything refused, and the general path then runs (and names the problem).
from fastopt import _single

__all__ = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam", "lion", "lamb",
           "l2_grad", "l1_grad", "elastic_net_grad", "global_norm", "clip_grad_norm", "unscale"]


_ARRAY_TYPES = (np.ndarray, Prepared)  # taken as they are; anything else is checked by array_or_list


def _flag(fn: str, found_inf):
    """found_inf as C takes it: a float* (NULL for none), or None when the step is to be skipped."""
    if found_inf is None:
        return ffi.NULL
    if isinstance(found_inf, (bool, np.bool_)):
        return None if found_inf else ffi.NULL
    if is_gpu_array(found_inf):
        return ffi.NULL  # read on the device by the kernels (fastopt.cuda)
    found_inf = host_view(found_inf)
    if isinstance(found_inf, np.ndarray):
        if found_inf.dtype != np.float32 or found_inf.size != 1 or not found_inf.flags.c_contiguous:
            raise TypeError(f"fastopt.{fn}: found_inf must be a one-element float32 array, a bool or a number")
        return ffi.from_buffer("float[]", found_inf)
    return None if real(fn, "found_inf", found_inf) != 0 else ffi.NULL


def _scale(fn: str, grad_scale) -> float:
    if grad_scale is None:
        return 0.0  # C's "no scaling"
    grad_scale = host_view(grad_scale)
    if isinstance(grad_scale, np.ndarray) and grad_scale.size == 1:
        grad_scale = grad_scale.item()
    scale = real(fn, "grad_scale", grad_scale)
    if not scale > 0:
        raise ValueError(f"fastopt.{fn}: grad_scale must be > 0, got {scale}")
    return scale


def _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf):
    """The fastopt_common initializer, or None when found_inf says the step is skipped."""
    # inline fast paths first: a small step costs a few microseconds, and much of it is here
    flag = ffi.NULL if found_inf is None else _flag(fn, found_inf)
    if flag is None:
        return None
    return [lr if type(lr) is float else real(fn, "lr", lr),
            weight_decay if type(weight_decay) is float else real(fn, "weight_decay", weight_decay),
            l1_prox if type(l1_prox) is float else real(fn, "l1_prox", l1_prox),
            0.0 if grad_scale is None else _scale(fn, grad_scale), flag, bool(maximize)]


def _betas(fn, betas):
    if type(betas) is tuple and len(betas) == 2 and type(betas[0]) is float and type(betas[1]) is float:
        return betas
    return pair(fn, "betas", betas)


def _step(fn, step):
    """(the step, None), or with one step per tensor (a sequence or 1-D integer array): (its first,
    the steps as an int64 array)."""
    if type(step) is int:
        return step, None
    if isinstance(step, (list, tuple)) or getattr(host_view(step), "ndim", 0) == 1:
        steps = np.asarray(host_view(step))
        if steps.ndim != 1 or not steps.size or steps.dtype.kind not in "iu":
            raise TypeError(f"fastopt.{fn}: step must be an integer, or a non-empty sequence of integers (one per "
                            f"tensor), got {type(step).__name__} of dtype {steps.dtype}")
        steps = np.ascontiguousarray(steps, np.int64)
        return int(steps[0]), steps
    return integer(fn, "step", step), None


def _per_tensor(fn: str, name: str, values: np.ndarray, n: int):
    """A per-tensor array (int64 or float64) as C takes it (it reads n values), checked to have one
    value per tensor; the array must outlive the call."""
    if len(values) != n:
        raise ValueError(f"fastopt.{fn}: {name} has {len(values)} values, one per tensor of params ({n}) is required")
    return ffi.from_buffer("int64_t[]" if values.dtype == np.int64 else "double[]", values)


def _run(fn: str, c_function, options, roles, *scalars, stream=None, found_inf=None, master_params=None,
         stochastic_rounding=None, step=None, steps=None, mu_products=None):
    """Validates the arrays of roles, (name, array(s) or UNUSED, written[, "state"]), and calls C
    with the options struct, or with the scalars when there is none; GPU arrays go to fastopt.cuda.
    The state arrays' dtype, master_params, stochastic rounding and per-tensor steps (and NAdam's
    mu_products) go into the options."""
    if stochastic_rounding is not None and steps is not None and not isinstance(stochastic_rounding, tuple):
        raise TypeError(f"fastopt.{fn}: stochastic_rounding must be (seed, counter) with per-tensor steps")
    if type(roles[0][1]) is Prepared:  # arrays their owner validated (fastopt.torch): as they are
        written, absmax, block = (), (), 0
        if master_params is not None:
            roles = roles + [("master_params", master_params, True, "master")]
    else:
        written = torch_written(fn, roles, master_params)
        gpu = _on_gpu(roles[0][1])
        roles, absmax, block = _quantized(fn, roles)
        if gpu:
            rounding = None if stochastic_rounding is None else _rounding(fn, stochastic_rounding, step)
            _run_gpu(fn, c_function, options, roles, scalars, stream, found_inf, master_params, rounding, absmax,
                     block, steps, mu_products)
            bump_versions(written)
            return
        if master_params is not None:
            roles = roles + [("master_params", master_params, True, "master")]
    dtype, numel, ptrs, state = gather(fn, roles)
    if options is not None:
        common = options.common
        if steps is not None:
            common.steps = kept_steps = _per_tensor(fn, "step", steps, len(numel))
        if mu_products is not None:
            options.mu_products = kept_mu = _per_tensor(fn, "mu_product", mu_products, len(numel))
        if state != dtype:
            common.state_dtype = state
        if absmax:
            scales = [ffi.new("void *[]", [pointer(a) for a in arrays]) for arrays in absmax]
            common.quant_block, common.absmax = block, scales + [ffi.NULL] * (2 - len(scales))
        if master_params is not None:
            masters = ptrs.pop()  # a pointer list, or a Prepared role's pointer array (alive for the call)
            common.master_params = masters = masters if isinstance(masters, ffi.CData) else ffi.new("void *[]", masters)
        if stochastic_rounding is not None:
            common.stochastic_rounding = 1
            common.rounding_seed, common.rounding_step = _rounding(fn, stochastic_rounding, step)
    status = c_function(dtype, len(numel), numel, *ptrs, options) if options is not None else \
        c_function(dtype, len(numel), numel, *ptrs, *scalars)
    if status:
        check(status, fn)
    bump_versions(written)


def _quantized(fn: str, roles):
    """roles with QuantizedState state replaced by their codes (kind "q8"), the absmax arrays of
    each such role, and the block size; unchanged roles when there is none."""
    for role in roles:  # the common case first, cheaply: no QuantizedState anywhere
        value = role[1]
        if type(value) is np.ndarray or value is UNUSED or len(role) < 4 or role[3] != "state":
            continue
        if isinstance(value[0] if isinstance(value, (list, tuple)) and value else value, QuantizedState):
            break
    else:
        return roles, [], 0
    out, absmax, blocks = [], [], set()
    for name, value, written, *kind in roles:
        if not (kind == ["state"] and value is not UNUSED):
            out.append((name, value, written, *kind))
            continue
        states = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(q, QuantizedState) for q in states):
            raise TypeError(f"fastopt.{fn}: {name} mixes 8-bit and other state; with 8-bit state every state "
                            f"array is a fastopt.QuantizedState")
        if name == "max_exp_avg_sqs":
            raise ValueError(f"fastopt.{fn}: 8-bit state is supported by sgd with momentum, adam/adamw without "
                             f"amsgrad, and lion")
        signed = name != "exp_avg_sqs"
        if any(q.signed != signed for q in states):
            raise TypeError(f"fastopt.{fn}: {name} needs QuantizedState(..., signed={signed}) "
                            f"({'second moments are >= 0' if not signed else 'it takes both signs'})")
        blocks.update(q.block_size for q in states)
        codes = [q.codes for q in states]
        out.append((name, codes if isinstance(value, (list, tuple)) else codes[0], written, "q8"))
        absmax.append([q.absmax for q in states])
    if len(blocks) != 1:
        raise ValueError(f"fastopt.{fn}: the QuantizedStates of one call need one block_size, got {sorted(blocks)}")
    return out, absmax, blocks.pop()


def _rounding(fn: str, stochastic_rounding, step) -> tuple[int, int]:
    """(seed, counter) of stochastic rounding: a seed and the optimizer's step, or (seed, counter)."""
    value = stochastic_rounding
    if isinstance(value, tuple) and len(value) == 2:
        seed, counter = integer(fn, "stochastic_rounding[0]", value[0]), integer(fn, "stochastic_rounding[1]", value[1])
    elif step is not None:
        seed, counter = integer(fn, "stochastic_rounding", value), step
    else:
        raise TypeError(f"fastopt.{fn}: stochastic_rounding must be (seed, counter) for an optimizer without a step "
                        f"count (a new counter every call), got {value!r}")
    if not (0 <= seed < 2**64 and 0 <= counter < 2**32):
        raise ValueError(f"fastopt.{fn}: stochastic_rounding needs 0 <= seed < 2**64 and 0 <= counter < 2**32")
    return seed, counter


def _on_gpu(value) -> bool:
    first = value[0] if isinstance(value, (list, tuple)) and value else value
    return type(first) is not np.ndarray and type(first) is not Prepared and is_gpu_array(first)


def _run_gpu(fn, c_function, options, roles, scalars, stream, found_inf, master_params, rounding, absmax, block,
             steps=None, mu_products=None):
    """The GPU path of _run: C validates the hyper-parameters (a call over no tensors), the CUDA
    backend the arrays, then launches."""
    from fastopt.cuda import _launch
    nulls = [ffi.NULL] * len(roles)
    check(c_function(lib.FASTOPT_FLOAT32, 0, ffi.NULL, *nulls, *([options] if options is not None else scalars)), fn)
    roles = [(name, None if value is UNUSED else value, written, *kind) for name, value, written, *kind in roles]
    if options is None:
        return _launch.elastic_net_grad(fn, roles[0][1], roles[1][1], *scalars, stream=stream)
    _launch.optimizer(fn, options, roles, stream=stream, found_inf=found_inf, master_params=master_params,
                      rounding=rounding, absmax=absmax, block=block, steps=steps, mu_products=mu_products)


def _require(fn: str, name: str, value, why: str):
    if value is None:
        raise ValueError(f"fastopt.{fn}: {name} is required {why}")
    return value


def sgd(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
        weight_decay=0.0, maximize=False, first_step=False, l1_prox=0.0, grad_scale=None, found_inf=None,
        stream=None, master_params=None, stochastic_rounding=None):
    """Stochastic gradient descent with momentum, in place (torch.optim.SGD rules).

    Per element, with ``b`` the momentum buffer::

        g = -grad if maximize else grad
        g = g + weight_decay * p                  (if weight_decay != 0)
        b = g if first_step else momentum * b + (1 - dampening) * g      (if momentum != 0)
        g = g + momentum * b if nesterov else b                          (if momentum != 0)
        p = p - lr * g

    References: Sutskever et al. 2013, "On the importance of initialization and momentum in deep
    learning" (the Nesterov form is torch's).

    Args:
      params: parameter array or list of arrays (float32, float64, float16 or bfloat16), updated in place.
      grads: gradients, same shapes and dtype; only read.
      momentum_buffers: momentum state, updated in place; required when momentum != 0.
      lr: learning rate, >= 0.
      momentum: momentum factor, >= 0.
      dampening: dampening of the gradient in the momentum buffer.
      nesterov: Nesterov momentum (needs momentum > 0 and dampening == 0).
      weight_decay: L2 penalty coefficient added to the gradient, >= 0.
      maximize: maximize the objective instead of minimizing it.
      first_step: set each buffer to the gradient instead of accumulating into it, as torch does
        on the first step (when its buffer is None).  Pass True on your first step with momentum.
      l1_prox, grad_scale, found_inf: see the module docstring.

    Returns:
      None.
    """
    if momentum_buffers is not None and type(momentum_buffers) not in _ARRAY_TYPES:
        array_or_list("sgd", "momentum_buffers", momentum_buffers)  # never a value silently ignored
    if (grad_scale is None and found_inf is None and stream is None and master_params is None
            and stochastic_rounding is None and _single.sgd(params, grads, momentum_buffers, lr, momentum, dampening,
                                                            weight_decay, l1_prox, nesterov, maximize, first_step)):
        return  # the latency path (fastopt._single) made the update
    fn = "sgd"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    momentum, dampening = real(fn, "momentum", momentum), real(fn, "dampening", dampening)
    if common is None:
        return
    o = ffi.new("fastopt_sgd_options *", [common, momentum, dampening, bool(nesterov), bool(first_step)])
    if momentum != 0:
        _require(fn, "momentum_buffers", momentum_buffers, "when momentum != 0")
    _run(fn, lib.fastopt_sgd, o, [("params", params, True), ("grads", grads, False),
                                  ("momentum_buffers", momentum_buffers if momentum != 0 else UNUSED, True, "state")],
         stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=None)


def _adam(fn, decoupled, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize, l1_prox, grad_scale, found_inf, stream, master_params,
          stochastic_rounding):
    if max_exp_avg_sqs is not None and type(max_exp_avg_sqs) not in _ARRAY_TYPES:
        array_or_list(fn, "max_exp_avg_sqs", max_exp_avg_sqs)  # never a value silently ignored
    if (not amsgrad and grad_scale is None and found_inf is None and stream is None and master_params is None
            and stochastic_rounding is None and type(betas) is tuple and len(betas) == 2
            and _single.adam(params, grads, exp_avgs, exp_avg_sqs, lr, betas[0], betas[1], eps, weight_decay, l1_prox,
                             step, decoupled, maximize)):
        return  # the latency path (fastopt._single) made the update
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    betas, (step, steps), eps = _betas(fn, betas), _step(fn, step), real(fn, "eps", eps)
    if common is None:
        return
    o = ffi.new("fastopt_adam_options *", [common, betas[0], betas[1], eps, step, bool(amsgrad), decoupled])
    if amsgrad:
        _require(fn, "max_exp_avg_sqs", max_exp_avg_sqs, "when amsgrad=True")
    _run(fn, lib.fastopt_adam, o, [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True, "state"),
                                   ("exp_avg_sqs", exp_avg_sqs, True, "state"),
                                   ("max_exp_avg_sqs", max_exp_avg_sqs if amsgrad else UNUSED, True, "state")],
         stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps)


def adam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, amsgrad=False, max_exp_avg_sqs=None, maximize=False, l1_prox=0.0,
         grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """Adam, in place (torch.optim.Adam rules, weight decay coupled as an L2 penalty).

    Per element, at step ``t`` (1 on the first call), with ``m``/``v`` the first/second moments::

        g = -grad if maximize else grad
        g = g + weight_decay * p                  (if weight_decay != 0)
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v); v_hat = vmax if amsgrad else v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    References: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization"; Reddi et al. 2018,
    "On the Convergence of Adam and Beyond" (amsgrad).

    Args:
      params: parameter array or list of arrays (float32, float64, float16 or bfloat16), updated in place.
      grads: gradients, same shapes and dtype; only read.
      exp_avgs, exp_avg_sqs: first and second moment state, updated in place (start at zeros).
      step: the step being taken, >= 1 (bias correction); or one per tensor (a sequence or 1-D
        integer array), each tensor's own step count, as torch.optim keeps one per parameter (a
        parameter whose gradient was None on some steps is behind the others): still one call.
      lr: learning rate, >= 0.
      betas: (beta1, beta2), each in [0, 1).
      eps: added to the denominator, >= 0.
      weight_decay: L2 penalty coefficient, >= 0.
      amsgrad: use the running maximum of v.
      max_exp_avg_sqs: that maximum, updated in place; required with amsgrad.
      maximize: maximize the objective instead of minimizing it.
      l1_prox, grad_scale, found_inf: see the module docstring.

    Returns:
      None.
    """
    _adam("adam", False, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize, l1_prox, grad_scale, found_inf, stream, master_params,
          stochastic_rounding)


def adamw(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=1e-2, amsgrad=False, max_exp_avg_sqs=None, maximize=False, l1_prox=0.0,
          grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """AdamW, in place (torch.optim.AdamW rules: decoupled weight decay).

    As :func:`adam`, except that weight decay shrinks the weight instead of joining the gradient::

        p = p * (1 - lr * weight_decay)           (before the Adam step)

    References: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization".

    Args:
      As :func:`adam`; weight_decay defaults to 1e-2.

    Returns:
      None.
    """
    _adam("adamw", True, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize, l1_prox, grad_scale, found_inf, stream, master_params,
          stochastic_rounding)


def rmsprop(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=1e-2, alpha=0.99,
            eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False, l1_prox=0.0,
            grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """RMSprop, in place (torch.optim.RMSprop rules).

    Per element, with ``s`` the square average, ``ga`` the gradient average, ``b`` the buffer::

        g = -grad if maximize else grad;  g = g + weight_decay * p   (if weight_decay != 0)
        s = alpha * s + (1 - alpha) * g * g
        centered:  ga = ga + (1 - alpha) * (g - ga);  d = sqrt(s - ga * ga) + eps
        else:      d = sqrt(s) + eps
        momentum > 0:  b = momentum * b + g / d;  p = p - lr * b
        else:          p = p - lr * g / d

    References: Hinton, Lecture 6e of "Neural Networks for Machine Learning" (2012); Graves 2013,
    "Generating Sequences With Recurrent Neural Networks" (centered).

    Args:
      params, grads: as :func:`sgd`.
      square_avgs: running average of g^2, updated in place (start at zeros).
      grad_avgs: running average of g, required when centered.
      momentum_buffers: required when momentum > 0.
      lr: >= 0.  alpha: smoothing constant in [0, 1].  eps: >= 0.  weight_decay: >= 0.
      momentum: >= 0.  centered: normalize by the variance instead of the second moment.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    fn = "rmsprop"
    grad_avgs, momentum_buffers = (array_or_list(fn, "grad_avgs", grad_avgs),
                                   array_or_list(fn, "momentum_buffers", momentum_buffers))
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    alpha, eps, momentum = real(fn, "alpha", alpha), real(fn, "eps", eps), real(fn, "momentum", momentum)
    if common is None:
        return
    o = ffi.new("fastopt_rmsprop_options *", [common, alpha, eps, momentum, bool(centered)])
    if centered:
        _require(fn, "grad_avgs", grad_avgs, "when centered=True")
    if momentum > 0:
        _require(fn, "momentum_buffers", momentum_buffers, "when momentum > 0")
    _run(fn, lib.fastopt_rmsprop, o, [("params", params, True), ("grads", grads, False),
                                      ("square_avgs", square_avgs, True, "state"),
                                      ("grad_avgs", grad_avgs if centered else UNUSED, True, "state"),
                                      ("momentum_buffers", momentum_buffers if momentum > 0 else UNUSED, True, "state")],
         stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=None)


def adagrad(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, l1_prox=0.0, grad_scale=None, found_inf=None, stream=None, master_params=None,
            stochastic_rounding=None):
    """Adagrad, in place (torch.optim.Adagrad rules).

    Per element, at step ``t``, with ``s`` the sum of squared gradients::

        g = -grad if maximize else grad;  g = g + weight_decay * p   (if weight_decay != 0)
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    References: Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization".

    Args:
      params, grads: as :func:`sgd`.
      state_sums: sum of squared gradients, updated in place; start it at torch's
        ``initial_accumulator_value`` (0 by default; fastopt.optim.Adagrad takes that argument).
      step: >= 1, or one per tensor (see :func:`adam`).  lr: >= 0.  lr_decay: >= 0.  weight_decay: >= 0.  eps: >= 0.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    fn = "adagrad"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    lr_decay, eps, (step, steps) = real(fn, "lr_decay", lr_decay), real(fn, "eps", eps), _step(fn, step)
    if common is None:
        return
    o = ffi.new("fastopt_adagrad_options *", [common, lr_decay, eps, step])
    _run(fn, lib.fastopt_adagrad, o, [("params", params, True), ("grads", grads, False),
                                      ("state_sums", state_sums, True, "state")], stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps)


def nadam(params, grads, exp_avgs, exp_avg_sqs, *, step, mu_product=1.0, lr=2e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
          l1_prox=0.0, grad_scale=None, found_inf=None, stream=None, master_params=None,
          stochastic_rounding=None) -> float:
    """NAdam, in place (torch.optim.NAdam rules): Adam with Nesterov momentum.

    Per element, at step ``t``, with ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))`` and
    ``P = mu_product * mu_t`` (the product of all mu up to t)::

        g, weight decay, m, v: as :func:`adam` (decoupled_weight_decay: as :func:`adamw`)
        d = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr * (1 - mu_t) / (1 - P) * g / d - lr * mu_{t+1} / (1 - P * mu_{t+1}) * m / d

    References: Dozat 2016, "Incorporating Nesterov Momentum into Adam".

    Args:
      As :func:`adam`, and:
      mu_product: the product of mu over the steps before this one: 1.0 at step 1, then the value
        this function returned on the previous step.  With per-tensor steps, one per tensor may be
        given (a float32 or float64 array, or a sequence): each tensor's product is then kept in
        that dtype, rounded after each multiplication as torch keeps it in a tensor.
      momentum_decay: >= 0.
      decoupled_weight_decay: AdamW-style weight decay.

    Returns:
      The momentum product including this step (the next call's mu_product); unchanged when the
      step was skipped by found_inf.  With per-tensor steps or products: an array of them, one per
      tensor (float64, or the dtype of the mu_product array given).
    """
    fn = "nadam"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    betas, (step, steps), eps = _betas(fn, betas), _step(fn, step), real(fn, "eps", eps)
    momentum_decay = real(fn, "momentum_decay", momentum_decay)
    products = None  # per tensor: the products before this step
    if isinstance(mu_product, (list, tuple, np.ndarray)) or getattr(host_view(mu_product), "ndim", 0) == 1:
        products = np.asarray(host_view(mu_product))
        if products.ndim != 1 or not products.size or products.dtype.kind != "f":
            raise TypeError(f"fastopt.{fn}: mu_product must be a real number, or a non-empty sequence of them (one "
                            f"per tensor), got {type(mu_product).__name__}")
        if products.dtype != np.float32:
            products = products.astype(np.float64)
        mu_product = float(products[0])
    else:
        mu_product = real(fn, "mu_product", mu_product)
    if steps is not None and products is None:
        products = np.full(len(steps), mu_product)
    through = None
    if products is not None:  # each tensor's product through this step, rounded to its dtype
        at = steps if steps is not None else np.full(len(products), step)
        distinct, which = np.unique(at, return_inverse=True)  # mu_t by C's own arithmetic, once a step
        mu = np.array([lib.fastopt_nadam_mu_product(1.0, betas[0], momentum_decay, int(t)) for t in distinct])
        through = products * mu[which].astype(products.dtype)
    if common is None:
        return mu_product if products is None else products.copy()
    o = ffi.new("fastopt_nadam_options *", [common, betas[0], betas[1], eps, momentum_decay, mu_product, step,
                                            bool(decoupled_weight_decay)])
    _run(fn, lib.fastopt_nadam, o, [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True, "state"),
                                    ("exp_avg_sqs", exp_avg_sqs, True, "state")], stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps,
         mu_products=None if through is None else through.astype(np.float64))
    if through is None:
        return lib.fastopt_nadam_mu_product(mu_product, betas[0], momentum_decay, step)
    return through


def radam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, l1_prox=0.0, grad_scale=None,
          found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """RAdam, in place (torch.optim.RAdam rules): Adam with a rectified adaptive learning rate.

    Per element, at step ``t``, with ``rho_inf = 2 / (1 - beta2) - 1`` and
    ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)``::

        g, weight decay, m, v: as :func:`adam` (decoupled_weight_decay: as :func:`adamw`)
        m_hat = m / (1 - beta1**t)
        rho_t > 5:  rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                    p = p - lr * m_hat * sqrt(1 - beta2**t) / (sqrt(v) + eps) * rect
        else:       p = p - lr * m_hat

    References: Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond".

    Args:
      As :func:`adam`, and:
      decoupled_weight_decay: AdamW-style weight decay.

    Returns:
      None.
    """
    fn = "radam"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    betas, (step, steps), eps = _betas(fn, betas), _step(fn, step), real(fn, "eps", eps)
    if common is None:
        return
    o = ffi.new("fastopt_radam_options *", [common, betas[0], betas[1], eps, step, bool(decoupled_weight_decay)])
    _run(fn, lib.fastopt_radam, o, [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True, "state"),
                                    ("exp_avg_sqs", exp_avg_sqs, True, "state")], stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps)


def lion(params, grads, exp_avgs, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3, maximize=False,
         l1_prox=0.0, grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """Lion, in place (optax.lion rules): the sign of interpolated momentum, decoupled weight decay.

    Per element, with ``m`` the momentum::

        g = -grad if maximize else grad
        u = sign((1 - beta1) * g + beta1 * m)
        p = p - lr * (u + weight_decay * p)
        m = (1 - beta2) * g + beta2 * m

    References: Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms".

    Args:
      params, grads: as :func:`sgd`.
      exp_avgs: the momentum m, updated in place (start at zeros).
      lr: >= 0 (typically 3-10x smaller than AdamW's).  betas: each in [0, 1].
      weight_decay: >= 0, decoupled.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    fn = "lion"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    betas = _betas(fn, betas)
    if common is None:
        return
    o = ffi.new("fastopt_lion_options *", [common, betas[0], betas[1]])
    _run(fn, lib.fastopt_lion, o, [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True, "state")],
         stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=None)


def lamb(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.01, max_grad_norm=1.0, use_nvlamb=False, maximize=False, l1_prox=0.0,
         grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None):
    """LAMB, in place (apex FusedLAMB rules): Adam's direction scaled per tensor by a trust ratio.

    With ``G`` the global norm of all gradients, per tensor and element, at step ``t``::

        g = g / max(1, G / max_grad_norm)                               (if max_grad_norm > 0)
        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
        u = (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps) + weight_decay * p
        r = ||p|| / ||u|| over the tensor (1 if either is 0, or if weight_decay == 0 and not use_nvlamb)
        p = p - lr * r * u

    References: You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes".  The norms of every tensor come from the same multi-tensor call (two passes), summed
    in double: float32 values cannot overflow them; float64 values beyond ~1e154 do (inf/NaN).

    Args:
      As :func:`adam`, and:
      max_grad_norm: clip the global gradient norm to this first (0: off), >= 0.
      use_nvlamb: apply the trust ratio even without weight decay.

    Returns:
      None.
    """
    fn = "lamb"
    common = _common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    betas, (step, steps), eps = _betas(fn, betas), _step(fn, step), real(fn, "eps", eps)
    max_grad_norm = real(fn, "max_grad_norm", max_grad_norm)
    if common is None:
        return
    o = ffi.new("fastopt_lamb_options *", [common, betas[0], betas[1], eps, max_grad_norm, step, bool(use_nvlamb)])
    _run(fn, lib.fastopt_lamb, o, [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True, "state"),
                                   ("exp_avg_sqs", exp_avg_sqs, True, "state")], stream=stream, found_inf=found_inf,
         master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps)


# ---- regularization gradients ----

def elastic_net_grad(grads, params, *, l1, l2, stream=None):
    """Adds the elastic-net penalty's gradient to grads, in place::

        grads = grads + l2 * params + l1 * sign(params)      (sign(0) = 0)

    The gradient of ``l1 * |w|_1 + l2 / 2 * |w|_2^2``.  For exact zeros use an optimizer's
    ``l1_prox`` instead: a subgradient step never lands on zero.

    Args:
      grads: gradient array(s), updated in place.
      params: parameter array(s), same shapes and dtype; only read.
      l1, l2: coefficients, >= 0.
      stream: GPU arrays only: the CUDA stream to launch on.
    """
    _elastic("elastic_net_grad", grads, params, l1, l2, stream=stream)


def l2_grad(grads, params, *, lam, stream=None):
    """Adds an L2 penalty's gradient to grads, in place: ``grads = grads + lam * params`` (lam >= 0;
    stream: as :func:`elastic_net_grad`)."""
    _elastic("l2_grad", grads, params, 0.0, lam, "lam", stream=stream)


def l1_grad(grads, params, *, lam, stream=None):
    """Adds an L1 penalty's subgradient to grads, in place: ``grads = grads + lam * sign(params)``
    (0 where params == 0; lam >= 0; stream: as :func:`elastic_net_grad`)."""
    _elastic("l1_grad", grads, params, lam, 0.0, "lam", stream=stream)


def _elastic(fn, grads, params, l1, l2, name=None, stream=None):
    if type(l1) is not float:
        l1 = real(fn, name or "l1", l1)
    if type(l2) is not float:
        l2 = real(fn, name or "l2", l2)
    if name and not (math.isfinite(l1 + l2) and l1 + l2 >= 0):  # C would name l1 or l2, not lam
        raise ValueError(f"fastopt.{fn}: {name} must be a finite number >= 0, got {l1 + l2}")
    _run(fn, lib.fastopt_elastic_net_grad, None, [("grads", grads, True), ("params", params, False)], l1, l2,
         stream=stream)


# ---- gradient utilities ----

def _norm_type(fn, norm_type) -> float:
    return real(fn, "norm_type", norm_type)


def global_norm(grads, norm_type=2.0, *, stream=None) -> float:
    """The norm of all elements of all gradients, as one vector::

        (sum over tensors and elements of |g|**norm_type) ** (1 / norm_type);  max |g| for inf

    Deterministic: the same bits for any thread count and SIMD level (fixed blocks, sums in double in
    a fixed order).  float32 accumulates in double, so no float32 value can overflow it; float64
    sums are rescaled by a power of two when they would overflow or underflow.

    Args:
      grads: array or list of arrays (float32, float64, float16 or bfloat16); only read.
      norm_type: p > 0, or float('inf').
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      The norm, a float (NaN if any element is NaN).
    """
    fn = "global_norm"
    norm_type = _norm_type(fn, norm_type)
    out = ffi.new("double *")
    if _on_gpu(grads):
        check(lib.fastopt_global_norm(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, norm_type, out), fn)
        from fastopt.cuda import _launch
        return _launch.global_norm(fn, grads, norm_type, stream)
    dtype, numel, ptrs, _ = gather(fn, [("grads", grads, False)])
    check(lib.fastopt_global_norm(dtype, len(numel), numel, ptrs[0], norm_type, out), fn)
    return out[0]


def clip_grad_norm(grads, max_norm, norm_type=2.0, *, stream=None) -> float:
    """Scales gradients in place so their global norm is at most max_norm
    (torch.nn.utils.clip_grad_norm_ rules)::

        total = global_norm(grads, norm_type)
        grads = grads * min(1, max_norm / (total + 1e-6))

    Two passes: the norm, then one scaling pass (none when no clipping is needed).  To fuse the
    scaling into the optimizer's own pass instead, compute :func:`global_norm` and pass
    ``grad_scale = max(1, (total + 1e-6) / max_norm)`` to the optimizer.

    Args:
      grads: array or list of arrays, updated in place.
      max_norm: >= 0.
      norm_type: p > 0, or float('inf').
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      The total norm before clipping.
    """
    fn = "clip_grad_norm"
    max_norm, norm_type = real(fn, "max_norm", max_norm), _norm_type(fn, norm_type)
    out = ffi.new("double *")
    if _on_gpu(grads):
        check(lib.fastopt_clip_grad_norm(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, max_norm, norm_type, out), fn)
        from fastopt.cuda import _launch
        return _launch.clip_grad_norm(fn, grads, max_norm, norm_type, stream)
    dtype, numel, ptrs, _ = gather(fn, [("grads", grads, True)])
    check(lib.fastopt_clip_grad_norm(dtype, len(numel), numel, ptrs[0], max_norm, norm_type, out), fn)
    return out[0]


def unscale(grads, inv_scale, found_inf=None, *, stream=None) -> bool | None:
    """Undoes loss scaling in place and reports non-finite gradients
    (torch's _amp_foreach_non_finite_check_and_unscale_, as GradScaler.unscale_ uses it)::

        grads = grads * inv_scale;  found = any element of grads was inf or NaN

    Args:
      grads: array or list of arrays, updated in place.
      inv_scale: 1 / the loss scale.
      found_inf: optional one-element float32 array, set to 1.0 when found (else left as it is), so
        that several calls accumulate one flag to pass to an optimizer's found_inf.
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      Whether this call found an inf or NaN.
    """
    fn = "unscale"
    inv_scale = real(fn, "inv_scale", inv_scale)
    flag = np.zeros(1, np.float32)
    if _on_gpu(grads):
        check(lib.fastopt_unscale(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, inv_scale,
                                  ffi.from_buffer("float[]", flag)), fn)
        from fastopt.cuda import _launch
        return _launch.unscale(fn, grads, inv_scale, found_inf, stream)
    dtype, numel, ptrs, _ = gather(fn, [("grads", grads, True)])
    found_inf = host_view(found_inf)
    if found_inf is not None and not (isinstance(found_inf, np.ndarray) and found_inf.dtype == np.float32
                                      and found_inf.size == 1 and found_inf.flags.writeable):
        raise TypeError(f"fastopt.{fn}: found_inf must be a writable one-element float32 array")
    check(lib.fastopt_unscale(dtype, len(numel), numel, ptrs[0], inv_scale, ffi.from_buffer("float[]", flag)), fn)
    found = bool(flag[0])
    if found and found_inf is not None:
        found_inf[...] = 1.0
    return found


# ---- docstrings: every optimizer's Args name every argument; what several share is written once ----

_SHARED_ARGS = """\
      l1_prox: >= 0; after the update, p = sign(p) * max(|p| - lr * l1_prox, 0) (0: off).
      grad_scale: gradients are read as grad / grad_scale (> 0; None: 1), as torch's fused
        optimizers take GradScaler's scale; the grads are not written.
      found_inf: None, a bool or number, or a one-element float32 array (host or GPU): when
        non-zero the step is skipped and nothing is written.
      master_params: float32 copies of float16/bfloat16 params, one per tensor: the update reads
        and writes them and writes the params rounded from them.
      stochastic_rounding: bfloat16 params without masters are rounded stochastically: a seed
        (counted by the step), or (seed, counter) for an optimizer without a step count.
      stream: GPU arrays only: the CUDA stream to launch on (default: the arrays' framework's
        current stream)."""
_MAXIMIZE = "      maximize: maximize the objective instead of minimizing it.\n"


def _args(fn) -> list[str]:
    doc = fn.__doc__
    body = doc[doc.index("    Args:\n") + len("    Args:\n"):doc.index("\n\n    Returns:")]
    return body.split("\n")


def _own(fn, lines: list[str]) -> list[str]:
    """The entries of lines (with their continuation lines) that name only fn's own arguments."""
    names, out, keep = set(inspect.signature(fn).parameters), [], False
    for line in lines:
        if not line.startswith("        "):  # an entry: "name, name: text"
            keep = all(n.strip() in names for n in line.split(":")[0].split(","))
        if keep:
            out.append(line)
    return out


def _complete(fn) -> None:
    """Expands fn's "As :func:`adam`" and "params, grads: as :func:`sgd`" lines with those
    functions' own, and its pointer to the module docstring with the shared keywords."""
    out = []
    for line in _args(fn):
        text = line.strip()
        if text.startswith("As :func:`adam`"):
            out += _own(fn, [a for a in _args(adam) if "module docstring" not in a and a.strip()])
            rest = text[len("As :func:`adam`"):].lstrip(";, ").removeprefix("and:").strip()
            if rest:
                out.append(f"      ({rest.removeprefix('and ')})")
            out += [_SHARED_ARGS] if fn is not adam else []
        elif text == "params, grads: as :func:`sgd`.":
            out += [a for a in _args(sgd) if a.strip().startswith(("params:", "grads:"))]
        elif "module docstring" in text:
            out.append((_MAXIMIZE if text.startswith("maximize") else "") + _SHARED_ARGS)
        else:
            out.append(line)
    doc = fn.__doc__
    start, end = doc.index("    Args:\n") + len("    Args:\n"), doc.index("\n\n    Returns:")
    fn.__doc__ = doc[:start] + "\n".join(out) + doc[end:]


for _fn in (adamw, nadam, radam, lamb, rmsprop, adagrad, lion, sgd, adam):  # (adam and sgd last: the others read theirs)
    _complete(_fn)
del _fn
