/* Adam and AdamW: torch.optim.Adam rules (https://pytorch.org/docs/stable/generated/torch.optim.Adam.html),
 * each operation in torch's order (one divide replaced by a multiply), so that float32 results
 * agree with torch.optim to rounding.
 * Included once per element type T by dispatch/kernels.c; amsgrad and wd_mode are compile-time
 * constants at every call site. */
FO_INLINE void FO_FN(adam_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                                T *restrict v, T *restrict vmax, const fo_adam_consts *k,
                                const int amsgrad, const int wd_mode)
{
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2;
    const T eps = (T)k->eps, wd = (T)k->weight_decay, decay = (T)k->decay, sign = (T)k->grad_sign;
    const T neg_step_size = (T)-k->step_size, inv_bc2_sqrt = (T)k->inv_bias_correction2_sqrt;
    for (size_t i = 0; i < n; i++) {
        T gi = sign * g[i];                                  /* maximize: follow -grad */
        T pi = p[i];
        if (wd_mode == FO_WD_COUPLED) gi = gi + wd * pi;     /* Adam: L2 penalty in the gradient */
        if (wd_mode == FO_WD_DECOUPLED) pi = pi * decay;     /* AdamW: shrink the weight itself */
        T mi = m[i] + c1 * (gi - m[i]);                      /* m = lerp(m, g, 1 - beta1) */
        T vi = v[i] * beta2 + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {                                       /* torch.maximum: NaN wins */
            T mx = vmax[i];
            vi = (mx > vi || mx != mx) ? mx : vi;
            vmax[i] = vi;
        }
        /* bias-corrected sqrt(v) + eps; a multiply, not torch's divide: a packed divide costs
         * as much as the rest of the update, and this is within 1 ulp of it */
        T denom = FO_SQRT(vi) * inv_bc2_sqrt + eps;
        p[i] = pi + neg_step_size * mi / denom;              /* torch's addcdiv: (value * m) / denom */
    }
}
