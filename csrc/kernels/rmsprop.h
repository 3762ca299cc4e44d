/* RMSprop: torch.optim.RMSprop rules (https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html).
 * centered and has_momentum (whether grad_avg / buf exist) are compile-time constants. */
FO_INLINE void FO_FN(rmsprop_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict sq,
                                   T *restrict gavg, T *restrict buf, const fo_rmsprop_consts *k,
                                   const int centered, const int has_momentum, const int prox)
{
    const T alpha = (T)k->alpha, c = (T)k->one_minus_alpha, eps = (T)k->eps, momentum = (T)k->momentum;
    const T lr = (T)k->c.lr, neg_lr = (T)-k->c.lr, prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++) {
        T gi = FO_FN(grad_in)(g[i], p[i], &k->c);
        T si = sq[i] * alpha + c * gi * gi;
        sq[i] = si;
        T avg;
        if (centered) {                                  /* variance, not the raw second moment */
            T ga = gavg[i] + c * (gi - gavg[i]);
            gavg[i] = ga;
            avg = FO_SQRT(si - ga * ga) + eps;
        } else {
            avg = FO_SQRT(si) + eps;
        }
        T pi;
        if (has_momentum) {
            T bi = buf[i] * momentum + gi / avg;
            buf[i] = bi;
            pi = p[i] - lr * bi;
        } else {
            pi = p[i] + neg_lr * gi / avg;
        }
        p[i] = FO_FN(l1_prox)(pi, prox_t, prox);
    }
}
