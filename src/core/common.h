// Internal helpers shared by every module: error reporting, aligned allocation, threading.
#ifndef BNL_COMMON_H
#define BNL_COMMON_H

#include "bnlab.h"
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define BNL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BNL_PRINTF(a, b)
#endif

// Records a one-line message for bnl_last_error() and returns s, so callers can write
//   return bnl_fail(BNL_ERR_FORMAT, "safetensors: header length %llu beyond file size %zu", ...);
bnl_status bnl_fail(bnl_status s, const char *fmt, ...) BNL_PRINTF(2, 3);
void bnl_clear_error(void);

// 64-byte aligned allocation (cache line, AVX-512 vector). NULL on failure or size 0 overflow.
void *bnl_alloc(size_t bytes);
void *bnl_calloc(size_t count, size_t size);   // zeroed; checks count*size overflow
void bnl_free(void *p);

// Multiplies with overflow check: returns 0 and leaves *out unset when a*b overflows size_t.
static inline int bnl_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

// Resolved thread count for parallel loops (core/parallel.h): OpenMP's, the threaded wasm build's
// pool size, else 1.
int bnl_threads_effective(void);

// Thread t's share [*a, *b) of n items split into T contiguous, nearly equal ranges.
static inline void bnl_split(size_t n, int t, int T, size_t *a, size_t *b) {
    *a = n * (size_t)t / (size_t)T;
    *b = n * (size_t)(t + 1) / (size_t)T;
}

#endif
