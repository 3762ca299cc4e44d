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

``lr`` and ``weight_decay`` may be one value or one per tensor (a sequence or 1-D array of
length len(params)): param groups that differ only in these (no weight decay on biases and norms,
layer-wise lr decay) and replicas trained with different values (a hyper-parameter search) step
in one call, each tensor exactly as a call of its own would.

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

from fastopt import _calls
from fastopt._arrays import array_or_list, gather, host_view, real
from fastopt._native import check, ffi, lib
from fastopt._optimizers import OPTIMIZERS
# One NumPy array per role, Python-float hyper-parameters, no extras: sgd, adam and adamw go
# through fastopt._single (csrc/python/single.c), which checks the arrays' buffers in C and calls
# the C API at a third of the general path's Python cost; it returns False for anything else, or
# anything refused, and the general path then runs (and names the problem).
from fastopt import _single

__all__ = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam", "adamax", "lion", "lamb", "prepare",
           "l2_grad", "l1_grad", "elastic_net_grad", "global_norm", "clip_grad_norm", "unscale"]


def _update(fn, params, grads, state: dict, hyper: dict, lr, weight_decay, maximize, l1_prox, grad_scale,
            found_inf, stream, master_params, stochastic_rounding, mu_product=None, sum_over=None):
    """One optimizer call: its options from the hyper-parameters (by the optimizer's table row),
    its state roles from state {functional argument: arrays}, then the call (see fastopt._calls).
    NAdam's mu_product: the products before this step; returns them through it.  LAMB's
    sum_over: see :func:`lamb`."""
    if sum_over is not None and not callable(sum_over):
        raise TypeError(f"fastopt.{fn}: sum_over must be a function (of the per-tensor sums) or None, got "
                        f"{type(sum_over).__name__}")
    optimizer = OPTIMIZERS[fn]
    for r in optimizer.state:  # an optional array given as something else: never a value silently ignored
        if r.when is not None and state[r.arg] is not None and type(state[r.arg]) is not np.ndarray:
            array_or_list(fn, r.arg, state[r.arg])
    lr, lrs = _calls.per_tensor_value(fn, "lr", lr)
    weight_decay, weight_decays = _calls.per_tensor_value(fn, "weight_decay", weight_decay)
    c = _calls.common(fn, lr, weight_decay, maximize, l1_prox, grad_scale, found_inf)
    if "betas" in hyper:
        hyper["beta1"], hyper["beta2"] = _calls.betas(fn, hyper.pop("betas"))
    step = steps = None
    if optimizer.takes_step:
        step, steps = _calls.step(fn, hyper["step"])
        hyper["step"] = step
    products = through = None
    if mu_product is not None:
        products, hyper["mu_product"] = _products(fn, mu_product, steps)
        if products is not None:  # each tensor's product through this step, rounded to its dtype
            through = _calls.nadam_products(hyper["beta1"], real(fn, "momentum_decay", hyper["momentum_decay"]),
                                            step, steps, products)
    o = _calls.options(optimizer, fn, c if c is not None else [], hyper)
    if c is None:  # found_inf: skipped, nothing written
        return None if mu_product is None else products.copy() if products is not None else hyper["mu_product"]
    roles = [("params", params, True), ("grads", grads, False)] + _calls.state_roles(optimizer, fn, hyper, state)
    _calls.run(fn, getattr(lib, f"fastopt_{optimizer.c_name}"), o, roles, stream=stream, found_inf=found_inf,
               master_params=master_params, stochastic_rounding=stochastic_rounding, step=step, steps=steps,
               mu_products=None if through is None else through.astype(np.float64), sum_over=sum_over, lrs=lrs,
               weight_decays=weight_decays)
    if mu_product is None:
        return None
    return through if through is not None else lib.fastopt_nadam_mu_product(o.mu_product, o.beta1,
                                                                              o.momentum_decay, step)


def _products(fn, mu_product, steps):
    """(the per-tensor products as an array, or None; the first product, a float)."""
    if isinstance(mu_product, (list, tuple, np.ndarray)) or getattr(host_view(mu_product), "ndim", 0) == 1:
        products = np.asarray(host_view(mu_product))
        if products.ndim != 1 or not products.size or products.dtype.kind != "f":
            raise TypeError(f"fastopt.{fn}: mu_product must be a real number, or a non-empty sequence of them (one "
                            f"per tensor), got {type(mu_product).__name__}")
        if products.dtype != np.float32:
            products = products.astype(np.float64)
        return products, float(products[0])
    first = real(fn, "mu_product", mu_product)
    return (None if steps is None else np.full(len(steps), first)), first


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
      lr: learning rate, >= 0; or one per tensor (a sequence or 1-D array: param groups in one call).
      momentum: momentum factor, >= 0.
      dampening: dampening of the gradient in the momentum buffer.
      nesterov: Nesterov momentum (needs momentum > 0 and dampening == 0).
      weight_decay: L2 penalty coefficient added to the gradient, >= 0; or one per tensor.
      maximize: maximize the objective instead of minimizing it.
      first_step: set each buffer to the gradient instead of accumulating into it, as torch does
        on the first step (when its buffer is None).  Pass True on your first step with momentum.
      l1_prox, grad_scale, found_inf: see the module docstring.

    Returns:
      None.
    """
    if momentum_buffers is not None and type(momentum_buffers) is not np.ndarray:
        array_or_list("sgd", "momentum_buffers", momentum_buffers)  # never a value silently ignored
    if (grad_scale is None and found_inf is None and stream is None and master_params is None
            and stochastic_rounding is None and _single.sgd(params, grads, momentum_buffers, lr, momentum, dampening,
                                                            weight_decay, l1_prox, nesterov, maximize, first_step)):
        return  # the latency path (fastopt._single) made the update
    _update("sgd", params, grads, {"momentum_buffers": momentum_buffers},
            dict(momentum=momentum, dampening=dampening, nesterov=nesterov, first_step=first_step), lr, weight_decay,
            maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


def _adam(fn, decoupled, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize, l1_prox, grad_scale, found_inf, stream, master_params,
          stochastic_rounding):
    """adam and adamw."""
    if max_exp_avg_sqs is not None and type(max_exp_avg_sqs) is not np.ndarray:
        array_or_list(fn, "max_exp_avg_sqs", max_exp_avg_sqs)  # never a value silently ignored
    if (not amsgrad and grad_scale is None and found_inf is None and stream is None and master_params is None
            and stochastic_rounding is None and type(betas) is tuple and len(betas) == 2
            and _single.adam(params, grads, exp_avgs, exp_avg_sqs, lr, betas[0], betas[1], eps, weight_decay, l1_prox,
                             step, decoupled, maximize)):
        return  # the latency path (fastopt._single) made the update
    _update(fn, params, grads, dict(exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs, max_exp_avg_sqs=max_exp_avg_sqs),
            dict(betas=betas, eps=eps, step=step, amsgrad=amsgrad),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


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
      lr: learning rate, >= 0; or one per tensor (a sequence or 1-D array: param groups in one call).
      betas: (beta1, beta2), each in [0, 1).
      eps: added to the denominator, >= 0.
      weight_decay: L2 penalty coefficient, >= 0; or one per tensor.
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
      lr, weight_decay: >= 0, each one value or one per tensor.  alpha: smoothing constant in [0, 1].
      eps: >= 0.
      momentum: >= 0.  centered: normalize by the variance instead of the second moment.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    _update("rmsprop", params, grads,
            dict(square_avgs=square_avgs, grad_avgs=grad_avgs, momentum_buffers=momentum_buffers),
            dict(alpha=alpha, eps=eps, momentum=momentum, centered=centered),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


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
      step: >= 1, or one per tensor (see :func:`adam`).  lr, weight_decay: >= 0, each one value or one per
      tensor.  lr_decay: >= 0.  eps: >= 0.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    _update("adagrad", params, grads, dict(state_sums=state_sums), dict(lr_decay=lr_decay, eps=eps, step=step),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


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
    return _update("nadam", params, grads, dict(exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs),
                   dict(betas=betas, eps=eps, step=step, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay),
                   lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params,
                   stochastic_rounding, mu_product=mu_product)


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
    _update("radam", params, grads, dict(exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs),
            dict(betas=betas, eps=eps, step=step, decoupled_weight_decay=decoupled_weight_decay),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


def adamax(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           maximize=False, l1_prox=0.0, grad_scale=None, found_inf=None, stream=None, master_params=None,
           stochastic_rounding=None):
    """Adamax, in place (torch.optim.Adamax rules): Adam with an infinity norm for the second moment.

    Per element, at step ``t``, with ``u`` the exponentially weighted infinity norm::

        g = -grad if maximize else grad;  g = g + weight_decay * p   (if weight_decay != 0)
        m = m + (1 - beta1) * (g - m)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    References: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", section 7.1.

    Args:
      params, grads: as :func:`sgd`.
      exp_avgs: first moment state (torch's ``exp_avg``), updated in place (start at zeros).
      exp_infs: the infinity norm ``u`` (torch's ``exp_inf``), >= 0, updated in place (start at zeros).
      step: >= 1, or one per tensor (see :func:`adam`).  lr, weight_decay: >= 0, each one value or one per
      tensor.  betas: (beta1, beta2), each in [0, 1).  eps: >= 0.
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    _update("adamax", params, grads, dict(exp_avgs=exp_avgs, exp_infs=exp_infs), dict(betas=betas, eps=eps, step=step),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


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
      weight_decay: >= 0, decoupled.  (lr, weight_decay: one value or one per tensor.)
      maximize, l1_prox, grad_scale, found_inf: see :func:`sgd` and the module docstring.

    Returns:
      None.
    """
    _update("lion", params, grads, dict(exp_avgs=exp_avgs), dict(betas=betas),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding)


def lamb(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.01, max_grad_norm=1.0, use_nvlamb=False, maximize=False, l1_prox=0.0,
         grad_scale=None, found_inf=None, stream=None, master_params=None, stochastic_rounding=None,
         sum_over=None):
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
      sum_over: for tensors sharded over processes (FSDP2, ZeRO), whose norms are over the whole
        tensors: None, or a function called between the step's two passes with a float64 array
        of shape (n_tensors, 2), each tensor's sums of p**2 and of u**2 over the elements this call
        holds (a NumPy array for host arrays, a device array for GPU arrays), which it replaces in
        place with the sums over every process (an all_reduce).  max_grad_norm must then be 0:
        clip through grad_scale, by a norm summed over the processes too.

    Returns:
      None.
    """
    _update("lamb", params, grads, dict(exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs),
            dict(betas=betas, eps=eps, step=step, max_grad_norm=max_grad_norm, use_nvlamb=use_nvlamb),
            lr, weight_decay, maximize, l1_prox, grad_scale, found_inf, stream, master_params, stochastic_rounding,
            sum_over=sum_over)


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
    _calls.run(fn, lib.fastopt_elastic_net_grad, None, [("grads", grads, True), ("params", params, False)], l1, l2,
         stream=stream)


# ---- gradient utilities ----

def _norm_type(fn, norm_type) -> float:
    return real(fn, "norm_type", norm_type)


def _any_sharded(grads) -> bool:
    """Whether any of grads is a DTensor (a torch tensor subclass holding one shard of a tensor)."""
    return any(hasattr(g, "_local_tensor") for g in (grads if isinstance(grads, (list, tuple)) else [grads]))


def global_norm(grads, norm_type=2.0, *, stream=None) -> float:
    """The norm of all elements of all gradients, as one vector::

        (sum over tensors and elements of |g|**norm_type) ** (1 / norm_type);  max |g| for inf

    Deterministic: the same bits for any thread count and SIMD level (fixed blocks, sums in double in
    a fixed order).  float32 accumulates in double, so no float32 value can overflow it; float64
    sums are rescaled by a power of two when they would overflow or underflow.  DTensors (FSDP2's
    sharded gradients): the norm of the whole tensors, each process's shards reduced over the
    processes holding the others (one all-reduce per sharding), as every process must call it.

    Args:
      grads: array or list of arrays (float32, float64, float16 or bfloat16); only read.
      norm_type: p > 0, or float('inf').
      stream: GPU arrays only: the CUDA stream to launch on.

    Returns:
      The norm, a float (NaN if any element is NaN).
    """
    fn = "global_norm"
    norm_type = _norm_type(fn, norm_type)
    if _any_sharded(grads):  # DTensors (FSDP2): the norm over every process's shards
        from fastopt.torch import sharded_norm
        return sharded_norm(grads, norm_type, stream)
    out = ffi.new("double *")
    if _calls.on_gpu(grads):
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
    if _any_sharded(grads):  # DTensors (FSDP2): C checks the scalars, then the norm over every process's shards
        check(lib.fastopt_clip_grad_norm(lib.FASTOPT_FLOAT32, 0, ffi.NULL, ffi.NULL, max_norm, norm_type, out), fn)
        from fastopt.torch import sharded_clip
        return sharded_clip(grads, max_norm, norm_type, stream)
    if _calls.on_gpu(grads):
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
    if _calls.on_gpu(grads):
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


# ---- a call prepared once, stepped many times ----

_PER_CALL = {"step", "lr", "weight_decay", "grad_scale", "found_inf", "mu_product", "stochastic_rounding", "stream"}
_REPEATED = frozenset({"step", "lr", "weight_decay"})  # what a repeated host call sets in its options struct
_NOT_REPEATED = _PER_CALL - _REPEATED


def prepare(update, *arrays, **keywords):
    """A call of the optimizer ``update`` over these arrays, its validation done once.

    ``step = fastopt.prepare(fastopt.adamw, params, grads, exp_avgs, exp_avg_sqs, weight_decay=0.01)``
    then ``step(step=t, lr=schedule(t))`` each iteration runs
    ``fastopt.adamw(params, grads, exp_avgs, exp_avg_sqs, weight_decay=0.01, step=t, lr=...)``: the
    same update, bit for bit, without checking every array again (about 1 us an array).

    The arrays are validated at the first call and trusted after, which is the contract: they are
    the same objects every call (the prepared call holds them; lists are copied, so an array put
    into the caller's list later is not seen), their contents change and their memory, dtype and
    flags (writeable) do not.  An array given for a fixed keyword (``lr`` or ``weight_decay`` per
    tensor) is held too, its values read at each call; a list there is copied.  A NumPy array
    held here cannot be resized; a PyTorch tensor's memory is compared at every call, and one that
    moved (``p.data = ...``) is a ValueError.  GPU arrays likewise: their views (device, dtype, layout, address) are made once.
    With PyTorch, pass gradient tensors that persist: ``zero_grad(set_to_none=True)``, torch's
    default, makes new ``.grad`` tensors at each backward, which a prepared call never sees (it
    keeps stepping with the old ones); use ``zero_grad(set_to_none=False)``, or call ``update``.
    Over arrays other than torch tensors, a call with none of the per-call keywords but ``step``
    (one integer), ``lr`` and ``weight_decay`` is made from the first such call's C options
    struct, with those three set: a few microseconds of Python whatever the number of arrays (on
    a GPU, C writes the kernel's constants and the kernel is launched over the kept tensor table;
    LAMB, per-tensor steps and stochastic rounding excepted).  So one prepared call must not run
    in two threads at once.

    Args:
      update: a fastopt optimizer (``fastopt.adamw``, ``fastopt.sgd``, ...).
      arrays: its array arguments, as ``update`` takes them (params, grads, state).
      keywords: its other arguments (arrays by name too).  Per call, ``step``, ``lr``,
        ``weight_decay``, ``grad_scale``, ``found_inf``, ``mu_product``, ``stochastic_rounding``
        and ``stream`` may be given (or changed); the others are fixed here, since they decide
        which arrays the update uses.

    Returns:
      A function taking the per-call keywords and returning what ``update`` returns.
    """
    name = getattr(update, "__name__", None)
    if name not in OPTIMIZERS or update is not globals().get(name):
        raise TypeError(f"fastopt.prepare: update must be a fastopt optimizer (fastopt.adamw, ...), got {update!r}")
    takes = inspect.signature(update).parameters
    unknown = sorted(set(keywords) - set(takes))
    if unknown:
        raise TypeError(f"fastopt.prepare: {name} takes no keyword(s) {unknown}")
    frozen = tuple(tuple(a) if isinstance(a, list) else a for a in arrays)
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in keywords.items()}
    prepared = _calls.Prepared()
    # A call over arrays other than torch tensors (whose memory and autograd are checked each call)
    # with none of the per-call keywords but step, lr and weight_decay is repeated from its C
    # options struct: each call sets those three (lr and weight_decay one value or one per tensor,
    # step one integer) and calls C, which checks them (on a GPU, and writes the kernel's constants,
    # and the kept launch follows).
    defaults = {k: fixed.get(k, takes[k].default) for k in _REPEATED if k in takes}
    repeatable = not any(fixed.get(k) is not None for k in _NOT_REPEATED) and "sum_over" not in fixed
    takes_step = OPTIMIZERS[name].takes_step

    def repeated(changes) -> bool:
        """Makes the call from the kept options struct when it can (see above); True when it did."""
        values = {**defaults, **changes}
        at = values.get("step")
        if takes_step and type(at) is not int:
            return False
        c_function, head, o, _, launch = prepared.fast
        n, c = head[1], o.common
        c.lr, lrs = _calls.per_tensor_value(name, "lr", values.get("lr"))
        c.weight_decay, decays = _calls.per_tensor_value(name, "weight_decay", values.get("weight_decay", 0.0))
        kept = [None if v is None else _calls.per_tensor(name, k, v, n) for k, v in (("lr", lrs), ("weight_decay", decays))]
        c.lrs, c.weight_decays = (ffi.NULL if k is None else k for k in kept)
        c.steps = ffi.NULL
        if takes_step:
            o.step = at
        status = c_function(*head, o)
        if status:
            check(status, name)
        if launch is not None:  # a GPU call: C wrote the kernel's constants, which it reads
            launch()
        return True

    def step(*args, **changes):
        if prepared.fast is not None and not args and changes.keys() <= _REPEATED and repeated(changes):
            return None
        if args:
            raise TypeError(f"fastopt.prepare: a prepared call takes keywords only ({', '.join(sorted(_PER_CALL))}), "
                            f"got {len(args)} positional argument(s)")
        fixed_here = sorted(set(changes) - _PER_CALL)
        if fixed_here:
            known = [k for k in fixed_here if k in takes]
            raise TypeError(f"fastopt.prepare: {known} cannot change per call (only {sorted(_PER_CALL)}); prepare "
                            f"another call" if known else f"fastopt.prepare: {name} takes no keyword(s) {fixed_here}")
        token = _calls.PREPARED.set(prepared)
        try:
            prepared.last = None
            out = update(*frozen, **{**fixed, **changes})
        finally:
            _calls.PREPARED.reset(token)
        if out is None and prepared.last is not None and not prepared.tensors and repeatable and \
                not any(changes.get(k) is not None for k in _NOT_REPEATED):
            prepared.fast = prepared.last
        return out
    step.__doc__ = f"One {name} step of the prepared call (see fastopt.prepare)."
    return step


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


for _name in sorted(OPTIMIZERS, key=lambda name: name in ("adam", "sgd")):  # (adam and sgd last: the others read theirs)
    _complete(globals()[_name])
del _name
