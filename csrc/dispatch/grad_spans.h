/* The gradient and probe span functions of one params/grads storage type FO_P (math in T): role
 * 0 is grads (written), role 1 params (read); the probe reads role 0 and updates roles 1 .. n.
 * Included after dispatch/spans.h with the same FO_FN (it has kernels/common.h). */
#include "kernels/gradients.h"
#include "kernels/stream.h"
#include "kernels/training.h"

#define AT(role) ((FO_P *)call->buf[role][t] + begin)
static const size_t FO_FN(grads_role_size)[FO_MAX_ROLES] = {sizeof(FO_P), sizeof(FO_P), sizeof(FO_P),
                                                             sizeof(FO_P), sizeof(FO_P), sizeof(FO_P)};
#define SPAN(name) CHUNKED_SPAN(name, FO_FN(grads_role_size))
#define BLOCK(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end, double *out)

SPAN(elastic_net_span) { FO_FN(elastic_net_loop)(end - begin, AT(0), AT(1), call->consts); }
SPAN(scale_span) { FO_FN(scale_loop)(end - begin, AT(0), (T)((const fo_scale_consts *)call->consts)->factor); }
BLOCK(unscale_block) { out[0] = FO_FN(unscale_loop)(end - begin, AT(0), (T)((const fo_scale_consts *)call->consts)->factor); }
BLOCK(norm_block) { FO_FN(norm_block_loop)(end - begin, AT(0), call->consts, out); }

/* roles: 0 y (written), 1 x, 2 the mask (uint8), if any */
static void FO_FN(dropout_span)(const fo_call *call, size_t t, size_t begin, size_t end)
{
    const fo_dropout_consts *k = call->consts;
    uint32_t words[FO_DROPOUT_WORDS];
    uint8_t *mask = call->buf[2] ? (uint8_t *)call->buf[2][t] : NULL;
    for (size_t at = begin; at < end; at += FO_RANDOM_CHUNK) {
        size_t n = end - at < FO_RANDOM_CHUNK ? end - at : FO_RANDOM_CHUNK;
        const FO_P *x = (const FO_P *)call->buf[1][t] + at;
        FO_P *y = (FO_P *)call->buf[0][t] + at;
        fo_dropout_fill(words, at, n, k->counter, k->seed);
        if (mask)
            FO_FN(dropout_loop)(n, x, y, mask + at, words + (at & 3), k, 1);
        else
            FO_FN(dropout_loop)(n, x, y, NULL, words + (at & 3), k, 0);
    }
}

/* roles: 0 grad (written), 1 pred, 2 target */
BLOCK(mse_block) { FO_FN(mse_loop)(end - begin, AT(1), AT(2), AT(0), (T)((const fo_scale_consts *)call->consts)->factor, out); }

/* rows [begin, end); roles: 0 grad (written), 1 logits (rows of k->classes), 2 labels (int64),
 * 3 each row's loss (double, written) */
static void FO_FN(xent_rows)(const fo_call *call, size_t t, size_t begin, size_t end)
{
    const fo_xent_consts *k = call->consts;
    const size_t c = k->classes;
    const int64_t *labels = call->buf[2][t];
    double *loss = call->buf[3][t];
    for (size_t r = begin; r < end; r++)
        loss[r] = FO_FN(xent_row)(c, (const FO_P *)call->buf[1][t] + r * c, (FO_P *)call->buf[0][t] + r * c, labels[r], k);
}

SPAN(stream_span)
{
    const fo_stream_consts *k = call->consts;
    size_t n = end - begin;
    FO_P *x[5] = {NULL};
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
#undef SPAN
#undef BLOCK
