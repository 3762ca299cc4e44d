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
