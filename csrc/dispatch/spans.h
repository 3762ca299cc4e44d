/* The optimizer span functions of one storage combination: T (the math), FO_P (params and grads),
 * FO_S (state), FO_MASTER (a float32 master copy of the params), FO_SR (stochastic rounding of
 * bfloat16 params).  Each offsets its tensor's buffers to the span and runs the kernel loop, with
 * the flags that decide which buffers exist as compile-time constants.  Included by kernels.c once
 * per combination, FO_FN naming the functions for it. */
#include "kernels/common.h"
#include "kernels/sgd.h"
#include "kernels/adam.h"
#include "kernels/rmsprop.h"
#include "kernels/adagrad.h"
#include "kernels/nadam.h"
#include "kernels/radam.h"
#include "kernels/lion.h"
#include "kernels/lamb.h"

#define AT_P(role) ((FO_P *)call->buf[role][t] + begin)
#define AT_S(role) ((FO_S *)call->buf[role][t] + begin)
/* The span's master copy and stochastic-rounding counter. */
#define AUX const fo_aux aux_ = {call->buf[FO_MASTER_ROLE] ? (float *)call->buf[FO_MASTER_ROLE][t] + begin : NULL, \
                                 begin, (uint32_t)t, call->sr_step, call->sr_key0, call->sr_key1}, *aux = &aux_
/* Runs `loop` with `prox` a compile-time 0 or 1: the fused soft threshold is compiled in only where
 * l1_prox asks for it (it costs ~3% of AdamW at the memory roofline). */
#define WITH_PROX(k, loop) do { if ((k)->c.prox_threshold != 0) { const int prox = 1; loop; } else { const int prox = 0; loop; } } while (0)
#define SPAN(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end)
#define BLOCK(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end, double *out)

SPAN(sgd_span)
{
    const fo_sgd_consts *k = call->consts;
    AUX;
    if (k->has_momentum) WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, 1, prox));
    else WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT_P(0), AT_P(1), NULL, k, aux, 0, prox));
}

SPAN(adam_span)
{
    const fo_adam_consts *k = call->consts;
    AUX;
    if (k->amsgrad) WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), AT_S(4), k, aux, 1, prox));
    else WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), NULL, k, aux, 0, prox));
}

SPAN(rmsprop_span)
{
    const fo_rmsprop_consts *k = call->consts;
    AUX;
    size_t n = end - begin;
    FO_P *p = AT_P(0), *g = AT_P(1);
    FO_S *sq = AT_S(2);
    if (k->centered && k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT_S(3), AT_S(4), k, aux, 1, 1, prox));
    else if (k->centered) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT_S(3), NULL, k, aux, 1, 0, prox));
    else if (k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, AT_S(4), k, aux, 0, 1, prox));
    else WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, NULL, k, aux, 0, 0, prox));
}

SPAN(adagrad_span)
{
    const fo_adagrad_consts *k = call->consts;
    AUX;
    WITH_PROX(k, FO_FN(adagrad_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, prox));
}

SPAN(nadam_span)
{
    const fo_nadam_consts *k = call->consts;
    AUX;
    WITH_PROX(k, FO_FN(nadam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), k, aux, prox));
}

SPAN(radam_span)
{
    const fo_radam_consts *k = call->consts;
    AUX;
    WITH_PROX(k, FO_FN(radam_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), k, aux, prox));
}

SPAN(lion_span)
{
    const fo_lion_consts *k = call->consts;
    AUX;
    WITH_PROX(k, FO_FN(lion_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), k, aux, prox));
}

BLOCK(lamb_moments_block)
{
    AUX;
    FO_FN(lamb_moments_loop)(end - begin, AT_P(0), AT_P(1), AT_S(2), AT_S(3), call->consts, aux, out);
}

SPAN(lamb_apply_span)
{
    const fo_lamb_consts *k = call->consts;
    AUX;
    WITH_PROX(k, FO_FN(lamb_apply_loop)(end - begin, AT_P(0), AT_S(2), AT_S(3), k, aux, (T)k->neg_lr_ratio[t], prox));
}

#undef AT_P
#undef AT_S
#undef AUX
#undef WITH_PROX
#undef SPAN
#undef BLOCK
