// Elementwise passes of the residual blocks, fused (each is one read of its inputs, one write).
// Flat arrays of n floats.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/ops.h"

// Threads only for arrays worth a fork; static chunks, so it is the same code either way.
static int threads_for(size_t n) { return bnl_threads_for(n, (double)n, (double)(1u << 17)); }

typedef struct {
    float *out;
    const float *a, *b, *y;
} ew_t;

static void add_relu_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    const float *a = e->a, *b = e->b;
    float *y = e->out;
    for (size_t i = i0; i < i1; i++) {
        float v = a[i] + b[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

void bnl_add_relu_forward(float *y, const float *a, const float *b, size_t n) {
    if (!y || !a || !b) return;
    ew_t e = {y, a, b, NULL};
    bnl_parallel_for(n, threads_for(n), add_relu_range, &e);
}

static void add_relu_backward_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    const float *a = e->a, *b = e->b, *y = e->y;
    float *g = e->out;
    for (size_t i = i0; i < i1; i++) {
        float v = b ? a[i] + b[i] : a[i];   // both loads unconditional: the loop vectorizes
        g[i] = !y || y[i] > 0.0f ? v : 0.0f;
    }
}

void bnl_add_relu_backward(float *g, const float *a, const float *b, const float *y, size_t n) {
    if (!g || !a) return;
    ew_t e = {g, a, b, y};
    bnl_parallel_for(n, threads_for(n), add_relu_backward_range, &e);
}
