/* SGD with momentum, dampening, Nesterov and coupled weight decay: torch.optim.SGD rules
 * (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html).
 * Included once per element type T by dispatch/kernels.c; the flags are compile-time constants
 * at every call site, so each combination is its own straight, vectorized loop. */
FO_INLINE void FO_FN(sgd_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict buf,
                               const fo_sgd_consts *k, const int has_momentum, const int nesterov,
                               const int first_step, const int has_weight_decay)
{
    const T lr = (T)k->lr, momentum = (T)k->momentum, damp = (T)k->one_minus_dampening;
    const T wd = (T)k->weight_decay, sign = (T)k->grad_sign;
    for (size_t i = 0; i < n; i++) {
        T gi = sign * g[i];                           /* maximize: follow -grad */
        if (has_weight_decay) gi = gi + wd * p[i];    /* L2 penalty joins the gradient */
        if (has_momentum) {
            /* torch starts the buffer at the gradient itself, without dampening */
            T bi = first_step ? gi : momentum * buf[i] + damp * gi;
            buf[i] = bi;
            gi = nesterov ? gi + momentum * bi : bi;
        }
        p[i] = p[i] - lr * gi;
    }
}
