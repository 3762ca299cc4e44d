/* The span functions of one element type T: offset each buffer of tensor t to the span, then run
 * the kernel loop with its flags as compile-time constants (one specialized loop per combination).
 * Included by kernels.c once per T, with FO_FN naming the functions for T. */
#include "kernels/sgd.h"
#include "kernels/adam.h"
#include "kernels/stream.h"

#define AT(role) ((T *)call->buf[role][t] + begin)

static void FO_FN(sgd_span)(const fo_call *call, size_t t, size_t begin, size_t end)
{
    const fo_sgd_consts *k = call->consts;
    size_t n = end - begin;
    T *p = AT(0), *b = k->has_momentum ? AT(2) : NULL;
    const T *g = AT(1);
    if (!k->has_momentum) {
        if (k->has_weight_decay) FO_FN(sgd_loop)(n, p, g, b, k, 0, 0, 0, 1);
        else FO_FN(sgd_loop)(n, p, g, b, k, 0, 0, 0, 0);
        return;
    }
    switch (k->nesterov * 4 + k->first_step * 2 + k->has_weight_decay) {
    case 0: FO_FN(sgd_loop)(n, p, g, b, k, 1, 0, 0, 0); break;
    case 1: FO_FN(sgd_loop)(n, p, g, b, k, 1, 0, 0, 1); break;
    case 2: FO_FN(sgd_loop)(n, p, g, b, k, 1, 0, 1, 0); break;
    case 3: FO_FN(sgd_loop)(n, p, g, b, k, 1, 0, 1, 1); break;
    case 4: FO_FN(sgd_loop)(n, p, g, b, k, 1, 1, 0, 0); break;
    case 5: FO_FN(sgd_loop)(n, p, g, b, k, 1, 1, 0, 1); break;
    case 6: FO_FN(sgd_loop)(n, p, g, b, k, 1, 1, 1, 0); break;
    default: FO_FN(sgd_loop)(n, p, g, b, k, 1, 1, 1, 1); break;
    }
}

static void FO_FN(adam_span)(const fo_call *call, size_t t, size_t begin, size_t end)
{
    const fo_adam_consts *k = call->consts;
    size_t n = end - begin;
    T *p = AT(0), *m = AT(2), *v = AT(3), *vmax = k->amsgrad ? AT(4) : NULL;
    const T *g = AT(1);
    switch (k->amsgrad * 3 + k->wd_mode) {
    case 0: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 0, FO_WD_NONE); break;
    case 1: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 0, FO_WD_COUPLED); break;
    case 2: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 0, FO_WD_DECOUPLED); break;
    case 3: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 1, FO_WD_NONE); break;
    case 4: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 1, FO_WD_COUPLED); break;
    default: FO_FN(adam_loop)(n, p, g, m, v, vmax, k, 1, FO_WD_DECOUPLED); break;
    }
}

/* Roles 0 .. n_in-1 are read, the rest read and written (a single tensor, t == 0). */
static void FO_FN(stream_span)(const fo_call *call, size_t t, size_t begin, size_t end)
{
    const fo_stream_consts *k = call->consts;
    const T *in[FO_MAX_ROLES];
    T *inout[FO_MAX_ROLES];
    for (size_t j = 0; j < k->n_in; j++) in[j] = AT(j);
    for (size_t j = 0; j < k->n_inout; j++) inout[j] = AT(k->n_in + j);
    FO_FN(stream_loop)(end - begin, k->n_in, in, k->n_inout, inout);
}

#undef AT
