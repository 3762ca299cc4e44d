/* LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), apex FusedLAMB rules: Adam's
 * direction u plus decoupled weight decay, scaled per tensor by the trust ratio ||p|| / ||u||.
 * The ratio needs both norms before any weight moves, so: pass 1 updates the moments and sums p^2
 * and u^2 per block; pass 2 recomputes u (same operations, same bits) and moves the weights. */
FO_INLINE T FO_FN(lamb_direction)(T m, T v, T p, const fo_lamb_consts *k)
{
    T u = (m * (T)k->inv_bias_correction1) / (FO_SQRT(v * (T)k->inv_bias_correction2) + (T)k->eps);
    return k->has_wd ? u + (T)k->c.weight_decay * p : u;
}

FO_INLINE void FO_FN(lamb_moments_loop)(size_t n, const T *restrict p, const T *restrict g, T *restrict m,
                                        T *restrict v, const fo_lamb_consts *k, double *sums)
{
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2;
    const T grad_mul = (T)k->clip_grad_mul;
    double p_acc[FO_LANES] = {0}, u_acc[FO_LANES] = {0};
    for (size_t i = 0; i < n; i += FO_LANES) {
        size_t len = n - i < FO_LANES ? n - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            T gi = g[i + j] * grad_mul, mi = m[i + j], vi = v[i + j];
            FO_FN(adam_moments)(gi, &mi, &vi, c1, beta2, c2);
            m[i + j] = mi;
            v[i + j] = vi;
            double pj = p[i + j], uj = FO_FN(lamb_direction)(mi, vi, p[i + j], k);
            p_acc[j] += pj * pj;
            u_acc[j] += uj * uj;
        }
    }
    sums[0] = fo_sum_lanes(p_acc);
    sums[1] = fo_sum_lanes(u_acc);
}

FO_INLINE void FO_FN(lamb_apply_loop)(size_t n, T *restrict p, const T *restrict m, const T *restrict v,
                                      const fo_lamb_consts *k, T neg_lr_ratio, const int prox)
{
    const T prox_t = (T)k->c.prox_threshold;
    for (size_t i = 0; i < n; i++)
        p[i] = FO_FN(l1_prox)(p[i] + neg_lr_ratio * FO_FN(lamb_direction)(m[i], v[i], p[i], k), prox_t, prox);
}
