"""The NumPy reference: fastopt's executable specification and the NumPy baseline of every benchmark.

Each function has the signature of its fastopt twin, updates its arrays in place with plain NumPy
expressions in torch.optim's order of operations, and returns None.  It validates nothing: it is
what the fast kernels are tested against, not what users call.
"""
from __future__ import annotations

import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def sgd(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
        weight_decay=0.0, maximize=False, first_step=False):
    """SGD with momentum, torch.optim.SGD rules; see :func:`fastopt.sgd`."""
    buffers = _as_list(momentum_buffers) if momentum != 0 else None
    for i, (p, g) in enumerate(zip(_as_list(params), _as_list(grads))):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            b = buffers[i]
            if first_step:
                b[...] = g
            else:
                b *= momentum
                b += (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p -= lr * g


def adam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, amsgrad=False, max_exp_avg_sqs=None, maximize=False,
         decoupled_weight_decay=False):
    """Adam, torch.optim.Adam rules; see :func:`fastopt.adam`."""
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    inv_bias_correction2_sqrt = 1 / bias_correction2**0.5  # torch divides; a multiply is within 1 ulp
    maxes = _as_list(max_exp_avg_sqs) if amsgrad else None
    for i, (p, g, m, v) in enumerate(zip(_as_list(params), _as_list(grads), _as_list(exp_avgs),
                                         _as_list(exp_avg_sqs))):
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m += (1 - beta1) * (g - m)  # torch's lerp(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(maxes[i], v, out=maxes[i])
            v = maxes[i]
        denom = np.sqrt(v) * inv_bias_correction2_sqrt + eps
        p += (-step_size * m) / denom


def adamw(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=1e-2, amsgrad=False, max_exp_avg_sqs=None, maximize=False):
    """AdamW, torch.optim.AdamW rules; see :func:`fastopt.adamw`."""
    adam(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, betas=betas, eps=eps,
         weight_decay=weight_decay, amsgrad=amsgrad, max_exp_avg_sqs=max_exp_avg_sqs,
         maximize=maximize, decoupled_weight_decay=True)
