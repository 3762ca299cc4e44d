/* Threading over the concatenated element range of a tensor list: part i of n takes elements
 * [i*total/n, (i+1)*total/n), whatever tensors they fall in, so a list of many small tensors
 * balances as well as one large tensor.  The partition depends on the sizes alone and each element
 * is computed by one thread with the same code, so results do not depend on the thread count.
 *
 * The pool is small and polite, because the caller's process has other thread pools (OpenBLAS,
 * torch) on the same cores: workers sleep on a condition variable (they never spin), and the
 * calling thread claims parts itself and never waits for a worker that has not started; it waits
 * only for parts already claimed.  A worker the scheduler runs late finds nothing left to do. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "fastopt_internal.h"

/* Below this many elements per thread, a thread costs more than it saves: waking one takes ~10 us,
 * and on a busy machine (BLAS threads on the same cores) much longer. */
#define FO_MIN_PER_THREAD ((size_t)1 << 16)
/* Thread boundaries fall on multiples of this many elements: whole cache lines, no sharing. */
#define FO_GRAIN ((size_t)64)
/* Parts per thread: more parts than threads lets the caller take over a late worker's share. */
#define FO_PARTS_PER_THREAD 4
#define FO_MAX_THREADS 256

static atomic_int num_threads; /* 0 until first asked */

static int default_threads(void)
{
    const char *env = getenv("FASTOPT_NUM_THREADS");
    int n = env ? atoi(env) : 0;
    if (n >= 1) return n < FO_MAX_THREADS ? n : FO_MAX_THREADS;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : cores < FO_MAX_THREADS ? (int)cores : FO_MAX_THREADS;
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
    if (n < 1 || n > FO_MAX_THREADS)
        return fo_fail(FASTOPT_ERR_ARGUMENT, "the number of threads must be in [1, %d], got %d", FO_MAX_THREADS, n);
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

/* ---- the pool: one job at a time, parts claimed under a mutex ---- */

typedef void (*fo_part_fn)(const void *ctx, size_t part, size_t parts);

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t work, finished;
    int workers;         /* started so far */
    int busy;            /* a job is posted */
    fo_part_fn part;
    const void *ctx;
    size_t parts, threads, next, done;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0, 0};

/* fork() copies the pool's memory but only the forking thread: the child has no workers, and the
 * mutex may have been held by a thread that does not exist there.  So the forking thread takes the
 * mutex first (no job changes state mid-fork; the parent's job goes on after), and the child starts
 * a fresh pool: its first threaded call starts its own workers. */
static void pool_before_fork(void) { pthread_mutex_lock(&pool.mutex); }
static void pool_parent_after_fork(void) { pthread_mutex_unlock(&pool.mutex); }
static void pool_child_after_fork(void)
{
    pthread_mutex_init(&pool.mutex, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.finished, NULL);
    pool.workers = 0, pool.busy = 0;
    pool.part = NULL, pool.ctx = NULL, pool.parts = pool.threads = pool.next = pool.done = 0;
}

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void)
{
    pthread_atfork(pool_before_fork, pool_parent_after_fork, pool_child_after_fork);
}

/* Claim c of a job of `parts` parts on `threads` threads: claims that alternate between threads
 * walk separate stretches (claims 0, 2, 4 ... the first half, 1, 3, 5 ... the second with two
 * threads), so each thread streams through memory of its own, as a static schedule would. */
static size_t part_of_claim(size_t c, size_t parts, size_t threads)
{
    size_t per = parts / threads;
    return threads > 1 && parts % threads == 0 ? (c % threads) * per + c / threads : c;
}

/* Under the mutex: runs parts of the posted job until none is left to claim. */
static void work_on_job(void)
{
    while (pool.busy && pool.next < pool.parts) {
        size_t i = part_of_claim(pool.next++, pool.parts, pool.threads), parts = pool.parts;
        fo_part_fn part = pool.part;
        const void *ctx = pool.ctx;
        pthread_mutex_unlock(&pool.mutex);
        part(ctx, i, parts);
        pthread_mutex_lock(&pool.mutex);
        if (++pool.done == pool.parts) pthread_cond_signal(&pool.finished);
    }
}

static void *worker(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool.mutex);
    for (;;) {
        while (!(pool.busy && pool.next < pool.parts)) pthread_cond_wait(&pool.work, &pool.mutex);
        work_on_job();
    }
    return NULL;
}

/* Runs part(ctx, i, parts) for i in [0, parts) on up to `threads` threads, the caller among them. */
static void run_parts(fo_part_fn part, const void *ctx, size_t parts, int threads)
{
    pthread_once(&fork_handlers_once, register_fork_handlers);
    pthread_mutex_lock(&pool.mutex);
    if (pool.busy) { /* another thread's job holds the pool: this one runs alone */
        pthread_mutex_unlock(&pool.mutex);
        for (size_t i = 0; i < parts; i++) part(ctx, i, parts);
        return;
    }
    while (pool.workers < threads - 1) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) break; /* fewer threads, same results */
        pthread_detach(t);
        pool.workers++;
    }
    pool.part = part, pool.ctx = ctx, pool.parts = parts, pool.threads = (size_t)threads;
    pool.next = 0, pool.done = 0, pool.busy = 1;
    pthread_cond_broadcast(&pool.work);
    work_on_job();
    while (pool.done < pool.parts) pthread_cond_wait(&pool.finished, &pool.mutex);
    pool.busy = 0;
    pthread_mutex_unlock(&pool.mutex);
}

static size_t useful_threads(size_t total)
{
    size_t threads = (size_t)fastopt_get_num_threads(), useful = total / FO_MIN_PER_THREAD;
    return threads < useful ? threads : useful;
}

/* ---- element ranges ---- */

typedef struct range_job {
    const fo_call *call;
    fo_span_fn fn;
    size_t total;
} range_job;

static void run_range(const fo_call *call, fo_span_fn fn, size_t lo, size_t hi)
{
    size_t offset = 0;
    for (size_t t = 0; t < call->n_tensors && offset < hi; t++) {
        size_t n = call->numel[t];
        size_t begin = lo > offset ? lo - offset : 0;
        size_t end = hi - offset < n ? hi - offset : n;
        size_t most = call->span_limit ? call->span_limit : n;
        for (size_t b = begin; b < end; b += most) fn(call, t, b, end - b < most ? end : b + most);
        offset += n;
    }
}

static void range_part(const void *ctx, size_t i, size_t parts)
{
    const range_job *job = ctx;
    run_range(job->call, job->fn, fo_part_begin(job->total, parts, i), fo_part_begin(job->total, parts, i + 1));
}

void fo_parallel_for(const fo_call *call, size_t total, fo_span_fn fn)
{
    size_t threads = useful_threads(total);
    if (threads <= 1) {
        run_range(call, fn, 0, total);
        return;
    }
    range_job job = {call, fn, total};
    run_parts(range_part, &job, threads * FO_PARTS_PER_THREAD, (int)threads);
}

/* ---- rows (a kernel that needs whole rows) ---- */

typedef struct rows_job {
    const fo_call *call;
    fo_span_fn fn;
    size_t rows;
} rows_job;

static void rows_part(const void *ctx, size_t i, size_t parts)
{
    const rows_job *job = ctx;
    size_t begin = job->rows * i / parts, end = job->rows * (i + 1) / parts;
    if (begin < end) job->fn(job->call, 0, begin, end);
}

void fo_parallel_rows(const fo_call *call, size_t rows, size_t row_elements, fo_span_fn fn)
{
    size_t threads = useful_threads(rows * row_elements), parts = threads * FO_PARTS_PER_THREAD;
    if (parts > rows) parts = rows;
    if (threads <= 1 || parts <= 1) {
        if (rows) fn(call, 0, 0, rows);
        return;
    }
    rows_job job = {call, fn, rows};
    run_parts(rows_part, &job, parts, (int)threads);
}

/* ---- blocks (reductions) ---- */

size_t fo_count_blocks(const fo_call *call)
{
    size_t blocks = 0;
    for (size_t t = 0; t < call->n_tensors; t++) blocks += fo_blocks_of(call->numel[t]);
    return blocks;
}

typedef struct block_job {
    const fo_call *call;
    fo_block_fn fn;
    double *out;
    size_t width, blocks;
} block_job;

/* Blocks [lo, hi) of the call, numbered tensor by tensor. */
static void run_blocks(const block_job *job, size_t lo, size_t hi)
{
    const fo_call *call = job->call;
    size_t b = 0;
    for (size_t t = 0; t < call->n_tensors && b < hi; t++) {
        size_t n = call->numel[t];
        for (size_t begin = 0; begin < n && b < hi; begin += FO_BLOCK, b++)
            if (b >= lo) job->fn(call, t, begin, n - begin < FO_BLOCK ? n : begin + FO_BLOCK, job->out + b * job->width);
    }
}

static void block_part(const void *ctx, size_t i, size_t parts)
{
    const block_job *job = ctx;
    run_blocks(job, job->blocks * i / parts, job->blocks * (i + 1) / parts);
}

void fo_parallel_blocks(const fo_call *call, size_t total, fo_block_fn fn, double *out, size_t width)
{
    block_job job = {call, fn, out, width, fo_count_blocks(call)};
    size_t threads = useful_threads(total), parts = threads * FO_PARTS_PER_THREAD;
    if (parts > job.blocks) parts = job.blocks;
    if (threads <= 1 || parts <= 1) {
        run_blocks(&job, 0, job.blocks);
        return;
    }
    run_parts(block_part, &job, parts, (int)threads);
}
