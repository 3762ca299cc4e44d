"""The CUDA kernels: each optimizer's per-element math once, in torch.optim's order of operations
(the same order as the C kernels in csrc/kernels/, so results agree to rounding).

Launch layout: every call is one grid over a *table* of its tensors, one row per tensor::

    table[t] = (numel, first chunk, address of role 0, address of role 1, ...)

The elements of all tensors are cut into chunks of CHUNK; block b finds its tensor by a binary search
of the first-chunk column and updates chunk b of it, so any number of tensors is one launch.
Constants arrive as a tuple of float64 (``k``), converted to the math type (``real``) once.
Markers (``pm`` for params and grads, ``sm`` for optimizer state) fix the stored types at compile
time: see _prims.  Reductions are deterministic: each block reduces its chunk in a fixed tree and a
one-block kernel sums the block results in a fixed order.
"""
from __future__ import annotations

import math

from numba import cuda, float64
from numba.cuda.extending import register_jitable

from fastopt.cuda._prims import SIMULATOR, copysign, flag_set, load, pointer, raise_flag, real, sqrt, store

THREADS = 4 if SIMULATOR else 256    # threads per block (the simulator runs each as a Python thread)
CHUNK = 64 if SIMULATOR else 4096    # elements per block


def kernel(fn):
    """A CUDA kernel: on a GPU, compiled for every signature it is launched with (see
    fastopt.cuda.signatures) when this module is first imported, and cached on disk, so a launch
    pays no compilation and no type dispatch beyond a look-up; elsewhere (the simulator, or PTX
    builds without a GPU) compiled on demand."""
    if SIMULATOR or not cuda.is_available():
        return cuda.jit(fn)
    from fastopt.cuda import signatures
    return cuda.jit(signatures()[fn.__name__], cache=True)(fn)


device = cuda.jit(device=True) if SIMULATOR else register_jitable

# ---- element math shared by the optimizers (csrc/kernels/common.h) ----


@device
def grad_in(g, p, grad_mul, coupled_wd):
    """The gradient an update sees: unscaled and signed by one multiply, plus coupled L2 decay."""
    gi = g * grad_mul
    return gi + coupled_wd * p if coupled_wd != 0 else gi


@device
def l1_prox(p, threshold, prox):
    """Soft thresholding after the update when asked for: exact zeros; NaN stays NaN."""
    if prox == 0:
        return p
    shrunk = abs(p) - threshold
    return copysign(shrunk if not shrunk < 0 else shrunk * 0, p)


@device
def sign(x):
    """NumPy's sign: -1, 0 or 1, NaN for NaN."""
    return x * 0 + 1 if x > 0 else x * 0 - 1 if x < 0 else x * 0 if x == 0 else x


@device
def chunk_of(table):
    """(tensor, first element, end) of this block's chunk: the last row whose first chunk <= block."""
    b = cuda.blockIdx.x
    lo, hi = 0, table.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table[mid, 1] <= b:
            lo = mid
        else:
            hi = mid - 1
    start = (b - table[lo, 1]) * CHUNK
    return lo, start, min(start + CHUNK, table[lo, 0])


@device
def role(table, t, r, marker):
    return pointer(table[t, 2 + r], table[t, 0], marker)


# k layout of every optimizer: the common part, then its own constants
LR, COUPLED_WD, GRAD_MUL, PROX_T, DECAY, PROX = range(6)

# ---- optimizers ----


@kernel
def sgd_kernel(table, k, found_inf, pm, sm):
    # k[6:]: momentum, 1 - dampening, has_momentum, nesterov, first_step
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g = role(table, t, 0, pm), role(table, t, 1, pm)
    buf = role(table, t, 2, sm)
    lr, wd, mul, prox_t = real(k[LR], pm), real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm)
    momentum, damp = real(k[6], pm), real(k[7], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        if k[8] != 0:
            bi = gi if k[10] != 0 else momentum * load(buf, i, sm) + damp * gi
            store(buf, i, bi, sm)
            gi = gi + momentum * bi if k[9] != 0 else bi
        store(p, i, l1_prox(pi - lr * gi, prox_t, k[PROX]), pm)


@device
def adam_moments(gi, m, v, i, sm, c1, beta2, c2):
    """m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g, stored; returns both as stored."""
    mi = load(m, i, sm)
    mi = mi + c1 * (gi - mi)
    vi = load(v, i, sm) * beta2 + c2 * gi * gi
    store(m, i, mi, sm)
    store(v, i, vi, sm)
    return load(m, i, sm), load(v, i, sm)


@kernel
def adam_kernel(table, k, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, -lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t), amsgrad
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, m, v, vmax = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm), \
        role(table, t, 3, sm), role(table, t, 4, sm)
    wd, mul, prox_t, decay = real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm), real(k[DECAY], pm)
    c1, beta2, c2, eps = real(k[6], pm), real(k[7], pm), real(k[8], pm), real(k[9], pm)
    neg_step_size, inv_bc2_sqrt = real(k[10], pm), real(k[11], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, m, v, i, sm, c1, beta2, c2)
        if k[12] != 0:  # torch.maximum: NaN wins
            mx = load(vmax, i, sm)
            vi = mx if (mx > vi or mx != mx) else vi
            store(vmax, i, vi, sm)
        denom = sqrt(vi) * inv_bc2_sqrt + eps
        store(p, i, l1_prox(pi * decay + neg_step_size * mi / denom, prox_t, k[PROX]), pm)


@kernel
def rmsprop_kernel(table, k, found_inf, pm, sm):
    # k[6:]: alpha, 1 - alpha, eps, momentum, centered, has_momentum
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, sq, gavg, buf = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm), \
        role(table, t, 3, sm), role(table, t, 4, sm)
    lr, wd, mul, prox_t = real(k[LR], pm), real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm)
    alpha, c, eps, momentum = real(k[6], pm), real(k[7], pm), real(k[8], pm), real(k[9], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        store(sq, i, load(sq, i, sm) * alpha + c * gi * gi, sm)
        si = load(sq, i, sm)
        if k[10] != 0:  # centered: the variance, not the raw second moment
            ga = load(gavg, i, sm)
            store(gavg, i, ga + c * (gi - ga), sm)
            ga = load(gavg, i, sm)
            avg = sqrt(si - ga * ga) + eps
        else:
            avg = sqrt(si) + eps
        if k[11] != 0:
            store(buf, i, load(buf, i, sm) * momentum + gi / avg, sm)
            pi = pi - lr * load(buf, i, sm)
        else:
            pi = pi + (-lr) * gi / avg
        store(p, i, l1_prox(pi, prox_t, k[PROX]), pm)


@kernel
def adagrad_kernel(table, k, found_inf, pm, sm):
    # k[6:]: -lr / (1 + (t - 1) * lr_decay), eps
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, total = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm)
    wd, mul, prox_t = real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm)
    neg_clr, eps = real(k[6], pm), real(k[7], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        store(total, i, load(total, i, sm) + gi * gi, sm)
        store(p, i, l1_prox(pi + neg_clr * gi / (sqrt(load(total, i, sm)) + eps), prox_t, k[PROX]), pm)


@kernel
def nadam_kernel(table, k, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta2^t), gradient coefficient, momentum coefficient
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, m, v = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm), role(table, t, 3, sm)
    wd, mul, prox_t, decay = real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm), real(k[DECAY], pm)
    c1, beta2, c2, eps = real(k[6], pm), real(k[7], pm), real(k[8], pm), real(k[9], pm)
    inv_bc2, grad_coef, momentum_coef = real(k[10], pm), real(k[11], pm), real(k[12], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, m, v, i, sm, c1, beta2, c2)
        denom = sqrt(vi * inv_bc2) + eps
        pi = pi * decay + grad_coef * gi / denom
        store(p, i, l1_prox(pi + momentum_coef * mi / denom, prox_t, k[PROX]), pm)


@kernel
def radam_kernel(table, k, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta1^t), sqrt(1 - beta2^t), rect, rectified
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, m, v = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm), role(table, t, 3, sm)
    lr, wd, mul = real(k[LR], pm), real(k[COUPLED_WD], pm), real(k[GRAD_MUL], pm)
    prox_t, decay = real(k[PROX_T], pm), real(k[DECAY], pm)
    c1, beta2, c2, eps = real(k[6], pm), real(k[7], pm), real(k[8], pm), real(k[9], pm)
    inv_bc1, bc2_sqrt, rect = real(k[10], pm), real(k[11], pm), real(k[12], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, m, v, i, sm, c1, beta2, c2)
        step = mi * inv_bc1 * lr
        if k[13] != 0:
            step = step * (bc2_sqrt / (sqrt(vi) + eps)) * rect
        store(p, i, l1_prox(pi * decay - step, prox_t, k[PROX]), pm)


@kernel
def lion_kernel(table, k, found_inf, pm, sm):
    # k[6:]: beta1, 1 - beta1, beta2, 1 - beta2, weight_decay (decoupled, after the sign)
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, g, m = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm)
    neg_lr, mul, prox_t = real(-k[LR], pm), real(k[GRAD_MUL], pm), real(k[PROX_T], pm)
    beta1, c1, beta2, c2, wd = real(k[6], pm), real(k[7], pm), real(k[8], pm), real(k[9], pm), real(k[10], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        gi = load(g, i, pm) * mul  # Lion's weight decay joins after the sign
        mi = load(m, i, sm)
        u = sign(c1 * gi + beta1 * mi)
        u = u + wd * pi if k[10] != 0 else u
        store(m, i, c2 * gi + beta2 * mi, sm)
        store(p, i, l1_prox(pi + neg_lr * u, prox_t, k[PROX]), pm)


# ---- LAMB: moments and per-block sums of p^2 and u^2, per-tensor trust ratios, then the weights ----

@device
def lamb_direction(mi, vi, pi, inv_bc1, inv_bc2, eps, wd, has_wd):
    u = (mi * inv_bc1) / (sqrt(vi * inv_bc2) + eps)
    return u + wd * pi if has_wd != 0 else u


@device
def block_sum(shared, x):
    """The sum of x over the block's threads, by a fixed tree (the same bits on every run)."""
    j = cuda.threadIdx.x
    shared[j] = x
    cuda.syncthreads()
    width = THREADS // 2
    while width > 0:
        if j < width:
            shared[j] = shared[j] + shared[j + width]
        cuda.syncthreads()
        width //= 2
    total = shared[0]
    cuda.syncthreads()
    return total


@device
def block_max(shared, x):
    """The largest x over the block's threads (NaN wins), by a fixed tree."""
    j = cuda.threadIdx.x
    shared[j] = x
    cuda.syncthreads()
    width = THREADS // 2
    while width > 0:
        if j < width:
            a, b = shared[j], shared[j + width]
            shared[j] = b if (b > a or b != b) else a
        cuda.syncthreads()
        width //= 2
    top = shared[0]
    cuda.syncthreads()
    return top


# k layout of LAMB: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta1^t), 1 / (1 - beta2^t), weight_decay,
# has_wd, prox threshold, prox, -lr, trust (weight decay or nvlamb)

@kernel
def lamb_moments_kernel(table, k, grad_mul, found_inf, sums, pm, sm):
    if flag_set(found_inf):
        return
    shared = cuda.shared.array(THREADS, float64)
    t, start, end = chunk_of(table)
    p, g, m, v = role(table, t, 0, pm), role(table, t, 1, pm), role(table, t, 2, sm), role(table, t, 3, sm)
    c1, beta2, c2, eps = real(k[0], pm), real(k[1], pm), real(k[2], pm), real(k[3], pm)
    inv_bc1, inv_bc2, wd, mul = real(k[4], pm), real(k[5], pm), real(k[6], pm), real(grad_mul[0], pm)
    p2 = float64(0)
    u2 = float64(0)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        mi, vi = adam_moments(load(g, i, pm) * mul, m, v, i, sm, c1, beta2, c2)
        u = float64(lamb_direction(mi, vi, pi, inv_bc1, inv_bc2, eps, wd, k[7]))
        p2 += float64(pi) * float64(pi)
        u2 += u * u
    p2 = block_sum(shared, p2)
    u2 = block_sum(shared, u2)
    if cuda.threadIdx.x == 0:
        sums[cuda.blockIdx.x, 0] = p2
        sums[cuda.blockIdx.x, 1] = u2


@kernel
def lamb_ratio_kernel(table, k, found_inf, sums, ratios):
    """ratios[t] = -lr * ||p|| / ||u|| over tensor t (its blocks summed in order), or -lr."""
    t = cuda.grid(1)
    if t >= table.shape[0] or flag_set(found_inf):
        return
    first = table[t, 1]
    n_chunks = (table[t, 0] + CHUNK - 1) // CHUNK
    p2 = float64(0)
    u2 = float64(0)
    for b in range(first, first + n_chunks):
        p2 += sums[b, 0]
        u2 += sums[b, 1]
    p_norm, u_norm = math.sqrt(p2), math.sqrt(u2)
    trust = k[11] != 0 and p_norm > 0 and u_norm > 0
    ratios[t] = k[10] * (p_norm / u_norm if trust else 1.0)


@kernel
def lamb_apply_kernel(table, k, found_inf, ratios, pm, sm):
    if flag_set(found_inf):
        return
    t, start, end = chunk_of(table)
    p, m, v = role(table, t, 0, pm), role(table, t, 2, sm), role(table, t, 3, sm)
    eps, inv_bc1, inv_bc2, wd = real(k[3], pm), real(k[4], pm), real(k[5], pm), real(k[6], pm)
    prox_t, neg_lr_ratio = real(k[8], pm), real(ratios[t], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        u = lamb_direction(load(m, i, sm), load(v, i, sm), pi, inv_bc1, inv_bc2, eps, wd, k[7])
        store(p, i, l1_prox(pi + neg_lr_ratio * u, prox_t, k[9]), pm)


# ---- gradients: regularization, scaling, unscaling, norms ----

@kernel
def elastic_net_kernel(table, k, pm):
    # grads (role 0) += l2 * params (role 1) + l1 * sign(params), each term only when asked for
    t, start, end = chunk_of(table)
    g, p = role(table, t, 0, pm), role(table, t, 1, pm)
    l1, l2 = real(k[0], pm), real(k[1], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        s, w = l1 * sign(pi), l2 * pi
        store(g, i, load(g, i, pm) + ((w + s if k[1] != 0 else s) if k[0] != 0 else w), pm)


@kernel
def scale_kernel(table, k, pm):
    t, start, end = chunk_of(table)
    g = role(table, t, 0, pm)
    factor = real(k[0], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        store(g, i, load(g, i, pm) * factor, pm)


@kernel
def unscale_kernel(table, k, found_inf, pm):
    # g *= inv_scale; the flag is set to 1 by any inf or NaN input (x - x is NaN exactly for those)
    t, start, end = chunk_of(table)
    g = role(table, t, 0, pm)
    inv_scale = real(k[0], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        x = load(g, i, pm)
        d = x - x
        if d != d:
            raise_flag(found_inf)
        store(g, i, x * inv_scale, pm)


# norm kinds, as in C: the sum of |x|^2, of |x|, the largest |x|, or the sum of |x|^p
NORM_2, NORM_1, NORM_INF, NORM_P = range(4)


@kernel
def norm_blocks_kernel(table, k, out, pm):
    """out[b] = (this block's sum for the norm, its largest |x|); k = (kind, p, scale)."""
    shared = cuda.shared.array(THREADS, float64)
    t, start, end = chunk_of(table)
    x = role(table, t, 0, pm)
    kind, p, scale = k[0], k[1], k[2]
    acc = float64(0)
    big = float64(0)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        a = abs(float64(load(x, i, pm)))
        big = a if (a > big or a != a) else big
        s = a * scale
        if kind == NORM_2:
            acc += s * s
        elif kind == NORM_1:
            acc += s
        elif kind == NORM_P:
            acc += math.pow(s, p)
    acc = block_sum(shared, acc)
    big = block_max(shared, big)
    if cuda.threadIdx.x == 0:
        out[cuda.blockIdx.x, 0] = acc
        out[cuda.blockIdx.x, 1] = big


@kernel
def norm_total_kernel(blocks, total):
    """total = (the sum of blocks[:, 0], the largest of blocks[:, 1]): one block, a fixed order."""
    shared = cuda.shared.array(THREADS, float64)
    acc = float64(0)
    big = float64(0)
    for b in range(cuda.threadIdx.x, blocks.shape[0], THREADS):
        acc += blocks[b, 0]
        a = blocks[b, 1]
        big = a if (a > big or a != a) else big
    acc = block_sum(shared, acc)
    big = block_max(shared, big)
    if cuda.threadIdx.x == 0:
        total[0] = acc
        total[1] = big
