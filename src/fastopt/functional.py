"""fastopt's functional optimizer updates: in place, one C call per call, lists of arrays allowed.

Each array argument is one array or a list of arrays (a multi-tensor update: params[i], grads[i]
and the state arrays [i] belong together).  Every array of a call has the dtype of params (float32
or float64), the shape of its params entry, is C-contiguous, and every written array is writable
and shares memory with no other array of the call.  A call that raises has modified nothing.
"""
from __future__ import annotations

from fastopt._arrays import gather, integer, pair, real
from fastopt._native import check, ffi, lib

__all__ = ["sgd", "adam", "adamw"]


def sgd(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
        weight_decay=0.0, maximize=False, first_step=False):
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
      params: parameter array or list of arrays (float32/float64), updated in place.
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

    Returns:
      None.
    """
    fn = "sgd"
    # type() tests first: a small step costs a few microseconds, and much of it is here
    if type(lr) is not float:
        lr = real(fn, "lr", lr)
    if type(momentum) is not float:
        momentum = real(fn, "momentum", momentum)
    if type(dampening) is not float:
        dampening = real(fn, "dampening", dampening)
    if type(weight_decay) is not float:
        weight_decay = real(fn, "weight_decay", weight_decay)
    o = ffi.new("fastopt_sgd_options *",
                [lr, momentum, dampening, weight_decay, bool(nesterov), bool(maximize), bool(first_step)])
    roles = [("params", params, True), ("grads", grads, False)]
    if momentum != 0:
        if momentum_buffers is None:
            raise ValueError("fastopt.sgd: momentum_buffers is required when momentum != 0")
        roles.append(("momentum_buffers", momentum_buffers, True))
    dtype, numel, ptrs = gather(fn, roles)
    buffers = ptrs[2] if len(ptrs) > 2 else ffi.NULL
    status = lib.fastopt_sgd(dtype, len(numel), numel, ptrs[0], ptrs[1], buffers, o)
    if status:
        check(status, fn)


def _adam(fn, decoupled, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize):
    if type(betas) is not tuple or len(betas) != 2 or type(betas[0]) is not float or type(betas[1]) is not float:
        betas = pair(fn, "betas", betas)
    o = ffi.new("fastopt_adam_options *", [
        lr if type(lr) is float else real(fn, "lr", lr), betas[0], betas[1],
        eps if type(eps) is float else real(fn, "eps", eps),
        weight_decay if type(weight_decay) is float else real(fn, "weight_decay", weight_decay),
        step if type(step) is int else integer(fn, "step", step), bool(amsgrad), bool(maximize), decoupled])
    roles = [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True),
             ("exp_avg_sqs", exp_avg_sqs, True)]
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError(f"fastopt.{fn}: max_exp_avg_sqs is required when amsgrad=True")
        roles.append(("max_exp_avg_sqs", max_exp_avg_sqs, True))
    dtype, numel, ptrs = gather(fn, roles)
    maxes = ptrs[4] if amsgrad else ffi.NULL
    status = lib.fastopt_adam(dtype, len(numel), numel, ptrs[0], ptrs[1], ptrs[2], ptrs[3], maxes, o)
    if status:
        check(status, fn)


def adam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, amsgrad=False, max_exp_avg_sqs=None, maximize=False):
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
      params: parameter array or list of arrays (float32/float64), updated in place.
      grads: gradients, same shapes and dtype; only read.
      exp_avgs, exp_avg_sqs: first and second moment state, updated in place (start at zeros).
      step: the step being taken, >= 1 (bias correction).
      lr: learning rate, >= 0.
      betas: (beta1, beta2), each in [0, 1).
      eps: added to the denominator, > 0.
      weight_decay: L2 penalty coefficient, >= 0.
      amsgrad: use the running maximum of v (needs max_exp_avg_sqs, updated in place).
      maximize: maximize the objective instead of minimizing it.

    Returns:
      None.
    """
    _adam("adam", False, params, grads, exp_avgs, exp_avg_sqs, step, lr, betas, eps, weight_decay,
          amsgrad, max_exp_avg_sqs, maximize)


def adamw(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=1e-2, amsgrad=False, max_exp_avg_sqs=None, maximize=False):
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
          amsgrad, max_exp_avg_sqs, maximize)
