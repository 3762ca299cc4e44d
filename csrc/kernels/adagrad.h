/* Adagrad: torch.optim.Adagrad rules (https://pytorch.org/docs/stable/generated/torch.optim.Adagrad.html). */
FO_INLINE void FO_FN(adagrad_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict sum,
                                   const fo_adagrad_consts *k, const int prox)
{
    const T neg_clr = (T)-k->clr, eps = (T)k->eps, prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++) {
        T gi = FO_FN(grad_in)(g[i], p[i], &k->c);
        T si = sum[i] + gi * gi;
        sum[i] = si;
        p[i] = FO_FN(l1_prox)(p[i] + neg_clr * gi / (FO_SQRT(si) + eps), prox_t, prox);
    }
}
