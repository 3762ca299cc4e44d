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

/* Storage kinds: the stored C type, its widening load and narrowing store (storage.h), whether it
 * is float32, and the type the math runs in with its functions (float for every kind but F64). */
#define FO_SAME(x) (x)
#define FO_TYPE_F32 float
#define FO_TYPE_F64 double
#define FO_TYPE_F16 uint16_t
#define FO_TYPE_BF16 uint16_t
#define FO_LOAD_F32 FO_SAME
#define FO_LOAD_F64 FO_SAME
#define FO_LOAD_F16 fo_f16_to_f32
#define FO_LOAD_BF16 fo_bf16_to_f32
#define FO_STORE_F32 FO_SAME
#define FO_STORE_F64 FO_SAME
#define FO_STORE_F16 fo_f32_to_f16
#define FO_STORE_BF16 fo_f32_to_bf16
#define FO_IS_F32_F32 1
#define FO_IS_F32_F64 0
#define FO_IS_F32_F16 0
#define FO_IS_F32_BF16 0
#define FO_MATH_F32 float
#define FO_MATH_F64 double
#define FO_MATH_F16 float
#define FO_MATH_BF16 float
#define FO_SQRT_F32 sqrtf
#define FO_SQRT_F64 sqrt
#define FO_SQRT_F16 sqrtf
#define FO_SQRT_BF16 sqrtf
#define FO_FABS_F32 fabsf
#define FO_FABS_F64 fabs
#define FO_FABS_F16 fabsf
#define FO_FABS_BF16 fabsf
#define FO_COPYSIGN_F32 copysignf
#define FO_COPYSIGN_F64 copysign
#define FO_COPYSIGN_F16 copysignf
#define FO_COPYSIGN_BF16 copysignf

/* The combinations (FO_C*): params, state, then a master copy or stochastic rounding where named;
 * the gradient kernels come with each params kind's own-state combination. */
#define FO_PARAMS F32
#define FO_STATE F32
#define FO_SUFFIX _f32
#define FO_GRADS 1
#include "dispatch/instance.h"

#define FO_PARAMS F32
#define FO_STATE BF16
#define FO_SUFFIX _f32_sb16
#include "dispatch/instance.h"

#define FO_PARAMS F64
#define FO_STATE F64
#define FO_SUFFIX _f64
#define FO_GRADS 1
#include "dispatch/instance.h"

#define FO_PARAMS F16
#define FO_STATE F16
#define FO_SUFFIX _f16
#define FO_GRADS 1
#include "dispatch/instance.h"

#define FO_PARAMS F16
#define FO_STATE F32
#define FO_SUFFIX _f16_sf32
#include "dispatch/instance.h"

#define FO_PARAMS F16
#define FO_STATE F32
#define FO_SUFFIX _f16_sf32_m
#define FO_MASTER 1
#include "dispatch/instance.h"

#define FO_PARAMS F16
#define FO_STATE BF16
#define FO_SUFFIX _f16_sb16
#include "dispatch/instance.h"

#define FO_PARAMS F16
#define FO_STATE BF16
#define FO_SUFFIX _f16_sb16_m
#define FO_MASTER 1
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE BF16
#define FO_SUFFIX _b16
#define FO_GRADS 1
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE BF16
#define FO_SUFFIX _b16_sb16_m
#define FO_MASTER 1
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE BF16
#define FO_SUFFIX _b16_sb16_sr
#define FO_SR 1
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE F32
#define FO_SUFFIX _b16_sf32
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE F32
#define FO_SUFFIX _b16_sf32_m
#define FO_MASTER 1
#include "dispatch/instance.h"

#define FO_PARAMS BF16
#define FO_STATE F32
#define FO_SUFFIX _b16_sf32_sr
#define FO_SR 1
#include "dispatch/instance.h"

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
#define OPTIMIZER_SPANS(name) .name = COMBOS(name##_span),
    FO_OPTIMIZER_SPANS(OPTIMIZER_SPANS)
    .lamb_moments = COMBOS(lamb_moments_block),
    .sgd_q8 = F32_STATE(sgd_q8_block),
    .adam_q8 = F32_STATE(adam_q8_block),
    .lion_q8 = F32_STATE(lion_q8_block),
    .elastic_net = TYPES(elastic_net_span),
    .scale = TYPES(scale_span),
    .stream = TYPES(stream_span),
    .unscale = TYPES(unscale_block),
    .norm = TYPES(norm_block),
    .dropout = TYPES(dropout_span),
    .xent_rows = TYPES(xent_rows),
    .mse = TYPES(mse_block),
};
