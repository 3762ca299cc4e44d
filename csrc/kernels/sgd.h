/* SGD with momentum, dampening, Nesterov and coupled weight decay: torch.optim.SGD rules
 * (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html).  has_momentum (whether the
 * buffer exists) is a compile-time constant at every call site; the other flags are selects. */
FO_INLINE void FO_FN(sgd_loop)(size_t n, FO_P *restrict p, const FO_P *restrict g, FO_S *restrict buf,
                               const fo_sgd_consts *k, const fo_aux *aux, const int has_momentum, const int prox)
{
    FO_AUX_LOCALS(aux);
    FO_COMMON_LOCALS(k);
    const T lr = (T)k->c.lr, prox_t = (T)k->c.prox_threshold;
    const T momentum = (T)k->momentum, damp = (T)k->one_minus_dampening;
    const int nesterov = k->nesterov, first_step = k->first_step;
    for (size_t i = 0; i < n; i++) {
        T pi = LD_P(p, i), gi = FO_FN(grad_in)(LD_G(g, i), pi, cc);
        if (has_momentum) {
            /* torch starts the buffer at the gradient itself, without dampening */
            T bi = first_step ? gi : momentum * LD_S(buf, i) + damp * gi;
            ST_S(buf, i, bi);
            gi = nesterov ? gi + momentum * bi : bi;
        }
        ST_P(p, i, FO_FN(l1_prox)(pi - lr * gi, prox_t, prox));
    }
}

/* a span of tensor t: its buffers, and the flags that say which exist as constants */
SPAN(sgd_span)
{
    const fo_sgd_consts *k = fo_consts_of(call, t);
    AUX;
    if (k->has_momentum) WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, 1, prox));
    else WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT_P(0), AT_P(1), NULL, k, aux, 0, prox));
}
