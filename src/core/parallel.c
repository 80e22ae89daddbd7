// The parallel-for (see parallel.h): OpenMP natively; in a WebAssembly build with pthreads
// (__EMSCRIPTEN_PTHREADS__) a pool of workers that sleep on a condition variable between loops;
// inline otherwise.
#include "core/parallel.h"
#include "core/common.h"

#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__EMSCRIPTEN_PTHREADS__) && !defined(_OPENMP)
#define BNL_POOL 1
#include <pthread.h>
#include <time.h>
#endif

// ---- the pool (threaded wasm) -------------------------------------------------------------------
#ifdef BNL_POOL
#define POOL_MAX 64
#define POOL_SPIN 100000   // iterations of an atomic load: ~0.1 ms
static _Thread_local int t_in_loop;   // set on every thread while it runs a loop body

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    int nworkers;           // pthreads started (the caller is thread 0)
    unsigned long gen;      // loop generation: workers run each generation once
    // the current loop
    bnl_range_fn fn;
    void *ctx;
    size_t n;
    int T, dynamic;
    size_t next;            // dynamic: next item (atomic)
    int pending;            // workers of this generation not yet finished
} pool_t;

static pool_t g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
                        NULL, NULL, 0, 0, 0, 0, 0};

static void run_share(bnl_range_fn fn, void *ctx, size_t n, int T, int dynamic, size_t *next, int tid) {
    if (dynamic) {
        for (;;) {
            size_t i = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
            if (i >= n) break;
            fn(ctx, i, i + 1, tid);
        }
    } else {
        size_t a, b;
        bnl_split(n, tid, T, &a, &b);
        if (b > a) fn(ctx, a, b, tid);
    }
}

static void *pool_worker(void *arg) {
    int tid = (int)(size_t)arg;
    pool_t *p = &g_pool;
    unsigned long seen = 0;
    t_in_loop = 1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->gen == seen) {
            // spin a little before sleeping: a forward runs hundreds of short loops back to back,
            // and a wake-up through the condition variable (a futex: Atomics.wait/notify) costs more
            // than the gap between them
            pthread_mutex_unlock(&p->mu);
            for (int i = 0; i < POOL_SPIN && __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) == seen; i++) {
            }
            pthread_mutex_lock(&p->mu);
            while (p->gen == seen) pthread_cond_wait(&p->start, &p->mu);
        }
        seen = p->gen;
        if (tid >= p->T) continue;   // not needed for this loop
        bnl_range_fn fn = p->fn;
        void *ctx = p->ctx;
        size_t n = p->n;
        int T = p->T, dynamic = p->dynamic;
        pthread_mutex_unlock(&p->mu);
        run_share(fn, ctx, n, T, dynamic, &p->next, tid);
        pthread_mutex_lock(&p->mu);
        if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) pthread_cond_signal(&p->done);
    }
    return NULL;
}

// Starts workers up to T - 1 (once; a failed start leaves fewer).
static int pool_grow(int T) {
    pool_t *p = &g_pool;
    if (T > POOL_MAX) T = POOL_MAX;
    while (p->nworkers < T - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, pool_worker, (void *)(size_t)(p->nworkers + 1));
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        p->nworkers++;
    }
    return p->nworkers + 1;
}

static void pool_run(size_t n, int T, int dynamic, bnl_range_fn fn, void *ctx) {
    pool_t *p = &g_pool;
    pthread_mutex_lock(&p->mu);
    int have = pool_grow(T);
    if (T > have) T = have;
    if (T <= 1) {
        pthread_mutex_unlock(&p->mu);
        t_in_loop = 1;
        run_share(fn, ctx, n, 1, dynamic, &(size_t){0}, 0);
        t_in_loop = 0;
        return;
    }
    p->fn = fn, p->ctx = ctx, p->n = n, p->T = T, p->dynamic = dynamic, p->next = 0;
    __atomic_store_n(&p->pending, T - 1, __ATOMIC_RELEASE);
    __atomic_store_n(&p->gen, p->gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    t_in_loop = 1;
    run_share(fn, ctx, n, T, dynamic, &p->next, 0);
    t_in_loop = 0;
    // The workers' shares usually end within microseconds of this thread's: spin a little first.
    for (int i = 0; i < POOL_SPIN && __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0; i++) {
    }
    // Timed waits: each new wait lets Emscripten see a worker that crashed (it then unwinds this
    // call to JS, which reports the failure) instead of sleeping forever on its share.
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&p->done, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
}
#endif

int bnl_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#elif defined(BNL_POOL)
    return t_in_loop;
#else
    return 0;
#endif
}

int bnl_threads_for(size_t items, double work, double min_work) {
    if (work < min_work || bnl_in_parallel()) return 1;
    int T = bnl_threads_effective();
    if ((size_t)T > items) T = (int)items;
    return T < 1 ? 1 : T;
}

static void parallel(size_t n, int T, int dynamic, bnl_range_fn fn, void *ctx) {
    if (n == 0) return;
    if ((size_t)T > n) T = (int)n;
    if (T <= 1 || bnl_in_parallel()) {
        if (dynamic)
            for (size_t i = 0; i < n; i++) fn(ctx, i, i + 1, 0);
        else
            fn(ctx, 0, n, 0);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (dynamic) {
#pragma omp for schedule(dynamic, 1)
            for (long long i = 0; i < (long long)n; i++) fn(ctx, (size_t)i, (size_t)i + 1, t);
        } else {
            size_t a, b;
            bnl_split(n, t, nt, &a, &b);
            if (b > a) fn(ctx, a, b, t);
        }
    }
#elif defined(BNL_POOL)
    pool_run(n, T, dynamic, fn, ctx);
#else
    if (dynamic)
        for (size_t i = 0; i < n; i++) fn(ctx, i, i + 1, 0);
    else
        fn(ctx, 0, n, 0);
#endif
}

void bnl_parallel_for(size_t n, int T, bnl_range_fn fn, void *ctx) { parallel(n, T, 0, fn, ctx); }
void bnl_parallel_for_dynamic(size_t n, int T, bnl_range_fn fn, void *ctx) { parallel(n, T, 1, fn, ctx); }

// ---- the first error across threads ------------------------------------------------------------
void bnl_first_error_init(bnl_first_error *e) {
    e->index = (size_t)-1, e->status = BNL_OK, e->lock = 0, e->msg[0] = 0;
}

void bnl_first_error_note(bnl_first_error *e, size_t index, bnl_status st) {
    if (st == BNL_OK) return;
    while (__atomic_exchange_n(&e->lock, 1, __ATOMIC_ACQUIRE)) {
    }
    if (index < e->index) {
        e->index = index, e->status = st;
        snprintf(e->msg, sizeof e->msg, "%s", bnl_last_error());
    }
    __atomic_store_n(&e->lock, 0, __ATOMIC_RELEASE);
}

bnl_status bnl_first_error_status(const bnl_first_error *e) {
    return e->status == BNL_OK ? BNL_OK : bnl_fail(e->status, "%s", e->msg);
}
