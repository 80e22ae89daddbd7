// One parallel-for for the whole core: OpenMP in the native build, a pool of pthreads in the
// threaded WebAssembly build (Web Workers / worker_threads sharing one memory), inline otherwise.
// Every threaded loop in src/ goes through it, so the two builds thread the same loops the same way.
//
//   static void body(void *ctx, size_t i0, size_t i1, int tid) { ... items [i0, i1) ... }
//   bnl_parallel_for(n, bnl_threads_for(n, 1u << 17), body, &ctx);
//
// Results must not depend on the thread count: a body writes disjoint outputs per item, or keeps
// per-thread partials (indexed by tid < T) that the caller merges in a fixed order over a split
// the shape decides, not T.
#ifndef BNL_PARALLEL_H
#define BNL_PARALLEL_H

#include "bnlab.h"
#include <stddef.h>

// fn(ctx, i0, i1, tid): items [i0, i1) on thread tid (0 <= tid < the T passed).
typedef void (*bnl_range_fn)(void *ctx, size_t i0, size_t i1, int tid);

// Static: thread t of T gets the contiguous share bnl_split(n, t, T), one call (none when empty).
// Runs inline (one call, tid 0) when T <= 1, n <= 1 or already inside a parallel loop.
void bnl_parallel_for(size_t n, int T, bnl_range_fn fn, void *ctx);
// Dynamic: items handed out one at a time (i1 = i0 + 1), for items of uneven cost.
void bnl_parallel_for_dynamic(size_t n, int T, bnl_range_fn fn, void *ctx);

// 1 inside a parallel loop (nested loops run inline), else 0.
int bnl_in_parallel(void);

// Threads for a loop of `items` items and `work` units of work: 1 when work < min_work or inside
// a parallel loop, else bnl_threads_effective(), at most items, at least 1.
int bnl_threads_for(size_t items, double work, double min_work);

// The first error across threads: the one of the smallest item index wins, whatever thread hit it
// first, so the message does not depend on the thread count or timing.
typedef struct bnl_first_error {
    size_t index;
    bnl_status status;
    int lock;
    char msg[512];
} bnl_first_error;
void bnl_first_error_init(bnl_first_error *e);
// Records st (with bnl_last_error()'s text) for item index when it is earlier than any so far.
void bnl_first_error_note(bnl_first_error *e, size_t index, bnl_status st);
// BNL_OK, or the recorded error through bnl_fail.
bnl_status bnl_first_error_status(const bnl_first_error *e);

#endif
