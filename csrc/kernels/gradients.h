/* Kernels on gradients alone: regularization terms, scaling, loss-scale undoing, and the blocks of
 * the deterministic norms.  Sums run in double over FO_LANES fixed lanes, so every SIMD width adds
 * the same numbers in the same order. */

/* g += l2 * p + l1 * sign(p), each term only when asked for (NumPy's order in the reference). */
FO_INLINE void FO_FN(elastic_net_loop)(size_t n, FO_P *restrict g, const FO_P *restrict p, const fo_elastic_consts *k)
{
    const T l1 = (T)k->l1, l2 = (T)k->l2;
    const int has_l1 = k->l1 != 0, has_l2 = k->l2 != 0;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_G(p, i), s = l1 * FO_FN(sign)(pi), w = l2 * pi;
        ST_G(g, i, LD_G(g, i) + (has_l1 ? (has_l2 ? w + s : s) : w));
    }
}

FO_INLINE void FO_FN(scale_loop)(size_t n, FO_P *restrict g, T factor)
{
    for (size_t i = 0; i < n; i++) ST_G(g, i, LD_G(g, i) * factor);
}

/* g *= inv_scale; returns whether any input was inf or NaN (x - x is NaN exactly for those). */
FO_INLINE int FO_FN(unscale_loop)(size_t n, FO_P *restrict g, T inv_scale)
{
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        T x = LD_G(g, i), d = x - x;
        found |= d != d;
        ST_G(g, i, x * inv_scale);
    }
    return found;
}

/* Per block: out[0] = the sum for the norm (|x|^2, |x|, |x|^p, or max |x|), out[1] = max |x|. */
FO_INLINE void FO_FN(norm_block_loop)(size_t n, const FO_P *restrict x, const fo_norm_consts *k, double *out)
{
    double acc[FO_LANES] = {0}, big[FO_LANES] = {0};
    const double scale = k->scale, p = k->norm_type;
    const int kind = k->kind;
    for (size_t i = 0; i < n; i += FO_LANES) {
        size_t len = n - i < FO_LANES ? n - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            double a = fabs((double)LD_G(x, i + j));
            big[j] = (a > big[j] || a != a) ? a : big[j];    /* NaN wins */
            double s = a * scale;
            acc[j] += kind == FO_NORM_2 ? s * s : kind == FO_NORM_1 ? s : 0;
        }
    }
    if (kind == FO_NORM_P) /* general p: pow does not vectorize; one sequential sum */
        for (size_t i = 0; i < n; i++) acc[i % FO_LANES] += pow(fabs((double)LD_G(x, i)) * scale, p);
    out[0] = kind == FO_NORM_INF ? fo_max_lanes(big) : fo_sum_lanes(acc);
    out[1] = fo_max_lanes(big);
}
