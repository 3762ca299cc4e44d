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

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(adam_span)
{
    const fo_adam_consts *k = fo_consts_of(call, t);
    AUX;
    if (k->amsgrad) WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), AT_S(4), k, aux, 1, prox));
    else WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), NULL, k, aux, 0, prox));
}
