// Elementwise ops: ReLU and the residual add. Flat arrays of n floats.
#include "core/common.h"
#include "ops/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Threads only for arrays worth a fork; static chunks, so it is the same code either way.
static int threads_for(size_t n) {
    if (n < (1u << 17)) return 1;
    int T = bnl_threads_effective();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    return T < 1 ? 1 : T;
}

// y = max(x, 0), with NaN kept as NaN (torch.relu does the same).
void bnl_relu_forward(float *y, const float *x, size_t n) {
    if (!y || !x) return;
    int T = threads_for(n);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long i = 0; i < (long long)n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

// dx = dy where the output was positive, else 0. y is the forward's output.
void bnl_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    if (!dx || !dy || !y) return;
    int T = threads_for(n);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long i = 0; i < (long long)n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void bnl_add_forward(float *y, const float *a, const float *b, size_t n) {
    if (!y || !a || !b) return;
    int T = threads_for(n);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long i = 0; i < (long long)n; i++) y[i] = a[i] + b[i];
}
