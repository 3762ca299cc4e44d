/* The span and block functions of one element type T: offset each buffer of tensor t to the span,
 * then run the kernel loop, its memory-touching flags (which buffers exist) as compile-time
 * constants.  Included by kernels.c once per T, with FO_FN naming the functions for T. */
#include "kernels/common.h"
#include "kernels/sgd.h"
#include "kernels/adam.h"
#include "kernels/rmsprop.h"
#include "kernels/adagrad.h"
#include "kernels/nadam.h"
#include "kernels/radam.h"
#include "kernels/lion.h"
#include "kernels/lamb.h"
#include "kernels/gradients.h"
#include "kernels/stream.h"

#define AT(role) ((T *)call->buf[role][t] + begin)
/* Runs `loop` with `prox` a compile-time 0 or 1: the fused soft threshold is compiled in only where
 * l1_prox asks for it (it costs ~3% of AdamW at the memory roofline). */
#define WITH_PROX(k, loop) do { if ((k)->c.prox_threshold != 0) { const int prox = 1; loop; } else { const int prox = 0; loop; } } while (0)
#define SPAN(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end)
#define BLOCK(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end, double *out)

SPAN(sgd_span)
{
    const fo_sgd_consts *k = call->consts;
    if (k->has_momentum) WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT(0), AT(1), AT(2), k, 1, prox));
    else WITH_PROX(k, FO_FN(sgd_loop)(end - begin, AT(0), AT(1), NULL, k, 0, prox));
}

SPAN(adam_span)
{
    const fo_adam_consts *k = call->consts;
    if (k->amsgrad) WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT(0), AT(1), AT(2), AT(3), AT(4), k, 1, prox));
    else WITH_PROX(k, FO_FN(adam_loop)(end - begin, AT(0), AT(1), AT(2), AT(3), NULL, k, 0, prox));
}

SPAN(rmsprop_span)
{
    const fo_rmsprop_consts *k = call->consts;
    size_t n = end - begin;
    T *p = AT(0), *g = AT(1), *sq = AT(2);
    if (k->centered && k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT(3), AT(4), k, 1, 1, prox));
    else if (k->centered) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, AT(3), NULL, k, 1, 0, prox));
    else if (k->has_momentum) WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, AT(4), k, 0, 1, prox));
    else WITH_PROX(k, FO_FN(rmsprop_loop)(n, p, g, sq, NULL, NULL, k, 0, 0, prox));
}

SPAN(adagrad_span)
{
    const fo_adagrad_consts *k = call->consts;
    WITH_PROX(k, FO_FN(adagrad_loop)(end - begin, AT(0), AT(1), AT(2), k, prox));
}

SPAN(nadam_span)
{
    const fo_nadam_consts *k = call->consts;
    WITH_PROX(k, FO_FN(nadam_loop)(end - begin, AT(0), AT(1), AT(2), AT(3), k, prox));
}

SPAN(radam_span)
{
    const fo_radam_consts *k = call->consts;
    WITH_PROX(k, FO_FN(radam_loop)(end - begin, AT(0), AT(1), AT(2), AT(3), k, prox));
}

SPAN(lion_span)
{
    const fo_lion_consts *k = call->consts;
    WITH_PROX(k, FO_FN(lion_loop)(end - begin, AT(0), AT(1), AT(2), k, prox));
}

BLOCK(lamb_moments_block) { FO_FN(lamb_moments_loop)(end - begin, AT(0), AT(1), AT(2), AT(3), call->consts, out); }
SPAN(lamb_apply_span)
{
    const fo_lamb_consts *k = call->consts;
    WITH_PROX(k, FO_FN(lamb_apply_loop)(end - begin, AT(0), AT(2), AT(3), k, (T)k->neg_lr_ratio[t], prox));
}

/* Gradient kernels: role 0 is grads (written), role 1 params (read). */
SPAN(elastic_net_span) { FO_FN(elastic_net_loop)(end - begin, AT(0), AT(1), call->consts); }
SPAN(scale_span) { FO_FN(scale_loop)(end - begin, AT(0), (T)((const fo_scale_consts *)call->consts)->factor); }
BLOCK(unscale_block) { out[0] = FO_FN(unscale_loop)(end - begin, AT(0), (T)((const fo_scale_consts *)call->consts)->factor); }
BLOCK(norm_block) { FO_FN(norm_block_loop)(end - begin, AT(0), call->consts, out); }

/* Role 0 is read, roles 1 .. n_inout read and written (a single tensor, t == 0). */
SPAN(stream_span)
{
    const fo_stream_consts *k = call->consts;
    size_t n = end - begin;
    T *x[5] = {NULL};
    for (size_t j = 0; j < k->n_inout; j++) x[j] = AT(1 + j);
    switch (k->n_inout) {
    case 1: FO_FN(stream_loop)(n, AT(0), x[0], x[1], x[2], x[3], x[4], 1); break;
    case 2: FO_FN(stream_loop)(n, AT(0), x[0], x[1], x[2], x[3], x[4], 2); break;
    case 3: FO_FN(stream_loop)(n, AT(0), x[0], x[1], x[2], x[3], x[4], 3); break;
    case 4: FO_FN(stream_loop)(n, AT(0), x[0], x[1], x[2], x[3], x[4], 4); break;
    default: FO_FN(stream_loop)(n, AT(0), x[0], x[1], x[2], x[3], x[4], 5); break;
    }
}

#undef AT
#undef WITH_PROX
#undef SPAN
#undef BLOCK
