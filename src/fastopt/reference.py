"""The NumPy reference: fastopt's executable specification and the NumPy baseline of every benchmark.

Each function has the signature of its fastopt twin, updates its arrays in place with plain NumPy
expressions in torch.optim's order of operations, and returns what its twin returns.  It validates
nothing: it is what the fast kernels are tested against, not what users call.
"""
from __future__ import annotations

import math

import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _grad(g, p, maximize, grad_scale, coupled_weight_decay=0.0):
    """The gradient an update sees: g / grad_scale (as a multiply), negated when maximizing, plus
    the coupled L2 term."""
    if maximize or grad_scale:
        g = g * ((-1.0 if maximize else 1.0) / (grad_scale or 1.0))
    return g + coupled_weight_decay * p if coupled_weight_decay != 0 else g


def _prox(p, lr, l1_prox):
    """The proximal step of an L1 penalty: p = sign(p) * max(|p| - lr * l1_prox, 0)."""
    if l1_prox != 0:
        p[...] = np.sign(p) * np.maximum(np.abs(p) - lr * l1_prox, 0)


def _skipped(found_inf):
    return found_inf is not None and float(np.asarray(found_inf).reshape(-1)[0]) != 0


def _moments(g, m, v, beta1, beta2):
    m += (1 - beta1) * (g - m)  # torch's lerp(m, g, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * g * g


def sgd(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
        weight_decay=0.0, maximize=False, first_step=False, l1_prox=0.0, grad_scale=None, found_inf=None):
    """SGD with momentum, torch.optim.SGD rules; see :func:`fastopt.sgd`."""
    if _skipped(found_inf):
        return
    buffers = _as_list(momentum_buffers) if momentum != 0 else None
    for i, (p, g) in enumerate(zip(_as_list(params), _as_list(grads))):
        g = _grad(g, p, maximize, grad_scale, weight_decay)
        if momentum != 0:
            b = buffers[i]
            if first_step:
                b[...] = g
            else:
                b *= momentum
                b += (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p -= lr * g
        _prox(p, lr, l1_prox)


def adam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, amsgrad=False, max_exp_avg_sqs=None, maximize=False, l1_prox=0.0,
         grad_scale=None, found_inf=None, decoupled_weight_decay=False):
    """Adam, torch.optim.Adam rules; see :func:`fastopt.adam`."""
    if _skipped(found_inf):
        return
    beta1, beta2 = betas
    step_size = lr / (1 - beta1**step)
    inv_bias_correction2_sqrt = 1 / (1 - beta2**step)**0.5  # torch divides; a multiply is within 1 ulp
    maxes = _as_list(max_exp_avg_sqs) if amsgrad else None
    for i, (p, g, m, v) in enumerate(zip(_as_list(params), _as_list(grads), _as_list(exp_avgs),
                                         _as_list(exp_avg_sqs))):
        g = _grad(g, p, maximize, grad_scale, 0.0 if decoupled_weight_decay else weight_decay)
        if decoupled_weight_decay and weight_decay != 0:
            p *= 1 - lr * weight_decay
        _moments(g, m, v, beta1, beta2)
        if amsgrad:
            np.maximum(maxes[i], v, out=maxes[i])
            v = maxes[i]
        denom = np.sqrt(v) * inv_bias_correction2_sqrt + eps
        p += (-step_size * m) / denom
        _prox(p, lr, l1_prox)


def adamw(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=1e-2, amsgrad=False, max_exp_avg_sqs=None, maximize=False, l1_prox=0.0,
          grad_scale=None, found_inf=None):
    """AdamW, torch.optim.AdamW rules; see :func:`fastopt.adamw`."""
    adam(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, betas=betas, eps=eps,
         weight_decay=weight_decay, amsgrad=amsgrad, max_exp_avg_sqs=max_exp_avg_sqs,
         maximize=maximize, l1_prox=l1_prox, grad_scale=grad_scale, found_inf=found_inf,
         decoupled_weight_decay=True)


def rmsprop(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=1e-2, alpha=0.99,
            eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False, l1_prox=0.0,
            grad_scale=None, found_inf=None):
    """RMSprop, torch.optim.RMSprop rules; see :func:`fastopt.rmsprop`."""
    if _skipped(found_inf):
        return
    gavgs = _as_list(grad_avgs) if centered else None
    buffers = _as_list(momentum_buffers) if momentum > 0 else None
    for i, (p, g, s) in enumerate(zip(_as_list(params), _as_list(grads), _as_list(square_avgs))):
        g = _grad(g, p, maximize, grad_scale, weight_decay)
        s *= alpha
        s += (1 - alpha) * g * g
        if centered:
            ga = gavgs[i]
            ga += (1 - alpha) * (g - ga)
            avg = np.sqrt(s - ga * ga) + eps
        else:
            avg = np.sqrt(s) + eps
        if momentum > 0:
            b = buffers[i]
            b *= momentum
            b += g / avg
            p -= lr * b
        else:
            p += (-lr * g) / avg
        _prox(p, lr, l1_prox)


def adagrad(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, l1_prox=0.0, grad_scale=None, found_inf=None):
    """Adagrad, torch.optim.Adagrad rules; see :func:`fastopt.adagrad`."""
    if _skipped(found_inf):
        return
    clr = lr / (1 + (step - 1) * lr_decay)
    for p, g, s in zip(_as_list(params), _as_list(grads), _as_list(state_sums)):
        g = _grad(g, p, maximize, grad_scale, weight_decay)
        s += g * g
        p += (-clr * g) / (np.sqrt(s) + eps)
        _prox(p, lr, l1_prox)


def _nadam_mu(beta1, momentum_decay, step):
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def nadam(params, grads, exp_avgs, exp_avg_sqs, *, step, mu_product=1.0, lr=2e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
          l1_prox=0.0, grad_scale=None, found_inf=None):
    """NAdam, torch.optim.NAdam rules; see :func:`fastopt.nadam`.  Returns the next mu_product."""
    if _skipped(found_inf):
        return mu_product
    beta1, beta2 = betas
    inv_bias_correction2 = 1 / (1 - beta2**step)  # torch divides; a multiply is within 1 ulp
    mu, mu_next = _nadam_mu(beta1, momentum_decay, step), _nadam_mu(beta1, momentum_decay, step + 1)
    product = mu_product * mu
    grad_coef = -lr * (1.0 - mu) / (1.0 - product)
    momentum_coef = (-lr * mu_next) / (1.0 - product * mu_next)
    for p, g, m, v in zip(_as_list(params), _as_list(grads), _as_list(exp_avgs), _as_list(exp_avg_sqs)):
        g = _grad(g, p, maximize, grad_scale, 0.0 if decoupled_weight_decay else weight_decay)
        if decoupled_weight_decay and weight_decay != 0:
            p *= 1 - lr * weight_decay
        _moments(g, m, v, beta1, beta2)
        denom = np.sqrt(v * inv_bias_correction2) + eps
        p += (grad_coef * g) / denom
        p += (momentum_coef * m) / denom
        _prox(p, lr, l1_prox)
    return product


def radam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, l1_prox=0.0, grad_scale=None,
          found_inf=None):
    """RAdam, torch.optim.RAdam rules; see :func:`fastopt.radam`."""
    if _skipped(found_inf):
        return
    beta1, beta2 = betas
    bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    for p, g, m, v in zip(_as_list(params), _as_list(grads), _as_list(exp_avgs), _as_list(exp_avg_sqs)):
        g = _grad(g, p, maximize, grad_scale, 0.0 if decoupled_weight_decay else weight_decay)
        if decoupled_weight_decay and weight_decay != 0:
            p *= 1 - lr * weight_decay
        _moments(g, m, v, beta1, beta2)
        update = m * (1 / bias_correction1) * lr  # torch divides by bias_correction1
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            update = update * (bias_correction2**0.5 / (np.sqrt(v) + eps)) * rect
        p -= update
        _prox(p, lr, l1_prox)


def adamax(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           maximize=False, l1_prox=0.0, grad_scale=None, found_inf=None):
    """Adamax, torch.optim.Adamax rules; see :func:`fastopt.adamax`."""
    if _skipped(found_inf):
        return
    beta1, beta2 = betas
    clr = lr / (1 - beta1**step)
    for p, g, m, u in zip(_as_list(params), _as_list(grads), _as_list(exp_avgs), _as_list(exp_infs)):
        g = _grad(g, p, maximize, grad_scale, weight_decay)
        m += (1 - beta1) * (g - m)
        np.maximum(u * beta2, np.abs(g) + eps, out=u)  # NaN wins, as torch.maximum
        p += (-clr * m) / u
        _prox(p, lr, l1_prox)


def lion(params, grads, exp_avgs, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3, maximize=False,
         l1_prox=0.0, grad_scale=None, found_inf=None):
    """Lion, optax.lion rules; see :func:`fastopt.lion`."""
    if _skipped(found_inf):
        return
    beta1, beta2 = betas
    for p, g, m in zip(_as_list(params), _as_list(grads), _as_list(exp_avgs)):
        g = _grad(g, p, maximize, grad_scale)
        u = np.sign((1 - beta1) * g + beta1 * m)
        if weight_decay != 0:
            u = u + weight_decay * p
        m[...] = (1 - beta2) * g + beta2 * m
        p += -lr * u
        _prox(p, lr, l1_prox)


def lamb(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.01, max_grad_norm=1.0, use_nvlamb=False, maximize=False, l1_prox=0.0,
         grad_scale=None, found_inf=None):
    """LAMB, apex FusedLAMB rules; see :func:`fastopt.lamb`."""
    if _skipped(found_inf):
        return
    beta1, beta2 = betas
    grads = _as_list(grads)
    mul = (-1.0 if maximize else 1.0) / (grad_scale or 1.0)
    if max_grad_norm > 0:
        norm = global_norm(grads) * abs(mul)
        if norm > max_grad_norm:
            mul = mul / (norm / max_grad_norm)
    inv_bc1, inv_bc2 = 1 / (1 - beta1**step), 1 / (1 - beta2**step)
    for p, g, m, v in zip(_as_list(params), grads, _as_list(exp_avgs), _as_list(exp_avg_sqs)):
        g = g * mul
        _moments(g, m, v, beta1, beta2)
        u = (m * inv_bc1) / (np.sqrt(v * inv_bc2) + eps)
        if weight_decay != 0:
            u = u + weight_decay * p
        # plain float64 sums, as fastopt's kernel takes them in its one pass (no rescue: float32 cannot
        # overflow them; float64 beyond ~1e154 does, giving inf / NaN like apex's float32 sums)
        with np.errstate(over="ignore", invalid="ignore"):
            p_norm = float(np.sqrt(np.sum(np.square(p, dtype=np.float64))))
            u_norm = float(np.sqrt(np.sum(np.square(u, dtype=np.float64))))
        trust = (weight_decay != 0 or use_nvlamb) and p_norm > 0 and u_norm > 0
        p += (-lr * (p_norm / u_norm if trust else 1.0)) * u
        _prox(p, lr, l1_prox)


def elastic_net_grad(grads, params, *, l1, l2):
    """grads += l2 * params + l1 * sign(params); see :func:`fastopt.elastic_net_grad`."""
    for g, p in zip(_as_list(grads), _as_list(params)):
        if l1 != 0 and l2 != 0:
            g += l2 * p + l1 * np.sign(p)
        elif l1 != 0:
            g += l1 * np.sign(p)
        else:
            g += l2 * p


def l2_grad(grads, params, *, lam):
    """grads += lam * params; see :func:`fastopt.l2_grad`."""
    elastic_net_grad(grads, params, l1=0.0, l2=lam)


def l1_grad(grads, params, *, lam):
    """grads += lam * sign(params); see :func:`fastopt.l1_grad`."""
    elastic_net_grad(grads, params, l1=lam, l2=0.0)


def global_norm(grads, norm_type=2.0) -> float:
    """The norm of all elements of all arrays, summed in float64; see :func:`fastopt.global_norm`."""
    values = np.concatenate([np.abs(np.asarray(g, np.float64)).ravel() for g in _as_list(grads)])
    if not values.size:
        return 0.0
    big = float(np.max(values))  # NaN wins, as in torch
    if math.isinf(norm_type):
        return big
    with np.errstate(over="ignore", under="ignore"):
        total = float(np.sum(values**norm_type))
        if math.isfinite(big) and big > 0 and (not math.isfinite(total) or total < 1e-280):
            # the sum overflowed or lost its digits: again with |x| scaled by the power of two that
            # brings the largest to [1, 2) (at most 2^1020, which a subnormal largest needs)
            scale = math.ldexp(1.0, min(1 - math.frexp(big)[1], 1020))
            return float(np.sum((values * scale) ** norm_type)) ** (1 / norm_type) / scale
    return total ** (1 / norm_type)


def clip_grad_norm(grads, max_norm, norm_type=2.0) -> float:
    """torch.nn.utils.clip_grad_norm_ rules; see :func:`fastopt.clip_grad_norm`."""
    total = global_norm(grads, norm_type)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:
        for g in _as_list(grads):
            g *= coef
    return total


def unscale(grads, inv_scale, found_inf=None) -> bool:
    """grads *= inv_scale, reporting any inf/NaN; see :func:`fastopt.unscale`."""
    found = False
    for g in _as_list(grads):
        found = found or not bool(np.all(np.isfinite(g)))
        g *= inv_scale
    if found and found_inf is not None:
        found_inf[...] = 1.0
    return found


# ---- stochastic rounding to bfloat16 (stochastic_rounding=) ----

def philox4x32(counter, key):
    """Philox-4x32-10 (Salmon et al. 2011, Random123): counter, four arrays of uint32 words; key,
    two uint32 words; returns the four uint32 output words, elementwise."""
    mask = np.uint64(0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & mask
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & mask, (k1 + np.uint64(0xBB67AE85)) & mask
    return [c.astype(np.uint32) for c in (c0, c1, c2, c3)]


def stochastic_round_bf16(x, seed: int, counter: int, tensor: int = 0) -> np.ndarray:
    """float32 x as bfloat16 bits (uint16), rounded as fastopt's stochastic_rounding=(seed, counter)
    rounds tensor `tensor` of a call::

        r(e) = 16-bit half (e % 2) of word (e % 8) // 2 of
               Philox-4x32-10(counter words (e // 8 low, e // 8 high, tensor, counter), key (seed low, seed high))
        bits(e) = (float32 bits of x[e] + r(e)) >> 16         (inf and NaN: truncated, NaN kept quiet)

    so x rounds up with probability (its dropped 16 bits) / 2^16: unbiased.  Element e of a tensor
    gets the same bits whatever the thread count, SIMD width or device."""
    u = np.ascontiguousarray(x, np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    e = np.arange(u.size, dtype=np.uint64)
    group = e >> np.uint64(3)
    words = philox4x32([group & np.uint64(0xFFFFFFFF), group >> np.uint64(32), np.full_like(e, tensor),
                        np.full_like(e, counter)], (seed & 0xFFFFFFFF, seed >> 32))
    word = np.choose(((e & np.uint64(7)) >> np.uint64(1)).astype(np.intp), words).astype(np.uint64)
    r = (word >> (np.uint64(16) * (e & np.uint64(1)))) & np.uint64(0xFFFF)
    special = (u & np.uint64(0x7F800000)) == np.uint64(0x7F800000)
    nan = special & ((u & np.uint64(0x7FFFFF)) != 0)
    kept = (u >> np.uint64(16)) | np.where(nan, np.uint64(0x40), np.uint64(0))
    out = np.where(special, kept, (u + r) >> np.uint64(16))
    return out.astype(np.uint16).reshape(np.shape(x))


# ---- dropout and the losses ----

DROPOUT_KEY = 0x44524F50  # "DROP": xored into the key's high word, apart from stochastic rounding's bits


def dropout_words(n: int, seed: int, counter: int) -> np.ndarray:
    """The 32-bit random word of each of n elements: element e takes word e % 4 of
    Philox-4x32-10(counter (e // 4 low, e // 4 high, counter low, counter high),
    key (seed low, seed high ^ DROPOUT_KEY))."""
    e = np.arange(n, dtype=np.uint64)
    group = e >> np.uint64(2)
    words = philox4x32([group & np.uint64(0xFFFFFFFF), group >> np.uint64(32),
                        np.full_like(e, counter & 0xFFFFFFFF), np.full_like(e, counter >> 32)],
                       (seed & 0xFFFFFFFF, (seed >> 32) ^ DROPOUT_KEY))
    return np.choose((e & np.uint64(3)).astype(np.intp), words)


def dropout_threshold(p: float) -> int:
    """The word below which dropout drops an element: round(p * 2^32), at most 2^32 - 1 (p = 1
    drops every element by its scale, 0)."""
    return min(round(p * 2.0 ** 32), 2 ** 32 - 1)


def _compute_dtype(dtype) -> np.dtype:
    """What the math runs in: float64 for float64, float32 for the rest (16-bit included)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def dropout(x, p, *, seed, counter, out=None, mask=None):
    """Inverted dropout::

        kept(e) = dropout_words(e) >= min(round(p * 2^32), 2^32 - 1)  and  p < 1
        out = x * (kept ? 1 / (1 - p) : 0)          (1 / (1 - p) in double, rounded to the math type)

    so dropped inf and NaN give NaN, as torch's ``x * mask``; mask (if given) gets kept as 0/1."""
    x = np.asarray(x)
    ct = _compute_dtype(x.dtype)
    kept = (dropout_words(x.size, seed, counter) >= dropout_threshold(p)) & (p < 1)
    scale = ct.type(1 / (1 - p)) if p < 1 else ct.type(0)
    with np.errstate(invalid="ignore"):  # (inf * 0: NaN, as specified)
        y = (x.astype(ct).reshape(-1) * np.where(kept, scale, ct.type(0))).astype(x.dtype).reshape(x.shape)
    if mask is not None:
        mask[...] = kept.reshape(x.shape)
    if out is None:
        return y
    out[...] = y
    return out


def dropout_backward(grad, p, *, seed, counter, out=None):
    """The gradient through :func:`dropout`: the same mask and scale applied to grad."""
    return dropout(grad, p, seed=seed, counter=counter, out=out)


def mse_grad(pred, target, *, reduction="mean", out=None):
    """(loss, d loss / d pred) of the mean (or summed) squared error::

        d = pred - target                                  (in the math type)
        loss = sum(d^2) (/ n for "mean")                   (in double)
        grad = d * (2 / n, or 2 for "sum")                  (the factor rounded to the math type)"""
    pred = np.asarray(pred)
    ct = _compute_dtype(pred.dtype)
    d = pred.astype(ct) - np.asarray(target).astype(ct)
    loss = float(np.sum(d.astype(np.float64) ** 2))
    factor = ct.type(2 / pred.size if reduction == "mean" and pred.size else 2.0)
    g = (d * factor).astype(pred.dtype)
    if out is not None:
        out[...] = g
        g = out
    return ((loss / pred.size if pred.size else math.nan) if reduction == "mean" else loss), g


def softmax_cross_entropy(logits, labels, *, label_smoothing=0.0, ignore_index=-100, reduction="mean", out=None):
    """(loss, d loss / d logits) of softmax cross-entropy over rows of logits (rows x classes) with
    integer labels, torch.nn.functional.cross_entropy's rules::

        t_j = label_smoothing / classes + (1 - label_smoothing) [j == label]
        loss_row = logsumexp(x) - sum_j t_j x_j,   grad_row = softmax(x) - t
        loss = sum of loss_row over rows whose label is not ignore_index (/ their count for "mean");
        grad = the gradient of loss (zero rows for ignored labels)

    In double here; fastopt computes in the math type with the sums in double."""
    x = np.asarray(logits)
    rows, classes = x.shape
    labels = np.asarray(labels).astype(np.int64)
    counted = labels != ignore_index
    xd = x.astype(np.float64)
    m = xd.max(axis=1, keepdims=True)
    e = np.exp(xd - m)
    s = e.sum(axis=1, keepdims=True)
    target = np.full((rows, classes), label_smoothing / classes)
    target[np.arange(rows)[counted], labels[counted]] += 1 - label_smoothing
    picked = np.where(counted, labels, 0)
    z = xd - m  # (the logits less their max: a large common offset cancels exactly)
    losses = np.log(s)[:, 0] - (1 - label_smoothing) * z[np.arange(rows), picked]
    if label_smoothing != 0:  # (only then the logits' sum: a -inf logit makes it -inf)
        losses -= label_smoothing / classes * z.sum(axis=1)
    n = int(counted.sum())
    mul = 1 / n if reduction == "mean" and n else 1.0
    g = np.where(counted[:, None], (e / s - target) * mul, 0.0).astype(x.dtype) if n else np.zeros_like(x)
    total = float(losses[counted].sum())
    loss = (total / n if n else math.nan) if reduction == "mean" else total
    if out is not None:
        out[...] = g
        g = out
    return loss, g
