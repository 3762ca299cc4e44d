/* Internal types shared by the API layer, the dispatcher, the threading and the kernels. */
#ifndef FASTOPT_INTERNAL_H
#define FASTOPT_INTERNAL_H

#include <stdint.h>

#include "fastopt.h"

#define FO_CAT_(a, b) a##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_INLINE static inline __attribute__((always_inline))

/* Element types of params and grads: what gradient kernels are instantiated for. */
enum { FO_F32, FO_F64, FO_F16, FO_B16, FO_NTYPES };
/* Storage combinations of an optimizer: params type, state type (_SB16: bfloat16 state),
 * _M: a float32 master copy, _SR: bfloat16 params rounded stochastically.  The first four are the
 * params' own type throughout. */
enum {
    FO_C32 = FO_F32, FO_C64 = FO_F64, FO_C16 = FO_F16, FO_CB16 = FO_B16,
    FO_C32_SB16, FO_C16_SF32, FO_C16_SB16, FO_CB16_SF32,
    FO_C16_SF32_M, FO_C16_SB16_M, FO_CB16_SF32_M, FO_CB16_SB16_M, FO_CB16_SF32_SR, FO_CB16_SB16_SR,
    FO_NCOMBOS
};

/* 8-bit state of a call: per state array j, its code (kernels/quant8.h: the signed or the unsigned,
 * and the 256 values of its bytes) and its block scales. */
typedef struct fo_q8 {
    size_t block;
    int is_signed[2];
    const float *value[2];
    void *const *absmax[2];
} fo_q8;

/* The buffers of one multi-tensor call: buf[role][tensor].  Roles are per kernel (params, grads,
 * ...); an optimizer's float32 master copies of the params are role FO_MASTER_ROLE. */
#define FO_MAX_ROLES 6
#define FO_MASTER_ROLE 5
typedef struct fo_call {
    size_t n_tensors;
    const size_t *numel;
    void *const *buf[FO_MAX_ROLES];
    const void *consts;                    /* the kernel's fo_*_consts: scalars computed once per call */
    size_t consts_stride;                  /* 0: one consts for every tensor; else bytes from tensor t's to t+1's */
    uint32_t sr_step, sr_key0, sr_key1;    /* stochastic rounding: Philox counter word and key */
    const fo_q8 *q8;                       /* 8-bit state, or NULL */
    size_t span_limit;                     /* spans of at most this many elements (0: any length) */
} fo_call;

/* The constants of tensor t of a call: per-tensor steps give each tensor its own. */
static inline const void *fo_consts_of(const fo_call *call, size_t t)
{
    return (const char *)call->consts + t * call->consts_stride;
}

/* What a span of an optimizer needs besides its buffers: its master copy and, with stochastic
 * rounding, 16 random bits for each element (NULL without either). */
typedef struct fo_aux {
    float *master;
    const uint16_t *random;
} fo_aux;
/* With stochastic rounding, spans have at most this many elements: their random bits are made up
 * front, in one buffer on the stack (kernels/storage.h: fo_sr_fill). */
#define FO_SR_CHUNK ((size_t)2048)

/* Updates elements [begin, end) of tensor t of a call. */
typedef void (*fo_span_fn)(const fo_call *call, size_t t, size_t begin, size_t end);
/* The same, for a reduction: also writes its block's partial results to out. */
typedef void (*fo_block_fn)(const fo_call *call, size_t t, size_t begin, size_t end, double *out);

/* Scalars every update reads, computed once per call from fastopt_common. */
typedef struct fo_common_consts {
    double lr, weight_decay;
    double grad_mul;        /* (maximize ? -1 : 1) / grad_scale */
    double prox_threshold;  /* lr * l1_prox */
    double decay;           /* 1 - lr * weight_decay when decoupled, else 1 */
    int coupled_wd;         /* g += weight_decay * p */
    int wd_mode;            /* FO_WD_*: how the optimizer applies weight decay */
} fo_common_consts;

/* Weight decay added to the gradient, applied to the weight before the update (p *= 1 - lr * wd),
 * or by the optimizer's own rule (Lion after the sign, LAMB inside its direction): neither. */
enum { FO_WD_COUPLED, FO_WD_DECOUPLED, FO_WD_OWN };

typedef struct fo_sgd_consts {
    fo_common_consts c;
    double momentum, one_minus_dampening;
    int has_momentum, nesterov, first_step;
} fo_sgd_consts;

typedef struct fo_adam_consts {
    fo_common_consts c;
    double one_minus_beta1, beta2, one_minus_beta2, eps;
    double step_size;                 /* lr / (1 - beta1^t) */
    double inv_bias_correction2_sqrt; /* 1 / sqrt(1 - beta2^t) */
    int amsgrad;
} fo_adam_consts;

typedef struct fo_rmsprop_consts {
    fo_common_consts c;
    double alpha, one_minus_alpha, eps, momentum;
    int centered, has_momentum;
} fo_rmsprop_consts;

typedef struct fo_adagrad_consts {
    fo_common_consts c;
    double clr, eps; /* clr = lr / (1 + (t - 1) * lr_decay) */
} fo_adagrad_consts;

typedef struct fo_nadam_consts {
    fo_common_consts c;
    double one_minus_beta1, beta2, one_minus_beta2, eps, inv_bias_correction2;
    double grad_coef, momentum_coef; /* -lr (1 - mu_t) / (1 - prod),  -lr mu_{t+1} / (1 - prod mu_{t+1}) */
} fo_nadam_consts;

typedef struct fo_radam_consts {
    fo_common_consts c;
    double one_minus_beta1, beta2, one_minus_beta2, eps;
    double inv_bias_correction1, bias_correction2_sqrt, rect;
    int rectified; /* rho_t > 5 */
} fo_radam_consts;

typedef struct fo_adamax_consts {
    fo_common_consts c;
    double one_minus_beta1, beta2, eps;
    double clr; /* lr / (1 - beta1^t) */
} fo_adamax_consts;

typedef struct fo_lion_consts {
    fo_common_consts c;
    double beta1, one_minus_beta1, beta2, one_minus_beta2;
} fo_lion_consts;

typedef struct fo_lamb_consts {
    fo_common_consts c;
    double one_minus_beta1, beta2, one_minus_beta2, eps, inv_bias_correction1, inv_bias_correction2;
    double clip_grad_mul;       /* grad_mul times the global-norm clipping factor */
    const double *neg_lr_ratio; /* pass 2, per tensor: -lr * trust ratio */
    int has_wd;
    int trust;                  /* the trust ratio applies: weight decay, or use_nvlamb */
    int use_nvlamb;
} fo_lamb_consts;

typedef struct fo_elastic_consts {
    double l1, l2;
} fo_elastic_consts;

typedef struct fo_scale_consts {
    double factor;
} fo_scale_consts;

enum { FO_NORM_2, FO_NORM_1, FO_NORM_INF, FO_NORM_P };
typedef struct fo_norm_consts {
    double norm_type, scale; /* each |x| is multiplied by scale first (overflow / underflow rescue) */
    int kind;
} fo_norm_consts;

typedef struct fo_dropout_consts {
    double scale;        /* 1 / (1 - p), or 0 for p = 1 */
    uint32_t threshold;  /* round(p * 2^32), at most 2^32 - 1: a word below it drops its element */
    int keep_any;        /* p < 1 */
    uint64_t seed, counter;
} fo_dropout_consts;

typedef struct fo_xent_consts {
    size_t classes;
    double label_smoothing, grad_mul; /* grad_mul: 1 / rows counted (FASTOPT_MEAN), or 1 */
    int64_t ignore_index;
} fo_xent_consts;

typedef struct fo_stream_consts {
    size_t n_in, n_inout;
} fo_stream_consts;

/* Reductions add FO_LANES lanes of doubles in a fixed order: the same bits at any SIMD width. */
#define FO_LANES 16
static inline double fo_sum_lanes(const double *a)
{
    double s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
static inline double fo_max_lanes(const double *a)
{
    double m = a[0];
    for (int i = 1; i < FO_LANES; i++) m = (a[i] > m || a[i] != a[i]) ? a[i] : m;
    return m;
}

/* One SIMD level's kernels: optimizers indexed by storage combination (FO_C*), gradient kernels
 * by element type (FO_F32 .. FO_B16). */
/* The optimizers' span functions, one line each: fo_kernel_table.<name>[combination] is the
 * span <name>_span of kernels/<file>.h (kernels.c). */
#define FO_OPTIMIZER_SPANS(X) X(sgd) X(adam) X(rmsprop) X(adagrad) X(nadam) X(radam) X(adamax) X(lion) X(lamb_apply)

#define FO_SPAN_FIELD(name) fo_span_fn name[FO_NCOMBOS];
typedef struct fo_kernel_table {
    const char *isa;
    FO_OPTIMIZER_SPANS(FO_SPAN_FIELD)
    fo_block_fn lamb_moments[FO_NCOMBOS];
    fo_block_fn sgd_q8[FO_NCOMBOS], adam_q8[FO_NCOMBOS], lion_q8[FO_NCOMBOS]; /* float32-state combinations */
    fo_span_fn elastic_net[FO_NTYPES], scale[FO_NTYPES], stream[FO_NTYPES];
    fo_block_fn unscale[FO_NTYPES], norm[FO_NTYPES];
    fo_span_fn dropout[FO_NTYPES], xent_rows[FO_NTYPES]; /* (xent_rows: a span of rows, see fo_parallel_rows) */
    fo_block_fn mse[FO_NTYPES];
} fo_kernel_table;

/* The kernels of the SIMD level in use (dispatch/cpu.c). */
const fo_kernel_table *fo_kernels(void);

/* Runs fn over every element of the call's tensors, split over threads (parallel.c). */
void fo_parallel_for(const fo_call *call, size_t total, fo_span_fn fn);
/* Runs fn(call, 0, begin, end) over rows [begin, end) of [0, rows), in parts of whole rows, on as
 * many threads as rows * row_elements elements warrant (parallel.c). */
void fo_parallel_rows(const fo_call *call, size_t rows, size_t row_elements, fo_span_fn fn);
/* Start of part i of `parts` near-equal, grain-aligned parts of [0, total) (parallel.c). */
size_t fo_part_begin(size_t total, size_t parts, size_t i);

/* Reductions run over fixed blocks of FO_BLOCK elements that never cross a tensor (a tensor's last
 * block is shorter), whatever the thread count: block b writes out[b * width .. (b+1) * width).
 * Blocks are numbered tensor by tensor, so a tensor's blocks are consecutive (parallel.c). */
#define FO_BLOCK ((size_t)1 << 14)
/* How many blocks a tensor of n elements has. */
static inline size_t fo_blocks_of(size_t n) { return (n + FO_BLOCK - 1) / FO_BLOCK; }
size_t fo_count_blocks(const fo_call *call);
void fo_parallel_blocks(const fo_call *call, size_t total, fo_block_fn fn, double *out, size_t width);

/* Records why the calling thread's call failed (for fastopt_last_error) and returns status. */
fastopt_status fo_fail(fastopt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
