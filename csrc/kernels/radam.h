/* RAdam: torch.optim.RAdam rules (https://pytorch.org/docs/stable/generated/torch.optim.RAdam.html):
 * Adam's moments; while the variance of the adaptive rate is intractable (rho_t <= 5) the step is
 * plain bias-corrected momentum, after that the adaptive step times the rectification rect_t. */
FO_INLINE void FO_FN(radam_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                 FO_S *restrict v, const fo_radam_consts *k, const fo_aux *aux, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2, eps = (T)k->eps;
    const T prox_t = (T)k->c.prox_threshold, lr = (T)k->c.lr;
    const T inv_bc1 = (T)k->inv_bias_correction1, bc2_sqrt = (T)k->bias_correction2_sqrt, rect = (T)k->rect;
    const int rectified = k->rectified;
    for (size_t i = 0; i < n; i++) {
        T gi, mi, vi, pi = FO_FN(adam_front)(LD_G(g, i), LD_P(p, i), m, v, i, cc, c1, beta2, c2, &gi, &mi, &vi);
        T step = mi * inv_bc1 * lr;                        /* torch: (m / (1 - beta1^t)) * lr */
        if (rectified) step = step * (bc2_sqrt / (FO_SQRT(vi) + eps)) * rect;
        ST_P(p, i, FO_FN(l1_prox)(pi - step, prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(radam_span)
{
    const fo_radam_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(radam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), k, aux, prox));
}
