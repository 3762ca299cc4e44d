/* Every kernel of fastopt, instantiated for float and double.  CMake compiles this one file once
 * per SIMD level (FO_ISA = baseline, avx2, avx512, neon) with that level's compiler flags and
 * without floating-point contraction, so every level computes the same bits; the result is one
 * table of span functions per level, named fo_table_<level>. */
#include <math.h>

#include "fastopt_internal.h"

#ifndef FO_ISA
#error "compile with -DFO_ISA=<level>"
#endif
#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)
/* adam_span + f32 -> adam_span_f32_avx2: one name per function, type and level (for profiles) */
#define FO_NAME(name, type) FO_CAT(FO_CAT(name, type), FO_CAT(_, FO_ISA))

#define T float
#define FO_FN(name) FO_NAME(name, _f32)
#define FO_SQRT sqrtf
#define FO_FABS fabsf
#define FO_COPYSIGN copysignf
#include "dispatch/spans.h"
#undef T
#undef FO_FN
#undef FO_SQRT
#undef FO_FABS
#undef FO_COPYSIGN

#define T double
#define FO_FN(name) FO_NAME(name, _f64)
#define FO_SQRT sqrt
#define FO_FABS fabs
#define FO_COPYSIGN copysign
#include "dispatch/spans.h"
#undef T
#undef FO_FN
#undef FO_SQRT
#undef FO_FABS
#undef FO_COPYSIGN

#define BOTH(name) {FO_NAME(name, _f32), FO_NAME(name, _f64)}

const fo_kernel_table FO_CAT(fo_table_, FO_ISA) = {
    .isa = FO_STR(FO_ISA),
    .sgd = BOTH(sgd_span),
    .adam = BOTH(adam_span),
    .rmsprop = BOTH(rmsprop_span),
    .adagrad = BOTH(adagrad_span),
    .nadam = BOTH(nadam_span),
    .radam = BOTH(radam_span),
    .lion = BOTH(lion_span),
    .lamb_apply = BOTH(lamb_apply_span),
    .elastic_net = BOTH(elastic_net_span),
    .scale = BOTH(scale_span),
    .stream = BOTH(stream_span),
    .lamb_moments = BOTH(lamb_moments_block),
    .unscale = BOTH(unscale_block),
    .norm = BOTH(norm_block),
};
