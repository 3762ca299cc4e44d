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

import numpy as np
from numba import cuda, float32, float64
from numba.cuda.extending import register_jitable

from fastopt.cuda._prims import (MARKERS, SIMULATOR, copysign, flag_set, itemsize, ldexp, load, pointer, raise_flag,
                                 real, sqrt, store, store_stochastic)

THREADS = 4 if SIMULATOR else 256    # threads per block (the simulator runs each as a Python thread)
CHUNK = 64 if SIMULATOR else 4096    # elements per block


ARGS = {}  # {kernel name: its spec}, filled by @kernel: what fastopt.cuda.signatures() builds


def kernel(spec: str):
    """A CUDA kernel whose arguments are `spec`, one word each: table (the tensor table), kN (a
    tuple of N float64 constants: the first N of C's row, fastopt_common.constant_rows), mat, vec
    (float64 2-d and 1-d arrays), aux (five int64), flag, int (int64), book (the 8-bit codebooks),
    pm and sm (markers of the params' and the state's stored type).  On a GPU it is compiled for
    every signature it is launched with (fastopt.cuda.signatures_of) when this module is first
    imported, and cached on disk, so a launch pays no compilation and no type dispatch beyond a
    look-up; elsewhere (the simulator, or PTX builds without a GPU) compiled on demand."""
    def build(fn):
        ARGS[fn.__name__] = spec
        if SIMULATOR or not cuda.is_available():
            return cuda.jit(fn)
        from fastopt.cuda import signatures_of
        return cuda.jit(signatures_of(fn.__name__, spec), cache=True)(fn)
    return build


def width(name: str) -> int:
    """How many constants kernel `name` takes (its kN)."""
    return next(int(a[1:]) for a in ARGS[name].split() if a[0] == "k")


device = cuda.jit(device=True) if SIMULATOR else register_jitable
F32 = MARKERS["float32"]   # master copies and dequantized 8-bit state
CODE = np.uint8(0)         # 8-bit state codes (and dropout's mask)
I64, F64 = np.int64(0), np.float64(0)  # labels, per-row losses

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
def chunk_of(table, chunk):
    """(tensor, first element, element count) of this block's chunk of `chunk` elements: the last
    row whose first chunk <= block."""
    b = cuda.blockIdx.x
    lo, hi = 0, table.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table[mid, 1] <= b:
            lo = mid
        else:
            hi = mid - 1
    start = (b - table[lo, 1]) * chunk
    return lo, start, min(start + chunk, table[lo, 0]) - start


@device
def role(table, t, r, marker):
    return pointer(table[t, 2 + r], table[t, 0], marker)


@device
def span(table, t, r, start, n, marker):
    """Role r of tensor t from element start on (n elements), or a null pointer for an unused role."""
    address = table[t, 2 + r]
    return pointer(address + start * itemsize(marker) if address != 0 else address, n, marker)


# ---- params: from and to the float32 master copy, or rounded stochastically (csrc/kernels/common.h) ----
# aux = (has master copies, stochastic rounding, step, key0, key1).  Stochastic rounding takes 16
# random bits an element, as the C kernels do: element e of tensor t takes 16-bit half e & 1 of word
# (e & 7) / 2 of Philox-4x32-10(counter (e / 8, t, step), key: the seed).

MASK32 = np.uint64(0xFFFFFFFF)
PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


@device
def philox(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 (Salmon et al. 2011), its four words, in 64-bit integers."""
    c0, c1, c2, c3 = np.uint64(c0), np.uint64(c1), np.uint64(c2), np.uint64(c3)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0, p1 = PHILOX_M0 * c0, PHILOX_M1 * c2
        n0, n2 = ((p1 >> np.uint64(32)) ^ c1 ^ k0) & MASK32, ((p0 >> np.uint64(32)) ^ c3 ^ k1) & MASK32
        c1, c3, c0, c2 = p1 & MASK32, p0 & MASK32, n0, n2
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


@device
def random_bits(e, t, step, k0, k1):
    """The 16 random bits of element e of tensor t (C: fo_sr_fill)."""
    group, j = e >> np.uint64(3), e & np.uint64(7)
    w0, w1, w2, w3 = philox(group & MASK32, group >> np.uint64(32), t, step, k0, k1)
    word = w0 if j < 2 else w1 if j < 4 else w2 if j < 6 else w3
    return (word >> (np.uint64(16) * (j & np.uint64(1)))) & np.uint64(0xFFFF)


@device
def param_in(p, master, i, pm, aux):
    return load(master, i, F32) if aux[0] != 0 else load(p, i, pm)


@device
def param_out(p, master, i, x, pm, aux, t, first):
    """Stores an updated weight: to the master copy and the params, or the params rounded
    stochastically, or the params rounded to nearest even."""
    if aux[0] != 0:
        store(master, i, x, F32)
    if aux[1] != 0:
        store_stochastic(p, i, x, pm, random_bits(np.uint64(first + i), t, aux[2], aux[3], aux[4]))
    else:
        store(p, i, x, pm)


# k layout of every optimizer: the common part, then its own constants
LR, COUPLED_WD, GRAD_MUL, PROX_T, DECAY, PROX = range(6)


@device
def constant(k, kt, t, j):
    """Constant j of tensor t: its row of kt where the call's constants differ per tensor (steps,
    lrs, weight decays, NAdam's products: kt has one row per tensor), else k's (kt is empty)."""
    return kt[t, j] if kt.shape[0] != 0 else k[j]

@device
def common(k, kt, t, pm):
    """The constants every update reads (csrc/api.c: common_row), in the math type: lr, the coupled
    weight decay, the gradient's factor, the L1 threshold, the decoupled decay; and whether to
    soft-threshold."""
    return (real(constant(k, kt, t, LR), pm), real(constant(k, kt, t, COUPLED_WD), pm),
            real(constant(k, kt, t, GRAD_MUL), pm), real(constant(k, kt, t, PROX_T), pm),
            real(constant(k, kt, t, DECAY), pm), constant(k, kt, t, PROX))

# ---- optimizers: each one's loop over a span (pointers from its first element), then its kernel ----
# Moments and buffers enter the update as computed, before any rounding to a 16-bit state, as in C.


@device
def sgd_span(p, g, buf, master, n, k, kt, aux, t, first, pm, sm):
    # k[6:]: momentum, 1 - dampening, has_momentum, nesterov, first_step
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    momentum, damp = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    has_momentum, nesterov = constant(k, kt, t, 8) != 0, constant(k, kt, t, 9) != 0
    first_step = constant(k, kt, t, 10) != 0
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        if has_momentum:  # torch starts the buffer at the gradient itself, without dampening
            bi = gi if first_step else momentum * load(buf, i, sm) + damp * gi
            store(buf, i, bi, sm)
            gi = gi + momentum * bi if nesterov else bi
        param_out(p, master, i, l1_prox(pi - lr * gi, prox_t, prox), pm, aux, t, first)


@kernel("table k11 mat aux flag pm sm")
def sgd_kernel(table, k, kt, aux, found_inf, pm, sm):
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    sgd_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 2, start, n, sm),
             span(table, t, 3, start, n, F32), n, k, kt, aux, t, start, pm, sm)


@device
def adam_moments(gi, mi, vi, c1, beta2, c2):
    """m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g, in torch's order."""
    return mi + c1 * (gi - mi), vi * beta2 + c2 * gi * gi


@device
def adam_span(p, g, m, v, vmax, master, n, k, kt, aux, t, first, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, -lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t), amsgrad
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    c1, beta2 = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    c2, eps = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    neg_step_size, inv_bc2_sqrt = real(constant(k, kt, t, 10), pm), real(constant(k, kt, t, 11), pm)
    amsgrad = constant(k, kt, t, 12) != 0
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, load(m, i, sm), load(v, i, sm), c1, beta2, c2)
        store(m, i, mi, sm)
        store(v, i, vi, sm)
        if amsgrad:  # torch.maximum: NaN wins
            mx = load(vmax, i, sm)
            vi = mx if (mx > vi or mx != mx) else vi
            store(vmax, i, vi, sm)
        denom = sqrt(vi) * inv_bc2_sqrt + eps
        param_out(p, master, i, l1_prox(pi * decay + neg_step_size * mi / denom, prox_t, prox), pm, aux, t, first)


@kernel("table k13 mat aux flag pm sm")
def adam_kernel(table, k, kt, aux, found_inf, pm, sm):
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    adam_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 2, start, n, sm),
              span(table, t, 3, start, n, sm), span(table, t, 4, start, n, sm), span(table, t, 5, start, n, F32),
              n, k, kt, aux, t, start, pm, sm)


@kernel("table k12 mat aux flag pm sm")
def rmsprop_kernel(table, k, kt, aux, found_inf, pm, sm):
    # k[6:]: alpha, 1 - alpha, eps, momentum, centered, has_momentum
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, g, master = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 5, start, n, F32)
    sq, gavg, buf = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm), span(table, t, 4, start, n, sm)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    alpha, c = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    eps, momentum = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    centered = constant(k, kt, t, 10) != 0
    has_momentum = constant(k, kt, t, 11) != 0
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        si = load(sq, i, sm) * alpha + c * gi * gi
        store(sq, i, si, sm)
        if centered:  # centered: the variance, not the raw second moment
            ga = load(gavg, i, sm)
            ga = ga + c * (gi - ga)
            store(gavg, i, ga, sm)
            avg = sqrt(si - ga * ga) + eps
        else:
            avg = sqrt(si) + eps
        if has_momentum:
            bi = load(buf, i, sm) * momentum + gi / avg
            store(buf, i, bi, sm)
            pi = pi - lr * bi
        else:
            pi = pi + (-lr) * gi / avg
        param_out(p, master, i, l1_prox(pi, prox_t, prox), pm, aux, t, start)


@kernel("table k8 mat aux flag pm sm")
def adagrad_kernel(table, k, kt, aux, found_inf, pm, sm):
    # k[6:]: -lr / (1 + (t - 1) * lr_decay), eps
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, g, total = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 2, start, n, sm)
    master = span(table, t, 3, start, n, F32)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    neg_clr, eps = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        si = load(total, i, sm) + gi * gi
        store(total, i, si, sm)
        param_out(p, master, i, l1_prox(pi + neg_clr * gi / (sqrt(si) + eps), prox_t, prox), pm, aux, t, start)


@kernel("table k13 mat aux flag pm sm")
def nadam_kernel(table, k, kt, aux, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta2^t), gradient coefficient, momentum coefficient
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, g, master = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 4, start, n, F32)
    m, v = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    c1, beta2 = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    c2, eps = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    inv_bc2, grad_coef = real(constant(k, kt, t, 10), pm), real(constant(k, kt, t, 11), pm)
    momentum_coef = real(constant(k, kt, t, 12), pm)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, load(m, i, sm), load(v, i, sm), c1, beta2, c2)
        store(m, i, mi, sm)
        store(v, i, vi, sm)
        denom = sqrt(vi * inv_bc2) + eps
        pi = pi * decay + grad_coef * gi / denom
        param_out(p, master, i, l1_prox(pi + momentum_coef * mi / denom, prox_t, prox), pm, aux, t, start)


@kernel("table k14 mat aux flag pm sm")
def radam_kernel(table, k, kt, aux, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta1^t), sqrt(1 - beta2^t), rect, rectified
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, g, master = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 4, start, n, F32)
    m, v = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    c1, beta2 = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    c2, eps = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    inv_bc1, bc2_sqrt = real(constant(k, kt, t, 10), pm), real(constant(k, kt, t, 11), pm)
    rect, rectified = real(constant(k, kt, t, 12), pm), constant(k, kt, t, 13)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        mi, vi = adam_moments(gi, load(m, i, sm), load(v, i, sm), c1, beta2, c2)
        store(m, i, mi, sm)
        store(v, i, vi, sm)
        step = mi * inv_bc1 * lr
        if rectified != 0:
            step = step * (bc2_sqrt / (sqrt(vi) + eps)) * rect
        param_out(p, master, i, l1_prox(pi * decay - step, prox_t, prox), pm, aux, t, start)


@kernel("table k10 mat aux flag pm sm")
def adamax_kernel(table, k, kt, aux, found_inf, pm, sm):
    # k[6:]: 1 - beta1, beta2, eps, -lr / (1 - beta1^t)
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, g, master = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 4, start, n, F32)
    m, u = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    c1, beta2 = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    eps, neg_clr = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = grad_in(load(g, i, pm), pi, mul, wd)
        m0 = load(m, i, sm)
        mi = m0 + c1 * (gi - m0)
        decayed, bound = load(u, i, sm) * beta2, abs(gi) + eps
        ui = decayed if (decayed > bound or decayed != decayed) else bound  # torch.maximum: NaN wins
        store(m, i, mi, sm)
        store(u, i, ui, sm)
        param_out(p, master, i, l1_prox(pi + neg_clr * mi / ui, prox_t, prox), pm, aux, t, start)


@device
def lion_span(p, g, m, master, n, k, kt, aux, t, first, pm, sm):
    # k[6:]: beta1, 1 - beta1, beta2, 1 - beta2, weight_decay (decoupled, after the sign)
    lr, wd, mul, prox_t, decay, prox = common(k, kt, t, pm)
    neg_lr = -lr
    beta1, c1 = real(constant(k, kt, t, 6), pm), real(constant(k, kt, t, 7), pm)
    beta2, c2 = real(constant(k, kt, t, 8), pm), real(constant(k, kt, t, 9), pm)
    wd = real(constant(k, kt, t, 10), pm)
    has_wd = constant(k, kt, t, 10) != 0
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        gi = load(g, i, pm) * mul  # Lion's weight decay joins after the sign
        mi = load(m, i, sm)
        u = sign(c1 * gi + beta1 * mi)
        u = u + wd * pi if has_wd else u
        store(m, i, c2 * gi + beta2 * mi, sm)
        param_out(p, master, i, l1_prox(pi + neg_lr * u, prox_t, prox), pm, aux, t, first)


@kernel("table k11 mat aux flag pm sm")
def lion_kernel(table, k, kt, aux, found_inf, pm, sm):
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    lion_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 2, start, n, sm),
              span(table, t, 3, start, n, F32), n, k, kt, aux, t, start, pm, sm)


# ---- reductions over a block's threads (8-bit scales, LAMB, norms) ----

@device
def block_reduce(shared, x, largest):
    """x combined over the block's threads by a fixed tree (the same bits on every run): summed, or
    the largest (NaN wins) when largest is true."""
    j = cuda.threadIdx.x
    shared[j] = x
    cuda.syncthreads()
    width = THREADS // 2
    while width > 0:
        if j < width:
            a, b = shared[j], shared[j + width]
            shared[j] = (b if (b > a or b != b) else a) if largest else a + b
        cuda.syncthreads()
        width //= 2
    out = shared[0]
    cuda.syncthreads()
    return out


@device
def block_sum(shared, x):
    return block_reduce(shared, x, False)


@device
def block_max(shared, x):
    return block_reduce(shared, x, True)


# ---- 8-bit state: one block per quantization block (256 or 2048 elements) ----
# The table's roles are the optimizer's, then its master copies, then the absmax scales of each 8-bit
# state.  codebook[j] holds state j's 256 code values, then 1 if its code is signed.  The block
# dequantizes its state into shared float32 tiles, runs the optimizer's own span on them, and
# quantizes them back: a new absmax (the largest |value|, NaN wins), each value / absmax to its code
# by the float32 arithmetic of csrc/kernels/quant8.h, as fastopt.quant8.code_of specifies.

Q8_TILE = 2048  # the largest quantization block
NINTH = float(np.float32(1) / np.float32(9))


@device
def q8_unit(i):
    """10^(i-7), rounded once (fo_q8_unit)."""
    ten = float32(10) if i & 1 else float32(1)
    hundred = float32(100) if i & 2 else float32(1)
    ten4 = float32(10000) if i & 4 else float32(1)
    return ten * hundred * ten4 * float32(1e-7)


@device
def q8_scale(i):
    """~10^(7-i) (fo_q8_scale)."""
    scale = float32(1e7)
    scale = scale * float32(0.1) if i & 1 else scale
    scale = scale * float32(0.01) if i & 2 else scale
    return scale * float32(1e-4) if i & 4 else scale


@device
def q8_code_of(x, signed):
    """The byte of x in [-1, 1] (or [0, 1]): fo_q8_code_of, the same float32 operations in order."""
    d = 0 if signed else 1
    y = abs(x) if signed else (x if x > 0 else float32(0))
    i = 0
    for k in range(1, 7):
        i += 1 if y >= q8_unit(k) else 0
    n = float32(1 << (i + d))
    u = (y * q8_scale(i) - float32(1)) * (float32(NINTH) * n)
    at = u if u > 0 else float32(0)
    at = at if at < n - float32(1) else n - float32(1)
    low = float32(0.2) if i > 0 else float32(1.75 / 9) if signed else float32(1.25 / 9)
    p = int(n - float32(1 << d)) + int(at) - (1 if u < low else 0) + (1 if i == 6 and u >= n - float32(0.25) else 0)
    c = (128 + p if not x < 0 else max(126 - p, 0)) if signed else 1 + p
    return 255 if x != x else c


@device
def q8_load(table, t, r, scale_r, start, n, block, codebook, j, tile):
    """tile = absmax * code[codes]: state j (role r, its scales role scale_r) of this block, dequantized."""
    codes = span(table, t, r, start, n, CODE)
    scale = span(table, t, scale_r, start // block, 1, F32)[0]
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        tile[i] = scale * codebook[j, codes[i]]


@device
def q8_store(table, t, r, scale_r, start, n, block, codebook, j, tile, shared):
    """The block's new absmax, and each code: q8_code_of(tile / absmax)."""
    big = float64(0)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        a = abs(float64(tile[i]))
        big = a if (a > big or a != a) else big
    top = float32(block_max(shared, big))
    if cuda.threadIdx.x == 0:
        span(table, t, scale_r, start // block, 1, F32)[0] = top
    inv = float32(1) / top if top > 0 else float32(0)
    signed = codebook[j, 256] != 0
    codes = span(table, t, r, start, n, CODE)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        codes[i] = np.uint8(q8_code_of(tile[i] * inv, signed))


@kernel("table k11 mat aux flag int book pm")
def sgd_q8_kernel(table, k, kt, aux, found_inf, block, codebook, pm):
    if flag_set(found_inf):
        return
    buf = cuda.shared.array(Q8_TILE, float32)  # one shared array a line: the simulator tells them apart by line
    shared = cuda.shared.array(THREADS, float64)
    t, start, n = chunk_of(table, block)
    q8_load(table, t, 2, 4, start, n, block, codebook, 0, buf)
    sgd_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), buf, span(table, t, 3, start, n, F32),
             n, k, kt, aux, t, start, pm, F32)
    cuda.syncthreads()
    q8_store(table, t, 2, 4, start, n, block, codebook, 0, buf, shared)


@kernel("table k13 mat aux flag int book pm")
def adam_q8_kernel(table, k, kt, aux, found_inf, block, codebook, pm):
    if flag_set(found_inf):
        return
    m = cuda.shared.array(Q8_TILE, float32)
    v = cuda.shared.array(Q8_TILE, float32)
    shared = cuda.shared.array(THREADS, float64)
    t, start, n = chunk_of(table, block)
    q8_load(table, t, 2, 6, start, n, block, codebook, 0, m)
    q8_load(table, t, 3, 7, start, n, block, codebook, 1, v)
    adam_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), m, v, v,
              span(table, t, 5, start, n, F32), n, k, kt, aux, t, start, pm, F32)
    cuda.syncthreads()
    q8_store(table, t, 2, 6, start, n, block, codebook, 0, m, shared)
    q8_store(table, t, 3, 7, start, n, block, codebook, 1, v, shared)


@kernel("table k11 mat aux flag int book pm")
def lion_q8_kernel(table, k, kt, aux, found_inf, block, codebook, pm):
    if flag_set(found_inf):
        return
    m = cuda.shared.array(Q8_TILE, float32)
    shared = cuda.shared.array(THREADS, float64)
    t, start, n = chunk_of(table, block)
    q8_load(table, t, 2, 4, start, n, block, codebook, 0, m)
    lion_span(span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), m, span(table, t, 3, start, n, F32),
              n, k, kt, aux, t, start, pm, F32)
    cuda.syncthreads()
    q8_store(table, t, 2, 4, start, n, block, codebook, 0, m, shared)


# ---- LAMB: moments and per-block sums of p^2 and u^2, per-tensor trust ratios, then the weights ----

@device
def lamb_direction(mi, vi, pi, inv_bc1, inv_bc2, eps, wd, has_wd):
    u = (mi * inv_bc1) / (sqrt(vi * inv_bc2) + eps)
    return u + wd * pi if has_wd != 0 else u


# k layout of LAMB: 1 - beta1, beta2, 1 - beta2, eps, 1 / (1 - beta1^t), 1 / (1 - beta2^t), weight_decay,
# has_wd, prox threshold, prox, -lr, trust (weight decay or nvlamb)

@kernel("table k12 mat aux vec flag mat pm sm")
def lamb_moments_kernel(table, k, kt, aux, grad_mul, found_inf, sums, pm, sm):
    if flag_set(found_inf):
        return
    shared = cuda.shared.array(THREADS, float64)
    t, start, n = chunk_of(table, CHUNK)
    p, g, master = span(table, t, 0, start, n, pm), span(table, t, 1, start, n, pm), span(table, t, 4, start, n, F32)
    m, v = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm)
    c1, beta2 = real(constant(k, kt, t, 0), pm), real(constant(k, kt, t, 1), pm)
    c2, eps = real(constant(k, kt, t, 2), pm), real(constant(k, kt, t, 3), pm)
    inv_bc1, inv_bc2 = real(constant(k, kt, t, 4), pm), real(constant(k, kt, t, 5), pm)
    wd, mul = real(constant(k, kt, t, 6), pm), real(grad_mul[0], pm)
    has_wd = constant(k, kt, t, 7)
    p2 = float64(0)
    u2 = float64(0)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        mi, vi = adam_moments(load(g, i, pm) * mul, load(m, i, sm), load(v, i, sm), c1, beta2, c2)
        store(m, i, mi, sm)
        store(v, i, vi, sm)  # the direction from the moments as stored, as in C
        u = float64(lamb_direction(load(m, i, sm), load(v, i, sm), pi, inv_bc1, inv_bc2, eps, wd, has_wd))
        p2 += float64(pi) * float64(pi)
        u2 += u * u
    p2 = block_sum(shared, p2)
    u2 = block_sum(shared, u2)
    if cuda.threadIdx.x == 0:
        sums[cuda.blockIdx.x, 0] = p2
        sums[cuda.blockIdx.x, 1] = u2


LAMB_WHOLE, LAMB_SUMS, LAMB_RATIOS = range(3)  # lamb_ratio_kernel's modes


@kernel("table k12 mat flag mat mat vec int")
def lamb_ratio_kernel(table, k, kt, found_inf, sums, tensor_sums, ratios, mode):
    """ratios[t] = -lr * ||p|| / ||u|| over tensor t (its blocks' sums added in order), or -lr.
    For sharded tensors in two launches around a sum over the processes: LAMB_SUMS writes the
    tensor's sums to tensor_sums[t], LAMB_RATIOS takes them from there (as C's phases)."""
    t = cuda.grid(1)
    if t >= table.shape[0] or flag_set(found_inf):
        return
    p2 = float64(0)
    u2 = float64(0)
    if mode == LAMB_RATIOS:
        p2, u2 = tensor_sums[t, 0], tensor_sums[t, 1]
    else:
        first = table[t, 1]
        for b in range(first, first + (table[t, 0] + CHUNK - 1) // CHUNK):
            p2 += sums[b, 0]
            u2 += sums[b, 1]
        if mode == LAMB_SUMS:
            tensor_sums[t, 0] = p2
            tensor_sums[t, 1] = u2
            return
    p_norm, u_norm = math.sqrt(p2), math.sqrt(u2)
    trust = constant(k, kt, t, 11) != 0 and p_norm > 0 and u_norm > 0
    ratios[t] = constant(k, kt, t, 10) * (p_norm / u_norm if trust else 1.0)


@kernel("table k12 mat aux flag vec pm sm")
def lamb_apply_kernel(table, k, kt, aux, found_inf, ratios, pm, sm):
    if flag_set(found_inf):
        return
    t, start, n = chunk_of(table, CHUNK)
    p, master = span(table, t, 0, start, n, pm), span(table, t, 4, start, n, F32)
    m, v = span(table, t, 2, start, n, sm), span(table, t, 3, start, n, sm)
    eps, wd = real(constant(k, kt, t, 3), pm), real(constant(k, kt, t, 6), pm)
    inv_bc1, inv_bc2 = real(constant(k, kt, t, 4), pm), real(constant(k, kt, t, 5), pm)
    prox_t, neg_lr_ratio = real(constant(k, kt, t, 8), pm), real(ratios[t], pm)
    has_wd, prox = constant(k, kt, t, 7), constant(k, kt, t, 9)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        pi = param_in(p, master, i, pm, aux)
        u = lamb_direction(load(m, i, sm), load(v, i, sm), pi, inv_bc1, inv_bc2, eps, wd, has_wd)
        param_out(p, master, i, l1_prox(pi + neg_lr_ratio * u, prox_t, prox), pm, aux, t, start)


# ---- gradients: regularization, scaling, unscaling, norms ----

@kernel("table k2 pm")
def elastic_net_kernel(table, k, pm):
    # grads (role 0) += l2 * params (role 1) + l1 * sign(params), each term only when asked for
    t, start, end = chunk_of(table, CHUNK)
    end += start
    g, p = role(table, t, 0, pm), role(table, t, 1, pm)
    l1, l2 = real(k[0], pm), real(k[1], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        pi = load(p, i, pm)
        s, w = l1 * sign(pi), l2 * pi
        store(g, i, load(g, i, pm) + ((w + s if k[1] != 0 else s) if k[0] != 0 else w), pm)


@kernel("table k1 pm")
def scale_kernel(table, k, pm):
    t, start, end = chunk_of(table, CHUNK)
    end += start
    g = role(table, t, 0, pm)
    factor = real(k[0], pm)
    for i in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
        store(g, i, load(g, i, pm) * factor, pm)


@kernel("table k1 flag pm")
def unscale_kernel(table, k, found_inf, pm):
    # g *= inv_scale; the flag is set to 1 by any inf or NaN input (x - x is NaN exactly for those)
    t, start, end = chunk_of(table, CHUNK)
    end += start
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


@kernel("table k3 mat pm")
def norm_blocks_kernel(table, k, out, pm):
    """out[b] = (this block's sum for the norm, its largest |x|); k = (kind, p, scale)."""
    shared = cuda.shared.array(THREADS, float64)
    t, start, end = chunk_of(table, CHUNK)
    end += start
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


@kernel("mat vec")
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


# ---- dropout and the losses (csrc/kernels/training.h) ----

@kernel("table k2 aux pm")
def dropout_kernel(table, k, aux, pm):
    """y (role 0) = x (role 1, or y itself when 0) * (kept ? scale : 0), mask (role 2, if any) = kept.
    k = (scale, p < 1); aux = (threshold, key low, key high, counter low, counter high).  A thread
    takes the four elements of one Philox call (chunks start at multiples of 4, as the words do)."""
    t, start, n = chunk_of(table, CHUNK)
    y, x = role(table, t, 0, pm), role(table, t, 1 if table[t, 3] != 0 else 0, pm)
    mask = pointer(table[t, 4], table[t, 0], CODE)  # (null when there is none: then never used)
    scale, zero, keep_any = real(k[0], pm), real(0.0, pm), k[1] != 0
    threshold = np.uint64(aux[0])
    for group in range(start // 4 + cuda.threadIdx.x, (start + n + 3) // 4, cuda.blockDim.x):
        g = np.uint64(group)
        w0, w1, w2, w3 = philox(g & MASK32, g >> np.uint64(32), aux[3], aux[4], aux[1], aux[2])
        for j in range(4):
            i = group * 4 + j
            if i < start + n:
                word = w0 if j == 0 else w1 if j == 1 else w2 if j == 2 else w3
                kept = word >= threshold and keep_any
                store(y, i, load(x, i, pm) * (scale if kept else zero), pm)
                if table[t, 4] != 0:
                    mask[i] = CODE + 1 if kept else CODE


@kernel("table k1 mat pm")
def mse_kernel(table, k, out, pm):
    """grad (role 0) = (pred - target) * k[0] (pred: role 1, or grad itself when 0; target: role 2, or
    grad); out[b] = (this block's sum of (pred - target)^2, 0)."""
    shared = cuda.shared.array(THREADS, float64)
    t, start, n = chunk_of(table, CHUNK)
    grad = role(table, t, 0, pm)
    pred, target = role(table, t, 1 if table[t, 3] != 0 else 0, pm), role(table, t, 2 if table[t, 4] != 0 else 0, pm)
    factor = real(k[0], pm)
    acc = float64(0)
    for i in range(start + cuda.threadIdx.x, start + n, cuda.blockDim.x):
        d = load(pred, i, pm) - load(target, i, pm)
        acc += float64(d) * float64(d)
        store(grad, i, d * factor, pm)
    acc = block_sum(shared, acc)
    if cuda.threadIdx.x == 0:
        out[cuda.blockIdx.x, 0] = acc
        out[cuda.blockIdx.x, 1] = 0.0


@device
def exp_neg(x, pm):
    """e^x for x <= 0, as csrc/kernels/training.h computes it (fo_exp_neg): Cody-Waite reduction,
    a Taylor polynomial, times 2^k; 0 below the smallest normal's logarithm."""
    wide = itemsize(pm) == 8
    lowest = real(-708.0 if wide else -87.0, pm)
    log2e = real(1.4426950408889634, pm)
    magic = real(6755399441055744.0 if wide else 12582912.0, pm)
    ln2_hi = real(6.93147180369123816490e-01 if wide else 0.693145751953125, pm)
    ln2_lo = real(1.90821492927058770002e-10 if wide else 1.428606765330187045e-06, pm)
    one = real(1.0, pm)
    xc = lowest if x < lowest else x
    k = (xc * log2e + magic) - magic
    r = (xc - k * ln2_hi) - k * ln2_lo
    p = one
    for j in range(13 if wide else 7, 0, -1):
        p = one + p * r * (one / real(j, pm))
    return real(0.0, pm) if x < lowest else ldexp(p, int(k))


# lanes of a row's sums, as C's fixed 16 (FO_LANES) combined in fo_sum_lanes' order
LANES = 16


@device
def sum_lanes(a):
    s0 = (a[0] + a[8]) + (a[4] + a[12])
    s1 = (a[1] + a[9]) + (a[5] + a[13])
    s2 = (a[2] + a[10]) + (a[6] + a[14])
    s3 = (a[3] + a[11]) + (a[7] + a[15])
    return (s0 + s2) + (s1 + s3)


@kernel("table k2 aux pm")
def xent_kernel(table, k, aux, pm):
    """One block per row of softmax cross-entropy (csrc/kernels/training.h: xent_row): table row 0 =
    (rows, 0, grad, logits (0: grad itself), labels (int64), each row's loss (float64));
    k = (label smoothing, the gradient's factor); aux = (classes, ignore_index, ...).  The sums run
    in C's 16 lanes (a thread each) and combine in C's order: the same bits as the C kernels."""
    shared = cuda.shared.array(THREADS, float64)
    lanes = cuda.shared.array((2, LANES), float64)
    row_values = cuda.shared.array(3, float64)
    r = cuda.blockIdx.x
    c = aux[0]
    grad = pointer(table[0, 2] + r * c * itemsize(pm), c, pm)
    x = pointer(table[0, 3 if table[0, 3] != 0 else 2] + r * c * itemsize(pm), c, pm)
    label = pointer(table[0, 4], table[0, 0], I64)[r]
    losses = pointer(table[0, 5], table[0, 0], F64)
    j0 = cuda.threadIdx.x
    if label == aux[1]:
        for j in range(j0, c, cuda.blockDim.x):
            store(grad, j, real(0.0, pm), pm)
        if j0 == 0:
            losses[r] = 0.0
        return
    big = -math.inf
    for j in range(j0, c, cuda.blockDim.x):
        xj = float64(load(x, j, pm))
        big = xj if (xj > big or xj != xj) else big
    m = real(block_max(shared, big), pm)
    for lane in range(j0, LANES, cuda.blockDim.x):  # (a lane a thread; the simulator has fewer threads)
        s = float64(0)
        sx = float64(0)
        for j in range(lane, c, LANES):
            xj = load(x, j, pm)
            s += float64(exp_neg(xj - m, pm))
            sx += float64(xj) - float64(m)
        lanes[0, lane] = s
        lanes[1, lane] = sx
    cuda.syncthreads()
    if j0 == 0:
        smoothing = k[0]
        total = sum_lanes(lanes[0])
        loss = math.log(total) - (1 - smoothing) * (float64(load(x, label, pm)) - float64(m))
        if smoothing != 0:
            loss -= smoothing / c * sum_lanes(lanes[1])
        losses[r] = loss
        row_values[0] = total
        row_values[1] = float64(exp_neg(load(x, label, pm) - m, pm))  # (read before the row is written)
    cuda.syncthreads()
    inv_sum, mul = real(1 / row_values[0], pm), real(k[1], pm)
    spread = real(k[0] / c, pm)
    for j in range(j0, c, cuda.blockDim.x):
        store(grad, j, (exp_neg(load(x, j, pm) - m, pm) * inv_sum - spread) * mul, pm)
    cuda.syncthreads()
    if j0 == 0:
        on_label = real(k[0] / c + (1 - k[0]), pm)
        store(grad, label, (real(row_values[1], pm) * inv_sum - on_label) * mul, pm)


@kernel("vec vec")
def lane_total_kernel(values, total):
    """total[0] = the sum of values in C's 16 lanes (value i in lane i % 16) and C's order."""
    lanes = cuda.shared.array(LANES, float64)
    for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
        s = float64(0)
        for i in range(lane, values.shape[0], LANES):
            s += values[i]
        lanes[lane] = s
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        total[0] = sum_lanes(lanes)
