/* Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), optax rules: the sign
 * of an interpolation of momentum and gradient, decoupled weight decay, then the momentum update. */
FO_INLINE void FO_FN(lion_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                                const fo_lion_consts *k, const int prox)
{
    const T beta1 = (T)k->beta1, c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2;
    const T neg_lr = (T)-k->c.lr, wd = (T)k->c.weight_decay, prox_t = (T)k->c.prox_threshold;
    const int has_wd = k->has_wd;
    for (size_t i = 0; i < n; i++) {
        T gi = FO_FN(grad_in)(g[i], p[i], &k->c);
        T pi = p[i];
        T u = FO_FN(sign)(c1 * gi + beta1 * m[i]);
        u = has_wd ? u + wd * pi : u;
        m[i] = c2 * gi + beta2 * m[i];
        p[i] = FO_FN(l1_prox)(pi + neg_lr * u, prox_t, prox);
    }
}
