/* RMSprop: torch.optim.RMSprop rules (https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html).
 * centered and has_momentum (whether grad_avg / buf exist) are compile-time constants. */
FO_INLINE void FO_FN(rmsprop_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict sq,
                                   FO_S *restrict gavg, FO_S *restrict buf, const fo_rmsprop_consts *k,
                                   const fo_aux *aux, const int centered, const int has_momentum, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T alpha = (T)k->alpha, c = (T)k->one_minus_alpha, eps = (T)k->eps, momentum = (T)k->momentum;
    const T lr = (T)k->c.lr, neg_lr = (T)-k->c.lr, prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i), gi = FO_FN(grad_in)(LD_G(g, i), pi, cc);
        T si = LD_S(sq, i) * alpha + c * gi * gi;
        ST_S(sq, i, si);
        T avg;
        if (centered) {                                  /* variance, not the raw second moment */
            T ga0 = LD_S(gavg, i), ga = ga0 + c * (gi - ga0);
            ST_S(gavg, i, ga);
            avg = FO_SQRT(si - ga * ga) + eps;
        } else {
            avg = FO_SQRT(si) + eps;
        }
        if (has_momentum) {
            T bi = LD_S(buf, i) * momentum + gi / avg;
            ST_S(buf, i, bi);
            pi = pi - lr * bi;
        } else {
            pi = pi + neg_lr * gi / avg;
        }
        ST_P(p, i, FO_FN(l1_prox)(pi, prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(rmsprop_span)
{
    const fo_rmsprop_consts *k = fo_consts_of(call, t);
    AUX;
    size_t n = end - begin;
    FO_P *p = AT_P(0), *g = AT_P(1);
    FO_S *sq = AT_S(2);
    if (k->centered && k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT_S(3), AT_S(4), k, aux, 1, 1, prox));
    else if (k->centered) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT_S(3), NULL, k, aux, 1, 0, prox));
    else if (k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, AT_S(4), k, aux, 0, 1, prox));
    else WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, NULL, k, aux, 0, 0, prox));
}
