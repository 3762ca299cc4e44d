/* One-tensor calls for Python's latency path, compiled into the cffi extension only (they are not
 * part of the C API).  The hyper-parameters come as plain arguments, so that Python builds no
 * option struct and no pointer lists: those cost it about 2 us a call, as much as an AdamW update
 * of 4K float32 elements.  Everything else is the C API's own call, its checks included. */
#include "fastopt.h"

/* cffi-begin: down to cffi-end, also the binding's cdef. */
static fastopt_status fastopt_single_sgd(fastopt_dtype dtype, size_t n, void *params, const void *grads,
                                         void *momentum_buffer, double lr, double momentum, double dampening,
                                         double weight_decay, double l1_prox, int nesterov, int maximize,
                                         int first_step);
static fastopt_status fastopt_single_adam(fastopt_dtype dtype, size_t n, void *params, const void *grads,
                                          void *exp_avg, void *exp_avg_sq, double lr, double beta1, double beta2,
                                          double eps, double weight_decay, double l1_prox, int64_t step,
                                          int decoupled_weight_decay, int maximize);
/* cffi-end */

static fastopt_status fastopt_single_sgd(fastopt_dtype dtype, size_t n, void *params, const void *grads,
                                         void *momentum_buffer, double lr, double momentum, double dampening,
                                         double weight_decay, double l1_prox, int nesterov, int maximize,
                                         int first_step)
{
    fastopt_sgd_options o = {{.lr = lr, .weight_decay = weight_decay, .l1_prox = l1_prox, .maximize = maximize},
                             momentum, dampening, nesterov, first_step};
    return fastopt_sgd(dtype, 1, &n, &params, &grads, momentum_buffer ? &momentum_buffer : NULL, &o);
}

static fastopt_status fastopt_single_adam(fastopt_dtype dtype, size_t n, void *params, const void *grads,
                                          void *exp_avg, void *exp_avg_sq, double lr, double beta1, double beta2,
                                          double eps, double weight_decay, double l1_prox, int64_t step,
                                          int decoupled_weight_decay, int maximize)
{
    fastopt_adam_options o = {{.lr = lr, .weight_decay = weight_decay, .l1_prox = l1_prox, .maximize = maximize},
                              beta1, beta2, eps, step, 0, decoupled_weight_decay};
    return fastopt_adam(dtype, 1, &n, &params, &grads, &exp_avg, &exp_avg_sq, NULL, &o);
}
