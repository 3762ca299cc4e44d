/* LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), apex FusedLAMB rules: Adam's
 * direction u plus decoupled weight decay, scaled per tensor by the trust ratio ||p|| / ||u||.
 * The ratio needs both norms before any weight moves, so: pass 1 updates the moments and sums p^2
 * and u^2 per block; pass 2 recomputes u (same operations, same bits) and moves the weights. */
typedef struct FO_FN(lamb_direction_consts) {
    T inv_bc1, inv_bc2, eps, weight_decay;
    int has_wd;
} FO_FN(lamb_direction_consts);

FO_INLINE FO_FN(lamb_direction_consts) FO_FN(lamb_direction_of)(const fo_lamb_consts *k)
{
    return (FO_FN(lamb_direction_consts)){(T)k->inv_bias_correction1, (T)k->inv_bias_correction2, (T)k->eps,
                                          (T)k->c.weight_decay, k->has_wd};
}

FO_INLINE T FO_FN(lamb_direction)(T m, T v, T p, FO_FN(lamb_direction_consts) d)
{
    T u = (m * d.inv_bc1) / (FO_SQRT(v * d.inv_bc2) + d.eps);
    return d.has_wd ? u + d.weight_decay * p : u;
}

FO_INLINE void FO_FN(lamb_moments_loop)(size_t n, const FO_P *restrict p, const FO_P *restrict g, FO_S *restrict m,
                                        FO_S *restrict v, const fo_lamb_consts *k, const fo_aux *aux, double *sums)
{
    FO_AUX_LOCALS(aux);
    const T c1 = (T)k->one_minus_beta1, beta2 = (T)k->beta2, c2 = (T)k->one_minus_beta2;
    const T grad_mul = (T)k->clip_grad_mul;
    const FO_FN(lamb_direction_consts) d = FO_FN(lamb_direction_of)(k);
    double p_acc[FO_LANES] = {0}, u_acc[FO_LANES] = {0};
    for (size_t i = 0; i < n; i += FO_LANES) {
        size_t len = n - i < FO_LANES ? n - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            T gi = LD_G(g, i + j) * grad_mul, mi = LD_S(m, i + j), vi = LD_S(v, i + j), pi = LD_P(p, i + j);
            FO_FN(adam_moments)(gi, &mi, &vi, c1, beta2, c2);
            ST_S(m, i + j, mi);
            ST_S(v, i + j, vi);
            /* the direction from the moments as stored: pass 2 recomputes it from them */
            double pj = pi, uj = FO_FN(lamb_direction)(LD_S(m, i + j), LD_S(v, i + j), pi, d);
            p_acc[j] += pj * pj;
            u_acc[j] += uj * uj;
        }
    }
    sums[0] = fo_sum_lanes(p_acc);
    sums[1] = fo_sum_lanes(u_acc);
}

FO_INLINE void FO_FN(lamb_apply_loop)(size_t n, FO_P *restrict p, const FO_S *restrict m, const FO_S *restrict v,
                                      const fo_lamb_consts *k, const fo_aux *aux, T neg_lr_ratio, const int prox)
{
    FO_AUX_LOCALS(aux);
    const T prox_t = (T)k->c.prox_threshold;
    const FO_FN(lamb_direction_consts) d = FO_FN(lamb_direction_of)(k);
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i);
        ST_P(p, i, FO_FN(l1_prox)(pi + neg_lr_ratio * FO_FN(lamb_direction)(LD_S(m, i), LD_S(v, i), pi, d), prox_t, prox));
    }
}

/* the spans of the two passes (api.c: fastopt_lamb) */
BLOCK(lamb_moments_block) /* writes no params: no random bits, and blocks are longer than FO_SR_CHUNK */
{
    const fo_aux aux_ = {MASTER_AT(begin), NULL}, *aux = &aux_;
    FO_FN(lamb_moments_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), fo_consts_of(call, t), aux, out);
}

SPAN(lamb_apply_span)
{
    const fo_lamb_consts *k = fo_consts_of(call, t);
    AUX;
    WITH_PROX(k, FO_FN(lamb_apply_loop)(end - begin, AT_P(0), AT_S(2), AT_S(3), k, aux, (T)k->neg_lr_ratio[t], prox));
}
