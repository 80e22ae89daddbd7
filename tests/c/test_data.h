// Random test data shared by the op and GEMM tests: a seeded generator and float buffers that
// exit(2) when memory runs out (a test cannot go on without them). Include once per test.
#ifndef BNL_TEST_DATA_H
#define BNL_TEST_DATA_H
#include "core/rng.h"

#include <stdio.h>
#include <stdlib.h>

static bnl_rng g_rng;

static float *fmalloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(2);
    }
    return p;
}

// n floats uniform in [lo, hi) from g_rng
static float *frand(size_t n, double lo, double hi) {
    float *p = fmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * bnl_rng_uniform(&g_rng));
    return p;
}

static void fill(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}
#endif
