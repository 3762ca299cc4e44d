/* Picks the best SIMD level once, at first use, by CPU detection; FASTOPT_ISA=<level> in the
 * environment or fastopt_set_isa() forces one.  The levels compiled in are named by CMake
 * (FO_HAVE_<LEVEL>). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fastopt_internal.h"

typedef struct fo_level {
    const fo_kernel_table *table;
    int (*supported)(void);
} fo_level;

static int always(void) { return 1; }

/* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV). */
#ifdef FO_HAVE_AVX2
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif
#ifdef FO_HAVE_AVX512
static int has_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
#endif

#ifdef FO_HAVE_BASELINE
extern const fo_kernel_table fo_table_baseline;
#endif
#ifdef FO_HAVE_AVX2
extern const fo_kernel_table fo_table_avx2;
#endif
#ifdef FO_HAVE_AVX512
extern const fo_kernel_table fo_table_avx512;
#endif
#ifdef FO_HAVE_NEON
extern const fo_kernel_table fo_table_neon;
#endif

/* Worst first. */
static const fo_level levels[] = {
#ifdef FO_HAVE_BASELINE
    {&fo_table_baseline, always},
#endif
#ifdef FO_HAVE_NEON
    {&fo_table_neon, always},
#endif
#ifdef FO_HAVE_AVX2
    {&fo_table_avx2, has_avx2},
#endif
#ifdef FO_HAVE_AVX512
    {&fo_table_avx512, has_avx512},
#endif
};
#define N_LEVELS (sizeof levels / sizeof levels[0])

static _Atomic(const fo_kernel_table *) current;
static const fo_kernel_table *best;
static char available[64];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const fo_kernel_table *find(const char *name)
{
    for (size_t i = 0; i < N_LEVELS; i++)
        if (strcmp(levels[i].table->isa, name) == 0 && levels[i].supported()) return levels[i].table;
    return NULL;
}

static void detect(void)
{
    for (size_t i = 0; i < N_LEVELS; i++) {
        if (!levels[i].supported()) continue;
        best = levels[i].table;
        if (available[0]) strcat(available, ",");
        strcat(available, best->isa);
    }
    const char *forced = getenv("FASTOPT_ISA");
    const fo_kernel_table *table = forced ? find(forced) : NULL;
    atomic_store(&current, table ? table : best);
}

const fo_kernel_table *fo_kernels(void)
{
    pthread_once(&once, detect);
    return atomic_load_explicit(&current, memory_order_relaxed);
}

const char *fastopt_isa(void) { return fo_kernels()->isa; }

const char *fastopt_isas_available(void)
{
    pthread_once(&once, detect);
    return available;
}

fastopt_status fastopt_set_isa(const char *name)
{
    pthread_once(&once, detect);
    if (name == NULL || strcmp(name, "auto") == 0) {
        atomic_store(&current, best);
        return FASTOPT_OK;
    }
    const fo_kernel_table *table = find(name);
    if (table == NULL) return fo_fail(FASTOPT_ERR_ISA, "SIMD level '%s' is unknown or not supported here (available: %s)", name, available);
    atomic_store(&current, table);
    return FASTOPT_OK;
}
