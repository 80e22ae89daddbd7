// Linear layer with torch's layout: y = x w^T + b.
//
// Sizes: N batch, I inputs, O outputs. x: (N,I)  w: (O,I) (torch's fc.weight)  b: (O)  y: (N,O)
#include "core/common.h"
#include "ops/ops.h"

static bnl_status check_sizes(const char *who, int N, int I, int O) {
    if (N <= 0 || I <= 0 || O <= 0)
        return bnl_fail(BNL_ERR_ARG, "%s: sizes must be positive (N=%d I=%d O=%d)", who, N, I, O);
    size_t n;
    if (!bnl_mul_ok((size_t)N, (size_t)I, &n) || !bnl_mul_ok(n, sizeof(float), &n) ||
        !bnl_mul_ok((size_t)N, (size_t)O, &n) || !bnl_mul_ok(n, sizeof(float), &n) ||
        !bnl_mul_ok((size_t)O, (size_t)I, &n) || !bnl_mul_ok(n, sizeof(float), &n))
        return bnl_fail(BNL_ERR_ARG, "%s: tensor sizes overflow (N=%d I=%d O=%d)", who, N, I, O);
    return BNL_OK;
}

bnl_status bnl_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int I, int O) {
    bnl_status st = check_sizes("linear_forward", N, I, O);
    if (st != BNL_OK) return st;
    if (!y || !x || !w)
        return bnl_fail(BNL_ERR_ARG, "linear_forward: NULL pointer (y=%p x=%p w=%p)", (void *)y, (const void *)x, (const void *)w);
    size_t Os = (size_t)O;
    bnl_gemm_nt(y, x, w, (size_t)N, Os, (size_t)I, 0);   // y (N,O) = x (N,I) w (O,I)^T
    if (b)
        for (size_t n = 0; n < (size_t)N; n++)
            for (size_t o = 0; o < Os; o++) y[n * Os + o] += b[o];
    return BNL_OK;
}

// dx = dy w (written), dw += dy^T x, db += sum over the batch of dy.
bnl_status bnl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, int N, int I, int O) {
    bnl_status st = check_sizes("linear_backward", N, I, O);
    if (st != BNL_OK) return st;
    if (!dy) return bnl_fail(BNL_ERR_ARG, "linear_backward: dy is NULL");
    if (dw && !x) return bnl_fail(BNL_ERR_ARG, "linear_backward: x is NULL (needed for dw)");
    if (dx && !w) return bnl_fail(BNL_ERR_ARG, "linear_backward: w is NULL (needed for dx)");
    size_t Ns = (size_t)N, Is = (size_t)I, Os = (size_t)O;
    if (dx) bnl_gemm_nn(dx, dy, w, Ns, Is, Os, 0);   // dx (N,I) = dy (N,O) w (O,I)
    if (dw) bnl_gemm_tn(dw, dy, x, Os, Is, Ns, 1);   // dw (O,I) += dy^T (O,N) x (N,I)
    if (db)
        for (size_t o = 0; o < Os; o++) {
            float acc = 0.0f;
            for (size_t n = 0; n < Ns; n++) acc += dy[n * Os + o];
            db[o] += acc;
        }
    return BNL_OK;
}
