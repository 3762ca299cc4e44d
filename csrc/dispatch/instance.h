/* One storage combination of kernels.c.  Reads FO_PARAMS and FO_STATE (storage kinds: F32, F64,
 * F16 or BF16), FO_SUFFIX (the functions' name suffix) and optionally FO_MASTER, FO_SR (see
 * spans.h) and FO_GRADS (the gradient kernels too: once per params kind); defines the storage
 * macros spans.h reads, includes the spans, and undefines all of it again, its inputs included. */
#ifndef FO_MASTER
#define FO_MASTER 0
#endif
#ifndef FO_SR
#define FO_SR 0
#endif
#define FO_FN(name) FO_NAME(name, FO_SUFFIX)
#define T FO_CAT(FO_MATH_, FO_PARAMS)
#define FO_SQRT FO_CAT(FO_SQRT_, FO_PARAMS)
#define FO_FABS FO_CAT(FO_FABS_, FO_PARAMS)
#define FO_COPYSIGN FO_CAT(FO_COPYSIGN_, FO_PARAMS)
#define FO_P FO_CAT(FO_TYPE_, FO_PARAMS)
#define FO_LOAD_P FO_CAT(FO_LOAD_, FO_PARAMS)
#define FO_STORE_P FO_CAT(FO_STORE_, FO_PARAMS)
#define FO_S FO_CAT(FO_TYPE_, FO_STATE)
#define FO_S_F32 FO_CAT(FO_IS_F32_, FO_STATE)
#define FO_LOAD_S FO_CAT(FO_LOAD_, FO_STATE)
#define FO_STORE_S FO_CAT(FO_STORE_, FO_STATE)

#include "dispatch/spans.h"
#ifdef FO_GRADS
#include "dispatch/grad_spans.h"
#endif

#undef FO_CHUNK
#undef FO_AHEAD
#undef FO_STREAMED
#undef CHUNKED_SPAN
#undef FO_FN
#undef T
#undef FO_SQRT
#undef FO_FABS
#undef FO_COPYSIGN
#undef FO_P
#undef FO_LOAD_P
#undef FO_STORE_P
#undef FO_S
#undef FO_S_F32
#undef FO_LOAD_S
#undef FO_STORE_S
#undef FO_PARAMS
#undef FO_STATE
#undef FO_SUFFIX
#undef FO_MASTER
#undef FO_SR
#undef FO_GRADS
