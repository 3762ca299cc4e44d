/* The public entry points: validate every argument (nothing is written on failure), compute the
 * per-call scalars once, then run the kernel of the SIMD level in use over all tensors. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fastopt_internal.h"

static _Thread_local char last_error[320];

fastopt_status fo_fail(fastopt_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *fastopt_last_error(void) { return last_error; }
const char *fastopt_version(void) { return FASTOPT_VERSION_STRING; }

const char *fastopt_status_string(fastopt_status status)
{
    switch (status) {
    case FASTOPT_OK: return "ok";
    case FASTOPT_ERR_NULL_POINTER: return "null pointer";
    case FASTOPT_ERR_DTYPE: return "unsupported dtype";
    case FASTOPT_ERR_HYPERPARAMETER: return "hyper-parameter out of range";
    case FASTOPT_ERR_OVERLAP: return "overlapping buffers";
    case FASTOPT_ERR_ALIGNMENT: return "misaligned buffer";
    case FASTOPT_ERR_SIZE: return "size overflow";
    case FASTOPT_ERR_ISA: return "SIMD level unavailable";
    case FASTOPT_ERR_ARGUMENT: return "invalid argument";
    case FASTOPT_ERR_OUT_OF_MEMORY: return "out of memory";
    }
    return "unknown status";
}

/* ---- hyper-parameters ---- */

/* lo <= x <= hi (or < hi when hi_open), and finite: NaN fails every comparison. */
static int in_range(double x, double lo, double hi, int hi_open)
{
    return isfinite(x) && x >= lo && (hi_open ? x < hi : x <= hi);
}

#define REQUIRE(cond, ...) \
    do { if (!(cond)) return fo_fail(FASTOPT_ERR_HYPERPARAMETER, __VA_ARGS__); } while (0)

/* ---- buffers ---- */

typedef struct fo_role {
    const char *name;
    void *const *list; /* list[t] is tensor t's buffer of this role */
    int written;
} fo_role;

typedef struct fo_extent {
    uintptr_t lo, hi;
    const fo_role *role;
    size_t t;
} fo_extent;

static int by_lo(const void *a, const void *b)
{
    uintptr_t x = ((const fo_extent *)a)->lo, y = ((const fo_extent *)b)->lo;
    return (x > y) - (x < y);
}

/* A written buffer may overlap no other buffer of the call; read-only ones may share memory.
 * Sorted by start, an extent overlaps an earlier one iff it starts before the largest end seen. */
static fastopt_status check_overlap(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                    size_t esize)
{
    fo_extent stack[64], *ext = stack;
    if (n_roles * n > 64 && !(ext = malloc(n_roles * n * sizeof *ext)))
        return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate the overlap check of %zu tensors", n);
    size_t count = 0;
    for (size_t r = 0; r < n_roles; r++)
        for (size_t t = 0; t < n; t++)
            if (numel[t]) {
                uintptr_t lo = (uintptr_t)roles[r].list[t];
                ext[count++] = (fo_extent){lo, lo + numel[t] * esize, &roles[r], t};
            }
    qsort(ext, count, sizeof *ext, by_lo);
    const fo_extent *reach_all = NULL, *reach_written = NULL; /* largest end so far, of any / written */
    fastopt_status status = FASTOPT_OK;
    for (size_t i = 0; i < count && status == FASTOPT_OK; i++) {
        const fo_extent *e = &ext[i];
        const fo_extent *hit = e->role->written ? reach_all : reach_written;
        if (hit && e->lo < hit->hi)
            status = fo_fail(FASTOPT_ERR_OVERLAP, "%s[%zu] and %s[%zu] overlap in memory; a written array must not share memory with any other",
                             hit->role->name, hit->t, e->role->name, e->t);
        if (!reach_all || e->hi > reach_all->hi) reach_all = e;
        if (e->role->written && (!reach_written || e->hi > reach_written->hi)) reach_written = e;
    }
    if (ext != stack) free(ext);
    return status;
}

/* Lists present, buffers non-NULL and aligned, sizes summable, written buffers disjoint. */
static fastopt_status check_buffers(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                    size_t esize, size_t *total)
{
    if (n == 0) return *total = 0, FASTOPT_OK;
    if (!numel) return fo_fail(FASTOPT_ERR_NULL_POINTER, "numel is NULL");
    size_t sum = 0;
    for (size_t t = 0; t < n; t++) {
        if (numel[t] > (SIZE_MAX / esize) - sum)
            return fo_fail(FASTOPT_ERR_SIZE, "the total size of the tensors overflows at tensor %zu", t);
        sum += numel[t];
    }
    for (size_t r = 0; r < n_roles; r++) {
        if (!roles[r].list) return fo_fail(FASTOPT_ERR_NULL_POINTER, "%s is NULL", roles[r].name);
        for (size_t t = 0; t < n; t++) {
            uintptr_t at = (uintptr_t)roles[r].list[t];
            if (!at && numel[t]) return fo_fail(FASTOPT_ERR_NULL_POINTER, "%s[%zu] is NULL", roles[r].name, t);
            if (at % esize)
                return fo_fail(FASTOPT_ERR_ALIGNMENT, "%s[%zu] is not aligned to its %zu-byte elements", roles[r].name, t, esize);
        }
    }
    *total = sum;
    return check_overlap(roles, n_roles, n, numel, esize);
}

/* Element size of dtype and its kernel-table index; 0 with the error recorded if unsupported. */
static size_t dtype_size(fastopt_dtype dtype, int *index)
{
    switch (dtype) {
    case FASTOPT_FLOAT32: *index = FO_F32; return 4;
    case FASTOPT_FLOAT64: *index = FO_F64; return 8;
    }
    fo_fail(FASTOPT_ERR_DTYPE, "dtype %d is not supported (float32 or float64)", (int)dtype);
    return 0;
}

/* ---- optimizers ---- */

fastopt_status fastopt_sgd(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                           const void *const *grads, void *const *momentum_buffers,
                           const fastopt_sgd_options *o)
{
    if (!o) return fo_fail(FASTOPT_ERR_NULL_POINTER, "options is NULL");
    REQUIRE(in_range(o->lr, 0, INFINITY, 1), "lr must be a finite number >= 0, got %g", o->lr);
    REQUIRE(in_range(o->momentum, 0, INFINITY, 1), "momentum must be a finite number >= 0, got %g", o->momentum);
    REQUIRE(isfinite(o->dampening), "dampening must be finite, got %g", o->dampening);
    REQUIRE(in_range(o->weight_decay, 0, INFINITY, 1), "weight_decay must be a finite number >= 0, got %g", o->weight_decay);
    REQUIRE(!o->nesterov || (o->momentum > 0 && o->dampening == 0),
            "nesterov requires momentum > 0 and dampening == 0, got momentum=%g, dampening=%g", o->momentum, o->dampening);

    int d = 0;
    size_t total, esize = dtype_size(dtype, &d);
    if (!esize) return FASTOPT_ERR_DTYPE;
    fastopt_status s;
    int has_momentum = o->momentum != 0;
    const fo_role roles[] = {{"params", params, 1}, {"grads", (void *const *)grads, 0},
                             {"momentum_buffers", momentum_buffers, 1}};
    if ((s = check_buffers(roles, has_momentum ? 3 : 2, n_tensors, numel, esize, &total))) return s;

    fo_sgd_consts k = {
        .lr = o->lr, .momentum = o->momentum, .one_minus_dampening = 1.0 - o->dampening,
        .weight_decay = o->weight_decay, .grad_sign = o->maximize ? -1.0 : 1.0,
        .has_momentum = has_momentum, .nesterov = !!o->nesterov, .first_step = !!o->first_step,
        .has_weight_decay = o->weight_decay != 0,
    };
    fo_call call = {n_tensors, numel, {params, (void *const *)grads, momentum_buffers}, &k};
    fo_parallel_for(&call, total, fo_kernels()->sgd[d]);
    return FASTOPT_OK;
}

fastopt_status fastopt_adam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                            const void *const *grads, void *const *exp_avgs, void *const *exp_avg_sqs,
                            void *const *max_exp_avg_sqs, const fastopt_adam_options *o)
{
    if (!o) return fo_fail(FASTOPT_ERR_NULL_POINTER, "options is NULL");
    REQUIRE(in_range(o->lr, 0, INFINITY, 1), "lr must be a finite number >= 0, got %g", o->lr);
    REQUIRE(in_range(o->beta1, 0, 1, 1), "betas[0] must be in [0, 1), got %g", o->beta1);
    REQUIRE(in_range(o->beta2, 0, 1, 1), "betas[1] must be in [0, 1), got %g", o->beta2);
    REQUIRE(in_range(o->eps, 0, INFINITY, 1) && o->eps > 0, "eps must be a finite number > 0, got %g", o->eps);
    REQUIRE(in_range(o->weight_decay, 0, INFINITY, 1), "weight_decay must be a finite number >= 0, got %g", o->weight_decay);
    REQUIRE(o->step >= 1, "step must be >= 1, got %lld", (long long)o->step);

    int d = 0;
    size_t total, esize = dtype_size(dtype, &d);
    if (!esize) return FASTOPT_ERR_DTYPE;
    fastopt_status s;
    const fo_role roles[] = {{"params", params, 1}, {"grads", (void *const *)grads, 0}, {"exp_avgs", exp_avgs, 1},
                             {"exp_avg_sqs", exp_avg_sqs, 1}, {"max_exp_avg_sqs", max_exp_avg_sqs, 1}};
    if ((s = check_buffers(roles, o->amsgrad ? 5 : 4, n_tensors, numel, esize, &total))) return s;

    /* Python's float arithmetic, as torch computes these scalars */
    double bias_correction1 = 1.0 - pow(o->beta1, (double)o->step);
    double bias_correction2 = 1.0 - pow(o->beta2, (double)o->step);
    int wd_mode = o->weight_decay == 0 ? FO_WD_NONE : o->decoupled_weight_decay ? FO_WD_DECOUPLED : FO_WD_COUPLED;
    fo_adam_consts k = {
        .one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .one_minus_beta2 = 1.0 - o->beta2,
        .eps = o->eps, .weight_decay = o->weight_decay, .decay = 1.0 - o->lr * o->weight_decay,
        .grad_sign = o->maximize ? -1.0 : 1.0, .step_size = o->lr / bias_correction1,
        .inv_bias_correction2_sqrt = 1.0 / pow(bias_correction2, 0.5), .amsgrad = !!o->amsgrad, .wd_mode = wd_mode,
    };
    fo_call call = {n_tensors, numel, {params, (void *const *)grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs}, &k};
    fo_parallel_for(&call, total, fo_kernels()->adam[d]);
    return FASTOPT_OK;
}

/* ---- the roofline probe ---- */

fastopt_status fastopt_stream(fastopt_dtype dtype, size_t n, size_t n_in, const void *const *in, size_t n_inout,
                              void *const *inout)
{
    if (n_in + n_inout > FO_MAX_ROLES || n_in > FO_MAX_ROLES)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "at most %d arrays, got %zu", FO_MAX_ROLES, n_in + n_inout);
    int d = 0;
    size_t total, esize = dtype_size(dtype, &d);
    if (!esize) return FASTOPT_ERR_DTYPE;
    if ((n_in && !in) || (n_inout && !inout)) return fo_fail(FASTOPT_ERR_NULL_POINTER, "in or inout is NULL");
    fo_role roles[FO_MAX_ROLES] = {{0}};
    void *const *lists[FO_MAX_ROLES]; /* role j's one-tensor list: the address of its pointer */
    for (size_t j = 0; j < n_in + n_inout; j++) {
        int written = j >= n_in;
        lists[j] = written ? &inout[j - n_in] : (void *const *)&in[j];
        roles[j] = (fo_role){written ? "inout" : "in", lists[j], written};
    }
    fastopt_status s = check_buffers(roles, n_in + n_inout, 1, &n, esize, &total);
    if (s) return s;
    fo_stream_consts k = {n_in, n_inout};
    fo_call call = {1, &n, {0}, &k};
    for (size_t j = 0; j < n_in + n_inout; j++) call.buf[j] = lists[j];
    fo_parallel_for(&call, total, fo_kernels()->stream[d]);
    return FASTOPT_OK;
}
