/* Threading over the concatenated element range of a tensor list: thread i of n takes elements
 * [i*total/n, (i+1)*total/n), whatever tensors they fall in, so a list of many small tensors
 * balances as well as one large tensor.  Each element is computed by exactly one thread with the
 * same code, so results do not depend on the thread count. */
#include <stdatomic.h>
#include <stdlib.h>
#ifdef FO_HAVE_OPENMP
#include <omp.h>
#endif

#include "fastopt_internal.h"

/* Below this many elements per thread, waking a thread costs more than it saves (measured: Adam
 * at 16K elements runs 1.6x faster on 2 threads, at 4K no faster). */
#define FO_MIN_PER_THREAD ((size_t)1 << 12)
/* Thread boundaries fall on multiples of this many elements: whole cache lines, no sharing. */
#define FO_GRAIN ((size_t)64)

static atomic_int num_threads; /* 0 until first asked */

static int default_threads(void)
{
    const char *env = getenv("FASTOPT_NUM_THREADS");
    int n = env ? atoi(env) : 0;
    if (n >= 1) return n;
#ifdef FO_HAVE_OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

int fastopt_get_num_threads(void)
{
    int n = atomic_load(&num_threads);
    if (n == 0) {
        n = default_threads();
        atomic_store(&num_threads, n);
    }
    return n;
}

fastopt_status fastopt_set_num_threads(int n)
{
    if (n < 1) return fo_fail(FASTOPT_ERR_ARGUMENT, "the number of threads must be >= 1, got %d", n);
    atomic_store(&num_threads, n);
    return FASTOPT_OK;
}

/* Start of part i of `parts` equal parts of [0, total), rounded down to the grain. */
size_t fo_part_begin(size_t total, size_t parts, size_t i)
{
    if (i >= parts) return total;
    /* total * i / parts without overflowing size_t */
    size_t begin = (total / parts) * i + (total % parts) * i / parts;
    return begin / FO_GRAIN * FO_GRAIN;
}

static void run_range(const fo_call *call, fo_span_fn fn, size_t lo, size_t hi)
{
    size_t offset = 0;
    for (size_t t = 0; t < call->n_tensors && offset < hi; t++) {
        size_t n = call->numel[t];
        size_t begin = lo > offset ? lo - offset : 0;
        size_t end = hi - offset < n ? hi - offset : n;
        if (begin < end) fn(call, t, begin, end);
        offset += n;
    }
}

static size_t useful_threads(size_t total)
{
    size_t threads = (size_t)fastopt_get_num_threads(), useful = total / FO_MIN_PER_THREAD;
    return threads < useful ? threads : useful;
}

void fo_parallel_for(const fo_call *call, size_t total, fo_span_fn fn)
{
    size_t threads = useful_threads(total);
#ifdef FO_HAVE_OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads((int)threads)
        {
            size_t parts = (size_t)omp_get_num_threads(), i = (size_t)omp_get_thread_num();
            run_range(call, fn, fo_part_begin(total, parts, i), fo_part_begin(total, parts, i + 1));
        }
        return;
    }
#endif
    run_range(call, fn, 0, total);
}

size_t fo_count_blocks(const fo_call *call)
{
    size_t blocks = 0;
    for (size_t t = 0; t < call->n_tensors; t++) blocks += (call->numel[t] + FO_BLOCK - 1) / FO_BLOCK;
    return blocks;
}

/* Blocks [lo, hi) of the call, numbered tensor by tensor. */
static void run_blocks(const fo_call *call, fo_block_fn fn, double *out, size_t width, size_t lo, size_t hi)
{
    size_t b = 0;
    for (size_t t = 0; t < call->n_tensors && b < hi; t++) {
        size_t n = call->numel[t];
        for (size_t begin = 0; begin < n && b < hi; begin += FO_BLOCK, b++)
            if (b >= lo) fn(call, t, begin, n - begin < FO_BLOCK ? n : begin + FO_BLOCK, out + b * width);
    }
}

void fo_parallel_blocks(const fo_call *call, size_t total, fo_block_fn fn, double *out, size_t width)
{
    size_t blocks = fo_count_blocks(call), threads = useful_threads(total);
    if (threads > blocks) threads = blocks;
#ifdef FO_HAVE_OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads((int)threads)
        {
            size_t parts = (size_t)omp_get_num_threads(), i = (size_t)omp_get_thread_num();
            run_blocks(call, fn, out, width, blocks * i / parts, blocks * (i + 1) / parts);
        }
        return;
    }
#endif
    run_blocks(call, fn, out, width, 0, blocks);
}
