// Tests of the parallel-for (src/core/parallel.{h,c}): on 1..5 threads and for 0..1000 items,
// static loops give each thread one contiguous share and every item exactly once, dynamic loops
// every item exactly once, tid < T; nested loops run inline on the caller; bnl_threads_for's
// rules; the first error across threads is the one of the smallest item index, whatever order
// the threads hit theirs. The same file runs in the threaded wasm build (emcc -pthread, README).
#include "core/common.h"
#include "core/parallel.h"
#include "util.h"

#include <stdint.h>

typedef struct {
    int *hits;        // per item
    int *calls;       // per tid
    size_t *first;    // per tid: first item of its (static) share, (size_t)-1 if none
    int T;
    size_t n;
    int bad_tid, nested_ok;
} probe_t;

static void inner(void *ctx, size_t i0, size_t i1, int tid) {
    int *ok = ctx;
    if (tid != 0 || i0 != 0 || i1 != 8) *ok = 0;   // nested: inline, one call on the caller, tid 0
}

static void count_items(void *ctx, size_t i0, size_t i1, int tid) {
    probe_t *p = ctx;
    if (tid < 0 || tid >= p->T) __atomic_store_n(&p->bad_tid, 1, __ATOMIC_RELAXED);
    else {
        __atomic_fetch_add(&p->calls[tid], 1, __ATOMIC_RELAXED);
        if (p->first) p->first[tid] = i0;
    }
    for (size_t i = i0; i < i1; i++) __atomic_fetch_add(&p->hits[i], 1, __ATOMIC_RELAXED);
    if (bnl_in_parallel()) {   // a body run by the threads (not inline): loops inside it run inline
        int ok = 1;
        bnl_parallel_for(8, p->T, inner, &ok);
        if (!ok) __atomic_store_n(&p->nested_ok, 0, __ATOMIC_RELAXED);
    } else if (p->T > 1 && p->n > 1) {
        __atomic_store_n(&p->nested_ok, 0, __ATOMIC_RELAXED);   // T > 1 threads on n > 1 items: a parallel loop
    }
}

static void test_coverage(void) {
    size_t sizes[] = {0, 1, 2, 3, 5, 7, 64, 1000};
    for (int T = 1; T <= 5; T++) {
        bnl_set_threads(T);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            for (int dyn = 0; dyn < 2; dyn++) {
                int hits[1000] = {0}, calls[8] = {0};
                size_t first[8];
                for (int t = 0; t < 8; t++) first[t] = (size_t)-1;
                probe_t p = {hits, calls, dyn ? NULL : first, T, n, 0, 1};
                if (dyn) bnl_parallel_for_dynamic(n, T, count_items, &p);
                else bnl_parallel_for(n, T, count_items, &p);
                int once = 1;
                for (size_t i = 0; i < n; i++) once &= hits[i] == 1;
                CHECK(once, "T=%d n=%zu %s: an item was run %s", T, n, dyn ? "dynamic" : "static", "not exactly once");
                CHECK(!p.bad_tid, "T=%d n=%zu: a tid outside [0, T)", T, n);
                CHECK(p.nested_ok, "T=%d n=%zu: a nested loop did not run inline", T, n);
                CHECK(!bnl_in_parallel(), "still inside a parallel loop after it returned");
                if (!dyn) {
                    // one call per thread at most, each on its contiguous share bnl_split(n, t, T')
                    int Tn = (size_t)T < n ? T : (int)(n ? n : 1), shares_ok = 1;
                    for (int t = 0; t < 8; t++) shares_ok &= calls[t] <= 1;
                    for (int t = 0; t < Tn && n > 1 && T > 1; t++) {
                        size_t a, b;
                        bnl_split(n, t, Tn, &a, &b);
                        if (b > a && calls[t] == 1) shares_ok &= first[t] == a;
                    }
                    CHECK(shares_ok, "T=%d n=%zu: static shares are not bnl_split's", T, n);
                }
            }
        }
    }
    bnl_set_threads(0);
}

static void test_threads_for(void) {
    bnl_set_threads(4);
    int T = bnl_threads_effective();
    CHECK(bnl_threads_for(1000, 10.0, 100.0) == 1, "work below the minimum: 1 thread");
    CHECK(bnl_threads_for(2, 1e9, 1.0) == (T < 2 ? T : 2), "no more threads than items");
    CHECK(bnl_threads_for(0, 1e9, 1.0) == 1, "no items: 1 thread");
    CHECK(bnl_threads_for(1000, 1e9, 1.0) == T, "enough work: every thread (%d)", T);
    bnl_set_threads(0);
}

// Item i fails (status depends on i) for i in a set; threads reach them in any order.
typedef struct {
    bnl_first_error err;
} err_ctx;

static void fail_some(void *ctx, size_t i0, size_t i1, int tid) {
    err_ctx *e = ctx;
    for (size_t i = i1; i-- > i0;) {   // backwards: later failures are noted first
        if (i % 97 == 13 || i == 500) {
            bnl_status st = bnl_fail(i == 500 ? BNL_ERR_IO : BNL_ERR_FORMAT, "item %zu failed", i);
            bnl_first_error_note(&e->err, i, st);
        }
    }
}

static void test_first_error(void) {
    for (int T = 1; T <= 4; T++) {
        for (int dyn = 0; dyn < 2; dyn++) {
            bnl_set_threads(T);
            err_ctx e;
            bnl_first_error_init(&e.err);
            bnl_clear_error();
            if (dyn) bnl_parallel_for_dynamic(1000, T, fail_some, &e);
            else bnl_parallel_for(1000, T, fail_some, &e);
            bnl_status st = bnl_first_error_status(&e.err);
            CHECK(st == BNL_ERR_FORMAT, "T=%d: status %d, expected the earliest item's", T, (int)st);
            CHECK(strcmp(bnl_last_error(), "item 13 failed") == 0, "T=%d %s: message '%s'", T, dyn ? "dynamic" : "static",
                  bnl_last_error());
            bnl_first_error_init(&e.err);
            CHECK(bnl_first_error_status(&e.err) == BNL_OK, "no error noted: BNL_OK");
        }
    }
    bnl_set_threads(0);
}

int main(void) {
    (void)check_close;
    test_coverage();
    test_threads_for();
    test_first_error();
    return test_summary("test_parallel");
}
