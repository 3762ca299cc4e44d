/* Per-element pieces every update shares, written once for each element type T.
 * (Included by dispatch/spans.h with T, FO_FN and the math macros defined.)
 *
 * Storage: params and grads are held as FO_P, optimizer state as FO_S (float, double, or 16-bit
 * bits, see storage.h); the math runs in T.  Loops read and write them only through these: */
#define LD_G(g, i) ((T)FO_LOAD_P((g)[i]))
#define ST_G(g, i, x) ((g)[i] = FO_STORE_P(x))
#define LD_S(s, i) ((T)FO_LOAD_S((s)[i]))
#define ST_S(s, i, x) ((s)[i] = FO_STORE_S(x))
/* params come from the float32 master copy when there is one (FO_MASTER), and are written to
 * both; 16-bit params without one may be rounded stochastically (FO_SR) */
#define LD_P(p, i) (FO_MASTER ? (T)master[i] : (T)FO_LOAD_P((p)[i]))
#define ST_P(p, i, x) FO_FN(store_param)((p), (i), (x), master, random)
/* Every loop starts with this: the master copy's and the random bits' pointers, from the span's
 * aux, as restrict locals (else GCC must assume the random bits may alias the params: no SIMD). */
#define FO_AUX_LOCALS(aux) float *const restrict master = (aux)->master; (void)master; \
    const uint16_t *const restrict random = (aux)->random; (void)random
/* ... and the common scalars of the consts k (see FO_FN(common)). */
#define FO_COMMON_LOCALS(k) const FO_FN(common) cc = FO_FN(common_of)(&(k)->c)

FO_INLINE void FO_FN(store_param)(FO_P *restrict p, size_t i, T x, float *restrict master,
                                   const uint16_t *restrict random)
{
    if (FO_MASTER) master[i] = (float)x;
#if FO_SR
    p[i] = fo_f32_to_bf16_stochastic((float)x, random[i]);
#else
    (void)random;
    p[i] = FO_STORE_P(x);
#endif
}

/* The scalars every update reads, as values of T: read into the loop's locals once, so that no
 * store of the loop can be thought to change them (with 16-bit stores GCC could not tell, and
 * kept the loop scalar). */
typedef struct FO_FN(common) {
    T grad_mul, weight_decay, decay;
    int coupled_wd;
} FO_FN(common);

FO_INLINE FO_FN(common) FO_FN(common_of)(const fo_common_consts *c)
{
    return (FO_FN(common)){(T)c->grad_mul, (T)c->weight_decay, (T)c->decay, c->coupled_wd};
}

/* The gradient as an update sees it: unscaled and signed in one multiply (grad_mul = +-1/grad_scale,
 * exact for the power-of-two scales of loss scaling), plus the L2 term when weight decay is coupled.
 * A select, not a multiply by 0, so an infinite weight without weight decay stays out of g. */
FO_INLINE T FO_FN(grad_in)(T g, T p, FO_FN(common) c)
{
    T gi = g * c.grad_mul;
    return c.coupled_wd ? gi + c.weight_decay * p : gi;
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

/* The first half of Adam, NAdam and RAdam at element i: the gradient in (coupled weight decay
 * included), both moments updated and stored, and the weight shrunk by decoupled weight decay
 * (decay is 1 otherwise), returned for the second half to step from.  *g_out, *m_out, *v_out get
 * the gradient and the new moments as computed (before any rounding to a 16-bit state). */
FO_INLINE T FO_FN(adam_front)(T g, T p, FO_S *restrict m, FO_S *restrict v, size_t i, FO_FN(common) c,
                              T one_minus_beta1, T beta2, T one_minus_beta2, T *g_out, T *m_out, T *v_out)
{
    T gi = FO_FN(grad_in)(g, p, c), mi = LD_S(m, i), vi = LD_S(v, i);
    FO_FN(adam_moments)(gi, &mi, &vi, one_minus_beta1, beta2, one_minus_beta2);
    ST_S(m, i, mi);
    ST_S(v, i, vi);
    *g_out = gi, *m_out = mi, *v_out = vi;
    return p * c.decay;
}
