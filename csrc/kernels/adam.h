/* Adam and AdamW: torch.optim.Adam rules (https://pytorch.org/docs/stable/generated/torch.optim.Adam.html),
 * each operation in torch's order (one divide replaced by a multiply), so that float32 results
 * agree with torch.optim to rounding.  amsgrad is a compile-time constant at every call site. */
FO_INLINE void FO_FN(adam_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                FO_S *restrict v, FO_S *restrict vmax, const fo_adam_consts *k, const fo_aux *aux,
                                const int amsgrad, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2, eps = (T)k->eps;
    const T prox_t = (T)k->c.prox_threshold;
    const T neg_step_size = (T)-k->step_size, inv_bc2_sqrt = (T)k->inv_bias_correction2_sqrt;
    for (size_t i = 0; i < n; i++) {
        T gi, mi, vi, pi = FO_FN(adam_front)(LD_G(g, i), LD_P(p, i), m, v, i, cc, c1, beta2, c2, &gi, &mi, &vi);
        if (amsgrad) {                                       /* torch.maximum: NaN wins */
            T mx = LD_S(vmax, i);
            vi = (mx > vi || mx != mx) ? mx : vi;
            ST_S(vmax, i, vi);
        }
        /* bias-corrected sqrt(v) + eps; a multiply, not torch's divide: a packed divide costs
         * as much as the rest of the update, and this is within 1 ulp of it */
        T denom = FO_SQRT(vi) * inv_bc2_sqrt + eps;
        ST_P(p, i, FO_FN(l1_prox)(pi + neg_step_size * mi / denom, prox_t, prox)); /* addcdiv: (value*m)/denom */
    }
}
