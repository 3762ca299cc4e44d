/*
 * fastopt — fused optimizer-update kernels.  The public C API.
 *
 * Every update is one pass over memory, in place, over a list of tensors: tensor i has numel[i]
 * elements and one buffer per role (params[i], grads[i], state...).  A single tensor is a list of
 * one.  Update rules are torch.optim's, so results compare step for step.
 *
 * Every function validates all of its arguments before it writes anything: a call that returns a
 * status other than FASTOPT_OK has written nothing, and fastopt_last_error() says why, naming the
 * argument (and list index) at fault.
 *
 * Threading: one call is split over the concatenated element range of its tensors, so many small
 * tensors balance as well as one large one.  Results are bitwise identical for every thread count
 * and every SIMD level (the kernels are compiled without floating-point contraction).
 */
#ifndef FASTOPT_H
#define FASTOPT_H

#include <stddef.h>
#include <stdint.h>

#define FASTOPT_VERSION_MAJOR 0
#define FASTOPT_VERSION_MINOR 1
#define FASTOPT_VERSION_PATCH 0
#define FASTOPT_VERSION_STRING "0.1.0"

#if defined(_WIN32)
#  define FASTOPT_API __declspec(dllexport)
#else
#  define FASTOPT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* cffi-begin: everything down to cffi-end is also the Python binding's cdef. */

/* Status codes: every fallible function returns one. */
typedef enum fastopt_status {
    FASTOPT_OK = 0,
    FASTOPT_ERR_NULL_POINTER = 1,   /* a required pointer (array, list or options) is NULL */
    FASTOPT_ERR_DTYPE = 2,          /* unknown or unsupported element type */
    FASTOPT_ERR_HYPERPARAMETER = 3, /* a hyper-parameter is out of range or not finite */
    FASTOPT_ERR_OVERLAP = 4,        /* a written buffer overlaps another buffer of the call */
    FASTOPT_ERR_ALIGNMENT = 5,      /* a buffer is not aligned to its element size */
    FASTOPT_ERR_SIZE = 6,           /* the total element count overflows size_t */
    FASTOPT_ERR_ISA = 7,            /* unknown SIMD level, or not supported by this CPU */
    FASTOPT_ERR_ARGUMENT = 8,       /* any other invalid argument (e.g. a thread count < 1) */
    FASTOPT_ERR_OUT_OF_MEMORY = 9   /* an internal allocation failed */
} fastopt_status;

/* Element types of params, grads and optimizer state.  16-bit types are passed as their bits
 * (IEEE binary16; bfloat16: the top half of a float32) and computed in float32 registers. */
typedef enum fastopt_dtype {
    FASTOPT_FLOAT32 = 1,
    FASTOPT_FLOAT64 = 2,
    FASTOPT_FLOAT16 = 3,
    FASTOPT_BFLOAT16 = 4,
    FASTOPT_QUANT8 = 5    /* optimizer state only: 8-bit blockwise dynamic quantization (fastopt_common.absmax) */
} fastopt_dtype;

/*
 * What every optimizer shares.  After any update, when l1_prox > 0, the proximal step of an L1
 * penalty (soft thresholding) runs in the same pass:  p = sign(p) * max(|p| - lr * l1_prox, 0).
 * Gradients are read as grad / grad_scale (loss scaling, as torch's fused optimizers take it; a
 * power-of-two scale is undone exactly) and negated when maximizing.  When found_inf is given and
 * *found_inf != 0 the call writes nothing (a skipped mixed-precision step).
 */
typedef struct fastopt_common {
    double lr;               /* >= 0 */
    double weight_decay;     /* >= 0; coupled or decoupled as each optimizer says */
    double l1_prox;          /* >= 0; 0: off */
    double grad_scale;       /* > 0 (inf: gradients read as 0); 0 (as zero-initialized) means 1: no scaling */
    const float *found_inf;  /* NULL, or a flag set by fastopt_unscale / torch's GradScaler */
    int maximize;            /* ascend instead of descend */
    /* Mixed precision (all zero: everything in the call's dtype). */
    fastopt_dtype state_dtype;    /* 0: the params' dtype; or FASTOPT_FLOAT32 / FASTOPT_BFLOAT16 (float32/16-bit params) */
    void *const *master_params;   /* NULL, or float32 copies of float16/bfloat16 params, one per tensor: the update
                                   * reads and writes them, and writes the params rounded from them */
    int stochastic_rounding;      /* bfloat16 params without masters: round stochastically, from Philox-4x32-10 */
    uint32_t rounding_step;       /* counter word of the rounding bits: pass the step */
    uint64_t rounding_seed;       /* key of the rounding bits: the same seed and step give the same bits */
    /* 8-bit state (state_dtype FASTOPT_QUANT8; SGD with momentum, Adam/AdamW without amsgrad, Lion):
     * each state array holds uint8 codes, and state value i of tensor t is
     * absmax[j][t][i / quant_block] * code[codes[i]], with the dynamic code of fastopt_quant8_code
     * (signed for momenta, unsigned for exp_avg_sqs; Dettmers et al. 2022).  absmax[j] lists the
     * float32 block scales of the call's j-th state array, ceil(numel / quant_block) per tensor.
     * A step writes each block's largest |value| as its scale and each value / scale as the code of
     * the nearest code value, computed in float32 (at midpoints, within its rounding, either). */
    size_t quant_block;           /* 256 or 2048 */
    void *const *absmax[2];
    /* Per-tensor step counts, for the optimizers that count steps (adam, adagrad, nadam, radam,
     * adamax, lamb): NULL, or steps[i] >= 1 is tensor i's step, in place of the options' step.
     * torch keeps one step count per parameter (a parameter whose gradient is None is skipped
     * and its count stays), so tensors at different steps share one call, each with its own bias
     * correction.
     * sgd, rmsprop and lion count no steps and refuse it (FASTOPT_ERR_ARGUMENT). */
    const int64_t *steps;
    /* Per-tensor hyper-parameters: NULL, or lrs[i] (weight_decays[i]) is tensor i's, in place of
     * lr (weight_decay, then not read), each with the same range.  Param groups that differ only in these (no
     * decay on biases and norms, layer-wise lr decay) and replicas trained with different ones
     * (a hyper-parameter search) step in one call. */
    const double *lrs;
    const double *weight_decays;
    /* For a backend that runs the kernels elsewhere (fastopt's CUDA backend): NULL, or the call is
     * checked as any call (C never reads through the array pointers, so device addresses check
     * the same) and not run: tensor i's kernel constants are written to
     * constant_rows[i * FASTOPT_CONSTANTS_ROW ...], in the order src/fastopt/cuda/_kernels.py
     * reads them.  found_inf is not read (a device flag is the kernels' to read). */
    double *constant_rows;
} fastopt_common;

/* Doubles per tensor in fastopt_common.constant_rows. */
#define FASTOPT_CONSTANTS_ROW 16

/* torch.optim.SGD (weight decay coupled).  momentum_buffers may be NULL when momentum == 0. */
typedef struct fastopt_sgd_options {
    fastopt_common common;
    double momentum;      /* >= 0 */
    double dampening;     /* finite; must be 0 with nesterov */
    int nesterov;         /* needs momentum > 0 and dampening == 0 */
    int first_step;       /* momentum buffer := gradient (torch's first step, buffer None) */
} fastopt_sgd_options;

/* torch.optim.Adam / AdamW.  max_exp_avg_sqs is used (and required) only with amsgrad. */
typedef struct fastopt_adam_options {
    fastopt_common common;
    double beta1, beta2;         /* in [0, 1) */
    double eps;                  /* >= 0 */
    int64_t step;                /* >= 1, the step being taken (bias correction) */
    int amsgrad;
    int decoupled_weight_decay;  /* 1: AdamW (p *= 1 - lr*wd); 0: Adam (g += wd*p) */
} fastopt_adam_options;

/* torch.optim.RMSprop (weight decay coupled).  grad_avgs only when centered, momentum_buffers only
 * when momentum > 0 (NULL otherwise). */
typedef struct fastopt_rmsprop_options {
    fastopt_common common;
    double alpha;     /* in [0, 1] */
    double eps;       /* >= 0 */
    double momentum;  /* >= 0 */
    int centered;
} fastopt_rmsprop_options;

/* torch.optim.Adagrad (weight decay coupled). */
typedef struct fastopt_adagrad_options {
    fastopt_common common;
    double lr_decay;  /* >= 0 */
    double eps;       /* >= 0 */
    int64_t step;     /* >= 1 */
} fastopt_adagrad_options;

/* torch.optim.NAdam.  mu_product: the product of mu over the steps before this one (1 at step 1);
 * fastopt_nadam_mu_product() gives the product including this step, for the next call.  Tensors
 * with products of their own (per-tensor steps) pass mu_products: each tensor's product including
 * this step, as the caller keeps it (torch rounds it to its mu_product tensor's dtype). */
typedef struct fastopt_nadam_options {
    fastopt_common common;
    double beta1, beta2, eps;
    double momentum_decay;       /* >= 0 */
    double mu_product;           /* in [0, 1] (0 with beta1 = 0) */
    int64_t step;                /* >= 1 */
    int decoupled_weight_decay;
    const double *mu_products;   /* NULL, or mu_products[i] in [0, 1]: tensor i's product through this step */
} fastopt_nadam_options;

/* torch.optim.RAdam. */
typedef struct fastopt_radam_options {
    fastopt_common common;
    double beta1, beta2, eps;
    int64_t step;
    int decoupled_weight_decay;
} fastopt_radam_options;

/* torch.optim.Adamax (weight decay coupled). */
typedef struct fastopt_adamax_options {
    fastopt_common common;
    double beta1, beta2;  /* in [0, 1) */
    double eps;           /* >= 0 */
    int64_t step;         /* >= 1 */
} fastopt_adamax_options;

/* Lion (Chen et al. 2023), optax rules; weight decay decoupled. */
typedef struct fastopt_lion_options {
    fastopt_common common;
    double beta1, beta2;  /* in [0, 1] */
} fastopt_lion_options;

/* LAMB, apex FusedLAMB rules (adam_w_mode, grad_averaging, bias_correction on). */
typedef struct fastopt_lamb_options {
    fastopt_common common;
    double beta1, beta2, eps;
    double max_grad_norm;  /* > 0: grads scaled by max_grad_norm / global norm when it exceeds it; 0: off */
    int64_t step;
    int use_nvlamb;        /* apply the trust ratio even when weight_decay == 0 */
    /* Sharded tensors (each process holds a part of every tensor, FSDP/ZeRO): the step in two
     * calls around a sum over the processes.  FASTOPT_LAMB_WHOLE (0): the whole step, as above.
     * FASTOPT_LAMB_MOMENTS: updates the moments, writes tensor i's sums of squares of p and of u
     * to sums[2 i] and sums[2 i + 1], and stops; FASTOPT_LAMB_APPLY: takes those sums (summed
     * over the processes) and updates the params, with the options, state and steps of the
     * moments call.  max_grad_norm must then be 0: the caller clips, by a norm over the
     * processes, through grad_scale. */
    int phase;
    double *sums;
} fastopt_lamb_options;

#define FASTOPT_LAMB_WHOLE 0
#define FASTOPT_LAMB_MOMENTS 1
#define FASTOPT_LAMB_APPLY 2

/* "0.1.0": the library's version. */
FASTOPT_API const char *fastopt_version(void);
/* A constant, human-readable name of a status code. */
FASTOPT_API const char *fastopt_status_string(fastopt_status status);
/* Why the calling thread's last failing call failed ("" if none has). */
FASTOPT_API const char *fastopt_last_error(void);

/* SIMD level in use ("baseline", "avx2", "avx512", "neon"). */
FASTOPT_API const char *fastopt_isa(void);
/* Comma-separated SIMD levels this CPU and build can run, best last. */
FASTOPT_API const char *fastopt_isas_available(void);
/* Force a SIMD level by name, or NULL / "auto" for the best available. */
FASTOPT_API fastopt_status fastopt_set_isa(const char *name);

/* Threads used by one call (default: FASTOPT_NUM_THREADS, else all cores). */
FASTOPT_API int fastopt_get_num_threads(void);
FASTOPT_API fastopt_status fastopt_set_num_threads(int n);

/*
 * The optimizers.  Per element, after g = (maximize ? -grad : grad) / grad_scale:
 *
 * sgd:      g += wd*p;  b = first_step ? g : momentum*b + (1-dampening)*g;
 *           g = nesterov ? g + momentum*b : b  (when momentum != 0);  p -= lr*g
 * adam:     Adam: g += wd*p  |  AdamW: p *= 1 - lr*wd;  m += (1-beta1)*(g-m);  v = beta2*v + (1-beta2)*g*g;
 *           vmax = max(vmax, v) (amsgrad, used for v);  p -= lr/(1-beta1^t) * m / (sqrt(v)*(1/sqrt(1-beta2^t)) + eps)
 * rmsprop:  g += wd*p;  s = alpha*s + (1-alpha)*g*g;  centered: ga += (1-alpha)*(g-ga), d = sqrt(s - ga*ga) + eps,
 *           else d = sqrt(s) + eps;  momentum: b = momentum*b + g/d, p -= lr*b;  else p -= lr*g/d
 * adagrad:  g += wd*p;  s += g*g;  p -= lr/(1 + (t-1)*lr_decay) * g / (sqrt(s) + eps)
 * nadam:    as Adam's m, v and weight decay;  mu_t = beta1*(1 - 0.5*0.96^(t*momentum_decay));
 *           d = sqrt(v / (1-beta2^t)) + eps;  p -= lr*(1-mu_t)/(1-prod mu) * g/d + lr*mu_{t+1}/(1-prod mu * mu_{t+1}) * m/d
 * radam:    as Adam's m, v and weight decay;  rho_t = rho_inf - 2t*beta2^t/(1-beta2^t);
 *           rho_t > 5: p -= lr * m/(1-beta1^t) * sqrt(1-beta2^t)/(sqrt(v)+eps) * rect_t;  else p -= lr * m/(1-beta1^t)
 * adamax:   g += wd*p;  m += (1-beta1)*(g-m);  u = max(beta2*u, |g| + eps);  p -= lr/(1-beta1^t) * m/u
 * lion:     c = beta1*m + (1-beta1)*g;  p -= lr*(sign(c) + wd*p);  m = beta2*m + (1-beta2)*g
 * lamb:     g /= max(1, ||all grads|| / max_grad_norm);  m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;
 *           u = (m/(1-beta1^t)) / (sqrt(v/(1-beta2^t)) + eps) + wd*p;
 *           p -= lr * (||p|| / ||u|| per tensor, 1 if either is 0 or wd == 0 and not nvlamb) * u
 * Then, with l1_prox > 0:  p = sign(p) * max(|p| - lr*l1_prox, 0).
 */
FASTOPT_API fastopt_status fastopt_sgd(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                       void *const *params, const void *const *grads,
                                       void *const *momentum_buffers,
                                       const fastopt_sgd_options *options);
FASTOPT_API fastopt_status fastopt_adam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                        void *const *params, const void *const *grads,
                                        void *const *exp_avgs, void *const *exp_avg_sqs,
                                        void *const *max_exp_avg_sqs,
                                        const fastopt_adam_options *options);
FASTOPT_API fastopt_status fastopt_rmsprop(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                           void *const *params, const void *const *grads,
                                           void *const *square_avgs, void *const *grad_avgs,
                                           void *const *momentum_buffers,
                                           const fastopt_rmsprop_options *options);
FASTOPT_API fastopt_status fastopt_adagrad(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                           void *const *params, const void *const *grads,
                                           void *const *state_sums, const fastopt_adagrad_options *options);
FASTOPT_API fastopt_status fastopt_nadam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                         void *const *params, const void *const *grads,
                                         void *const *exp_avgs, void *const *exp_avg_sqs,
                                         const fastopt_nadam_options *options);
/* The 256 values of the 8-bit dynamic code, ascending, in [-1, 1] (signed) or [0, 1] (unsigned). */
FASTOPT_API void fastopt_quant8_code(int is_signed, float code[256]);
/* mu_product * mu_step: the NAdam momentum product to pass at step + 1. */
FASTOPT_API double fastopt_nadam_mu_product(double mu_product, double beta1, double momentum_decay, int64_t step);
FASTOPT_API fastopt_status fastopt_radam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                         void *const *params, const void *const *grads,
                                         void *const *exp_avgs, void *const *exp_avg_sqs,
                                         const fastopt_radam_options *options);
FASTOPT_API fastopt_status fastopt_adamax(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                          void *const *params, const void *const *grads,
                                          void *const *exp_avgs, void *const *exp_infs,
                                          const fastopt_adamax_options *options);
FASTOPT_API fastopt_status fastopt_lion(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                        void *const *params, const void *const *grads,
                                        void *const *exp_avgs, const fastopt_lion_options *options);
/* Two passes (three with max_grad_norm): the per-tensor norms of p and u come first. */
FASTOPT_API fastopt_status fastopt_lamb(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                        void *const *params, const void *const *grads,
                                        void *const *exp_avgs, void *const *exp_avg_sqs,
                                        const fastopt_lamb_options *options);

/*
 * Regularization gradients, in place on grads (params only read):
 *   grads += l2 * params + l1 * sign(params)      (sign(0) = 0)
 * l2_grad is l1 = 0, l1_grad is l2 = 0.
 */
FASTOPT_API fastopt_status fastopt_elastic_net_grad(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                                    void *const *grads, const void *const *params,
                                                    double l1, double l2);

/*
 * Gradient utilities.  Reductions are deterministic: the same bits for every thread count and
 * SIMD level (fixed blocks, fixed 16-lane accumulation in double, fixed combination order).
 *
 * fastopt_global_norm: the norm_type-norm of all elements of all tensors (norm_type > 0, or
 *   INFINITY); float32 accumulates in double (no overflow), float64 rescales when it must.
 * fastopt_scale: grads *= factor (the second pass of clipping).
 * fastopt_clip_grad_norm: torch.nn.utils.clip_grad_norm_: total = global norm;
 *   grads *= min(1, max_norm / (total + 1e-6)); *total_norm = total.
 * fastopt_unscale: grads *= inv_scale; *found_inf = 1 if any element was inf or NaN (else left as is),
 *   torch's _amp_foreach_non_finite_check_and_unscale_.
 */
FASTOPT_API fastopt_status fastopt_global_norm(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                               const void *const *grads, double norm_type, double *norm);
FASTOPT_API fastopt_status fastopt_scale(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                         void *const *grads, double factor);
FASTOPT_API fastopt_status fastopt_clip_grad_norm(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                                  void *const *grads, double max_norm, double norm_type,
                                                  double *total_norm);
FASTOPT_API fastopt_status fastopt_unscale(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                           void *const *grads, double inv_scale, float *found_inf);

/*
 * The rest of a training step: dropout and the two losses, each one pass over its arrays.
 * Single arrays (n elements, C order), in dtype; results deterministic like the reductions above.
 *
 * fastopt_dropout: inverted dropout, y = x * keep / (1 - p) (x * 0 where dropped, so inf and NaN
 *   become NaN there, as torch's dropout gives), p in [0, 1] (p = 1: y = x * 0).  Element e is kept
 *   when w(e) >= min(round(p * 2^32), 2^32 - 1) and p < 1, w(e) the 32-bit word e % 4 of Philox-4x32-10 with counter
 *   (e / 4 low, e / 4 high, counter low, counter high) and key (seed low, seed high ^ 0x44524F50),
 *   so a seed and counter give the same mask on every backend, thread count and SIMD level.  The
 *   backward pass is the same call on the output's gradient (the same seed and counter).  y may be
 *   x itself (in place); mask, if not NULL, gets 1 for each kept element and 0 for each dropped.
 * fastopt_mse_grad: *loss = sum (pred - target)^2, divided by n for FASTOPT_MEAN; grad = d loss /
 *   d pred = (pred - target) * (2 / n, or 2 for FASTOPT_SUM).  grad may be pred itself.
 * fastopt_softmax_cross_entropy: logits (rows x classes), labels (rows; int64, each in
 *   [0, classes) or ignore_index): per row, with t_j = label_smoothing / classes + (1 -
 *   label_smoothing) [j == label], loss = logsumexp(x) - sum_j t_j x_j and d loss / d x_j =
 *   softmax(x)_j - t_j; rows labelled ignore_index count for nothing.  *loss is the sum over rows,
 *   divided by the number of rows not ignored for FASTOPT_MEAN (torch.nn.functional.cross_entropy),
 *   and grad (which may be logits itself) is the gradient of *loss.  Labels are all checked first.
 */
typedef enum fastopt_reduction { FASTOPT_MEAN = 0, FASTOPT_SUM = 1 } fastopt_reduction;

FASTOPT_API fastopt_status fastopt_dropout(fastopt_dtype dtype, size_t n, const void *x, void *y, uint8_t *mask,
                                           double p, uint64_t seed, uint64_t counter);
FASTOPT_API fastopt_status fastopt_mse_grad(fastopt_dtype dtype, size_t n, const void *pred, const void *target,
                                            void *grad, fastopt_reduction reduction, double *loss);
/* Checks that each of the rows labels is in [0, classes) or ignore_index, and counts the rows not
 * ignored into *counted (what fastopt_softmax_cross_entropy checks first; for a backend that runs
 * the kernels elsewhere). */
FASTOPT_API fastopt_status fastopt_check_labels(size_t rows, size_t classes, const int64_t *labels,
                                                int64_t ignore_index, size_t *counted);
FASTOPT_API fastopt_status fastopt_softmax_cross_entropy(fastopt_dtype dtype, size_t rows, size_t classes,
                                                         const void *logits, const int64_t *labels, void *grad,
                                                         double label_smoothing, int64_t ignore_index,
                                                         fastopt_reduction reduction, double *loss);

/*
 * Checks the buffers of a call as every function above checks its own, without running anything:
 * n_roles (<= 6) roles named names[r], lists[r][t] tensor t's buffer of role r (numel[t] elements
 * of dtype), written[r] whether role r is written.  NULL lists or pointers, misalignment and a
 * written buffer that overlaps any other are refused.  For a backend that runs the kernels
 * elsewhere: C never reads through the pointers, so device addresses check the same.
 */
FASTOPT_API fastopt_status fastopt_check_buffers(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                                 size_t n_roles, const char *const *names,
                                                 void *const *const *lists, const int *written);

/*
 * The memory roofline probe (STREAM-style): the bytes an update moves with trivial math, in the
 * optimizers' own one-pass access pattern and threading.  Reads `in` and reads and writes each of
 * the n_inout (1 .. 5) arrays, n elements each: AdamW's mix is n_inout = 3 (params, exp_avgs,
 * exp_avg_sqs).  Per element: inout[j] = inout[j] + 0 * in (finite values stay as they were, so
 * the probe can run on an optimizer's own arrays).
 */
FASTOPT_API fastopt_status fastopt_stream(fastopt_dtype dtype, size_t n, const void *in, size_t n_inout,
                                          void *const *inout);

/* cffi-end */

#ifdef __cplusplus
}
#endif
#endif /* FASTOPT_H */
