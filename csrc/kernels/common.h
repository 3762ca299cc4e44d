/* Per-element pieces every update shares, written once for each element type T.
 * (Included by dispatch/spans.h with T, FO_FN and the math macros defined.) */

/* The gradient as an update sees it: unscaled and signed in one multiply (grad_mul = +-1/grad_scale,
 * exact for the power-of-two scales of loss scaling), plus the L2 term when weight decay is coupled.
 * A select, not a multiply by 0, so an infinite weight without weight decay stays out of g. */
FO_INLINE T FO_FN(grad_in)(T g, T p, const fo_common_consts *c)
{
    T gi = g * (T)c->grad_mul;
    return c->coupled_wd ? gi + (T)c->weight_decay * p : gi;
}

/* Proximal L1 step, soft thresholding by t >= 0: exact zeros; NaN stays NaN. */
FO_INLINE T FO_FN(soft_threshold)(T p, T t)
{
    T shrunk = FO_FABS(p) - t;
    return FO_COPYSIGN(shrunk < 0 ? (T)0 : shrunk, p);
}

/* The end of every update: the weight, soft-thresholded when l1_prox asked for it (prox is a
 * compile-time constant at every call site). */
FO_INLINE T FO_FN(l1_prox)(T p, T t, const int prox)
{
    return prox ? FO_FN(soft_threshold)(p, t) : p;
}

/* NumPy's sign: -1, 0 or 1, NaN for NaN. */
FO_INLINE T FO_FN(sign)(T x)
{
    return x > 0 ? (T)1 : x < 0 ? (T)-1 : x == 0 ? (T)0 : x;
}

/* Adam's moments in torch's order: m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g. */
FO_INLINE void FO_FN(adam_moments)(T g, T *m, T *v, T one_minus_beta1, T beta2, T one_minus_beta2)
{
    *m = *m + one_minus_beta1 * (g - *m);
    *v = *v * beta2 + one_minus_beta2 * g * g;
}

/* The first half of Adam, NAdam and RAdam at one element: the gradient in (coupled weight decay
 * included), both moments updated in place, and the weight shrunk by decoupled weight decay (decay
 * is 1 otherwise), returned for the second half to step from.  *g_out gets the gradient. */
FO_INLINE T FO_FN(adam_front)(T g, T p, T *m, T *v, const fo_common_consts *c, T one_minus_beta1, T beta2,
                              T one_minus_beta2, T *g_out)
{
    T gi = FO_FN(grad_in)(g, p, c), mi = *m, vi = *v;
    FO_FN(adam_moments)(gi, &mi, &vi, one_minus_beta1, beta2, one_minus_beta2);
    *m = mi;
    *v = vi;
    *g_out = gi;
    return p * (T)c->decay;
}
