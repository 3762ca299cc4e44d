/* Adagrad: torch.optim.Adagrad rules (https://pytorch.org/docs/stable/generated/torch.optim.Adagrad.html). */
FO_INLINE void FO_FN(adagrad_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict sum,
                                   const fo_adagrad_consts *k, const fo_aux *aux, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T neg_clr = (T)-k->clr, eps = (T)k->eps, prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i), gi = FO_FN(grad_in)(LD_G(g, i), pi, cc);
        T si = LD_S(sum, i) + gi * gi;
        ST_S(sum, i, si);
        ST_P(p, i, FO_FN(l1_prox)(pi + neg_clr * gi / (FO_SQRT(si) + eps), prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(adagrad_span)
{
    const fo_adagrad_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(adagrad_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, prox));
}
