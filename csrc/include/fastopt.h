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

/* Element types of params, grads and optimizer state. */
typedef enum fastopt_dtype {
    FASTOPT_FLOAT32 = 1,
    FASTOPT_FLOAT64 = 2
} fastopt_dtype;

/* torch.optim.SGD.  momentum_buffers may be NULL when momentum == 0. */
typedef struct fastopt_sgd_options {
    double lr;            /* >= 0 */
    double momentum;      /* >= 0 */
    double dampening;     /* finite; must be 0 with nesterov */
    double weight_decay;  /* >= 0, coupled (added to the gradient) */
    int nesterov;         /* needs momentum > 0 and dampening == 0 */
    int maximize;         /* ascend instead of descend */
    int first_step;       /* momentum buffer := gradient (torch's first step, buffer None) */
} fastopt_sgd_options;

/* torch.optim.Adam / AdamW.  max_exp_avg_sqs is used (and required) only with amsgrad. */
typedef struct fastopt_adam_options {
    double lr;                   /* >= 0 */
    double beta1, beta2;         /* in [0, 1) */
    double eps;                  /* > 0 */
    double weight_decay;         /* >= 0 */
    int64_t step;                /* >= 1, the step being taken (bias correction) */
    int amsgrad;
    int maximize;
    int decoupled_weight_decay;  /* 1: AdamW (p *= 1 - lr*wd); 0: Adam (g += wd*p) */
} fastopt_adam_options;

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
 * SGD with momentum, torch.optim.SGD rules, per element:
 *   g = maximize ? -grad : grad;   if weight_decay != 0: g = g + weight_decay * p
 *   if momentum != 0:
 *       b = first_step ? g : momentum * b + (1 - dampening) * g
 *       g = nesterov ? g + momentum * b : b
 *   p = p - lr * g
 */
FASTOPT_API fastopt_status fastopt_sgd(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                       void *const *params, const void *const *grads,
                                       void *const *momentum_buffers,
                                       const fastopt_sgd_options *options);

/*
 * Adam / AdamW, torch.optim.Adam rules, per element (t = step):
 *   g = maximize ? -grad : grad
 *   Adam:  if weight_decay != 0: g = g + weight_decay * p
 *   AdamW: p = p * (1 - lr * weight_decay)
 *   m = m + (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
 *   if amsgrad: vmax = max(vmax, v); v_hat = vmax  else v_hat = v
 *   p = p - (lr / (1 - beta1^t)) * m / (sqrt(v_hat) * (1 / sqrt(1 - beta2^t)) + eps)
 */
FASTOPT_API fastopt_status fastopt_adam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel,
                                        void *const *params, const void *const *grads,
                                        void *const *exp_avgs, void *const *exp_avg_sqs,
                                        void *const *max_exp_avg_sqs,
                                        const fastopt_adam_options *options);

/*
 * The memory roofline probe (STREAM-style): the bytes an update moves, with trivial math.  Reads
 * each of the n_in arrays once and reads and writes each of the n_inout arrays once, n elements
 * each, threaded like the optimizers; e.g. AdamW's mix is n_in = 1 (grads), n_inout = 3.
 * Per element: acc = sum of in[j];  inout[j] = inout[j] + 0 * acc (finite values stay as they
 * were, so the probe can run on an optimizer's own arrays).  At most 6 arrays in all.
 */
FASTOPT_API fastopt_status fastopt_stream(fastopt_dtype dtype, size_t n, size_t n_in, const void *const *in,
                                          size_t n_inout, void *const *inout);

/* cffi-end */

#ifdef __cplusplus
}
#endif
#endif /* FASTOPT_H */
