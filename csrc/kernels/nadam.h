/* NAdam: torch.optim.NAdam rules (https://pytorch.org/docs/stable/generated/torch.optim.NAdam.html):
 * Adam's moments, and a step that mixes the gradient (weight 1 - mu_t) with the momentum (mu_{t+1}). */
FO_INLINE void FO_FN(nadam_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                 FO_S *restrict v, const fo_nadam_consts *k, const fo_aux *aux, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2, eps = (T)k->eps;
    const T prox_t = (T)k->c.prox_threshold, inv_bc2 = (T)k->inv_bias_correction2;
    const T grad_coef = (T)k->grad_coef, momentum_coef = (T)k->momentum_coef;
    for (size_t i = 0; i < n; i++) {
        T gi, mi, vi, pi = FO_FN(adam_front)(LD_G(g, i), LD_P(p, i), m, v, i, cc, c1, beta2, c2, &gi, &mi, &vi);
        T denom = FO_SQRT(vi * inv_bc2) + eps;             /* torch divides by 1 - beta2^t */
        pi = pi + grad_coef * gi / denom;                  /* torch's two addcdivs, in order */
        ST_P(p, i, FO_FN(l1_prox)(pi + momentum_coef * mi / denom, prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(nadam_span)
{
    const fo_nadam_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(nadam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), k, aux, prox));
}
