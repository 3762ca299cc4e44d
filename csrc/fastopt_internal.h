/* Internal types shared by the API layer, the dispatcher, the threading and the kernels. */
#ifndef FASTOPT_INTERNAL_H
#define FASTOPT_INTERNAL_H

#include "fastopt.h"

#define FO_CAT_(a, b) a##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_INLINE static inline __attribute__((always_inline))

enum { FO_F32, FO_F64, FO_NDTYPES };

/* The buffers of one multi-tensor call: buf[role][tensor].  Roles are per kernel (params, grads, ...). */
#define FO_MAX_ROLES 6
typedef struct fo_call {
    size_t n_tensors;
    const size_t *numel;
    void *const *buf[FO_MAX_ROLES];
    const void *consts; /* fo_sgd_consts / fo_adam_consts: scalars computed once per call */
} fo_call;

/* Updates elements [begin, end) of tensor t of a call. */
typedef void (*fo_span_fn)(const fo_call *call, size_t t, size_t begin, size_t end);

typedef struct fo_sgd_consts {
    double lr, momentum, one_minus_dampening, weight_decay, grad_sign;
    int has_momentum, nesterov, first_step, has_weight_decay;
} fo_sgd_consts;

enum { FO_WD_NONE, FO_WD_COUPLED, FO_WD_DECOUPLED };
typedef struct fo_adam_consts {
    double one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, grad_sign;
    double step_size;       /* lr / (1 - beta1^t) */
    double inv_bias_correction2_sqrt; /* 1 / sqrt(1 - beta2^t) */
    int amsgrad, wd_mode;
} fo_adam_consts;

typedef struct fo_stream_consts {
    size_t n_in, n_inout;
} fo_stream_consts;

/* One SIMD level's kernels, indexed by FO_F32 / FO_F64. */
typedef struct fo_kernel_table {
    const char *isa;
    fo_span_fn sgd[FO_NDTYPES];
    fo_span_fn adam[FO_NDTYPES];
    fo_span_fn stream[FO_NDTYPES];
} fo_kernel_table;

/* The kernels of the SIMD level in use (dispatch/cpu.c). */
const fo_kernel_table *fo_kernels(void);

/* Runs fn over every element of the call's tensors, split over threads (parallel.c). */
void fo_parallel_for(const fo_call *call, size_t total, fo_span_fn fn);
/* Start of part i of `parts` near-equal, grain-aligned parts of [0, total) (parallel.c). */
size_t fo_part_begin(size_t total, size_t parts, size_t i);

/* Records why the calling thread's call failed (for fastopt_last_error) and returns status. */
fastopt_status fo_fail(fastopt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
