/* SGD with momentum, dampening, Nesterov and coupled weight decay: torch.optim.SGD rules
 * (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html).  has_momentum (whether the
 * buffer exists) is a compile-time constant at every call site; the other flags are selects. */
FO_INLINE void FO_FN(sgd_loop)(size_t n, T *restrict p, const T *restrict g, T *restrict buf,
                               const fo_sgd_consts *k, const int has_momentum, const int prox)
{
    const T lr = (T)k->c.lr, prox_t = (T)k->c.prox_threshold;
    const T momentum = (T)k->momentum, damp = (T)k->one_minus_dampening;
    const int nesterov = k->nesterov, first_step = k->first_step;
    for (size_t i = 0; i < n; i++) {
        T gi = FO_FN(grad_in)(g[i], p[i], &k->c);
        if (has_momentum) {
            /* torch starts the buffer at the gradient itself, without dampening */
            T bi = first_step ? gi : momentum * buf[i] + damp * gi;
            buf[i] = bi;
            gi = nesterov ? gi + momentum * bi : bi;
        }
        p[i] = FO_FN(l1_prox)(p[i] - lr * gi, prox_t, prox);
    }
}
