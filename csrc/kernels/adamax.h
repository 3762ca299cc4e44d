/* Adamax: torch.optim.Adamax rules (https://pytorch.org/docs/stable/generated/torch.optim.Adamax.html):
 * Adam's first moment; for the second, an exponentially weighted infinity norm u of the gradients,
 * which needs no bias correction.  Weight decay is coupled. */
FO_INLINE void FO_FN(adamax_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                  FO_S *restrict u, const fo_adamax_consts *k, const fo_aux *aux, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, eps = (T)k->eps;
    const T neg_clr = (T)-k->clr, prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i), gi = FO_FN(grad_in)(LD_G(g, i), pi, cc);
        T m0 = LD_S(m, i), mi = m0 + c1 * (gi - m0);            /* lerp(m, g, 1 - beta1) */
        T decayed = LD_S(u, i) * beta2, bound = FO_FABS(gi) + eps;
        T ui = (decayed > bound || decayed != decayed) ? decayed : bound; /* torch.maximum: NaN wins */
        ST_S(m, i, mi);
        ST_S(u, i, ui);
        ST_P(p, i, FO_FN(l1_prox)(pi + neg_clr * mi / ui, prox_t, prox)); /* addcdiv: (value*m)/u */
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(adamax_span)
{
    const fo_adamax_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(adamax_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), k, aux, prox));
}
