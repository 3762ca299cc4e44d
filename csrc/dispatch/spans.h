/* The optimizer span functions of one storage combination: T (the math), FO_P (params and grads),
 * FO_S (state), FO_MASTER (a float32 master copy of the params), FO_SR (stochastic rounding of
 * bfloat16 params).  A span offsets its tensor's buffers to [begin, end) and runs the kernel loop,
 * with the flags that decide which buffers exist as compile-time constants; each optimizer's loop
 * and span live in its kernels/<name>.h, read here with the macros below.  Included by kernels.c
 * once per combination, FO_FN naming the functions for it. */
#include "kernels/common.h"
#include "kernels/quant8.h"

#define AT_P(role) ((FO_P *)call->buf[role][t] + begin)
#define AT_S(role) ((FO_S *)call->buf[role][t] + begin)
/* The master copy and random bits of the n elements from `at` of tensor t (with stochastic rounding
 * a span has at most FO_SR_CHUNK elements: fo_call.span_limit). */
#if FO_SR
#define RANDOM_BITS(at, n) uint16_t random_[FO_SR_CHUNK]; \
    fo_sr_fill(random_, (at), (n), (uint32_t)t, call->sr_step, call->sr_key0, call->sr_key1)
#else
#define RANDOM_BITS(at, n) const uint16_t *const random_ = NULL
#endif
#define MASTER_AT(at) (call->buf[FO_MASTER_ROLE] ? (float *)call->buf[FO_MASTER_ROLE][t] + (at) : NULL)
#define AUX_AT(at, n) RANDOM_BITS(at, n); const fo_aux aux_ = {MASTER_AT(at), random_}, *aux = &aux_
#define AUX AUX_AT(begin, end - begin)
/* Runs `loop` with `prox` a compile-time 0 or 1: the fused soft threshold is compiled in only where
 * l1_prox asks for it (elsewhere it would cost every update a compare and a select an element). */
#define WITH_PROX(k, loop) do { if ((k)->c.prox_threshold != 0) { const int prox = 1; loop; } else { const int prox = 0; loop; } } while (0)
/* Spans of large tensors run in chunks of FO_CHUNK elements, and before each chunk they ask for
 * the cache lines FO_AHEAD elements on, in every buffer the call has.  Why: an update with a square
 * root and a divide fills the core's out-of-order window before enough of its loads are in flight,
 * and the hardware prefetcher alone does not run far enough ahead; asked for ahead, the lines are
 * there in time.  The chunk is small so that a chunk's prefetches do not stall the core in one
 * burst.  Tensors under FO_STREAMED elements run in one chunk: they are likely in cache, where
 * chunks only cost.  So do 16-bit params alone: their updates are bound by the conversions, not by
 * memory (with stochastic rounding, whose random bits come a span at a time, chunks cost most).
 * With a float32 master copy and float32 state they stream again: the update reads and writes
 * 4-byte master and state besides; with 16-bit state it converts too much to gain.
 * (docs/benchmarks.md: the figures behind each choice.)
 * The body is inlined once, into the chunk loop. */
#define FO_CHUNK ((size_t)64)
#define FO_AHEAD ((size_t)512)
#define FO_STREAMED ((size_t)1 << 17)
#define CHUNKED_SPAN(name, role_size)                                                                 \
    FO_INLINE void FO_FN(name##_chunk)(const fo_call *call, size_t t, size_t begin, size_t end);     \
    static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end)                 \
    {                                                                                                 \
        int memory_bound = sizeof(FO_P) >= 4 || (FO_MASTER && sizeof(FO_S) >= 4);                   \
        int streamed = call->numel[t] >= FO_STREAMED && memory_bound;                                 \
        size_t chunk = streamed ? FO_CHUNK : end - begin;                                             \
        for (size_t at = begin; at < end; at += chunk) {                                              \
            size_t stop = end - at < chunk ? end : at + chunk;                                        \
            if (streamed) FO_FN(prefetch)(call, t, at + FO_AHEAD, stop + FO_AHEAD, role_size);        \
            FO_FN(name##_chunk)(call, t, at, stop);                                                   \
        }                                                                                             \
    }                                                                                                 \
    FO_INLINE void FO_FN(name##_chunk)(const fo_call *call, size_t t, size_t begin, size_t end)

/* Asks for elements [at, end) of tensor t (cut to its length) in each buffer of the call; role r's
 * elements take role_size[r] bytes. */
FO_INLINE void FO_FN(prefetch)(const fo_call *call, size_t t, size_t at, size_t end, const size_t *role_size)
{
    end = end < call->numel[t] ? end : call->numel[t];
    if (at >= end) return;
    for (int r = 0; r < FO_MAX_ROLES; r++) {
        if (!call->buf[r]) continue;
        const char *base = (const char *)call->buf[r][t];
        for (size_t b = at * role_size[r]; b < end * role_size[r]; b += 64) __builtin_prefetch(base + b);
    }
}

/* An optimizer's roles: params and grads, then up to three of state, then the master copy. */
static const size_t FO_FN(optimizer_role_size)[FO_MAX_ROLES] = {sizeof(FO_P), sizeof(FO_P), sizeof(FO_S),
                                                                 sizeof(FO_S), sizeof(FO_S), sizeof(float)};
#define SPAN(name) CHUNKED_SPAN(name, FO_FN(optimizer_role_size))
#define BLOCK(name) static void FO_FN(name)(const fo_call *call, size_t t, size_t begin, size_t end, double *out)

/* Each optimizer's loop and its span (or block) functions. */
#include "kernels/sgd.h"
#include "kernels/adam.h"
#include "kernels/rmsprop.h"
#include "kernels/adagrad.h"
#include "kernels/nadam.h"
#include "kernels/radam.h"
#include "kernels/adamax.h"
#include "kernels/lion.h"
#include "kernels/lamb.h"

#if FO_S_F32
/* 8-bit state (float32-state combinations only): per quantization block, the state dequantized
 * into float32 tiles on the stack, the optimizer's own loop run on them, and the tiles quantized
 * back with the block's new scale.  Blocks of FO_BLOCK elements hold whole quantization blocks. */
#define FO_Q8_MAX_BLOCK 2048

/* GCC with 512-bit vectors looks the values up with zmm gathers; with 256-bit ones (x86 only)
 * it loads them one by one, which is faster on the x86 cores measured (docs/mixed-precision.md). */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define FO_Q8_LOOKUP __attribute__((noinline, target("prefer-vector-width=256")))
#else
#define FO_Q8_LOOKUP __attribute__((noinline))
#endif

/* tile = absmax * value(codes): state j's block, dequantized */
static FO_Q8_LOOKUP void FO_FN(q8_load)(const fo_call *call, int j, size_t t, size_t at, size_t n, float *restrict tile)
{
    const uint8_t *restrict codes = (const uint8_t *)call->buf[2 + j][t] + at;
    const float *restrict value = call->q8->value[j];
    const float scale = ((const float *)call->q8->absmax[j][t])[at / call->q8->block];
    for (size_t i = 0; i < n; i++) tile[i] = scale * value[codes[i]];
}

/* New scale: the largest |value| (NaN wins); codes: each value / scale to its code. */
static __attribute__((noinline)) void FO_FN(q8_store)(const fo_call *call, int j, size_t t, size_t at, size_t n, const float *restrict tile)
{
    uint8_t *restrict codes = (uint8_t *)call->buf[2 + j][t] + at;
    uint32_t top = 0; /* the largest |value| by its bits: monotonic, and NaN's are above inf's */
    for (size_t i = 0; i < n; i++) {
        uint32_t a = fo_bits_of_f32(tile[i]) & 0x7FFFFFFFu;
        top = a > top ? a : top;
    }
    const float big = fo_f32_of_bits(top), inv = big > 0 ? 1.0f / big : 0.0f;
    ((float *)call->q8->absmax[j][t])[at / call->q8->block] = big;
    if (call->q8->is_signed[j])
        for (size_t i = 0; i < n; i++) codes[i] = fo_q8_code_of(tile[i] * inv, 1);
    else
        for (size_t i = 0; i < n; i++) codes[i] = fo_q8_code_of(tile[i] * inv, 0);
}

#define AT_P_Q8(role) ((FO_P *)call->buf[role][t] + at)
/* for each quantization block of the span: load n_states tiles, run `loop`, store them back */
#define Q8_BLOCKS(n_states, loop)                                                                    \
    do {                                                                                             \
        float s0[FO_Q8_MAX_BLOCK], s1[FO_Q8_MAX_BLOCK];                                              \
        float *tiles[2] = {s0, s1};                                                                  \
        (void)out;                                                                                   \
        for (size_t at = begin; at < end; at += call->q8->block) {                                  \
            size_t n = end - at < call->q8->block ? end - at : call->q8->block;                     \
            for (int j = 0; j < (n_states); j++) FO_FN(q8_load)(call, j, t, at, n, tiles[j]);       \
            AUX_AT(at, n);                                                                           \
            loop;                                                                                    \
            for (int j = 0; j < (n_states); j++) FO_FN(q8_store)(call, j, t, at, n, tiles[j]);      \
        }                                                                                            \
    } while (0)

BLOCK(sgd_q8_block)
{
    const fo_sgd_consts *k = fo_consts_of(call, t);
    Q8_BLOCKS(1, WITH_PROX(k, FO_FN(sgd_loop)(n, AT_P_Q8(0), AT_P_Q8(1), s0, k, aux, 1, prox)));
}

BLOCK(adam_q8_block)
{
    const fo_adam_consts *k = fo_consts_of(call, t);
    Q8_BLOCKS(2, WITH_PROX(k, FO_FN(adam_loop)(n, AT_P_Q8(0), AT_P_Q8(1), s0, s1, NULL, k, aux, 0, prox)));
}

BLOCK(lion_q8_block)
{
    const fo_lion_consts *k = fo_consts_of(call, t);
    Q8_BLOCKS(1, WITH_PROX(k, FO_FN(lion_loop)(n, AT_P_Q8(0), AT_P_Q8(1), s0, k, aux, prox)));
}

#undef AT_P_Q8
#undef Q8_BLOCKS
#undef FO_Q8_LOOKUP
#endif

#undef AT_P
#undef AT_S
#undef RANDOM_BITS
#undef MASTER_AT
#undef AUX_AT
#undef AUX
#undef WITH_PROX
#undef SPAN
#undef BLOCK
/* (FO_CHUNK, FO_AHEAD, FO_STREAMED and CHUNKED_SPAN are the gradient spans' too: instance.h undefines them) */
