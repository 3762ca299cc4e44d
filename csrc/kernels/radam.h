/* RAdam: torch.optim.RAdam rules (https://pytorch.org/docs/stable/generated/torch.optim.RAdam.html):
 * Adam's moments; while the variance of the adaptive rate is intractable (rho_t <= 5) the step is
 * plain bias-corrected momentum, after that the adaptive step times the rectification rect_t. */
FO_INLINE void FO_FN(radam_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                                 T *restrict v, const fo_radam_consts *k, const int prox)
{
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2, eps = (T)k->eps;
    const T prox_t = (T)k->c.prox_threshold, lr = (T)k->c.lr;
    const T inv_bc1 = (T)k->inv_bias_correction1, bc2_sqrt = (T)k->bias_correction2_sqrt, rect = (T)k->rect;
    const int rectified = k->rectified;
    for (size_t i = 0; i < n; i++) {
        T gi, pi = FO_FN(adam_front)(g[i], p[i], &m[i], &v[i], &k->c, c1, beta2, c2, &gi);
        T mi = m[i], vi = v[i];
        T step = mi * inv_bc1 * lr;                        /* torch: (m / (1 - beta1^t)) * lr */
        if (rectified) step = step * (bc2_sqrt / (FO_SQRT(vi) + eps)) * rect;
        p[i] = FO_FN(l1_prox)(pi - step, prox_t, prox);
    }
}
