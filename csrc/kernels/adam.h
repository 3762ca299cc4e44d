/* Adam and AdamW: torch.optim.Adam rules (https://pytorch.org/docs/stable/generated/torch.optim.Adam.html),
 * each operation in torch's order (one divide replaced by a multiply), so that float32 results
 * agree with torch.optim to rounding.  amsgrad is a compile-time constant at every call site. */
FO_INLINE void FO_FN(adam_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                                T *restrict v, T *restrict vmax, const fo_adam_consts *k, const int amsgrad,
                                const int prox)
{
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2, eps = (T)k->eps;
    const T prox_t = (T)k->c.prox_threshold;
    const T neg_step_size = (T)-k->step_size, inv_bc2_sqrt = (T)k->inv_bias_correction2_sqrt;
    for (size_t i = 0; i < n; i++) {
        T gi, pi = FO_FN(adam_front)(g[i], p[i], &m[i], &v[i], &k->c, c1, beta2, c2, &gi);
        T mi = m[i], vi = v[i];
        if (amsgrad) {                                       /* torch.maximum: NaN wins */
            T mx = vmax[i];
            vi = (mx > vi || mx != mx) ? mx : vi;
            vmax[i] = vi;
        }
        /* bias-corrected sqrt(v) + eps; a multiply, not torch's divide: a packed divide costs
         * as much as the rest of the update, and this is within 1 ulp of it */
        T denom = FO_SQRT(vi) * inv_bc2_sqrt + eps;
        p[i] = FO_FN(l1_prox)(pi + neg_step_size * mi / denom, prox_t, prox); /* torch's addcdiv: (value*m)/denom */
    }
}
