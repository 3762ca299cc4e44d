/* Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), optax rules: the sign
 * of an interpolation of momentum and gradient, decoupled weight decay, then the momentum update. */
FO_INLINE void FO_FN(lion_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                const fo_lion_consts *k, const fo_aux *aux, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T beta1 = (T)k->beta1, c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2;
    const T neg_lr = (T)-k->c.lr, wd = (T)k->c.weight_decay, prox_t = (T)k->c.prox_threshold;
    const int has_wd = k->c.weight_decay != 0;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i), gi = FO_FN(grad_in)(LD_G(g, i), pi, cc), mi = LD_S(m, i);
        T u = FO_FN(sign)(c1 * gi + beta1 * mi);
        u = has_wd ? u + wd * pi : u;
        ST_S(m, i, c2 * gi + beta2 * mi);
        ST_P(p, i, FO_FN(l1_prox)(pi + neg_lr * u, prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(lion_span)
{
    const fo_lion_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(lion_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, prox));
}
