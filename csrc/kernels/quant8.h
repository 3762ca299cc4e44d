/* The 8-bit dynamic code of Dettmers et al. 2022 (bitsandbytes' create_dynamic_map, 7 exponent
 * bits).  Values are looked up, in a table of fo_q8_value's 256: one load an element (see q8_load)
 * is cheaper than computing them.  Codes are computed, without tables: finding the nearest value
 * by lookups would take two dependent gathers an element (docs/mixed-precision.md has the costs of
 * each).  fastopt.quant8 (NumPy) and the
 * CUDA kernels compute the same floats in the same order, so the codes agree bit for bit (but on a
 * GPU, where NVVM may fuse a multiply-add, for values within a rounding of a midpoint).
 *
 * The positive values: in decade i = 0 .. 6 (d = 0 signed, 1 unsigned; n = 2^(i+d) values),
 *   v(i, j) = (1 + (2j + 1) * 4.5 / n) * 10^(i-7),  j = 0 .. n-1,
 * the midpoints of linspace(0.1, 1, n + 1) times 10^(i-6); and 0 and 1.  Signed codes mirror them
 * below zero, except that -1 is left out.  Counting the positive values from 0 by p (p = -1 is 0,
 * p = 127 signed / 254 unsigned is 1): decade i starts at p = 2^(i+d) - 2^d, so q = p + 2^d has
 * i = floor(log2 q) - d and j = q - 2^(i+d).  The byte is 128 + p (x >= 0) or 126 - p (x < 0)
 * signed, so that codes ascend with their values (0 at byte 127, 1 at 255); 1 + p unsigned. */
#ifndef FO_QUANT8_H
#define FO_QUANT8_H

#include <stdlib.h>

#include "storage.h"

/* 10^(i-7), rounded once: 10^i is an exact float product, chosen by the bits of i */
static inline float fo_q8_unit(int32_t i)
{
    float ten = (i & 1) ? 10.0f : 1.0f, hundred = (i & 2) ? 100.0f : 1.0f, ten4 = (i & 4) ? 10000.0f : 1.0f;
    return ten * hundred * ten4 * 1e-7f;
}

/* ~10^(7-i), to scale decade i onto [1, 10) */
static inline float fo_q8_scale(int32_t i)
{
    float scale = 1e7f;
    scale = (i & 1) ? scale * 0.1f : scale;
    scale = (i & 2) ? scale * 0.01f : scale;
    return (i & 4) ? scale * 1e-4f : scale;
}

/* The value of byte c. */
static inline float fo_q8_value(uint32_t c, int is_signed)
{
    int32_t d = !is_signed;
    /* q = p + 2^d = 2^b + j, with b = i + d (garbage for the bytes of 0 and 1, selected below) */
    int32_t q = is_signed ? abs((int32_t)c - 127) : (int32_t)c + 1;
    uint32_t qbits = fo_bits_of_f32((float)q), e = qbits & 0x7F800000u;         /* e: 2^b's bits */
    float frac = fo_f32_of_bits(qbits - e + 0x3F800000u);                       /* q / 2^b */
    float half_step = fo_f32_of_bits(0x7F000000u - e) * 4.5f;                   /* 4.5 / 2^b */
    float w = frac * 9.0f - 8.0f + half_step;              /* 1 + (2j + 1) * 4.5 / 2^b, exact */
    float v = w * fo_q8_unit((int32_t)(e >> 23) - 127 - d);
    uint32_t negative = is_signed && c < 127;
    v = fo_f32_of_bits(fo_bits_of_f32(v) | negative << 31);
    return c == (is_signed ? 127u : 0u) ? 0.0f : c == 255 ? 1.0f : v;
}

/* The byte of x in [-1, 1] (or [0, 1]): the nearest code value, but for x within float32 rounding
 * of a midpoint, where either neighbour may come (at most ~3e-7 |x| further than the nearest).
 * u is x's place in its decade in units of the code's spacing there: the values sit at j + 0.5,
 * so trunc(u) is the nearest, but below u = 0.2 (the midpoint to the decade below: its top value
 * sits at u = -0.1; in decade 0, to 0) and, in decade 6, from u = n - 0.25 (the midpoint to 1).
 * NaN: byte 255 (its block's absmax is NaN, so the value is NaN too). */
static inline uint8_t fo_q8_code_of(float x, int is_signed)
{
    int32_t d = !is_signed;
    /* |x| or max(x, 0), as masks: a select here lets GCC thread x > 0 through what follows, into
     * selects of mixed widths it cannot vectorize */
    uint32_t bits = fo_bits_of_f32(x);
    float y = fo_f32_of_bits(is_signed ? bits & 0x7FFFFFFFu : fo_select(x > 0, bits, 0));
    int32_t i = 0;                                         /* x's decade */
    /* the same count, written for the vectorizer: with AVX-512's masks a conditional increment is
     * one masked add, cheaper than a sum of compares; at AVX2 it becomes a blend, and the sum of
     * compares is the cheaper */
    for (int32_t k = 1; k <= 6; k++)
#ifdef __AVX512F__
        i = y >= fo_q8_unit(k) ? i + 1 : i;
#else
        i += y >= fo_q8_unit(k);
#endif
    float n = fo_f32_of_bits((uint32_t)(127 + i + d) << 23); /* its number of values, 2^(i+d) */
    float u = (y * fo_q8_scale(i) - 1.0f) * ((1.0f / 9.0f) * n);
    float at = u > 0 ? u : 0.0f;
    at = at < n - 1.0f ? at : n - 1.0f;
    float low = i == 0 ? (is_signed ? (float)(1.75 / 9) : (float)(1.25 / 9)) : 0.2f;
    int32_t p = (int32_t)(n - (float)(1 << d)) + (int32_t)at - (u < low) + ((i == 6) & (u >= n - 0.25f));
    int32_t below = 126 - p;
    int32_t c = is_signed ? (bits >> 31 ? (below > 0 ? below : 0) : 128 + p) : 1 + p;
    return (uint8_t)(x != x ? 255 : c);
}

#endif
