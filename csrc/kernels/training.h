/* The rest of a training step: dropout, and the gradients of the mean-squared-error and softmax
 * cross-entropy losses.  Outputs may be their inputs (in place), so those pointers are not restrict.
 * Sums run in double over FO_LANES fixed lanes, as the norms do: the same bits at every SIMD width. */

/* Inverted dropout: y = x * (kept ? scale : 0), kept when the element's random word >= threshold
 * (all dropped when !keep_any: p = 1); mask[i] = kept when there is a mask. */
FO_INLINE void FO_FN(dropout_loop)(size_t n, const FO_P *x, FO_P *y, uint8_t *restrict mask,
                                    const uint32_t *restrict words, const fo_dropout_consts *k, const int has_mask)
{
    const T scale = (T)k->scale, zero = 0;
    const uint32_t threshold = k->threshold;
    const int keep_any = k->keep_any;
    for (size_t i = 0; i < n; i++) {
        int kept = (words[i] >= threshold) & keep_any;
        ST_G(y, i, LD_G(x, i) * (kept ? scale : zero));
        if (has_mask) mask[i] = (uint8_t)kept;
    }
}

/* grad = (pred - target) * factor; out[0] = the sum of (pred - target)^2. */
FO_INLINE void FO_FN(mse_loop)(size_t n, const FO_P *pred, const FO_P *target, FO_P *grad, T factor, double *out)
{
    double acc[FO_LANES] = {0};
    for (size_t i = 0; i < n; i += FO_LANES) {
        size_t len = n - i < FO_LANES ? n - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            T d = LD_G(pred, i + j) - LD_G(target, i + j);
            acc[j] += (double)d * (double)d;
            ST_G(grad, i + j, d * factor);
        }
    }
    out[0] = fo_sum_lanes(acc);
}

/* e^x for x <= 0 (softmax's x - max) in T, with only +, * and the exponent's bits, so that it
 * vectorizes and gives the same bits at every SIMD level (a libm call would keep the loop scalar):
 * x = k ln 2 + r with |r| <= ln 2 / 2 (Cody-Waite: ln 2 in two parts, k * ln2_hi exact), e^r by its
 * Taylor polynomial (degree 7 in float, 13 in double: truncation below half an ulp), times 2^k.
 * Below the smallest normal number's logarithm it is 0 (x = -inf included); NaN stays NaN. */
FO_INLINE T FO_FN(exp_neg)(T x)
{
    const int wide = sizeof(T) == 8;
    const T lowest = wide ? (T)-708 : (T)-87;
    const T log2e = (T)1.4426950408889634, magic = wide ? (T)6755399441055744.0 : (T)12582912.0; /* 1.5 * 2^mantissa */
    const T ln2_hi = wide ? (T)6.93147180369123816490e-01 : (T)0.693145751953125;
    const T ln2_lo = wide ? (T)1.90821492927058770002e-10 : (T)1.428606765330187045e-06;
    T xc = x < lowest ? lowest : x;
    T k = (xc * log2e + magic) - magic; /* round(xc / ln 2): the add rounds to an integer */
    T r = (xc - k * ln2_hi) - k * ln2_lo;
    T p = 1;
    for (int j = wide ? 13 : 7; j >= 1; j--) p = 1 + p * r * ((T)1 / (T)j); /* 1 + r (1 + r/2 (1 + r/3 ...)) */
    T two_k;
    if (wide) {
        uint64_t bits = (uint64_t)((int64_t)k + 1023) << 52;
        double d;
        memcpy(&d, &bits, sizeof d);
        two_k = (T)d;
    } else {
        two_k = (T)fo_f32_of_bits((uint32_t)((int32_t)k + 127) << 23);
    }
    return x < lowest ? (T)0 : p * two_k;
}

/* One row of softmax cross-entropy: grad = (softmax(x) - t) * k->grad_mul, t the smoothed one-hot
 * target; returns the row's loss, logsumexp(x) - sum_j t_j x_j (0, and zero gradients, for a row
 * labelled ignore_index), computed from the logits less their max, as logsumexp(x - max) - sum_j
 * t_j (x_j - max), so that a large common offset cancels exactly.  Three passes over the row, which stays in cache between them: its max;
 * the sums of the exps and of the logits (each exp kept in the gradient's memory where that holds
 * it exactly, float32 and float64); the gradient. */
FO_INLINE double FO_FN(xent_row)(size_t c, const FO_P *x, FO_P *g, int64_t label, const fo_xent_consts *k)
{
    if (label == k->ignore_index) {
        for (size_t j = 0; j < c; j++) ST_G(g, j, (T)0);
        return 0;
    }
    double big[FO_LANES];
    for (int j = 0; j < FO_LANES; j++) big[j] = -INFINITY;
    for (size_t i = 0; i < c; i += FO_LANES) { /* in lanes, as the norms: it vectorizes */
        size_t len = c - i < FO_LANES ? c - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            double xj = (double)LD_G(x, i + j);
            big[j] = (xj > big[j] || xj != xj) ? xj : big[j]; /* NaN wins */
        }
    }
    const T m = (T)fo_max_lanes(big), x_label = LD_G(x, label); /* (read before the row is overwritten in place) */
    const int keep_exp = sizeof(FO_P) == sizeof(T);
    double sums[FO_LANES] = {0}, logits[FO_LANES] = {0};
    for (size_t i = 0; i < c; i += FO_LANES) {
        size_t len = c - i < FO_LANES ? c - i : FO_LANES;
        for (size_t j = 0; j < len; j++) {
            T xj = LD_G(x, i + j), e = FO_FN(exp_neg)(xj - m);
            sums[j] += (double)e;
            logits[j] += (double)xj - (double)m; /* (relative to the max: no cancellation in the loss) */
            if (keep_exp) ST_G(g, i + j, e);
        }
    }
    double sum = fo_sum_lanes(sums), smoothing = k->label_smoothing;
    double loss = log(sum) - (1 - smoothing) * ((double)x_label - (double)m);
    if (smoothing != 0) loss -= smoothing / (double)c * fo_sum_lanes(logits);
    const T inv_sum = (T)(1 / sum), mul = (T)k->grad_mul, spread = (T)(smoothing / (double)c);
    const T on_label = (T)(smoothing / (double)c + (1 - smoothing));
    const T e_label = keep_exp ? LD_G(g, label) : FO_FN(exp_neg)(x_label - m);
    for (size_t j = 0; j < c; j++) {
        T e = keep_exp ? LD_G(g, j) : FO_FN(exp_neg)(LD_G(x, j) - m);
        ST_G(g, j, (e * inv_sum - spread) * mul);
    }
    ST_G(g, label, (e_label * inv_sum - on_label) * mul); /* (the label's target, set apart: the loop vectorizes) */
    return loss;
}
