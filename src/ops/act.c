// Elementwise ops: ReLU and the residual add. Flat arrays of n floats.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/ops.h"

// Threads only for arrays worth a fork; static chunks, so it is the same code either way.
static int threads_for(size_t n) { return bnl_threads_for(n, (double)n, (double)(1u << 17)); }

typedef struct {
    float *y;
    const float *a, *b;
} ew_t;

static void relu_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    for (size_t i = i0; i < i1; i++) e->y[i] = e->a[i] < 0.0f ? 0.0f : e->a[i];
}

// y = max(x, 0), with NaN kept as NaN (torch.relu does the same).
void bnl_relu_forward(float *y, const float *x, size_t n) {
    if (!y || !x) return;
    ew_t e = {y, x, NULL};
    bnl_parallel_for(n, threads_for(n), relu_range, &e);
}

static void relu_bwd_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;   // a = dy, b = y
    for (size_t i = i0; i < i1; i++) e->y[i] = e->b[i] > 0.0f ? e->a[i] : 0.0f;
}

// dx = dy where the output was positive, else 0. y is the forward's output.
void bnl_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    if (!dx || !dy || !y) return;
    ew_t e = {dx, dy, y};
    bnl_parallel_for(n, threads_for(n), relu_bwd_range, &e);
}

static void add_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    for (size_t i = i0; i < i1; i++) e->y[i] = e->a[i] + e->b[i];
}

void bnl_add_forward(float *y, const float *a, const float *b, size_t n) {
    if (!y || !a || !b) return;
    ew_t e = {y, a, b};
    bnl_parallel_for(n, threads_for(n), add_range, &e);
}
