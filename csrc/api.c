/* The public entry points: validate every argument (nothing is written on failure), compute the
 * per-call scalars once, then run the kernel of the SIMD level in use over all tensors. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastopt_internal.h"
#include "kernels/quant8.h"

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

#define CHECK(expr) do { fastopt_status s_ = (expr); if (s_) return s_; } while (0)
#define REQUIRE(cond, ...) \
    do { if (!(cond)) return fo_fail(FASTOPT_ERR_HYPERPARAMETER, __VA_ARGS__); } while (0)

/* ---- buffers ---- */

enum { FO_KIND_PARAMS, FO_KIND_STATE, FO_KIND_MASTER, FO_KIND_ABSMAX }; /* what a role holds: its element type follows */

typedef struct fo_role {
    const char *name;  /* NULL: a role this call does not use (its place is kept) */
    void *const *list; /* list[t] is tensor t's buffer of this role */
    int written;
    int kind;          /* FO_KIND_PARAMS (params, grads; the call's dtype), FO_KIND_STATE, FO_KIND_MASTER or FO_KIND_ABSMAX */
    int nonnegative;   /* state whose values are >= 0 (second moments): the unsigned 8-bit code */
} fo_role;

typedef struct fo_extent {
    uintptr_t lo, hi;
    const fo_role *role;
    size_t t;
} fo_extent;

/* ext[0..count) in order of lo: an LSD radix sort over the address bytes (all bytes counted in one
 * pass; a byte every extent shares is skipped), linear in count; the sorted extents are in ext or
 * in tmp (returned).  The library's qsort took ~30 us for 600 extents, a model's worth of tensors
 * checked at every call. */
static fo_extent *sorted_by_lo(fo_extent *ext, fo_extent *tmp, size_t count)
{
    enum { BYTES = sizeof(uintptr_t) };
    size_t at[BYTES][256] = {{0}};
    for (size_t i = 0; i < count; i++)
        for (unsigned b = 0; b < BYTES; b++) at[b][(ext[i].lo >> 8 * b) & 255]++;
    for (unsigned b = 0; count > 1 && b < BYTES; b++) {
        if (at[b][(ext[0].lo >> 8 * b) & 255] == count) continue;
        for (size_t d = 0, sum = 0; d < 256; d++) {
            size_t here = at[b][d];
            at[b][d] = sum, sum += here;
        }
        for (size_t i = 0; i < count; i++) tmp[at[b][(ext[i].lo >> 8 * b) & 255]++] = ext[i];
        fo_extent *swap = ext;
        ext = tmp, tmp = swap;
    }
    return ext;
}

/* A written buffer may overlap no other buffer of the call; read-only ones may share memory.
 * Sorted by start, an extent overlaps an earlier one iff it starts before the largest end seen. */
/* Bytes of tensor t's buffer of role r: numel elements, or one float per quantization block. */
static size_t extent_of(const fo_role *role, size_t numel, const size_t *esize, size_t quant_block)
{
    return role->kind == FO_KIND_ABSMAX ? (numel + quant_block - 1) / quant_block * 4 : numel * esize[role->kind];
}

static fastopt_status check_overlap(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                    const size_t *esize, size_t quant_block)
{
    fo_extent stack[2 * 64], *memory = stack;
    if (n_roles * n > 64 && !(memory = malloc(2 * n_roles * n * sizeof *memory)))
        return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate the overlap check of %zu tensors", n);
    fo_extent *ext = memory;
    size_t count = 0;
    for (size_t r = 0; r < n_roles; r++)
        for (size_t t = 0; t < n && roles[r].name; t++)
            if (numel[t]) {
                uintptr_t lo = (uintptr_t)roles[r].list[t];
                ext[count++] = (fo_extent){lo, lo + extent_of(&roles[r], numel[t], esize, quant_block), &roles[r], t};
            }
    ext = sorted_by_lo(ext, memory + n_roles * n, count);
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
    if (memory != stack) free(memory);
    return status;
}

/* Lists present, buffers non-NULL and aligned, sizes summable, written buffers disjoint (roles
 * without a name are not used by the call and not checked).  esize[kind]: element size of each kind. */
static fastopt_status check_buffers_q8(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                       const size_t *esize, size_t quant_block, size_t *total);

static fastopt_status check_buffers(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                    const size_t *esize, size_t *total)
{
    return check_buffers_q8(roles, n_roles, n, numel, esize, 1, total);
}

/* check_buffers, with FO_KIND_ABSMAX roles of ceil(numel / quant_block) floats. */
static fastopt_status check_buffers_q8(const fo_role *roles, size_t n_roles, size_t n, const size_t *numel,
                                       const size_t *esize, size_t quant_block, size_t *total)
{
    if (n == 0) return *total = 0, FASTOPT_OK;
    if (!numel) return fo_fail(FASTOPT_ERR_NULL_POINTER, "numel is NULL");
    size_t sum = 0;
    for (size_t t = 0; t < n; t++) {
        if (numel[t] > (SIZE_MAX / 8) - sum)
            return fo_fail(FASTOPT_ERR_SIZE, "the total size of the tensors overflows at tensor %zu", t);
        sum += numel[t];
    }
    for (size_t r = 0; r < n_roles; r++) {
        if (!roles[r].name) continue;
        if (!roles[r].list) return fo_fail(FASTOPT_ERR_NULL_POINTER, "%s is NULL", roles[r].name);
        for (size_t t = 0; t < n; t++) {
            uintptr_t at = (uintptr_t)roles[r].list[t];
            if (!at && numel[t]) return fo_fail(FASTOPT_ERR_NULL_POINTER, "%s[%zu] is NULL", roles[r].name, t);
            if (at % esize[roles[r].kind])
                return fo_fail(FASTOPT_ERR_ALIGNMENT, "%s[%zu] is not aligned to its %zu-byte elements", roles[r].name, t,
                               esize[roles[r].kind]);
        }
    }
    *total = sum;
    return check_overlap(roles, n_roles, n, numel, esize, quant_block);
}

/* Element size of dtype and its gradient-kernel index; 0 with the error recorded if unsupported. */
static size_t dtype_size(fastopt_dtype dtype, int *index)
{
    switch (dtype) {
    case FASTOPT_FLOAT32: *index = FO_F32; return 4;
    case FASTOPT_FLOAT64: *index = FO_F64; return 8;
    case FASTOPT_FLOAT16: *index = FO_F16; return 2;
    case FASTOPT_BFLOAT16: *index = FO_B16; return 2;
    case FASTOPT_QUANT8: break; /* state only */
    }
    fo_fail(FASTOPT_ERR_DTYPE, "dtype %d is not supported (float32, float64, float16 or bfloat16)", (int)dtype);
    return 0;
}

static const char *dtype_name(fastopt_dtype dtype)
{
    switch (dtype) {
    case FASTOPT_FLOAT32: return "float32";
    case FASTOPT_FLOAT64: return "float64";
    case FASTOPT_FLOAT16: return "float16";
    case FASTOPT_BFLOAT16: return "bfloat16";
    case FASTOPT_QUANT8: return "quant8";
    }
    return "unknown";
}

/* The storage combination (FO_C*) of an optimizer call: params dtype, state dtype (0: the params'),
 * master copies, stochastic rounding. */
static fastopt_status combination(fastopt_dtype dtype, const fastopt_common *c, int *combo)
{
    fastopt_dtype state = c->state_dtype ? c->state_dtype : dtype;
    int master = c->master_params != NULL, sr = !!c->stochastic_rounding, b16_state = state == FASTOPT_BFLOAT16;
    int sixteen = dtype == FASTOPT_FLOAT16 || dtype == FASTOPT_BFLOAT16;
    if (master && !sixteen)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "master_params are for float16/bfloat16 params, not %s", dtype_name(dtype));
    if (sr && (dtype != FASTOPT_BFLOAT16 || master))
        return fo_fail(FASTOPT_ERR_ARGUMENT, "stochastic_rounding is for bfloat16 params without master_params");
    *combo = -1;
    switch (dtype) {
    case FASTOPT_FLOAT32: *combo = state == dtype ? FO_C32 : b16_state ? FO_C32_SB16 : -1; break;
    case FASTOPT_FLOAT64: *combo = state == dtype ? FO_C64 : -1; break;
    case FASTOPT_FLOAT16:
        *combo = state == FASTOPT_FLOAT32 ? (master ? FO_C16_SF32_M : FO_C16_SF32)
               : b16_state ? (master ? FO_C16_SB16_M : FO_C16_SB16) : state == dtype && !master ? FO_C16 : -1;
        break;
    case FASTOPT_BFLOAT16:
        *combo = state == FASTOPT_FLOAT32 ? (master ? FO_CB16_SF32_M : sr ? FO_CB16_SF32_SR : FO_CB16_SF32)
               : b16_state ? (master ? FO_CB16_SB16_M : sr ? FO_CB16_SB16_SR : FO_CB16) : -1;
        break;
    case FASTOPT_QUANT8: break;
    }
    if (*combo < 0)
        return fo_fail(FASTOPT_ERR_DTYPE, "state_dtype %s with %s params%s is not supported (state: the params' dtype, "
                       "float32, or bfloat16)", dtype_name(state), dtype_name(dtype), master ? " and master_params" : "");
    return FASTOPT_OK;
}

/* Element sizes by role kind of an optimizer call, and its combination. */
static fastopt_status optimizer_sizes(fastopt_dtype dtype, const fastopt_common *c, size_t esize[4], int *combo)
{
    int d;
    if (!(esize[FO_KIND_PARAMS] = dtype_size(dtype, &d))) return FASTOPT_ERR_DTYPE;
    esize[FO_KIND_MASTER] = esize[FO_KIND_ABSMAX] = 4;
    if (c->state_dtype == FASTOPT_QUANT8) { /* uint8 codes, computed as float32 state */
        fastopt_common as_f32 = *c;
        as_f32.state_dtype = FASTOPT_FLOAT32;
        esize[FO_KIND_STATE] = 1;
        return combination(dtype, &as_f32, combo);
    }
    if (!(esize[FO_KIND_STATE] = dtype_size(c->state_dtype ? c->state_dtype : dtype, &d))) return FASTOPT_ERR_DTYPE;
    return combination(dtype, c, combo);
}

/* ---- 8-bit state ---- */

static float q8_values[2][256]; /* [0]: unsigned, [1]: signed */
static pthread_once_t q8_once = PTHREAD_ONCE_INIT;

static void q8_make_values(void)
{
    for (uint32_t c = 0; c < 256; c++) q8_values[0][c] = fo_q8_value(c, 0), q8_values[1][c] = fo_q8_value(c, 1);
}

void fastopt_quant8_code(int is_signed, float code[256])
{
    pthread_once(&q8_once, q8_make_values);
    if (code) memcpy(code, q8_values[!!is_signed], sizeof q8_values[0]);
}

/* ---- what every update shares ---- */

/* The common constants of a call (lr and weight_decay: the options', or a tensor's); wd_mode FO_WD_*.
 * A scalar that per-tensor values replace (lrs, weight_decays) is not checked: step_consts checks
 * those, each named by its tensor. */
static fastopt_status common_consts(const fastopt_common *o, int wd_mode, fo_common_consts *c)
{
    REQUIRE(o->lrs || in_range(o->lr, 0, INFINITY, 1), "lr must be a finite number >= 0, got %g", o->lr);
    REQUIRE(o->weight_decays || in_range(o->weight_decay, 0, INFINITY, 1),
            "weight_decay must be a finite number >= 0, got %g", o->weight_decay);
    REQUIRE(in_range(o->l1_prox, 0, INFINITY, 1), "l1_prox must be a finite number >= 0, got %g", o->l1_prox);
    /* (inf reads every gradient as 0, and inf or NaN ones as NaN: grad / grad_scale, as torch's fused
     * optimizers compute it; LAMB clipping by an infinite norm over several groups passes it) */
    REQUIRE(o->grad_scale >= 0, "grad_scale must be a number > 0, got %g", o->grad_scale);
    double scale = o->grad_scale == 0 ? 1.0 : o->grad_scale, wd = o->weight_decay;
    *c = (fo_common_consts){
        .lr = o->lr, .weight_decay = wd, .grad_mul = (o->maximize ? -1.0 : 1.0) / scale,
        .prox_threshold = o->lr * o->l1_prox, .decay = wd_mode == FO_WD_DECOUPLED && wd != 0 ? 1.0 - o->lr * wd : 1.0,
        .coupled_wd = wd_mode == FO_WD_COUPLED && wd != 0, .wd_mode = wd_mode,
    };
    return FASTOPT_OK;
}

/* Per-tensor lrs and weight_decays, each in its range (checked before anything is written); the
 * messages name them as the hyper-parameters they stand for: lr[i] is tensor i's lr. */
static fastopt_status check_per_tensor(const fastopt_common *c, size_t n)
{
    for (size_t t = 0; c->lrs && t < n; t++)
        REQUIRE(in_range(c->lrs[t], 0, INFINITY, 1), "lr[%zu] must be a finite number >= 0, got %g", t, c->lrs[t]);
    for (size_t t = 0; c->weight_decays && t < n; t++)
        REQUIRE(in_range(c->weight_decays[t], 0, INFINITY, 1), "weight_decay[%zu] must be a finite number >= 0, "
                "got %g", t, c->weight_decays[t]);
    return FASTOPT_OK;
}

/* ---- constants: once per call, or once per tensor with per-tensor steps ---- */

/* A kernel's constants k as one row of doubles, in the order the CUDA kernels read them
 * (fastopt_common.constant_rows): the first six are common_row's. */
typedef void (*fo_row_fn)(const void *k, double *row);

/* The constants a call's kernel reads: k for every tensor (stride 0), or one copy of k per tensor,
 * in `owned` (the caller frees it); and how to write them as a row. */
typedef struct fo_consts_list {
    const void *k;
    size_t stride;
    void *owned;
    fo_row_fn row;
} fo_consts_list;

static void common_row(const fo_common_consts *c, double *row)
{
    row[0] = c->lr, row[1] = c->coupled_wd ? c->weight_decay : 0.0, row[2] = c->grad_mul;
    row[3] = c->prox_threshold, row[4] = c->decay, row[5] = c->prox_threshold != 0;
}

/* Writes each tensor's constants as its row (a call that is checked, not run). */
static fastopt_status write_rows(const fo_consts_list *consts, size_t n, double *rows)
{
    for (size_t t = 0; t < n; t++) {
        double *row = rows + t * FASTOPT_CONSTANTS_ROW;
        memset(row, 0, FASTOPT_CONSTANTS_ROW * sizeof *row);
        consts->row((const char *)consts->k + t * consts->stride, row);
    }
    return FASTOPT_OK;
}

/* An optimizer's step-dependent constants (its bias corrections) in k, for tensor t at `step`;
 * they read lr and weight decay from k's common constants (the tensor's own, when per tensor). */
typedef void (*fo_at_step_fn)(void *k, const void *options, size_t t, int64_t step);

/* Per-tensor steps are for the optimizers that count steps, each >= 1; checked with the other
 * hyper-parameters, before anything is written. */
static fastopt_status check_steps(const fastopt_common *c, size_t n, int counts_steps)
{
    if (!c->steps) return FASTOPT_OK;
    if (!counts_steps)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "steps is given, but this optimizer counts no steps");
    for (size_t t = 0; t < n; t++)
        REQUIRE(c->steps[t] >= 1, "steps[%zu] must be >= 1, got %lld", t, (long long)c->steps[t]);
    return FASTOPT_OK;
}

/* Completes k (size bytes), whose common constants are the options': by at_step (if any), once,
 * at `step`; or, when the common options give per-tensor steps, lrs or weight_decays or keys
 * (another per-tensor input of at_step) is given, once per tensor, each tensor's copy with its own
 * common constants, into out->owned (a tensor equal to the one before it is copied). */
static fastopt_status step_consts(fo_consts_list *out, void *k, size_t size, size_t n, const fastopt_common *common,
                                  int64_t step, const double *keys, fo_at_step_fn at_step, const void *options,
                                  fo_row_fn row)
{
    const int64_t *steps = common->steps;
    const double *lrs = common->lrs, *wds = common->weight_decays;
    *out = (fo_consts_list){k, 0, NULL, row};
    CHECK(check_per_tensor(common, n));
    if ((!steps && !keys && !lrs && !wds) || n == 0) {
        if (at_step) at_step(k, options, 0, step);
        return FASTOPT_OK;
    }
    char *all = malloc(n * size);
    if (!all) return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate the constants of %zu tensors", n);
    for (size_t t = 0; t < n; t++) {
        char *kt = all + t * size;
#define SAME_AS_BEFORE(list) (!(list) || (list)[t] == (list)[t - 1])
        int repeat = t > 0 && SAME_AS_BEFORE(steps) && SAME_AS_BEFORE(keys) && SAME_AS_BEFORE(lrs) && SAME_AS_BEFORE(wds);
#undef SAME_AS_BEFORE
        memcpy(kt, repeat ? kt - size : k, size);
        if (repeat) continue;
        fo_common_consts *c = (fo_common_consts *)kt; /* (every optimizer's constants start with them) */
        if (lrs || wds) {
            fastopt_common own = *common;
            own.lr = lrs ? lrs[t] : common->lr;
            own.weight_decay = wds ? wds[t] : common->weight_decay;
            common_consts(&own, c->wd_mode, c); /* (in range: checked above) */
        }
        if (at_step) at_step(kt, options, t, steps ? steps[t] : step);
    }
    *out = (fo_consts_list){all, size, all, row};
    return FASTOPT_OK;
}

/* The call of an optimizer: its roles plus the master copies (role FO_MASTER_ROLE) and the
 * stochastic-rounding counter.  all_roles has room for FO_MAX_ROLES. */
static fo_call optimizer_call(size_t n, const size_t *numel, fo_role *all_roles, size_t n_roles,
                              const fo_consts_list *consts, const fastopt_common *c)
{
    for (size_t r = n_roles; r < FO_MAX_ROLES; r++) all_roles[r] = (fo_role){NULL, NULL, 0, FO_KIND_PARAMS, 0};
    all_roles[FO_MASTER_ROLE] = (fo_role){c->master_params ? "master_params" : NULL, c->master_params, 1, FO_KIND_MASTER, 0};
    fo_call call = {.n_tensors = n, .numel = numel, .consts = consts->k, .consts_stride = consts->stride,
                    .sr_step = (uint32_t)c->rounding_step, .sr_key0 = (uint32_t)c->rounding_seed,
                    .sr_key1 = (uint32_t)(c->rounding_seed >> 32), .span_limit = c->stochastic_rounding ? FO_SR_CHUNK : 0};
    for (size_t r = 0; r < FO_MAX_ROLES; r++) call.buf[r] = all_roles[r].name ? all_roles[r].list : NULL;
    return call;
}

/* An optimizer with 8-bit state: the state roles hold codes, fastopt_common.absmax their scales;
 * run over FO_BLOCK blocks (whole quantization blocks each). */
static fastopt_status run_q8(fastopt_dtype dtype, size_t n, const size_t *numel, const fo_role *roles, size_t n_roles,
                             const fo_block_fn *kernel, const fo_consts_list *consts, const fastopt_common *c)
{
    if (!kernel)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "8-bit state is supported by sgd with momentum, adam/adamw without "
                                             "amsgrad, and lion");
    if (c->quant_block != 256 && c->quant_block != 2048)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "quant_block must be 256 or 2048, got %zu", c->quant_block);
    size_t esize[4], total;
    int combo;
    CHECK(optimizer_sizes(dtype, c, esize, &combo));
    fo_role all[FO_MAX_ROLES + 2];
    for (size_t r = 0; r < n_roles; r++) all[r] = roles[r];
    fo_call call = optimizer_call(n, numel, all, n_roles, consts, c);
    static const char *names[2] = {"absmax[0]", "absmax[1]"};
    fo_q8 q = {c->quant_block, {0, 0}, {NULL, NULL}, {NULL, NULL}};
    pthread_once(&q8_once, q8_make_values);
    int states = 0;
    for (size_t r = 0; r < n_roles && states < 2; r++) {
        if (roles[r].kind != FO_KIND_STATE || !roles[r].name) continue;
        int is_signed = !roles[r].nonnegative;
        if (!c->absmax[states])
            return fo_fail(FASTOPT_ERR_NULL_POINTER, "absmax[%d] (the scales of %s) is NULL", states, roles[r].name);
        q.is_signed[states] = is_signed, q.value[states] = q8_values[is_signed], q.absmax[states] = c->absmax[states];
        all[FO_MAX_ROLES + states] = (fo_role){names[states], c->absmax[states], 1, FO_KIND_ABSMAX, 0};
        states++;
    }
    for (int j = states; j < 2; j++) all[FO_MAX_ROLES + j] = (fo_role){NULL, NULL, 0, FO_KIND_ABSMAX, 0};
    CHECK(check_buffers_q8(all, FO_MAX_ROLES + 2, n, numel, esize, c->quant_block, &total));
    if (!kernel[combo]) return fo_fail(FASTOPT_ERR_DTYPE, "8-bit state needs float32, float16 or bfloat16 params");
    if (c->constant_rows) return write_rows(consts, n, c->constant_rows);
    if (c->found_inf && *c->found_inf != 0) return FASTOPT_OK;
    call.q8 = &q;
    double unused = 0;
    fo_parallel_blocks(&call, total, kernel[combo], &unused, 0);
    return FASTOPT_OK;
}

static int has_state(const fo_role *roles, size_t n_roles)
{
    for (size_t r = 0; r < n_roles; r++)
        if (roles[r].kind == FO_KIND_STATE && roles[r].name) return 1;
    return 0;
}

/* What every optimizer does before its kernels: the storage combination of its dtypes, its call
 * (the roles, and the master copies, in all), its buffers checked.  *go is 0 when nothing is to
 * run: found_inf says skip, or the call was only to be checked (its constant rows are written). */
static fastopt_status open_optimizer(fastopt_dtype dtype, size_t n, const size_t *numel, const fo_role *roles,
                                     size_t n_roles, const fo_consts_list *consts, const fastopt_common *common,
                                     fo_role all[FO_MAX_ROLES], fo_call *call, int *combo, size_t *total, int *go)
{
    size_t esize[4];
    int stateful = has_state(roles, n_roles);
    *go = 0;
    if (stateful && common->state_dtype == FASTOPT_QUANT8)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "8-bit state is supported by sgd with momentum, adam/adamw without "
                                             "amsgrad, and lion");
    fastopt_common stateless = *common; /* no state (SGD without momentum): any state type will do */
    if (!stateful) stateless.state_dtype = common->master_params ? FASTOPT_FLOAT32 : 0;
    CHECK(optimizer_sizes(dtype, stateful ? common : &stateless, esize, combo));
    for (size_t r = 0; r < n_roles; r++) all[r] = roles[r];
    *call = optimizer_call(n, numel, all, n_roles, consts, common);
    CHECK(check_buffers(all, FO_MAX_ROLES, n, numel, esize, total));
    if (common->constant_rows) return write_rows(consts, n, common->constant_rows);
    *go = !(common->found_inf && *common->found_inf != 0);
    return FASTOPT_OK;
}

/* An optimizer: checks its call (open_optimizer), then runs kernel[combination] over every
 * element; 8-bit state goes to run_q8. */
static fastopt_status run(fastopt_dtype dtype, size_t n, const size_t *numel, const fo_role *roles, size_t n_roles,
                          const fo_span_fn *kernel, const fo_block_fn *q8_kernel, const fo_consts_list *consts,
                          const fastopt_common *common)
{
    if (common->state_dtype == FASTOPT_QUANT8 && has_state(roles, n_roles))
        return run_q8(dtype, n, numel, roles, n_roles, q8_kernel, consts, common);
    fo_role all[FO_MAX_ROLES];
    fo_call call;
    int combo, go;
    size_t total;
    CHECK(open_optimizer(dtype, n, numel, roles, n_roles, consts, common, all, &call, &combo, &total, &go));
    if (go) fo_parallel_for(&call, total, kernel[combo]);
    return FASTOPT_OK;
}

/* A gradient kernel (every role of the call's dtype): validates, then runs kernel[dtype]. */
static fastopt_status run_grads(fastopt_dtype dtype, size_t n, const size_t *numel, const fo_role *roles, size_t n_roles,
                                const fo_span_fn *kernel, const void *consts)
{
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    fastopt_status s = check_buffers(roles, n_roles, n, numel, esize, &total);
    if (s) return s;
    fo_call call = {.n_tensors = n, .numel = numel, .consts = consts};
    for (size_t r = 0; r < n_roles; r++) call.buf[r] = roles[r].name ? roles[r].list : NULL;
    fo_parallel_for(&call, total, kernel[d]);
    return FASTOPT_OK;
}

/* The roles of an optimizer's call, as its signature lists them (NULL name: unused by this call). */
#define ROLE_PARAMS(list) {"params", (list), 1, FO_KIND_PARAMS, 0}
#define ROLE_GRADS(list) {"grads", READ(list), 0, FO_KIND_PARAMS, 0}
#define ROLE_STATE(name, list) {(name), (list), 1, FO_KIND_STATE, 0}
#define ROLE_NONNEGATIVE(name, list) {(name), (list), 1, FO_KIND_STATE, 1} /* values >= 0 */

#define NEED_OPTIONS(o) do { if (!(o)) return fo_fail(FASTOPT_ERR_NULL_POINTER, "options is NULL"); } while (0)
#define READ(list) ((void *const *)(list))

static fastopt_status check_betas(double beta1, double beta2, int closed)
{
    REQUIRE(in_range(beta1, 0, 1, !closed), "betas[0] must be in [0, 1%s, got %g", closed ? "]" : ")", beta1);
    REQUIRE(in_range(beta2, 0, 1, !closed), "betas[1] must be in [0, 1%s, got %g", closed ? "]" : ")", beta2);
    return FASTOPT_OK;
}

/* eps >= 0 (as torch: 0 is allowed, and divides by zero where the state is 0), and the step (or,
 * with per-tensor steps, each of them) >= 1. */
static fastopt_status check_eps_step(const fastopt_common *c, size_t n, double eps, int64_t step)
{
    REQUIRE(in_range(eps, 0, INFINITY, 1), "eps must be a finite number >= 0, got %g", eps);
    if (c->steps) return check_steps(c, n, 1);
    REQUIRE(step >= 1, "step must be >= 1, got %lld", (long long)step);
    return FASTOPT_OK;
}

/* Runs an optimizer with per-call or per-tensor constants (step_consts), then frees them;
 * at_step NULL: an optimizer that counts no steps. */
static fastopt_status run_stepped(fastopt_dtype dtype, size_t n, const size_t *numel, const fo_role *roles, size_t n_roles,
                                  const fo_span_fn *kernel, const fo_block_fn *q8_kernel, void *k, size_t size,
                                  int64_t step, const double *keys, fo_at_step_fn at_step, fo_row_fn row,
                                  const void *o, const fastopt_common *common)
{
    fo_consts_list consts;
    CHECK(step_consts(&consts, k, size, n, common, step, keys, at_step, o, row));
    fastopt_status s = run(dtype, n, numel, roles, n_roles, kernel, q8_kernel, &consts, common);
    free(consts.owned);
    return s;
}

/* ---- optimizers ---- */

static void sgd_row(const void *kv, double *row)
{
    const fo_sgd_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->momentum, row[7] = k->one_minus_dampening;
    row[8] = k->has_momentum, row[9] = k->nesterov, row[10] = k->first_step;
}

fastopt_status fastopt_sgd(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                           const void *const *grads, void *const *momentum_buffers, const fastopt_sgd_options *o)
{
    NEED_OPTIONS(o);
    fo_sgd_consts k = {.momentum = o->momentum, .one_minus_dampening = 1.0 - o->dampening,
                       .has_momentum = o->momentum != 0, .nesterov = !!o->nesterov, .first_step = !!o->first_step};
    CHECK(common_consts(&o->common, FO_WD_COUPLED, &k.c));
    CHECK(check_steps(&o->common, n_tensors, 0));
    REQUIRE(in_range(o->momentum, 0, INFINITY, 1), "momentum must be a finite number >= 0, got %g", o->momentum);
    REQUIRE(isfinite(o->dampening), "dampening must be finite, got %g", o->dampening);
    REQUIRE(!o->nesterov || (o->momentum > 0 && o->dampening == 0),
            "nesterov requires momentum > 0 and dampening == 0, got momentum=%g, dampening=%g", o->momentum, o->dampening);
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads),
                             ROLE_STATE(k.has_momentum ? "momentum_buffers" : NULL, momentum_buffers)};
    return run_stepped(dtype, n_tensors, numel, roles, 3, fo_kernels()->sgd, fo_kernels()->sgd_q8, &k, sizeof k, 0,
                       NULL, NULL, sgd_row, o, &o->common);
}

/* Python's float arithmetic, as torch computes these scalars */
static void adam_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_adam_consts *k = kv;
    const fastopt_adam_options *o = ov;
    (void)t;
    double bias_correction1 = 1.0 - pow(o->beta1, (double)step);
    double bias_correction2 = 1.0 - pow(o->beta2, (double)step);
    k->step_size = k->c.lr / bias_correction1;
    k->inv_bias_correction2_sqrt = 1.0 / pow(bias_correction2, 0.5);
}

static void adam_row(const void *kv, double *row)
{
    const fo_adam_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->one_minus_beta1, row[7] = k->beta2, row[8] = k->one_minus_beta2, row[9] = k->eps;
    row[10] = -k->step_size, row[11] = k->inv_bias_correction2_sqrt, row[12] = k->amsgrad;
}

fastopt_status fastopt_adam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                            const void *const *grads, void *const *exp_avgs, void *const *exp_avg_sqs,
                            void *const *max_exp_avg_sqs, const fastopt_adam_options *o)
{
    NEED_OPTIONS(o);
    fo_adam_consts k = {.one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .one_minus_beta2 = 1.0 - o->beta2,
                        .eps = o->eps, .amsgrad = !!o->amsgrad};
    CHECK(common_consts(&o->common, o->decoupled_weight_decay ? FO_WD_DECOUPLED : FO_WD_COUPLED, &k.c));
    CHECK(check_betas(o->beta1, o->beta2, 0));
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_STATE("exp_avgs", exp_avgs),
                             ROLE_NONNEGATIVE("exp_avg_sqs", exp_avg_sqs), ROLE_NONNEGATIVE(k.amsgrad ? "max_exp_avg_sqs" : NULL, max_exp_avg_sqs)};
    return run_stepped(dtype, n_tensors, numel, roles, 5, fo_kernels()->adam, k.amsgrad ? NULL : fo_kernels()->adam_q8,
                       &k, sizeof k, o->step, NULL, adam_at_step, adam_row, o, &o->common);
}

static void rmsprop_row(const void *kv, double *row)
{
    const fo_rmsprop_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->alpha, row[7] = k->one_minus_alpha, row[8] = k->eps, row[9] = k->momentum;
    row[10] = k->centered, row[11] = k->has_momentum;
}

fastopt_status fastopt_rmsprop(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                               const void *const *grads, void *const *square_avgs, void *const *grad_avgs,
                               void *const *momentum_buffers, const fastopt_rmsprop_options *o)
{
    NEED_OPTIONS(o);
    fo_rmsprop_consts k = {.alpha = o->alpha, .one_minus_alpha = 1.0 - o->alpha, .eps = o->eps,
                           .momentum = o->momentum, .centered = !!o->centered, .has_momentum = o->momentum > 0};
    CHECK(common_consts(&o->common, FO_WD_COUPLED, &k.c));
    CHECK(check_steps(&o->common, n_tensors, 0));
    REQUIRE(in_range(o->alpha, 0, 1, 0), "alpha must be in [0, 1], got %g", o->alpha);
    REQUIRE(in_range(o->eps, 0, INFINITY, 1), "eps must be a finite number >= 0, got %g", o->eps);
    REQUIRE(in_range(o->momentum, 0, INFINITY, 1), "momentum must be a finite number >= 0, got %g", o->momentum);
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_NONNEGATIVE("square_avgs", square_avgs),
                             ROLE_STATE(k.centered ? "grad_avgs" : NULL, grad_avgs),
                             ROLE_STATE(k.has_momentum ? "momentum_buffers" : NULL, momentum_buffers)};
    return run_stepped(dtype, n_tensors, numel, roles, 5, fo_kernels()->rmsprop, NULL, &k, sizeof k, 0, NULL, NULL,
                       rmsprop_row, o, &o->common);
}

static void adagrad_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_adagrad_consts *k = kv;
    const fastopt_adagrad_options *o = ov;
    (void)t;
    k->clr = k->c.lr / (1.0 + (double)(step - 1) * o->lr_decay);
}

static void adagrad_row(const void *kv, double *row)
{
    const fo_adagrad_consts *k = kv;
    common_row(&k->c, row);
    row[6] = -k->clr, row[7] = k->eps;
}

fastopt_status fastopt_adagrad(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                               const void *const *grads, void *const *state_sums, const fastopt_adagrad_options *o)
{
    NEED_OPTIONS(o);
    fo_adagrad_consts k = {.eps = o->eps};
    CHECK(common_consts(&o->common, FO_WD_COUPLED, &k.c));
    REQUIRE(in_range(o->lr_decay, 0, INFINITY, 1), "lr_decay must be a finite number >= 0, got %g", o->lr_decay);
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_NONNEGATIVE("state_sums", state_sums)};
    return run_stepped(dtype, n_tensors, numel, roles, 3, fo_kernels()->adagrad, NULL, &k, sizeof k, o->step, NULL,
                       adagrad_at_step, adagrad_row, o, &o->common);
}

static double nadam_mu(double beta1, double momentum_decay, int64_t step)
{
    return beta1 * (1.0 - 0.5 * pow(0.96, (double)step * momentum_decay));
}

double fastopt_nadam_mu_product(double mu_product, double beta1, double momentum_decay, int64_t step)
{
    return mu_product * nadam_mu(beta1, momentum_decay, step);
}

static void nadam_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_nadam_consts *k = kv;
    const fastopt_nadam_options *o = ov;
    double lr = k->c.lr, mu = nadam_mu(o->beta1, o->momentum_decay, step);
    double mu_next = nadam_mu(o->beta1, o->momentum_decay, step + 1);
    double mu_product = o->mu_products ? o->mu_products[t] : o->mu_product * mu;
    k->inv_bias_correction2 = 1.0 / (1.0 - pow(o->beta2, (double)step));
    k->grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product);
    k->momentum_coef = (-lr * mu_next) / (1.0 - mu_product * mu_next);
}

static void nadam_row(const void *kv, double *row)
{
    const fo_nadam_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->one_minus_beta1, row[7] = k->beta2, row[8] = k->one_minus_beta2, row[9] = k->eps;
    row[10] = k->inv_bias_correction2, row[11] = k->grad_coef, row[12] = k->momentum_coef;
}

fastopt_status fastopt_nadam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                             const void *const *grads, void *const *exp_avgs, void *const *exp_avg_sqs,
                             const fastopt_nadam_options *o)
{
    NEED_OPTIONS(o);
    fo_nadam_consts k = {.one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .one_minus_beta2 = 1.0 - o->beta2,
                         .eps = o->eps};
    CHECK(common_consts(&o->common, o->decoupled_weight_decay ? FO_WD_DECOUPLED : FO_WD_COUPLED, &k.c));
    CHECK(check_betas(o->beta1, o->beta2, 0));
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    REQUIRE(in_range(o->momentum_decay, 0, INFINITY, 1), "momentum_decay must be a finite number >= 0, got %g", o->momentum_decay);
    if (o->mu_products)
        for (size_t t = 0; t < n_tensors; t++)
            REQUIRE(in_range(o->mu_products[t], 0, 1, 0), "mu_products[%zu] must be in [0, 1], got %g", t,
                    o->mu_products[t]);
    else /* (0 with beta1 = 0, which torch allows) */
        REQUIRE(in_range(o->mu_product, 0, 1, 0), "mu_product must be in [0, 1], got %g", o->mu_product);
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_STATE("exp_avgs", exp_avgs),
                             ROLE_NONNEGATIVE("exp_avg_sqs", exp_avg_sqs)};
    return run_stepped(dtype, n_tensors, numel, roles, 4, fo_kernels()->nadam, NULL, &k, sizeof k, o->step,
                       o->mu_products, nadam_at_step, nadam_row, o, &o->common);
}

static void radam_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_radam_consts *k = kv;
    const fastopt_radam_options *o = ov;
    (void)t;
    double s = (double)step, b2t = pow(o->beta2, s);
    double bias_correction1 = 1.0 - pow(o->beta1, s), bias_correction2 = 1.0 - b2t;
    double rho_inf = 2.0 / (1.0 - o->beta2) - 1.0, rho_t = rho_inf - 2.0 * s * b2t / bias_correction2;
    k->inv_bias_correction1 = 1.0 / bias_correction1;
    k->bias_correction2_sqrt = pow(bias_correction2, 0.5);
    k->rectified = rho_t > 5.0;
    k->rect = k->rectified ? pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5) : 1.0;
}

static void radam_row(const void *kv, double *row)
{
    const fo_radam_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->one_minus_beta1, row[7] = k->beta2, row[8] = k->one_minus_beta2, row[9] = k->eps;
    row[10] = k->inv_bias_correction1, row[11] = k->bias_correction2_sqrt, row[12] = k->rect, row[13] = k->rectified;
}

fastopt_status fastopt_radam(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                             const void *const *grads, void *const *exp_avgs, void *const *exp_avg_sqs,
                             const fastopt_radam_options *o)
{
    NEED_OPTIONS(o);
    fo_radam_consts k = {.one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .one_minus_beta2 = 1.0 - o->beta2,
                         .eps = o->eps};
    CHECK(common_consts(&o->common, o->decoupled_weight_decay ? FO_WD_DECOUPLED : FO_WD_COUPLED, &k.c));
    CHECK(check_betas(o->beta1, o->beta2, 0));
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_STATE("exp_avgs", exp_avgs),
                             ROLE_NONNEGATIVE("exp_avg_sqs", exp_avg_sqs)};
    return run_stepped(dtype, n_tensors, numel, roles, 4, fo_kernels()->radam, NULL, &k, sizeof k, o->step, NULL,
                       radam_at_step, radam_row, o, &o->common);
}

static void adamax_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_adamax_consts *k = kv;
    const fastopt_adamax_options *o = ov;
    (void)t;
    k->clr = k->c.lr / (1.0 - pow(o->beta1, (double)step));
}

static void adamax_row(const void *kv, double *row)
{
    const fo_adamax_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->one_minus_beta1, row[7] = k->beta2, row[8] = k->eps, row[9] = -k->clr;
}

fastopt_status fastopt_adamax(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                              const void *const *grads, void *const *exp_avgs, void *const *exp_infs,
                              const fastopt_adamax_options *o)
{
    NEED_OPTIONS(o);
    fo_adamax_consts k = {.one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .eps = o->eps};
    CHECK(common_consts(&o->common, FO_WD_COUPLED, &k.c));
    CHECK(check_betas(o->beta1, o->beta2, 0));
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_STATE("exp_avgs", exp_avgs),
                             ROLE_NONNEGATIVE("exp_infs", exp_infs)};
    return run_stepped(dtype, n_tensors, numel, roles, 4, fo_kernels()->adamax, NULL, &k, sizeof k, o->step, NULL,
                       adamax_at_step, adamax_row, o, &o->common);
}

/* (Lion's weight decay joins the update after the sign: row[10], not the common coupled term) */
static void lion_row(const void *kv, double *row)
{
    const fo_lion_consts *k = kv;
    common_row(&k->c, row);
    row[6] = k->beta1, row[7] = k->one_minus_beta1, row[8] = k->beta2, row[9] = k->one_minus_beta2;
    row[10] = k->c.weight_decay;
}

fastopt_status fastopt_lion(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                            const void *const *grads, void *const *exp_avgs, const fastopt_lion_options *o)
{
    NEED_OPTIONS(o);
    fo_lion_consts k = {.beta1 = o->beta1, .one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2,
                        .one_minus_beta2 = 1.0 - o->beta2};
    CHECK(common_consts(&o->common, FO_WD_OWN, &k.c)); /* Lion's weight decay joins the update, after the sign */
    CHECK(check_steps(&o->common, n_tensors, 0));
    CHECK(check_betas(o->beta1, o->beta2, 1));
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads), ROLE_STATE("exp_avgs", exp_avgs)};
    return run_stepped(dtype, n_tensors, numel, roles, 3, fo_kernels()->lion, fo_kernels()->lion_q8, &k, sizeof k, 0,
                       NULL, NULL, lion_row, o, &o->common);
}

/* ---- reductions ---- */

/* Block results of fn over the call (width doubles each), in a fresh array the caller frees. */
static fastopt_status blocks(const fo_call *call, size_t total, fo_block_fn fn, size_t width, double **out, size_t *n_blocks)
{
    *n_blocks = fo_count_blocks(call);
    *out = calloc(*n_blocks ? *n_blocks * width : 1, sizeof **out);
    if (!*out) return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate %zu block results", *n_blocks);
    fo_parallel_blocks(call, total, fn, *out, width);
    return FASTOPT_OK;
}

/* The norm of the buffers of role 0 of call (validated already); d is the dtype index. */
static fastopt_status norm_of(const fo_call *call_in, size_t total, int d, double norm_type, double *norm)
{
    fo_norm_consts k = {.norm_type = norm_type, .scale = 1.0,
                        .kind = norm_type == 2 ? FO_NORM_2 : norm_type == 1 ? FO_NORM_1 : isinf(norm_type) ? FO_NORM_INF : FO_NORM_P};
    fo_call call = *call_in;
    call.consts = &k;
    for (int pass = 0;; pass++) {
        double *out;
        size_t nb;
        CHECK(blocks(&call, total, fo_kernels()->norm[d], 2, &out, &nb));
        double sum = 0, big = 0;
        for (size_t b = 0; b < nb; b++) {
            sum += out[2 * b];
            big = (out[2 * b + 1] > big || out[2 * b + 1] != out[2 * b + 1]) ? out[2 * b + 1] : big;
        }
        free(out);
        if (k.kind == FO_NORM_INF) return *norm = big, FASTOPT_OK;
        double root = k.kind == FO_NORM_2 ? sqrt(sum) : k.kind == FO_NORM_1 ? sum : pow(sum, 1.0 / norm_type);
        /* the sum overflowed or lost its digits below DBL_MIN: again, each |x| scaled by a power of two
         * that brings the largest to [1, 2) (float32 never needs it: it sums in double) */
        int rescue = isfinite(big) && big > 0 && (!isfinite(sum) || sum < 1e-280);
        if (pass > 0 || !rescue) return *norm = root / k.scale, FASTOPT_OK;
        int e = -ilogb(big); /* 2^e brings big to [1, 2), but for a subnormal big 2^e overflows: stop at 2^1020 */
        k.scale = ldexp(1.0, e < 1020 ? e : 1020);
    }
}

static fastopt_status check_norm_type(double norm_type)
{
    REQUIRE((isfinite(norm_type) && norm_type > 0) || (isinf(norm_type) && norm_type > 0),
            "norm_type must be > 0 or inf, got %g", norm_type);
    return FASTOPT_OK;
}

fastopt_status fastopt_global_norm(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, const void *const *grads,
                                   double norm_type, double *norm)
{
    if (!norm) return fo_fail(FASTOPT_ERR_NULL_POINTER, "norm is NULL");
    CHECK(check_norm_type(norm_type));
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    const fo_role roles[] = {ROLE_GRADS(grads)};
    CHECK(check_buffers(roles, 1, n_tensors, numel, esize, &total));
    fo_call call = {.n_tensors = n_tensors, .numel = numel, .buf = {READ(grads)}};
    return norm_of(&call, total, d, norm_type, norm);
}

fastopt_status fastopt_scale(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *grads, double factor)
{
    fo_scale_consts k = {factor};
    const fo_role roles[] = {{"grads", grads, 1, FO_KIND_PARAMS, 0}};
    return run_grads(dtype, n_tensors, numel, roles, 1, fo_kernels()->scale, &k);
}

fastopt_status fastopt_clip_grad_norm(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *grads,
                                      double max_norm, double norm_type, double *total_norm)
{
    if (!total_norm) return fo_fail(FASTOPT_ERR_NULL_POINTER, "total_norm is NULL");
    REQUIRE(in_range(max_norm, 0, INFINITY, 1), "max_norm must be a finite number >= 0, got %g", max_norm);
    CHECK(check_norm_type(norm_type));
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    const fo_role roles[] = {{"grads", grads, 1, FO_KIND_PARAMS, 0}};
    CHECK(check_buffers(roles, 1, n_tensors, numel, esize, &total));
    fo_call call = {.n_tensors = n_tensors, .numel = numel, .buf = {grads}};
    CHECK(norm_of(&call, total, d, norm_type, total_norm));
    double coef = max_norm / (*total_norm + 1e-6); /* torch's clip_coef, clamped to 1 */
    if (!(coef >= 1.0)) { /* (a NaN norm scales everything to NaN, as torch does) */
        fo_scale_consts k = {coef};
        call.consts = &k;
        fo_parallel_for(&call, total, fo_kernels()->scale[d]);
    }
    return FASTOPT_OK;
}

fastopt_status fastopt_unscale(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *grads,
                               double inv_scale, float *found_inf)
{
    if (!found_inf) return fo_fail(FASTOPT_ERR_NULL_POINTER, "found_inf is NULL");
    REQUIRE(isfinite(inv_scale), "inv_scale must be finite, got %g", inv_scale);
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    const fo_role roles[] = {{"grads", grads, 1, FO_KIND_PARAMS, 0}};
    CHECK(check_buffers(roles, 1, n_tensors, numel, esize, &total));
    fo_scale_consts k = {inv_scale};
    fo_call call = {.n_tensors = n_tensors, .numel = numel, .buf = {grads}, .consts = &k};
    double *out;
    size_t nb;
    CHECK(blocks(&call, total, fo_kernels()->unscale[d], 1, &out, &nb));
    for (size_t b = 0; b < nb; b++)
        if (out[b] != 0) *found_inf = 1.0f;
    free(out);
    return FASTOPT_OK;
}

fastopt_status fastopt_elastic_net_grad(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *grads,
                                        const void *const *params, double l1, double l2)
{
    REQUIRE(in_range(l1, 0, INFINITY, 1), "l1 must be a finite number >= 0, got %g", l1);
    REQUIRE(in_range(l2, 0, INFINITY, 1), "l2 must be a finite number >= 0, got %g", l2);
    fo_elastic_consts k = {l1, l2};
    const fo_role roles[] = {{"grads", grads, 1, FO_KIND_PARAMS, 0}, {"params", READ(params), 0, FO_KIND_PARAMS, 0}};
    return run_grads(dtype, n_tensors, numel, roles, 2, fo_kernels()->elastic_net, &k);
}

/* ---- dropout and the losses ---- */

static fastopt_status check_reduction(fastopt_reduction reduction)
{
    if (reduction != FASTOPT_MEAN && reduction != FASTOPT_SUM)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "reduction must be FASTOPT_MEAN or FASTOPT_SUM, got %d", (int)reduction);
    return FASTOPT_OK;
}

/* An output that is its input (in place) is checked once, as the output. */
#define INPUT_UNLESS_SAME(name, in, out) ((const void *)(in) == (const void *)(out) ? NULL : (name))

fastopt_status fastopt_dropout(fastopt_dtype dtype, size_t n, const void *x, void *y, uint8_t *mask, double p,
                               uint64_t seed, uint64_t counter)
{
    REQUIRE(in_range(p, 0, 1, 0), "p must be in [0, 1], got %g", p);
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 1, 0, 4}; /* the mask: one byte an element */
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    void *mask_buffer = mask;
    const fo_role roles[] = {{"y", &y, 1, FO_KIND_PARAMS, 0},
                             {INPUT_UNLESS_SAME("x", x, y), (void *const *)&x, 0, FO_KIND_PARAMS, 0},
                             {mask ? "mask" : NULL, &mask_buffer, 1, FO_KIND_STATE, 0}};
    CHECK(check_buffers(roles, 3, 1, &n, esize, &total));
    double threshold = nearbyint(ldexp(p, 32));
    fo_dropout_consts k = {.scale = p < 1 ? 1 / (1 - p) : 0, .keep_any = p < 1, .seed = seed, .counter = counter,
                           .threshold = threshold > 4294967295.0 ? 4294967295u : (uint32_t)threshold};
    fo_call call = {.n_tensors = 1, .numel = &n, .buf = {&y, (void *const *)&x, mask ? &mask_buffer : NULL}, .consts = &k};
    fo_parallel_for(&call, total, fo_kernels()->dropout[d]);
    return FASTOPT_OK;
}

fastopt_status fastopt_mse_grad(fastopt_dtype dtype, size_t n, const void *pred, const void *target, void *grad,
                                fastopt_reduction reduction, double *loss)
{
    if (!loss) return fo_fail(FASTOPT_ERR_NULL_POINTER, "loss is NULL");
    CHECK(check_reduction(reduction));
    int d = 0;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    const fo_role roles[] = {{"grad", &grad, 1, FO_KIND_PARAMS, 0},
                             {INPUT_UNLESS_SAME("pred", pred, grad), (void *const *)&pred, 0, FO_KIND_PARAMS, 0},
                             {INPUT_UNLESS_SAME("target", target, grad), (void *const *)&target, 0, FO_KIND_PARAMS, 0}};
    CHECK(check_buffers(roles, 3, 1, &n, esize, &total));
    fo_scale_consts k = {reduction == FASTOPT_MEAN ? 2.0 / (double)n : 2.0};
    fo_call call = {.n_tensors = 1, .numel = &n, .buf = {&grad, (void *const *)&pred, (void *const *)&target}, .consts = &k};
    double *out;
    size_t nb;
    CHECK(blocks(&call, total, fo_kernels()->mse[d], 1, &out, &nb));
    double sum = 0;
    for (size_t b = 0; b < nb; b++) sum += out[b];
    free(out);
    *loss = reduction == FASTOPT_MEAN ? sum / (double)n : sum; /* (n = 0: NaN, as torch's mean of nothing) */
    return FASTOPT_OK;
}

fastopt_status fastopt_check_labels(size_t rows, size_t classes, const int64_t *labels, int64_t ignore_index,
                                    size_t *counted)
{
    if (!counted) return fo_fail(FASTOPT_ERR_NULL_POINTER, "counted is NULL");
    if (rows && !labels) return fo_fail(FASTOPT_ERR_NULL_POINTER, "labels is NULL");
    size_t n = 0;
    for (size_t r = 0; r < rows; r++) {
        if (labels[r] == ignore_index) continue;
        if (labels[r] < 0 || (uint64_t)labels[r] >= classes)
            return fo_fail(FASTOPT_ERR_ARGUMENT, "labels[%zu] is %lld, outside [0, %zu) and not ignore_index (%lld)",
                           r, (long long)labels[r], classes, (long long)ignore_index);
        n++;
    }
    *counted = n;
    return FASTOPT_OK;
}

fastopt_status fastopt_softmax_cross_entropy(fastopt_dtype dtype, size_t rows, size_t classes, const void *logits,
                                             const int64_t *labels, void *grad, double label_smoothing,
                                             int64_t ignore_index, fastopt_reduction reduction, double *loss)
{
    if (!loss) return fo_fail(FASTOPT_ERR_NULL_POINTER, "loss is NULL");
    CHECK(check_reduction(reduction));
    REQUIRE(in_range(label_smoothing, 0, 1, 0), "label_smoothing must be in [0, 1], got %g", label_smoothing);
    if (rows && !classes) return fo_fail(FASTOPT_ERR_ARGUMENT, "classes must be >= 1, got 0");
    int d = 0;
    size_t total, n = 0, esize[4] = {dtype_size(dtype, &d), sizeof *labels, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    if (rows && classes > SIZE_MAX / 8 / rows)
        return fo_fail(FASTOPT_ERR_SIZE, "rows * classes overflows (%zu x %zu)", rows, classes);
    n = rows * classes;
    void *label_buffer = (void *)labels;
    const fo_role roles[] = {{"grad", &grad, 1, FO_KIND_PARAMS, 0},
                             {INPUT_UNLESS_SAME("logits", logits, grad), (void *const *)&logits, 0, FO_KIND_PARAMS, 0}};
    CHECK(check_buffers(roles, 2, 1, &n, esize, &total));
    const fo_role label_role[] = {{"labels", &label_buffer, 0, FO_KIND_STATE, 0}};
    CHECK(check_buffers(label_role, 1, 1, &rows, esize, &total));
    uintptr_t g_lo = (uintptr_t)grad, g_hi = g_lo + n * esize[0], l_lo = (uintptr_t)labels, l_hi = l_lo + rows * sizeof *labels;
    if (rows && n && g_lo < l_hi && l_lo < g_hi) return fo_fail(FASTOPT_ERR_OVERLAP, "grad overlaps labels");
    size_t counted;
    CHECK(fastopt_check_labels(rows, classes, labels, ignore_index, &counted)); /* before anything is written */
    double *row_loss = malloc((rows ? rows : 1) * sizeof *row_loss);
    if (!row_loss) return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate %zu row losses", rows);
    /* a mean over no counted rows: torch's 0 / 0, a NaN loss (every row ignored: zero gradients) */
    fo_xent_consts k = {.classes = classes, .label_smoothing = label_smoothing, .ignore_index = ignore_index,
                        .grad_mul = reduction == FASTOPT_MEAN ? 1 / (double)counted : 1};
    fo_call call = {.n_tensors = 1, .numel = &rows, .consts = &k,
                    .buf = {&grad, (void *const *)&logits, (void *const *)&label_buffer, (void *const *)&row_loss}};
    fo_parallel_rows(&call, rows, classes, fo_kernels()->xent_rows[d]);
    double lanes[FO_LANES] = {0};
    for (size_t r = 0; r < rows; r++) lanes[r % FO_LANES] += row_loss[r];
    free(row_loss);
    double sum = fo_sum_lanes(lanes);
    *loss = reduction == FASTOPT_MEAN ? sum / (double)counted : sum;
    return FASTOPT_OK;
}

/* ---- LAMB: clip by the global norm, moments and norms per tensor, then the weights ---- */

static void lamb_at_step(void *kv, const void *ov, size_t t, int64_t step)
{
    fo_lamb_consts *k = kv;
    const fastopt_lamb_options *o = ov;
    (void)t;
    k->inv_bias_correction1 = 1.0 / (1.0 - pow(o->beta1, (double)step));
    k->inv_bias_correction2 = 1.0 / (1.0 - pow(o->beta2, (double)step));
    k->has_wd = k->c.weight_decay != 0;
    k->trust = k->has_wd || k->use_nvlamb;
}

/* The GPU's LAMB kernels read the moments' constants, weight decay and its flag, l1_prox's
 * threshold and flag, -lr, whether the trust ratio applies, and the gradients' factor. */
static void lamb_row(const void *kv, double *row)
{
    const fo_lamb_consts *k = kv;
    row[0] = k->one_minus_beta1, row[1] = k->beta2, row[2] = k->one_minus_beta2, row[3] = k->eps;
    row[4] = k->inv_bias_correction1, row[5] = k->inv_bias_correction2, row[6] = k->c.weight_decay, row[7] = k->has_wd;
    row[8] = k->c.prox_threshold, row[9] = k->c.prox_threshold != 0, row[10] = -k->c.lr, row[11] = k->trust;
    row[12] = k->c.grad_mul;
}

fastopt_status fastopt_lamb(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, void *const *params,
                            const void *const *grads, void *const *exp_avgs, void *const *exp_avg_sqs,
                            const fastopt_lamb_options *o)
{
    NEED_OPTIONS(o);
    fo_lamb_consts k = {.one_minus_beta1 = 1.0 - o->beta1, .beta2 = o->beta2, .one_minus_beta2 = 1.0 - o->beta2,
                        .eps = o->eps, .use_nvlamb = !!o->use_nvlamb};
    CHECK(common_consts(&o->common, FO_WD_OWN, &k.c)); /* the decay is part of u, scaled by the trust ratio */
    CHECK(check_betas(o->beta1, o->beta2, 0));
    CHECK(check_eps_step(&o->common, n_tensors, o->eps, o->step));
    REQUIRE(in_range(o->max_grad_norm, 0, INFINITY, 1), "max_grad_norm must be a finite number >= 0, got %g", o->max_grad_norm);
    REQUIRE(o->phase >= FASTOPT_LAMB_WHOLE && o->phase <= FASTOPT_LAMB_APPLY, "phase must be FASTOPT_LAMB_WHOLE, "
            "FASTOPT_LAMB_MOMENTS or FASTOPT_LAMB_APPLY, got %d", o->phase);
    REQUIRE(o->phase == FASTOPT_LAMB_WHOLE || (o->max_grad_norm == 0 && o->sums),
            "a phased LAMB step (phase %d) needs sums and max_grad_norm == 0 (clip through grad_scale)", o->phase);
    k.clip_grad_mul = k.c.grad_mul;
    double *ratio = calloc(n_tensors ? n_tensors : 1, sizeof *ratio), *sums;
    if (!ratio) return fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate %zu trust ratios", n_tensors);
    k.neg_lr_ratio = ratio; /* filled between the passes */
    fo_consts_list consts;
    fastopt_status s = step_consts(&consts, &k, sizeof k, n_tensors, &o->common, o->step, NULL, lamb_at_step, o,
                                   lamb_row);
    if (s) return free(ratio), s;
    const fo_role roles[] = {ROLE_PARAMS(params), ROLE_GRADS(grads),
                             ROLE_STATE("exp_avgs", exp_avgs), ROLE_NONNEGATIVE("exp_avg_sqs", exp_avg_sqs)};
    fo_role all[FO_MAX_ROLES];
    fo_call call;
    int combo, go, d = 0;
    size_t total, nb;
    s = open_optimizer(dtype, n_tensors, numel, roles, 4, &consts, &o->common, all, &call, &combo, &total, &go);
    if (s || !go) return free(ratio), free(consts.owned), s;
    dtype_size(dtype, &d);
    if (o->max_grad_norm > 0) { /* apex: g / max(1, ||g|| / max_grad_norm), over all tensors */
        fo_call grads_call = {.n_tensors = n_tensors, .numel = numel, .buf = {READ(grads)}};
        double norm;
        s = norm_of(&grads_call, total, d, 2.0, &norm);
        if (s) return free(ratio), free(consts.owned), s;
        norm *= fabs(k.c.grad_mul);
        /* the same factor in every tensor's constants (k itself, or its per-tensor copies, which are ours) */
        for (size_t t = 0; norm > o->max_grad_norm && t < (consts.stride ? n_tensors : 1); t++)
            ((fo_lamb_consts *)((char *)consts.k + t * consts.stride))->clip_grad_mul =
                k.c.grad_mul / (norm / o->max_grad_norm);
    }
    /* each tensor's sums of squares of p and of u: the caller's (a phased step), or ours */
    double *own_sums = o->phase ? NULL : calloc(2 * (n_tensors ? n_tensors : 1), sizeof *own_sums);
    double *tensor_sums = o->phase ? o->sums : own_sums;
    if (!tensor_sums)
        return free(ratio), free(consts.owned), fo_fail(FASTOPT_ERR_OUT_OF_MEMORY, "cannot allocate %zu norms", n_tensors);
    if (o->phase != FASTOPT_LAMB_APPLY) {
        s = blocks(&call, total, fo_kernels()->lamb_moments[combo], 2, &sums, &nb);
        if (s) return free(ratio), free(consts.owned), free(own_sums), s;
        for (size_t t_i = 0, b = 0; t_i < n_tensors; t_i++) { /* a tensor's blocks are consecutive */
            double p2 = 0, u2 = 0;
            for (size_t end = b + fo_blocks_of(numel[t_i]); b < end; b++) p2 += sums[2 * b], u2 += sums[2 * b + 1];
            tensor_sums[2 * t_i] = p2, tensor_sums[2 * t_i + 1] = u2;
        }
        free(sums);
        if (o->phase == FASTOPT_LAMB_MOMENTS) return free(ratio), free(consts.owned), FASTOPT_OK;
    }
    for (size_t t_i = 0; t_i < n_tensors; t_i++) {
        double p_norm = sqrt(tensor_sums[2 * t_i]), u_norm = sqrt(tensor_sums[2 * t_i + 1]);
        const fo_lamb_consts *kt = (const fo_lamb_consts *)((const char *)consts.k + t_i * consts.stride);
        int trust = kt->trust && p_norm > 0 && u_norm > 0;
        ratio[t_i] = -kt->c.lr * (trust ? p_norm / u_norm : 1.0);
    }
    free(own_sums);
    call.buf[1] = NULL; /* the weights' pass reads no grads: none to prefetch */
    fo_parallel_for(&call, total, fo_kernels()->lamb_apply[combo]);
    free(ratio);
    free(consts.owned);
    return FASTOPT_OK;
}

/* ---- checking alone ---- */

fastopt_status fastopt_check_buffers(fastopt_dtype dtype, size_t n_tensors, const size_t *numel, size_t n_roles,
                                     const char *const *names, void *const *const *lists, const int *written)
{
    int d;
    size_t total, esize[4] = {dtype_size(dtype, &d), 0, 0, 4};
    if (!esize[0]) return FASTOPT_ERR_DTYPE;
    if (n_roles > FO_MAX_ROLES) return fo_fail(FASTOPT_ERR_ARGUMENT, "n_roles must be <= %d, got %zu", FO_MAX_ROLES, n_roles);
    if (n_roles && (!names || !lists || !written)) return fo_fail(FASTOPT_ERR_NULL_POINTER, "names, lists or written is NULL");
    fo_role roles[FO_MAX_ROLES];
    for (size_t r = 0; r < n_roles; r++) roles[r] = (fo_role){names[r], lists[r], !!written[r], FO_KIND_PARAMS, 0};
    return check_buffers(roles, n_roles, n_tensors, numel, esize, &total);
}

/* ---- the roofline probe ---- */

fastopt_status fastopt_stream(fastopt_dtype dtype, size_t n, const void *in, size_t n_inout, void *const *inout)
{
    if (n_inout < 1 || n_inout > 5) return fo_fail(FASTOPT_ERR_ARGUMENT, "n_inout must be in [1, 5], got %zu", n_inout);
    if (!inout) return fo_fail(FASTOPT_ERR_NULL_POINTER, "inout is NULL");
    fo_role roles[6] = {{"in", (void *const *)&in, 0, FO_KIND_PARAMS, 0}};
    for (size_t j = 0; j < n_inout; j++) roles[1 + j] = (fo_role){"inout", &inout[j], 1, FO_KIND_PARAMS, 0};
    fo_stream_consts k = {1, n_inout};
    return run_grads(dtype, 1, &n, roles, 1 + n_inout, fo_kernels()->stream, &k);
}
