/* Every kernel of fastopt, instantiated for each storage combination: optimizers for the params,
 * state, master-copy and rounding combinations of FO_C*, gradient kernels for each element type.
 * CMake compiles this one file once per SIMD level (FO_ISA = baseline, avx2, avx512, neon) with
 * that level's compiler flags and without floating-point contraction, so every level computes the
 * same bits; the result is one table of span functions per level, named fo_table_<level>. */
#include <math.h>

#include "fastopt_internal.h"
#include "kernels/storage.h"

#ifndef FO_ISA
#error "compile with -DFO_ISA=<level>"
#endif
#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)
/* adam_span + f32 -> adam_span_f32_avx2: one name per function, type and level (for profiles) */
#define FO_NAME(name, type) FO_CAT(FO_CAT(name, type), FO_CAT(_, FO_ISA))

#define FO_SAME(x) (x)

#define T float
#define FO_SQRT sqrtf
#define FO_FABS fabsf
#define FO_COPYSIGN copysignf

/* float32 params, float32 state */
#define FO_FN(name) FO_NAME(name, _f32)
#define FO_P float
#define FO_LOAD_P FO_SAME
#define FO_STORE_P FO_SAME
#define FO_S float
#define FO_S_F32 1
#define FO_LOAD_S FO_SAME
#define FO_STORE_S FO_SAME
#define FO_MASTER 0
#define FO_SR 0
#include "dispatch/spans.h"
#include "dispatch/grad_spans.h"
#undef FO_FN
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S

/* float32 params, bfloat16 state */
#define FO_FN(name) FO_NAME(name, _f32_sb16)
#define FO_S uint16_t
#define FO_S_F32 0
#define FO_LOAD_S fo_bf16_to_f32
#define FO_STORE_S fo_f32_to_bf16
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_P
#undef FO_LOAD_P
#undef FO_STORE_P
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S

/* 16-bit params: float16 and bfloat16, each with float32 or bfloat16 state, with or without a
 * master copy; bfloat16 without one also with stochastic rounding */
#define FO_P uint16_t

#define FO_LOAD_P fo_f16_to_f32
#define FO_STORE_P fo_f32_to_f16
#define FO_FN(name) FO_NAME(name, _f16)
#define FO_S uint16_t
#define FO_S_F32 0
#define FO_LOAD_S fo_f16_to_f32
#define FO_STORE_S fo_f32_to_f16
#include "dispatch/spans.h"
#include "dispatch/grad_spans.h"
#undef FO_FN
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S
#define FO_S float
#define FO_S_F32 1
#define FO_LOAD_S FO_SAME
#define FO_STORE_S FO_SAME
#define FO_FN(name) FO_NAME(name, _f16_sf32)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_MASTER
#define FO_MASTER 1
#define FO_FN(name) FO_NAME(name, _f16_sf32_m)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S
#define FO_S uint16_t
#define FO_S_F32 0
#define FO_LOAD_S fo_bf16_to_f32
#define FO_STORE_S fo_f32_to_bf16
#define FO_FN(name) FO_NAME(name, _f16_sb16_m)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_MASTER
#define FO_MASTER 0
#define FO_FN(name) FO_NAME(name, _f16_sb16)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_LOAD_P
#undef FO_STORE_P

#define FO_LOAD_P fo_bf16_to_f32
#define FO_STORE_P fo_f32_to_bf16
#define FO_FN(name) FO_NAME(name, _b16)
#include "dispatch/spans.h"
#include "dispatch/grad_spans.h"
#undef FO_FN
#define FO_FN(name) FO_NAME(name, _b16_sb16_m)
#undef FO_MASTER
#define FO_MASTER 1
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_MASTER
#define FO_MASTER 0
#undef FO_SR
#define FO_SR 1
#define FO_FN(name) FO_NAME(name, _b16_sb16_sr)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S
#define FO_S float
#define FO_S_F32 1
#define FO_LOAD_S FO_SAME
#define FO_STORE_S FO_SAME
#define FO_FN(name) FO_NAME(name, _b16_sf32_sr)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_SR
#define FO_SR 0
#define FO_FN(name) FO_NAME(name, _b16_sf32)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_MASTER
#define FO_MASTER 1
#define FO_FN(name) FO_NAME(name, _b16_sf32_m)
#include "dispatch/spans.h"
#undef FO_FN
#undef FO_MASTER
#undef FO_SR
#undef FO_P
#undef FO_LOAD_P
#undef FO_STORE_P
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S
#undef T
#undef FO_SQRT
#undef FO_FABS
#undef FO_COPYSIGN

/* float64 throughout */
#define T double
#define FO_SQRT sqrt
#define FO_FABS fabs
#define FO_COPYSIGN copysign
#define FO_FN(name) FO_NAME(name, _f64)
#define FO_P double
#define FO_LOAD_P FO_SAME
#define FO_STORE_P FO_SAME
#define FO_S double
#define FO_S_F32 0
#define FO_LOAD_S FO_SAME
#define FO_STORE_S FO_SAME
#define FO_MASTER 0
#define FO_SR 0
#include "dispatch/spans.h"
#include "dispatch/grad_spans.h"

/* in FO_C* order */
#define COMBOS(name) {FO_NAME(name, _f32), FO_NAME(name, _f64), FO_NAME(name, _f16), FO_NAME(name, _b16), \
    FO_NAME(name, _f32_sb16), FO_NAME(name, _f16_sf32), FO_NAME(name, _f16_sb16), FO_NAME(name, _b16_sf32), \
    FO_NAME(name, _f16_sf32_m), FO_NAME(name, _f16_sb16_m), FO_NAME(name, _b16_sf32_m), FO_NAME(name, _b16_sb16_m), \
    FO_NAME(name, _b16_sf32_sr), FO_NAME(name, _b16_sb16_sr)}
/* the float32-state combinations, in FO_C* order (NULL elsewhere) */
#define F32_STATE(name) {FO_NAME(name, _f32), NULL, NULL, NULL, NULL, FO_NAME(name, _f16_sf32), NULL, FO_NAME(name, _b16_sf32), \
    FO_NAME(name, _f16_sf32_m), NULL, FO_NAME(name, _b16_sf32_m), NULL, FO_NAME(name, _b16_sf32_sr), NULL}
/* in FO_F32 .. FO_B16 order */
#define TYPES(name) {FO_NAME(name, _f32), FO_NAME(name, _f64), FO_NAME(name, _f16), FO_NAME(name, _b16)}

const fo_kernel_table FO_CAT(fo_table_, FO_ISA) = {
    .isa = FO_STR(FO_ISA),
    .sgd = COMBOS(sgd_span),
    .adam = COMBOS(adam_span),
    .rmsprop = COMBOS(rmsprop_span),
    .adagrad = COMBOS(adagrad_span),
    .nadam = COMBOS(nadam_span),
    .radam = COMBOS(radam_span),
    .lion = COMBOS(lion_span),
    .lamb_apply = COMBOS(lamb_apply_span),
    .lamb_moments = COMBOS(lamb_moments_block),
    .sgd_q8 = F32_STATE(sgd_q8_block),
    .adam_q8 = F32_STATE(adam_q8_block),
    .lion_q8 = F32_STATE(lion_q8_block),
    .elastic_net = TYPES(elastic_net_span),
    .scale = TYPES(scale_span),
    .stream = TYPES(stream_span),
    .unscale = TYPES(unscale_block),
    .norm = TYPES(norm_block),
};
