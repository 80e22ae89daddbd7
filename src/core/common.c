#include "core/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char g_last_error[512];

const char *bnl_status_str(bnl_status s) {
    switch (s) {
    case BNL_OK: return "ok";
    case BNL_ERR_ARG: return "invalid argument";
    case BNL_ERR_NOMEM: return "out of memory";
    case BNL_ERR_IO: return "I/O error";
    case BNL_ERR_FORMAT: return "malformed file";
    case BNL_ERR_SHAPE: return "shape mismatch";
    case BNL_ERR_BATCH: return "batch too small";
    case BNL_ERR_UNSUPPORTED: return "unsupported";
    case BNL_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown status";
}

const char *bnl_last_error(void) { return g_last_error; }

void bnl_clear_error(void) { g_last_error[0] = 0; }

bnl_status bnl_fail(bnl_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return s;
}

void *bnl_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    // round up: aligned_alloc requires a multiple of the alignment
    if (bytes > SIZE_MAX - 63) return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

void *bnl_calloc(size_t count, size_t size) {
    size_t bytes;
    if (!bnl_mul_ok(count, size, &bytes)) return NULL;
    void *p = bnl_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void bnl_free(void *p) { free(p); }

static int g_threads = 0;

void bnl_set_threads(int n) { g_threads = n < 0 ? 0 : n; }
int bnl_get_threads(void) { return bnl_threads_effective(); }

int bnl_threads_effective(void) {
#ifdef _OPENMP
    if (g_threads > 0) return g_threads;
    return omp_get_max_threads();
#elif defined(__EMSCRIPTEN_PTHREADS__)
    return g_threads > 0 ? g_threads : 1;   // the threaded wasm build: the bridge sets it
#else
    return 1;
#endif
}
