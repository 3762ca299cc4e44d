/* Storage types: 16-bit floats held as their bits, converted to and from float in registers.
 * Every conversion is exact or rounds to nearest even, written in integer and float operations the
 * compiler vectorizes at every SIMD level (GCC 12 keeps _Float16 conversions scalar, even with
 * F16C, so fp16 goes through the bit-level forms below, after Maratyszcza's FP16 library), and
 * the same bits at every level.  Stochastic rounding takes its bits from Philox-4x32-10. */
#ifndef FO_STORAGE_H
#define FO_STORAGE_H

#include <stdint.h>
#include <string.h>

static inline float fo_f32_of_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline uint32_t fo_bits_of_f32(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
/* cond ? a : b as masks: GCC's vectorizer gives up on some selects of inlined conversions */
static inline uint32_t fo_select(int cond, uint32_t a, uint32_t b) { uint32_t m = 0u - (uint32_t)(cond != 0); return (a & m) | (b & ~m); }

/* bfloat16: the top half of a float32. */
static inline float fo_bf16_to_f32(uint16_t h) { return fo_f32_of_bits((uint32_t)h << 16); }

static inline uint16_t fo_f32_to_bf16(float f)
{
    uint32_t u = fo_bits_of_f32(f);
    uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
    /* NaN stays a quiet NaN; selected before the shift, else GCC selects in 16-bit lanes and packs
     * both sides (a third of a bfloat16 AdamW's time at AVX2) */
    return (uint16_t)(fo_select(f != f, u | 0x00400000u, rounded) >> 16);
}

/* Rounds up with probability (the dropped low 16 bits) / 2^16: unbiased in expectation. */
static inline uint16_t fo_f32_to_bf16_stochastic(float f, uint32_t random)
{
    uint32_t u = fo_bits_of_f32(f);
    uint32_t rounded = u + (random & 0xFFFFu);
    int special = (u & 0x7F800000u) == 0x7F800000u; /* inf and NaN are not dithered; NaN stays quiet */
    return (uint16_t)(fo_select(special, u | ((uint32_t)(f != f) << 22), rounded) >> 16);
}

/* IEEE binary16. */
static inline float fo_f16_to_f32(uint16_t h)
{
    uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    float normalized = fo_f32_of_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    float denormalized = fo_f32_of_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    return fo_f32_of_bits(sign | fo_select(two_w < (1u << 27), fo_bits_of_f32(denormalized), fo_bits_of_f32(normalized)));
}

static inline uint16_t fo_f32_to_f16(float f)
{
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t w = fo_bits_of_f32(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    bias = fo_select(bias < 0x71000000u, 0x71000000u, bias);
    base = fo_f32_of_bits((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = fo_bits_of_f32(base);
    uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    /* selected in 32-bit lanes, then shifted (see fo_f32_to_bf16) */
    return (uint16_t)((sign | fo_select(shl1_w > 0xFF000000u, 0x7E00u << 16, nonsign << 16)) >> 16);
}

/* Philox-4x32-10 (Salmon et al. 2011): a counter-based generator, so the random bits of an
 * element never depend on threads, spans or SIMD width.  One round, in place on the counter words,
 * with the round's key; the key grows by these between rounds: */
#define FO_PHILOX_W0 0x9E3779B9u
#define FO_PHILOX_W1 0xBB67AE85u
static inline void fo_philox_round(uint32_t *c0, uint32_t *c1, uint32_t *c2, uint32_t *c3, uint32_t k0, uint32_t k1)
{
    uint64_t p0 = (uint64_t)0xD2511F53u * *c0, p1 = (uint64_t)0xCD9E8D57u * *c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ *c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ *c3 ^ k1;
    *c1 = (uint32_t)p1, *c3 = (uint32_t)p0, *c0 = n0, *c2 = n2;
}

/* All ten rounds, in place on the counter c. */
static inline void fo_philox4(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++, k0 += FO_PHILOX_W0, k1 += FO_PHILOX_W1) fo_philox_round(c, c + 1, c + 2, c + 3, k0, k1);
}

/* The words of Philox(counter (g low, g high, c2, c3), key (k0, k1)) for g = first, first + 1, ...,
 * four a group, in order: `groups` groups rounded up to a multiple of FO_PHILOX_LANES (words must
 * hold that many). */
#define FO_PHILOX_LANES 8 /* Philox calls side by side: GCC makes SIMD lanes of them */
static inline void fo_philox_fill(uint32_t *restrict words, uint64_t first, size_t groups, uint32_t c2, uint32_t c3,
                                  uint32_t k0, uint32_t k1)
{
    for (size_t g = 0; g < groups; g += FO_PHILOX_LANES) {
        uint32_t w0[FO_PHILOX_LANES], w1[FO_PHILOX_LANES], w2[FO_PHILOX_LANES], w3[FO_PHILOX_LANES], a = k0, b = k1;
        for (int l = 0; l < FO_PHILOX_LANES; l++) {
            uint64_t e = first + g + (size_t)l;
            w0[l] = (uint32_t)e, w1[l] = (uint32_t)(e >> 32), w2[l] = c2, w3[l] = c3;
        }
        for (int r = 0; r < 10; r++, a += FO_PHILOX_W0, b += FO_PHILOX_W1) /* fo_philox4, lane by lane */
            for (int l = 0; l < FO_PHILOX_LANES; l++) fo_philox_round(&w0[l], &w1[l], &w2[l], &w3[l], a, b);
        for (int l = 0; l < FO_PHILOX_LANES; l++) {
            uint32_t *w = words + 4 * (g + (size_t)l);
            w[0] = w0[l], w[1] = w1[l], w[2] = w2[l], w[3] = w3[l];
        }
    }
}

/* Stochastic rounding needs 16 random bits an element; one Philox call gives 128, so element e of
 * tensor t takes 16-bit half (e & 1) (the low half first) of word (e & 7) / 2 of Philox(counter
 * (e / 8, t, step), key).  fo_sr_fill writes those of the n <= FO_SR_CHUNK elements from `at`. */
static __attribute__((unused)) void fo_sr_fill(uint16_t *restrict random, size_t at, size_t n, uint32_t t,
                                               uint32_t step, uint32_t k0, uint32_t k1)
{
    uint32_t words[4 * (FO_SR_CHUNK / 8 + 2 * FO_PHILOX_LANES)];
    size_t skip = at & 7;
    fo_philox_fill(words, at >> 3, (skip + n + 7) >> 3, t, step, k0, k1);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(random, (const char *)words + 2 * skip, n * sizeof *random); /* the halves, low first */
#else
    for (size_t i = 0; i < n; i++) random[i] = (uint16_t)(words[(skip + i) >> 1] >> (16 * ((skip + i) & 1)));
#endif
}

/* Dropout takes one 32-bit word an element: element e takes word e & 3 of Philox(counter (e / 4 low,
 * e / 4 high, counter low, counter high), key (seed low, seed high ^ FO_DROPOUT_KEY)), the tag keeping
 * its words apart from stochastic rounding's under the same seed.  fo_dropout_fill writes those of
 * the n <= FO_RANDOM_CHUNK elements from `at`, from words[at & 3] on. */
#define FO_DROPOUT_KEY 0x44524F50u /* "DROP" */
#define FO_RANDOM_CHUNK ((size_t)2048)
#define FO_DROPOUT_WORDS (FO_RANDOM_CHUNK + 8 * FO_PHILOX_LANES)
static inline void fo_dropout_fill(uint32_t *restrict words, size_t at, size_t n, uint64_t counter, uint64_t seed)
{
    fo_philox_fill(words, at >> 2, ((at & 3) + n + 3) >> 2, (uint32_t)counter, (uint32_t)(counter >> 32),
                   (uint32_t)seed, (uint32_t)(seed >> 32) ^ FO_DROPOUT_KEY);
}

#endif
