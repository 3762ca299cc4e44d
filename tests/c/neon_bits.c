/* Bit-for-bit probe: runs every optimizer and gradient utility of fastopt for a few steps over
 * fixed pseudo-random tensors, in every element type and the mixed-precision forms, and prints one
 * line per case: its name and an FNV-1a hash of every buffer it wrote.  Built natively (x86-64,
 * FASTOPT_ISA=baseline) and cross-built for AArch64 (neon, under qemu), the two outputs must be
 * identical: the kernels are compiled without contraction, so every level computes the same bits. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastopt.h"

enum { NT = 5, ROLES = 5, STEPS = 4 };
static const size_t SIZES[NT] = {1, 7, 33, 1000, 4099};

static uint32_t rng_state;
static uint32_t rnd(void) { return rng_state = rng_state * 1664525u + 1013904223u; }
static double uniform(void) { return ((rnd() >> 8) / 16777216.0 - 0.5) * 4; } /* [-2, 2) */

static uint16_t f32_to_bf16_trunc(float x) { uint32_t u; memcpy(&u, &x, 4); return (uint16_t)(u >> 16); }
static uint16_t some_f16(void) /* a normal half in about [2^-6, 4), either sign */
{
    uint32_t r = rnd() >> 8;
    return (uint16_t)(((r & 1) << 15) | ((9 + (r >> 1) % 8) << 10) | ((r >> 4) & 0x3FF));
}

static size_t esize(fastopt_dtype d) { return d == FASTOPT_FLOAT64 ? 8 : d == FASTOPT_FLOAT32 ? 4 : d == FASTOPT_QUANT8 ? 1 : 2; }

static void fill(void *buf, size_t n, fastopt_dtype d, int zero)
{
    for (size_t i = 0; i < n; i++) {
        double x = zero ? 0 : uniform();
        switch (d) {
        case FASTOPT_FLOAT32: ((float *)buf)[i] = (float)x; break;
        case FASTOPT_FLOAT64: ((double *)buf)[i] = x; break;
        case FASTOPT_FLOAT16: ((uint16_t *)buf)[i] = zero ? 0 : some_f16(); break;
        case FASTOPT_BFLOAT16: ((uint16_t *)buf)[i] = f32_to_bf16_trunc((float)x); break;
        default: ((uint8_t *)buf)[i] = 0; break;
        }
    }
}

static uint64_t hash;
static const char *tag = ""; /* " sb16": the state in bfloat16 */
static void mix(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) hash = (hash ^ c[i]) * 1099511628211ull;
}

typedef struct tensors {
    void *role[ROLES][NT];
    size_t bytes[ROLES];
} tensors;

static void make(tensors *t, int roles, fastopt_dtype pd, fastopt_dtype sd, uint32_t seed)
{
    rng_state = seed;
    for (int r = 0; r < roles; r++) {
        fastopt_dtype d = r < 2 || !sd ? pd : sd;
        t->bytes[r] = esize(d);
        for (int k = 0; k < NT; k++) {
            t->role[r][k] = calloc(SIZES[k] + 1, 8);
            fill(t->role[r][k], SIZES[k], d, r >= 2); /* state starts at zero */
        }
    }
}

static void new_grads(tensors *t, fastopt_dtype pd, uint32_t seed)
{
    rng_state = seed;
    for (int k = 0; k < NT; k++) fill(t->role[1][k], SIZES[k], pd, 0);
}

static void report(const char *name, fastopt_dtype pd, tensors *t, int roles, fastopt_status s)
{
    static const char *names[] = {"?", "f32", "f64", "f16", "bf16", "q8"};
    hash = 1469598103934665603ull;
    for (int r = 0; r < roles; r++)
        if (r != 1) /* grads are read only */
            for (int k = 0; k < NT; k++) mix(t->role[r][k], SIZES[k] * t->bytes[r]);
    printf("%-28s %-4s%s status %d  %016llx\n", name, names[pd], tag, (int)s, (unsigned long long)hash);
    for (int r = 0; r < roles; r++)
        for (int k = 0; k < NT; k++) free(t->role[r][k]);
}

#define P(t) ((void *const *)(t).role[0])
#define G(t) ((const void *const *)(t).role[1])
#define S(t, j) ((void *const *)(t).role[2 + (j)])

static void optimizers(fastopt_dtype pd, fastopt_dtype sd)
{
    tensors t;
    fastopt_status s = FASTOPT_OK;

    make(&t, 3, pd, sd, 1);
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, pd, 100 + step);
        fastopt_sgd_options o = {.common = {.lr = 0.1, .weight_decay = 0.01, .l1_prox = 0.001, .state_dtype = sd},
                                 .momentum = 0.9, .nesterov = 1, .first_step = step == 1};
        s = fastopt_sgd(pd, NT, SIZES, P(t), G(t), S(t, 0), &o);
    }
    report("sgd nesterov l1", pd, &t, 3, s);

    for (int dec = 0; dec < 2; dec++) {
        make(&t, 5, pd, sd, 2);
        s = FASTOPT_OK;
        for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
            new_grads(&t, pd, 200 + step);
            fastopt_adam_options o = {.common = {.lr = 1e-2, .weight_decay = 0.1, .maximize = !dec, .grad_scale = 4, .state_dtype = sd},
                                      .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = step, .amsgrad = 1,
                                      .decoupled_weight_decay = dec};
            s = fastopt_adam(pd, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), S(t, 2), &o);
        }
        report(dec ? "adamw amsgrad" : "adam amsgrad maximize", pd, &t, 5, s);
    }

    make(&t, 5, pd, sd, 3);
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, pd, 300 + step);
        fastopt_rmsprop_options o = {.common = {.lr = 1e-2, .weight_decay = 0.01, .state_dtype = sd}, .alpha = 0.9,
                                     .eps = 1e-8, .momentum = 0.5, .centered = 1};
        s = fastopt_rmsprop(pd, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), S(t, 2), &o);
    }
    report("rmsprop centered momentum", pd, &t, 5, s);

    make(&t, 3, pd, sd, 4);
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, pd, 400 + step);
        fastopt_adagrad_options o = {.common = {.lr = 0.1, .weight_decay = 0.01, .state_dtype = sd}, .lr_decay = 0.05,
                                     .eps = 1e-10, .step = step};
        s = fastopt_adagrad(pd, NT, SIZES, P(t), G(t), S(t, 0), &o);
    }
    report("adagrad lr_decay", pd, &t, 3, s);

    for (int dec = 0; dec < 2; dec++) {
        make(&t, 4, pd, sd, 5);
        s = FASTOPT_OK;
        double mu_product = 1;
        for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
            new_grads(&t, pd, 500 + step);
            mu_product = fastopt_nadam_mu_product(mu_product, 0.9, 4e-3, step);
            fastopt_nadam_options o = {.common = {.lr = 2e-3, .weight_decay = 0.01, .state_dtype = sd}, .beta1 = 0.9,
                                       .beta2 = 0.999, .eps = 1e-8, .momentum_decay = 4e-3, .mu_product = mu_product,
                                       .step = step, .decoupled_weight_decay = dec};
            s = fastopt_nadam(pd, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), &o);
        }
        report(dec ? "nadam decoupled" : "nadam", pd, &t, 4, s);
    }

    make(&t, 4, pd, sd, 6);
    s = FASTOPT_OK;
    for (int step = 1; step <= 8 && s == FASTOPT_OK; step++) { /* rectified from step 6 */
        new_grads(&t, pd, 600 + step);
        fastopt_radam_options o = {.common = {.lr = 1e-3, .weight_decay = 0.01, .state_dtype = sd}, .beta1 = 0.9,
                                   .beta2 = 0.999, .eps = 1e-8, .step = step};
        s = fastopt_radam(pd, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), &o);
    }
    report("radam", pd, &t, 4, s);

    make(&t, 3, pd, sd, 7);
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, pd, 700 + step);
        fastopt_lion_options o = {.common = {.lr = 1e-3, .weight_decay = 0.1, .state_dtype = sd}, .beta1 = 0.9, .beta2 = 0.99};
        s = fastopt_lion(pd, NT, SIZES, P(t), G(t), S(t, 0), &o);
    }
    report("lion", pd, &t, 3, s);

    make(&t, 4, pd, sd, 8);
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, pd, 800 + step);
        fastopt_lamb_options o = {.common = {.lr = 1e-2, .weight_decay = 0.01, .state_dtype = sd}, .beta1 = 0.9,
                                  .beta2 = 0.999, .eps = 1e-6, .max_grad_norm = 1.0, .step = step};
        s = fastopt_lamb(pd, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), &o);
    }
    report("lamb", pd, &t, 4, s);
}

static void gradients(fastopt_dtype d)
{
    tensors t;
    make(&t, 2, d, d, 9); /* role 0: grads (written), role 1: params (read) */
    fastopt_status s = fastopt_elastic_net_grad(d, NT, SIZES, P(t), G(t), 0.1, 0.01);
    double norms[3] = {0};
    if (s == FASTOPT_OK) s = fastopt_global_norm(d, NT, SIZES, (const void *const *)t.role[0], 2.0, &norms[0]);
    if (s == FASTOPT_OK) s = fastopt_global_norm(d, NT, SIZES, (const void *const *)t.role[0], 1.5, &norms[1]);
    if (s == FASTOPT_OK) s = fastopt_clip_grad_norm(d, NT, SIZES, P(t), 1.0, 2.0, &norms[2]);
    float found = 0;
    if (s == FASTOPT_OK) s = fastopt_unscale(d, NT, SIZES, P(t), 0.5, &found);
    if (s == FASTOPT_OK) s = fastopt_scale(d, NT, SIZES, P(t), 3.0);
    report("elastic norm clip unscale", d, &t, 2, s);
    hash = 1469598103934665603ull;
    mix(norms, sizeof norms);
    mix(&found, sizeof found);
    printf("%-28s %-4s status %d  %016llx\n", "norms", d == FASTOPT_FLOAT64 ? "f64" : d == FASTOPT_FLOAT32 ? "f32" :
           d == FASTOPT_FLOAT16 ? "f16" : "bf16", (int)s, (unsigned long long)hash);
}

/* AdamW in the mixed-precision forms: float16 params with float32 state and a float32 master copy;
 * bfloat16 params and state, rounded stochastically; float32 params with 8-bit state. */
static void mixed(void)
{
    tensors t;
    fastopt_status s = FASTOPT_OK;
    float *master[NT];
    make(&t, 4, FASTOPT_FLOAT16, FASTOPT_FLOAT32, 10);
    rng_state = 1010;
    for (int k = 0; k < NT; k++) {
        master[k] = calloc(SIZES[k] + 1, 4);
        for (size_t i = 0; i < SIZES[k]; i++) master[k][i] = (float)uniform();
    }
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, FASTOPT_FLOAT16, 1000 + step);
        fastopt_adam_options o = {.common = {.lr = 1e-2, .weight_decay = 0.1, .state_dtype = FASTOPT_FLOAT32,
                                             .master_params = (void *const *)master},
                                  .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = step, .decoupled_weight_decay = 1};
        s = fastopt_adam(FASTOPT_FLOAT16, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), NULL, &o);
    }
    hash = 1469598103934665603ull;
    for (int k = 0; k < NT; k++) mix(master[k], SIZES[k] * 4), free(master[k]);
    printf("%-28s %-4s status %d  %016llx\n", "adamw master copy", "f32", (int)s, (unsigned long long)hash);
    report("adamw f16/f32 master", FASTOPT_FLOAT16, &t, 4, s);

    make(&t, 4, FASTOPT_BFLOAT16, FASTOPT_BFLOAT16, 11);
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, FASTOPT_BFLOAT16, 1100 + step);
        fastopt_adam_options o = {.common = {.lr = 1e-2, .weight_decay = 0.1, .stochastic_rounding = 1,
                                             .rounding_step = (uint32_t)step, .rounding_seed = 42},
                                  .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = step, .decoupled_weight_decay = 1};
        s = fastopt_adam(FASTOPT_BFLOAT16, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), NULL, &o);
    }
    report("adamw bf16 stochastic", FASTOPT_BFLOAT16, &t, 4, s);

    enum { BLOCK = 256 };
    float *absmax[2][NT];
    make(&t, 4, FASTOPT_FLOAT32, FASTOPT_QUANT8, 12);
    for (int k = 0; k < NT; k++) {
        memset(t.role[2][k], 127, SIZES[k]); /* signed zero */
        for (int j = 0; j < 2; j++) absmax[j][k] = calloc((SIZES[k] + BLOCK - 1) / BLOCK + 1, 4);
    }
    s = FASTOPT_OK;
    for (int step = 1; step <= STEPS && s == FASTOPT_OK; step++) {
        new_grads(&t, FASTOPT_FLOAT32, 1200 + step);
        fastopt_adam_options o = {.common = {.lr = 1e-2, .weight_decay = 0.1, .state_dtype = FASTOPT_QUANT8, .quant_block = BLOCK,
                                             .absmax = {(void *const *)absmax[0], (void *const *)absmax[1]}},
                                  .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = step, .decoupled_weight_decay = 1};
        s = fastopt_adam(FASTOPT_FLOAT32, NT, SIZES, P(t), G(t), S(t, 0), S(t, 1), NULL, &o);
    }
    hash = 1469598103934665603ull;
    for (int j = 0; j < 2; j++)
        for (int k = 0; k < NT; k++) mix(absmax[j][k], (SIZES[k] + BLOCK - 1) / BLOCK * 4), free(absmax[j][k]);
    printf("%-28s %-4s status %d  %016llx\n", "adamw 8-bit absmax", "f32", (int)s, (unsigned long long)hash);
    report("adamw 8-bit state", FASTOPT_FLOAT32, &t, 4, s);

    float code[2][256];
    fastopt_quant8_code(1, code[0]), fastopt_quant8_code(0, code[1]);
    hash = 1469598103934665603ull;
    mix(code, sizeof code);
    printf("%-28s %-4s status 0  %016llx\n", "quant8 code", "f32", (unsigned long long)hash);
}

/* Adagrad's lr / (1 + (step - 1) * lr_decay) at later steps, where a fused multiply-add in the
 * constant (from step 123 with lr_decay = 1e-3) would change the float64 params' bits. */
static void adagrad_late(void)
{
    tensors t;
    fastopt_status s = FASTOPT_OK;
    make(&t, 3, FASTOPT_FLOAT64, 0, 13);
    for (int step = 118; step <= 130 && s == FASTOPT_OK; step++) {
        new_grads(&t, FASTOPT_FLOAT64, 1300 + step);
        fastopt_adagrad_options o = {.common = {.lr = 1e-2}, .lr_decay = 1e-3, .eps = 1e-10, .step = step};
        s = fastopt_adagrad(FASTOPT_FLOAT64, NT, SIZES, P(t), G(t), S(t, 0), &o);
    }
    report("adagrad steps 118-130", FASTOPT_FLOAT64, &t, 3, s);
}

int main(int argc, char **argv)
{
    if (argc > 1 && fastopt_set_isa(argv[1]) != FASTOPT_OK) {
        fprintf(stderr, "%s\n", fastopt_last_error());
        return 2;
    }
    printf("isa %s\n", fastopt_isa());
    static const fastopt_dtype types[] = {FASTOPT_FLOAT32, FASTOPT_FLOAT64, FASTOPT_FLOAT16, FASTOPT_BFLOAT16};
    for (int i = 0; i < 4; i++) optimizers(types[i], 0);
    tag = " sb16";
    optimizers(FASTOPT_FLOAT32, FASTOPT_BFLOAT16);
    tag = "";
    for (int i = 0; i < 4; i++) gradients(types[i]);
    mixed();
    adagrad_late();
    return 0;
}
