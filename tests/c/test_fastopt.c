/* C tests of the public API: every kernel against a scalar C reference (double precision, plain
 * loops), at every SIMD level, float and double, over a list of tensors of awkward sizes; every
 * status code, with nothing written; the thread-partition arithmetic near 2^31 and 2^32; AdamW
 * with 8-bit state. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastopt.h"
#include "fastopt_internal.h" /* fo_part_begin */
#include "kernels/storage.h"  /* fo_philox4 */

static int failures;
#define EXPECT(cond, ...) \
    do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

enum { N_TENSORS = 5, MAX_ROLES = 5 };
static const size_t SIZES[N_TENSORS] = {0, 1, 7, 33, 70001};

/* Roles of a test case, each a list of N_TENSORS buffers, in double (reference) and the tested type. */
typedef struct bufs {
    double *ref[MAX_ROLES][N_TENSORS];
    void *got[MAX_ROLES][N_TENSORS];
} bufs;

static double value(unsigned *seed, int positive)
{
    *seed = *seed * 1664525u + 1013904223u;
    double x = ((*seed >> 8) / 16777216.0 - 0.5) * 4;
    return positive ? fabs(x) + 0.01 : x;
}

static void make(bufs *b, int roles, fastopt_dtype dtype, unsigned seed, int positive_from)
{
    for (int r = 0; r < roles; r++)
        for (int t = 0; t < N_TENSORS; t++) {
            size_t n = SIZES[t];
            b->ref[r][t] = malloc((n + 1) * sizeof(double));
            b->got[r][t] = malloc((n + 1) * sizeof(double));
            for (size_t i = 0; i < n; i++) {
                double x = value(&seed, r >= positive_from);
                if (dtype == FASTOPT_FLOAT32) x = (float)x, ((float *)b->got[r][t])[i] = (float)x;
                else ((double *)b->got[r][t])[i] = x;
                b->ref[r][t][i] = x;
            }
        }
}

static double got_at(const bufs *b, int r, int t, size_t i, fastopt_dtype dtype)
{
    return dtype == FASTOPT_FLOAT32 ? ((float *)b->got[r][t])[i] : ((double *)b->got[r][t])[i];
}

/* Every element of roles [0, written) agrees with the reference: float to 1e-5, double to 1e-12,
 * relative to the operands' magnitude (~1: results near zero come from cancellation). */
static void compare(const char *what, const bufs *b, int written, fastopt_dtype dtype)
{
    double tol = dtype == FASTOPT_FLOAT32 ? 1e-5 : 1e-12;
    for (int r = 0; r < written; r++)
        for (int t = 0; t < N_TENSORS; t++)
            for (size_t i = 0; i < SIZES[t]; i++) {
                double want = b->ref[r][t][i], have = got_at(b, r, t, i, dtype);
                if (!(fabs(have - want) <= tol * (fabs(want) + 1.0))) {
                    EXPECT(0, "%s (%s, %s): role %d tensor %d [%zu]: %.17g, want %.17g", what, fastopt_isa(),
                           dtype == FASTOPT_FLOAT32 ? "float" : "double", r, t, i, have, want);
                    return;
                }
            }
}

static void release(bufs *b, int roles)
{
    for (int r = 0; r < roles; r++)
        for (int t = 0; t < N_TENSORS; t++) free(b->ref[r][t]), free(b->got[r][t]);
}

#define LIST(b, r) ((void *const *)(b).got[r])
#define ELEMENTS(b) for (int t = 0; t < N_TENSORS; t++) for (size_t i = 0; i < SIZES[t]; i++)
#define R(role) b.ref[role][t][i]

/* ---- each kernel against its scalar reference ---- */

static void test_sgd(fastopt_dtype d)
{
    bufs b;
    make(&b, 3, d, 1, 99);
    fastopt_sgd_options o = {.common = {.lr = 0.1, .weight_decay = 0.01}, .momentum = 0.9, .nesterov = 1};
    EXPECT(fastopt_sgd(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), &o) == FASTOPT_OK, "sgd");
    ELEMENTS(b) {
        double g = R(1) + 0.01 * R(0);
        R(2) = 0.9 * R(2) + g;
        R(0) -= 0.1 * (g + 0.9 * R(2));
    }
    compare("sgd", &b, 3, d);
    release(&b, 3);
}

/* per_tensor: each tensor at its own step (fastopt_common.steps), as torch counts steps per param */
static void test_adam(fastopt_dtype d, int decoupled, int per_tensor)
{
    static const int64_t steps[N_TENSORS] = {3, 1, 7, 3, 12};
    bufs b;
    make(&b, 5, d, 2, 3);
    fastopt_adam_options o = {.common = {.lr = 1e-2, .weight_decay = 0.1, .maximize = 1}, .beta1 = 0.9, .beta2 = 0.999,
                              .eps = 1e-8, .step = 3, .amsgrad = 1, .decoupled_weight_decay = decoupled};
    if (per_tensor) o.common.steps = steps, o.step = 0; /* the options' step is not read */
    EXPECT(fastopt_adam(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), LIST(b, 3),
                        LIST(b, 4), &o) == FASTOPT_OK, "adam");
    ELEMENTS(b) {
        double step = per_tensor ? (double)steps[t] : 3, bc1 = 1 - pow(0.9, step), bc2 = 1 - pow(0.999, step);
        double g = -R(1);  /* maximize */
        if (decoupled) R(0) *= 1 - 1e-2 * 0.1;
        else g += 0.1 * R(0);
        R(2) = 0.9 * R(2) + 0.1 * g;
        R(3) = 0.999 * R(3) + 0.001 * g * g;
        R(4) = fmax(R(4), R(3));
        R(0) -= 1e-2 / bc1 * R(2) / (sqrt(R(4)) / sqrt(bc2) + 1e-8);
    }
    compare(per_tensor ? "adam at per-tensor steps" : decoupled ? "adamw" : "adam", &b, 5, d);
    release(&b, 5);
}

static void test_rmsprop(fastopt_dtype d)
{
    bufs b;
    make(&b, 5, d, 3, 2);
    for (int t = 0; t < N_TENSORS; t++) /* square average above the squared mean */
        for (size_t i = 0; i < SIZES[t]; i++) {
            double s = b.ref[2][t][i] + b.ref[3][t][i] * b.ref[3][t][i];
            b.ref[2][t][i] = d == FASTOPT_FLOAT32 ? (float)s : s;
            if (d == FASTOPT_FLOAT32) ((float *)b.got[2][t])[i] = (float)s;
            else ((double *)b.got[2][t])[i] = s;
        }
    fastopt_rmsprop_options o = {.common = {.lr = 1e-2}, .alpha = 0.9, .eps = 1e-8, .momentum = 0.5, .centered = 1};
    EXPECT(fastopt_rmsprop(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), LIST(b, 3),
                           LIST(b, 4), &o) == FASTOPT_OK, "rmsprop");
    ELEMENTS(b) {
        double g = R(1);
        R(2) = 0.9 * R(2) + 0.1 * g * g;
        R(3) = 0.9 * R(3) + 0.1 * g;
        R(4) = 0.5 * R(4) + g / (sqrt(R(2) - R(3) * R(3)) + 1e-8);
        R(0) -= 1e-2 * R(4);
    }
    compare("rmsprop", &b, 5, d);
    release(&b, 5);
}

static void test_adagrad(fastopt_dtype d)
{
    bufs b;
    make(&b, 3, d, 4, 2);
    fastopt_adagrad_options o = {.common = {.lr = 0.1, .weight_decay = 0.01, .l1_prox = 0.001}, .lr_decay = 0.05,
                                 .eps = 1e-10, .step = 4};
    EXPECT(fastopt_adagrad(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), &o) == FASTOPT_OK, "adagrad");
    ELEMENTS(b) {
        double g = R(1) + 0.01 * R(0), p;
        R(2) += g * g;
        p = R(0) - 0.1 / (1 + 3 * 0.05) * g / (sqrt(R(2)) + 1e-10);
        R(0) = copysign(fmax(fabs(p) - 0.1 * 0.001, 0), p); /* l1_prox */
    }
    compare("adagrad", &b, 3, d);
    release(&b, 3);
}

static void test_nadam_radam(fastopt_dtype d)
{
    for (int which = 0; which < 2; which++) {
        bufs b;
        make(&b, 4, d, 5 + which, 3);
        int64_t step = 9;
        double lr = 2e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, mu_prev = 0.4;
        fastopt_status s;
        if (which == 0) {
            fastopt_nadam_options o = {.common = {.lr = lr}, .beta1 = b1, .beta2 = b2, .eps = eps, .momentum_decay = 4e-3,
                                       .mu_product = mu_prev, .step = step};
            s = fastopt_nadam(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), LIST(b, 3), &o);
        } else {
            fastopt_radam_options o = {.common = {.lr = lr}, .beta1 = b1, .beta2 = b2, .eps = eps, .step = step};
            s = fastopt_radam(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), LIST(b, 3), &o);
        }
        EXPECT(s == FASTOPT_OK, "nadam/radam");
        double mu = b1 * (1 - 0.5 * pow(0.96, step * 4e-3)), mu_next = b1 * (1 - 0.5 * pow(0.96, (step + 1) * 4e-3));
        double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step), rho_inf = 2 / (1 - b2) - 1;
        double rho = rho_inf - 2 * step * pow(b2, step) / bc2;
        double rect = sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho));
        ELEMENTS(b) {
            double g = R(1);
            R(2) = b1 * R(2) + (1 - b1) * g;
            R(3) = b2 * R(3) + (1 - b2) * g * g;
            if (which == 0) {
                double den = sqrt(R(3) / bc2) + eps;
                R(0) -= lr * (1 - mu) / (1 - mu_prev * mu) * g / den + lr * mu_next / (1 - mu_prev * mu * mu_next) * R(2) / den;
            } else {
                R(0) -= lr * R(2) / bc1 * sqrt(bc2) / (sqrt(R(3)) + eps) * rect;
            }
        }
        compare(which == 0 ? "nadam" : "radam", &b, 4, d);
        release(&b, 4);
    }
}

static void test_lion(fastopt_dtype d)
{
    bufs b;
    make(&b, 3, d, 7, 99);
    fastopt_lion_options o = {.common = {.lr = 1e-3, .weight_decay = 0.1}, .beta1 = 0.9, .beta2 = 0.99};
    EXPECT(fastopt_lion(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), &o) == FASTOPT_OK, "lion");
    ELEMENTS(b) {
        double c = 0.1 * R(1) + 0.9 * R(2);
        R(0) -= 1e-3 * ((c > 0) - (c < 0) + 0.1 * R(0));
        R(2) = 0.01 * R(1) + 0.99 * R(2);
    }
    compare("lion", &b, 3, d);
    release(&b, 3);
}

static void test_lamb(fastopt_dtype d)
{
    bufs b;
    make(&b, 4, d, 8, 3);
    fastopt_lamb_options o = {.common = {.lr = 1e-2, .weight_decay = 0.01}, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6,
                              .max_grad_norm = 1.0, .step = 2};
    EXPECT(fastopt_lamb(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), LIST(b, 2), LIST(b, 3), &o) == FASTOPT_OK, "lamb");
    double gnorm = 0, bc1 = 1 - 0.9 * 0.9, bc2 = 1 - 0.999 * 0.999;
    ELEMENTS(b) gnorm += R(1) * R(1);
    double clip = sqrt(gnorm) > 1.0 ? sqrt(gnorm) : 1.0;
    for (int t = 0; t < N_TENSORS; t++) {
        double p2 = 0, u2 = 0, *u = malloc((SIZES[t] + 1) * sizeof *u);
        for (size_t i = 0; i < SIZES[t]; i++) {
            double g = R(1) / clip;
            R(2) = 0.9 * R(2) + 0.1 * g;
            R(3) = 0.999 * R(3) + 0.001 * g * g;
            u[i] = (R(2) / bc1) / (sqrt(R(3) / bc2) + 1e-6) + 0.01 * R(0);
            p2 += R(0) * R(0), u2 += u[i] * u[i];
        }
        double ratio = p2 > 0 && u2 > 0 ? sqrt(p2) / sqrt(u2) : 1;
        for (size_t i = 0; i < SIZES[t]; i++) R(0) -= 1e-2 * ratio * u[i];
        free(u);
    }
    compare("lamb", &b, 4, d);
    release(&b, 4);
}

/* AdamW with 8-bit state (float32 params): the params are the reference step from the dequantized
 * state; each block's new scale is its largest |state|, and each code that of the nearest code
 * value but within float32 rounding of a midpoint. */
static void test_adamw_quant8(void)
{
    enum { BLOCK = 256 };
    float code[2][256]; /* of state j: exp_avg's signed code, exp_avg_sq's unsigned one */
    fastopt_quant8_code(1, code[0]), fastopt_quant8_code(0, code[1]);
    for (int c = 1; c < 256; c++) EXPECT(code[0][c - 1] < code[0][c] && code[1][c - 1] < code[1][c], "code ascends at %d", c);
    EXPECT(code[0][127] == 0 && code[0][255] == 1 && code[1][0] == 0 && code[1][255] == 1, "0 and 1 in the codes");
    unsigned seed = 11;
    void *p[N_TENSORS], *g[N_TENSORS], *codes[2][N_TENSORS], *scales[2][N_TENSORS];
    double *want[3][N_TENSORS]; /* params, exp_avg, exp_avg_sq after the step */
    double bc1 = 1 - pow(0.9, 2), bc2 = 1 - pow(0.999, 2), lr = 1e-2, wd = 0.1;
    for (int t = 0; t < N_TENSORS; t++) {
        size_t n = SIZES[t], blocks = (n + BLOCK - 1) / BLOCK;
        p[t] = malloc((n + 1) * 4), g[t] = malloc((n + 1) * 4);
        for (int j = 0; j < 3; j++) want[j][t] = malloc((n + 1) * sizeof(double));
        for (int j = 0; j < 2; j++) {
            codes[j][t] = malloc(n + 1), scales[j][t] = malloc((blocks + 1) * 4);
            for (size_t k = 0; k < blocks; k++) ((float *)scales[j][t])[k] = (float)fabs(value(&seed, 1));
        }
        for (size_t i = 0; i < n; i++) {
            float pi = (float)value(&seed, 0), gi = (float)value(&seed, 0);
            ((float *)p[t])[i] = pi, ((float *)g[t])[i] = gi;
            double m = 0, v = 0;
            for (int j = 0; j < 2; j++) {
                uint8_t c = (uint8_t)(value(&seed, 1) * 100);
                ((uint8_t *)codes[j][t])[i] = c;
                double state = (float)(((float *)scales[j][t])[i / BLOCK] * code[j][c]);
                if (j == 0) m = state; else v = state;
            }
            m = 0.9 * m + 0.1 * gi, v = 0.999 * v + 0.001 * (double)gi * gi;
            want[0][t][i] = pi * (1 - lr * wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + 1e-8);
            want[1][t][i] = m, want[2][t][i] = v;
        }
    }
    fastopt_adam_options o = {.common = {.lr = lr, .weight_decay = wd, .state_dtype = FASTOPT_QUANT8, .quant_block = BLOCK,
                                         .absmax = {(void *const *)scales[0], (void *const *)scales[1]}},
                              .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 2, .decoupled_weight_decay = 1};
    EXPECT(fastopt_adam(FASTOPT_FLOAT32, N_TENSORS, SIZES, p, (const void *const *)g, codes[0], codes[1], NULL, &o) == FASTOPT_OK,
           "adamw with 8-bit state: %s", fastopt_last_error());
    for (int t = 0; t < N_TENSORS; t++) {
        for (size_t i = 0; i < SIZES[t]; i++)
            if (!(fabs(((float *)p[t])[i] - want[0][t][i]) <= 1e-5 * (fabs(want[0][t][i]) + 1))) {
                EXPECT(0, "8-bit adamw (%s): params[%d][%zu] = %.9g, want %.9g", fastopt_isa(), t, i, ((float *)p[t])[i], want[0][t][i]);
                break;
            }
        for (int j = 0; j < 2; j++) {
            const float *v = code[j];
            int ok = 1;
            for (size_t at = 0; at < SIZES[t] && ok; at += BLOCK) {
                size_t end = at + BLOCK < SIZES[t] ? at + BLOCK : SIZES[t];
                double big = 0, scale = ((float *)scales[j][t])[at / BLOCK];
                for (size_t i = at; i < end; i++) big = fmax(big, fabs(want[1 + j][t][i]));
                for (size_t i = at; i < end && ok; i++) {
                    double x = want[1 + j][t][i] / scale, tol = 1e-5 * fabs(x) + 1e-6;
                    int c = ((uint8_t *)codes[j][t])[i];
                    ok = fabs(scale - big) <= 1e-5 * big && (c == 0 || x >= (v[c - 1] + v[c]) / 2 - tol) &&
                         (c == 255 || x <= (v[c] + v[c + 1]) / 2 + tol);
                    EXPECT(ok, "8-bit adamw (%s): state %d [%d][%zu]: code %d (%.9g) for %.9g, scale %.9g want %.9g",
                           fastopt_isa(), j, t, i, c, v[c], x, scale, big);
                }
            }
        }
    }
    for (int t = 0; t < N_TENSORS; t++) {
        free(p[t]), free(g[t]);
        for (int j = 0; j < 3; j++) free(want[j][t]);
        for (int j = 0; j < 2; j++) free(codes[j][t]), free(scales[j][t]);
    }
}

static void test_gradients(fastopt_dtype d)
{
    bufs b;
    make(&b, 2, d, 9, 99);
    EXPECT(fastopt_elastic_net_grad(d, N_TENSORS, SIZES, LIST(b, 0), (const void *const *)LIST(b, 1), 0.1, 0.01) == FASTOPT_OK, "elastic");
    ELEMENTS(b) R(0) += 0.01 * R(1) + 0.1 * ((R(1) > 0) - (R(1) < 0));
    compare("elastic_net_grad", &b, 1, d);

    double norm = -1, want = 0, amax = 0; /* of the values passed in (float-rounded for float) */
    ELEMENTS(b) {
        double x = got_at(&b, 0, t, i, d);
        want += x * x, amax = fmax(amax, fabs(x));
    }
    EXPECT(fastopt_global_norm(d, N_TENSORS, SIZES, (const void *const *)LIST(b, 0), 2.0, &norm) == FASTOPT_OK, "norm");
    EXPECT(fabs(norm - sqrt(want)) <= 1e-12 * sqrt(want), "global_norm %.17g, want %.17g", norm, sqrt(want));
    EXPECT(fastopt_global_norm(d, N_TENSORS, SIZES, (const void *const *)LIST(b, 0), INFINITY, &norm) == FASTOPT_OK && norm == amax,
           "inf norm %.17g, want %.17g", norm, amax);

    EXPECT(fastopt_clip_grad_norm(d, N_TENSORS, SIZES, LIST(b, 0), 1.0, 2.0, &norm) == FASTOPT_OK, "clip");
    ELEMENTS(b) R(0) *= 1.0 / (sqrt(want) + 1e-6);
    compare("clip_grad_norm", &b, 1, d);

    float found = 0;
    EXPECT(fastopt_unscale(d, N_TENSORS, SIZES, LIST(b, 0), 0.5, &found) == FASTOPT_OK && found == 0, "unscale");
    ELEMENTS(b) R(0) *= 0.5;
    compare("unscale", &b, 1, d);
    if (d == FASTOPT_FLOAT64) ((double *)b.got[0][4])[123] = NAN;
    else ((float *)b.got[0][4])[123] = NAN;
    EXPECT(fastopt_unscale(d, N_TENSORS, SIZES, LIST(b, 0), 1.0, &found) == FASTOPT_OK && found == 1, "unscale found no NaN");
    release(&b, 2);
}

/* ---- dropout and the losses (float32): known answers, in place, errors writing nothing ---- */

static void test_training(void)
{
    enum { N = 5000 };
    static float x[N], y[N], z[N];
    static uint8_t mask[N];
    for (int i = 0; i < N; i++) x[i] = (float)(i % 7) - 3.0f;
    EXPECT(fastopt_dropout(FASTOPT_FLOAT32, N, x, y, mask, 0.25, 42, 7) == FASTOPT_OK, "dropout");
    size_t kept = 0;
    for (int i = 0; i < N; i++) {
        kept += mask[i];
        EXPECT(y[i] == (mask[i] ? x[i] * (float)(1 / 0.75) : x[i] * 0.0f), "dropout [%d]", i);
    }
    EXPECT(kept > N * 0.70 && kept < N * 0.80, "dropout kept %zu of %d", kept, N);
    memcpy(z, x, sizeof x); /* in place: the same bits */
    EXPECT(fastopt_dropout(FASTOPT_FLOAT32, N, z, z, NULL, 0.25, 42, 7) == FASTOPT_OK && memcmp(z, y, sizeof y) == 0,
           "dropout in place");
    EXPECT(fastopt_dropout(FASTOPT_FLOAT32, N, x, y, NULL, 1.5, 42, 7) == FASTOPT_ERR_HYPERPARAMETER && memcmp(z, y, sizeof y) == 0,
           "dropout p > 1 writes nothing");

    float pred[4] = {1, 2, 3, 4}, target[4] = {0, 2, 5, 4}, grad[4];
    double loss = 0;
    EXPECT(fastopt_mse_grad(FASTOPT_FLOAT32, 4, pred, target, grad, FASTOPT_MEAN, &loss) == FASTOPT_OK && loss == 1.25 &&
           grad[0] == 0.5f && grad[1] == 0 && grad[2] == -1.0f && grad[3] == 0, "mse_grad mean: %g", loss);
    EXPECT(fastopt_mse_grad(FASTOPT_FLOAT32, 4, pred, target, grad, FASTOPT_SUM, &loss) == FASTOPT_OK && loss == 5 &&
           grad[2] == -4.0f, "mse_grad sum: %g", loss);
    EXPECT(fastopt_mse_grad(FASTOPT_FLOAT32, 4, pred, target, grad, 2, &loss) == FASTOPT_ERR_ARGUMENT, "mse reduction");

    /* two rows of 3 classes: equal logits (loss ln 3, grad 1/3 - t), and an ignored row */
    float logits[6] = {0, 0, 0, 5, 1, 2}, g[6];
    int64_t labels[2] = {1, -100};
    EXPECT(fastopt_softmax_cross_entropy(FASTOPT_FLOAT32, 2, 3, logits, labels, g, 0.0, -100, FASTOPT_MEAN, &loss) == FASTOPT_OK,
           "xent");
    EXPECT(fabs(loss - log(3.0)) < 1e-7 && fabsf(g[0] - 1.0f / 3) < 1e-7f && fabsf(g[1] + 2.0f / 3) < 1e-7f && g[3] == 0 &&
           g[5] == 0, "xent values: %.9g", loss);
    int64_t bad[2] = {1, 3};
    float before[6];
    memcpy(before, g, sizeof g);
    EXPECT(fastopt_softmax_cross_entropy(FASTOPT_FLOAT32, 2, 3, logits, bad, g, 0.0, -100, FASTOPT_MEAN, &loss) == FASTOPT_ERR_ARGUMENT &&
           memcmp(before, g, sizeof g) == 0, "xent bad label writes nothing");
    EXPECT(fastopt_softmax_cross_entropy(FASTOPT_FLOAT32, 2, 3, logits, labels, g, 1.5, -100, FASTOPT_MEAN, &loss) ==
           FASTOPT_ERR_HYPERPARAMETER, "xent smoothing");
    EXPECT(fastopt_softmax_cross_entropy(FASTOPT_FLOAT32, 2, 3, logits, labels, logits + 1, 0.0, -100, FASTOPT_MEAN, &loss) ==
           FASTOPT_ERR_OVERLAP, "xent overlap");
}

/* ---- every status code, and nothing written ---- */

static void test_status_codes(void)
{
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {1, 1, 1, 1, 1, 1, 1, 1}, m[8] = {0}, v[8] = {0}, before[8];
    memcpy(before, p, sizeof p);
    size_t n = 8, huge[2] = {SIZE_MAX / 2, SIZE_MAX / 2};
    void *P[] = {p}, *M[] = {m}, *V[] = {v}, *NUL[] = {NULL}, *MIS[] = {(char *)p + 1};
    const void *G[] = {g};
    fastopt_adam_options ok = {.common = {.lr = 1e-3}, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 1}, bad = ok;
    bad.beta1 = 1.0;
    const int64_t zero_step[1] = {0};
    fastopt_adam_options bad_steps = ok;
    bad_steps.common.steps = zero_step;
    fastopt_sgd_options sgd_steps = {.common = {.lr = 0.1, .steps = zero_step}};
    struct { const char *what; fastopt_status got, want; } cases[] = {
        {"steps[0] = 0", fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, M, V, NULL, &bad_steps), FASTOPT_ERR_HYPERPARAMETER},
        {"steps to sgd", fastopt_sgd(FASTOPT_FLOAT32, 1, &n, P, G, NULL, &sgd_steps), FASTOPT_ERR_ARGUMENT},
        {"null options", fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, M, V, NULL, NULL), FASTOPT_ERR_NULL_POINTER},
        {"null buffer", fastopt_adam(FASTOPT_FLOAT32, 1, &n, NUL, G, M, V, NULL, &ok), FASTOPT_ERR_NULL_POINTER},
        {"null list", fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, NULL, V, NULL, &ok), FASTOPT_ERR_NULL_POINTER},
        {"dtype", fastopt_adam((fastopt_dtype)42, 1, &n, P, G, M, V, NULL, &ok), FASTOPT_ERR_DTYPE},
        {"beta1 = 1", fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, M, V, NULL, &bad), FASTOPT_ERR_HYPERPARAMETER},
        {"overlap", fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, P, V, NULL, &ok), FASTOPT_ERR_OVERLAP},
        {"alignment", fastopt_adam(FASTOPT_FLOAT32, 1, &n, MIS, G, M, V, NULL, &ok), FASTOPT_ERR_ALIGNMENT},
        {"size", fastopt_adam(FASTOPT_FLOAT32, 2, huge, (void *[]){p, m}, (const void *[]){g, g}, (void *[]){v, v},
                              (void *[]){v, v}, NULL, &ok), FASTOPT_ERR_SIZE},
        {"isa", fastopt_set_isa("sse9"), FASTOPT_ERR_ISA},
        {"threads", fastopt_set_num_threads(0), FASTOPT_ERR_ARGUMENT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        EXPECT(cases[i].got == cases[i].want, "%s: status %d (%s), want %d", cases[i].what, cases[i].got,
               fastopt_status_string(cases[i].got), cases[i].want);
        EXPECT(strlen(fastopt_status_string(cases[i].want)) > 0, "no name for status %d", cases[i].want);
    }
    EXPECT(memcmp(p, before, sizeof p) == 0 && m[0] == 0 && v[0] == 0, "a failing call wrote");
    EXPECT(strstr(fastopt_last_error(), "") != NULL, "last error");
    EXPECT(strcmp(fastopt_status_string(FASTOPT_ERR_OUT_OF_MEMORY), "out of memory") == 0, "status string");
    fastopt_adam_options skip = ok;
    float flag = 1;
    skip.common.found_inf = &flag;
    EXPECT(fastopt_adam(FASTOPT_FLOAT32, 1, &n, P, G, M, V, NULL, &skip) == FASTOPT_OK && memcmp(p, before, sizeof p) == 0,
           "found_inf did not skip");
}

/* ---- Philox-4x32-10: Random123's known answers ---- */

static void test_philox(void)
{
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627E8D5u, 0xE169C58Du, 0xBC57AC4Cu, 0x9B00DBD8u},
        {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0x408F276Du, 0x41C83B0Eu, 0xA20BC7C6u, 0x6D5451FDu},
        {0x243F6A88u, 0x85A308D3u, 0x13198A2Eu, 0x03707344u, 0xA4093822u, 0x299F31D0u,
         0xD16CFE09u, 0x94FDCCEBu, 0x5001E420u, 0x24126EA1u}};
    for (int k = 0; k < 3; k++) {
        uint32_t c[4] = {kat[k][0], kat[k][1], kat[k][2], kat[k][3]};
        fo_philox4(c, kat[k][4], kat[k][5]);
        EXPECT(memcmp(c, kat[k] + 6, sizeof c) == 0, "philox known answer %d", k);
    }
}

/* ---- thread partitions near 2^31 and 2^32 ---- */

static void test_partitions(void)
{
    const size_t totals[] = {((size_t)1 << 31) - 1, (size_t)1 << 31, ((size_t)1 << 32) + 5, ((size_t)1 << 40) + 3, SIZE_MAX};
    for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++)
        for (size_t parts = 1; parts <= 9; parts++) {
            size_t total = totals[k], prev = 0;
            EXPECT(fo_part_begin(total, parts, 0) == 0 && fo_part_begin(total, parts, parts) == total, "ends");
            for (size_t i = 1; i <= parts; i++) {
                size_t b = fo_part_begin(total, parts, i);
                EXPECT(b >= prev && b <= total, "part %zu of %zu of %zu not monotonic", i, parts, total);
                EXPECT(i == parts || b % 64 == 0, "part start %zu not on the grain", b);
                double ideal = (double)total * i / parts;
                EXPECT(i == parts || fabs((double)b - ideal) <= 64 + ideal * 1e-12, "part %zu of %zu far from even", i, parts);
                prev = b;
            }
        }
}

int main(void)
{
    char isas[64];
    snprintf(isas, sizeof isas, "%s", fastopt_isas_available());
    printf("fastopt %s, SIMD levels %s\n", fastopt_version(), isas);
    for (char *isa = strtok(isas, ","); isa; isa = strtok(NULL, ",")) {
        EXPECT(fastopt_set_isa(isa) == FASTOPT_OK, "set_isa %s", isa);
        for (int dt = 0; dt < 2; dt++) {
            fastopt_dtype d = dt ? FASTOPT_FLOAT64 : FASTOPT_FLOAT32;
            test_sgd(d);
            test_adam(d, 0, 0);
            test_adam(d, 1, 0);
            test_adam(d, 1, 1);
            test_rmsprop(d);
            test_adagrad(d);
            test_nadam_radam(d);
            test_lion(d);
            test_lamb(d);
            test_gradients(d);
        }
        test_adamw_quant8();
        test_training();
    }
    fastopt_set_isa(NULL);
    test_status_codes();
    test_partitions();
    test_philox();
    printf("%s\n", failures ? "FAILED" : "all C tests passed");
    return failures != 0;
}
