// Pooling, NHWC: max pool with argmax for backward (the ResNet stem's 3x3/2 pad 1) and the global
// average pool before the classifier.
//
// Sizes: N batch, H/W input, C channels, P/Q output, k window, HW = H*W.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

static int threads_for(size_t items, size_t work) { return bnl_threads_for(items, (double)work, 65536.0); }

// The arguments of a pooling call, for the loop bodies.
typedef struct {
    float *y;
    int32_t *argmax;
    const float *x;
    const int32_t *amax;
    int N, H, W, C, k, stride, pad, P, Q;
} pool_args;

#define POOL_CB 16   // channels per item of the max pool's backward
static void maxpool_rows(void *vc, size_t g0, size_t g1, int tid);
static void maxpool_bwd_items(void *vc, size_t i0, size_t i1, int tid);
static void avgpool_images(void *vc, size_t n0, size_t n1, int tid);
static void avgpool_bwd_images(void *vc, size_t n0, size_t n1, int tid);

// *out = N*H*W*C elements, 0 if that many floats would not fit size_t.
static int sizes_ok(size_t *out, int N, int H, int W, int C) {
    size_t n, bytes;
    if (!bnl_mul_ok((size_t)N, (size_t)H, &n) || !bnl_mul_ok(n, (size_t)W, &n) ||
        !bnl_mul_ok(n, (size_t)C, &n) || !bnl_mul_ok(n, sizeof(float), &bytes))
        return 0;
    *out = n;
    return 1;
}

// ---- max pool --------------------------------------------------------------------------------
// PyTorch's rule, window scanned row by row: a value replaces the current max if it is greater or
// NaN, so the first maximum wins ties and NaN propagates. The max starts at the first in-window
// position, which equals PyTorch's start of -inf with that index (padding never wins).

bnl_status bnl_maxpool_forward(float *y, int32_t *argmax, const float *x, int N, int H, int W, int C,
                               int k, int stride, int pad, int P, int Q) {
    if (!y || !x) return bnl_fail(BNL_ERR_ARG, "maxpool_forward: NULL pointer (y=%p x=%p)", (void *)y, (const void *)x);
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0)
        return bnl_fail(BNL_ERR_ARG, "maxpool_forward: sizes must be positive (N=%d H=%d W=%d C=%d)", N, H, W, C);
    if (k <= 0 || stride <= 0 || pad < 0)
        return bnl_fail(BNL_ERR_ARG, "maxpool_forward: bad window (k=%d stride=%d pad=%d)", k, stride, pad);
    if (pad > k / 2)
        return bnl_fail(BNL_ERR_ARG, "maxpool_forward: padding %d is more than half the window %d", pad, k);
    if ((int64_t)H * W > INT32_MAX)
        return bnl_fail(BNL_ERR_ARG, "maxpool_forward: H*W = %lld does not fit an int32 argmax", (long long)H * W);
    int64_t hp = (int64_t)H + 2 * (int64_t)pad, wp = (int64_t)W + 2 * (int64_t)pad;
    if (hp < k || wp < k)
        return bnl_fail(BNL_ERR_SHAPE, "maxpool_forward: window %d larger than the padded input %lldx%lld", k, (long long)hp, (long long)wp);
    int64_t Pe = (hp - k) / stride + 1, Qe = (wp - k) / stride + 1;
    if (P != Pe || Q != Qe)
        return bnl_fail(BNL_ERR_SHAPE, "maxpool_forward: output %dx%d, expected %lldx%lld for input %dx%d, k=%d stride=%d pad=%d",
                        P, Q, (long long)Pe, (long long)Qe, H, W, k, stride, pad);
    size_t nx, ny;
    if (!sizes_ok(&nx, N, H, W, C) || !sizes_ok(&ny, N, P, Q, C))
        return bnl_fail(BNL_ERR_ARG, "maxpool_forward: tensor sizes overflow");
    size_t rows = (size_t)N * (size_t)P;
    pool_args pa = {y, argmax, x, NULL, N, H, W, C, k, stride, pad, P, Q};
    bnl_parallel_for(rows, threads_for(rows, ny), maxpool_rows, &pa);
    return BNL_OK;
}

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

// Output rows (n, p) [g0, g1).
static void maxpool_rows(void *vc, size_t g0, size_t g1, int tid) {
    const pool_args *pa = vc;
    float *y = pa->y;
    int32_t *argmax = pa->argmax;
    const float *x = pa->x;
    int H = pa->H, W = pa->W, k = pa->k, stride = pa->stride, pad = pa->pad, P = pa->P, Q = pa->Q;
    size_t Cs = (size_t)pa->C;
    for (size_t g = g0; g < g1; g++) {
        size_t n = g / (size_t)P, p = g % (size_t)P;
        const float *xn = x + n * (size_t)H * (size_t)W * Cs;
        int h0 = (int)p * stride - pad, h1 = h0 + k;
        if (h0 < 0) h0 = 0;
        if (h1 > H) h1 = H;
        for (int q = 0; q < Q; q++) {
            int w0 = q * stride - pad, w1 = w0 + k;
            if (w0 < 0) w0 = 0;
            if (w1 > W) w1 = W;
            size_t o = ((size_t)g * (size_t)Q + (size_t)q) * Cs;
            float *yo = y + o;
            int32_t *ao = argmax ? argmax + o : NULL;
            int32_t first = (int32_t)(h0 * W + w0);
            memcpy(yo, xn + (size_t)first * Cs, Cs * sizeof(float));
            if (ao)
                for (size_t c = 0; c < Cs; c++) ao[c] = first;
            for (int h = h0; h < h1; h++)
                for (int w = w0; w < w1; w++) {
                    int32_t idx = (int32_t)(h * W + w);
                    if (idx == first) continue;
                    const float *xv = xn + (size_t)idx * Cs;
                    size_t c = 0;
                    // 4 channels at a time, selects instead of branches (a branch per value mispredicts
                    // on natural activations); the same rule, so the same values and indices
                    for (; c + 4 <= Cs; c += 4) {
                        v4f a, b;
                        memcpy(&a, xv + c, 16), memcpy(&b, yo + c, 16);
                        v4i take = (a > b) | (a != a);
                        v4f r = (v4f)(((v4i)a & take) | ((v4i)b & ~take));
                        memcpy(yo + c, &r, 16);
                        if (ao) {
                            v4i old, id = {idx, idx, idx, idx};
                            memcpy(&old, ao + c, 16);
                            old = (id & take) | (old & ~take);
                            memcpy(ao + c, &old, 16);
                        }
                    }
                    for (; c < Cs; c++)
                        if (xv[c] > yo[c] || isnan(xv[c])) {
                            yo[c] = xv[c];
                            if (ao) ao[c] = idx;
                        }
                }
        }
    }
}

bnl_status bnl_maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int N, int H, int W,
                                int C, int P, int Q) {
    if (!dx || !dy || !argmax)
        return bnl_fail(BNL_ERR_ARG, "maxpool_backward: NULL pointer (dx=%p dy=%p argmax=%p)", (void *)dx, (const void *)dy, (const void *)argmax);
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || P <= 0 || Q <= 0)
        return bnl_fail(BNL_ERR_ARG, "maxpool_backward: sizes must be positive (N=%d H=%d W=%d C=%d P=%d Q=%d)", N, H, W, C, P, Q);
    size_t nx, ny;
    if (!sizes_ok(&nx, N, H, W, C) || !sizes_ok(&ny, N, P, Q, C) || (int64_t)H * W > INT32_MAX)
        return bnl_fail(BNL_ERR_ARG, "maxpool_backward: tensor sizes overflow");
    size_t Cs = (size_t)C, HW = (size_t)H * (size_t)W;
    for (size_t i = 0; i < ny; i++)
        if (argmax[i] < 0 || (size_t)argmax[i] >= HW)
            return bnl_fail(BNL_ERR_ARG, "maxpool_backward: argmax[%zu] = %d outside the %dx%d input", i, (int)argmax[i], H, W);
    // Parallel over (image, block of channels): each dx value belongs to one block, and gets its
    // terms in output order.
    size_t ncb = (Cs + POOL_CB - 1) / POOL_CB, items = (size_t)N * ncb;
    pool_args pa = {dx, NULL, dy, argmax, N, H, W, C, 0, 0, 0, P, Q};
    bnl_parallel_for(items, threads_for(items, nx + ny), maxpool_bwd_items, &pa);
    return BNL_OK;
}

// Items (image, block of POOL_CB channels) [i0, i1): y = dx, x = dy, amax = argmax.
static void maxpool_bwd_items(void *vc, size_t i0, size_t i1, int tid) {
    const pool_args *pa = vc;
    float *dx = pa->y;
    const float *dy = pa->x;
    const int32_t *argmax = pa->amax;
    size_t Cs = (size_t)pa->C, PQ = (size_t)pa->P * (size_t)pa->Q, HW = (size_t)pa->H * (size_t)pa->W;
    size_t ncb = (Cs + POOL_CB - 1) / POOL_CB;
    for (size_t it = i0; it < i1; it++) {
        size_t n = it / ncb, c0 = (it % ncb) * POOL_CB, c1 = c0 + POOL_CB < Cs ? c0 + POOL_CB : Cs;
        float *dxn = dx + n * HW * Cs;
        for (size_t i = 0; i < HW; i++) memset(dxn + i * Cs + c0, 0, (c1 - c0) * sizeof(float));
        const float *dyn = dy + n * PQ * Cs;
        const int32_t *an = argmax + n * PQ * Cs;
        for (size_t o = 0; o < PQ; o++)
            for (size_t c = c0; c < c1; c++) dxn[(size_t)an[o * Cs + c] * Cs + c] += dyn[o * Cs + c];
    }
}

// ---- global average pool ---------------------------------------------------------------------

bnl_status bnl_avgpool_forward(float *y, const float *x, int N, int HW, int C) {
    if (!y || !x) return bnl_fail(BNL_ERR_ARG, "avgpool_forward: NULL pointer (y=%p x=%p)", (void *)y, (const void *)x);
    if (N <= 0 || HW <= 0 || C <= 0)
        return bnl_fail(BNL_ERR_ARG, "avgpool_forward: sizes must be positive (N=%d HW=%d C=%d)", N, HW, C);
    size_t nx;
    if (!sizes_ok(&nx, N, HW, 1, C)) return bnl_fail(BNL_ERR_ARG, "avgpool_forward: tensor size overflows");
    pool_args pa = {y, NULL, x, NULL, N, HW, 1, C, 0, 0, 0, 0, 0};
    bnl_parallel_for((size_t)N, threads_for((size_t)N, nx), avgpool_images, &pa);
    return BNL_OK;
}

// Images [n0, n1) (H holds HW).
static void avgpool_images(void *vc, size_t n0, size_t n1, int tid) {
    const pool_args *pa = vc;
    float *y = pa->y;
    const float *x = pa->x;
    size_t Cs = (size_t)pa->C, HWs = (size_t)pa->H;
    float fhw = (float)pa->H;
    for (size_t n = n0; n < n1; n++) {
        float *yn = y + (size_t)n * Cs;
        const float *xn = x + (size_t)n * HWs * Cs;
        memcpy(yn, xn, Cs * sizeof(float));
        for (size_t i = 1; i < HWs; i++)
            for (size_t c = 0; c < Cs; c++) yn[c] += xn[i * Cs + c];
        for (size_t c = 0; c < Cs; c++) yn[c] /= fhw;   // divide, as torch's mean does
    }
}

// dx[n,i,c] = dy[n,c] / HW for every position i: each input contributed 1/HW of the mean.
bnl_status bnl_avgpool_backward(float *dx, const float *dy, int N, int HW, int C) {
    if (!dx || !dy) return bnl_fail(BNL_ERR_ARG, "avgpool_backward: NULL pointer (dx=%p dy=%p)", (void *)dx, (const void *)dy);
    if (N <= 0 || HW <= 0 || C <= 0)
        return bnl_fail(BNL_ERR_ARG, "avgpool_backward: sizes must be positive (N=%d HW=%d C=%d)", N, HW, C);
    size_t nx;
    if (!sizes_ok(&nx, N, HW, 1, C)) return bnl_fail(BNL_ERR_ARG, "avgpool_backward: tensor size overflows");
    pool_args pa = {dx, NULL, dy, NULL, N, HW, 1, C, 0, 0, 0, 0, 0};
    bnl_parallel_for((size_t)N, threads_for((size_t)N, nx), avgpool_bwd_images, &pa);
    return BNL_OK;
}

// Images [n0, n1): y = dx, x = dy (H holds HW).
static void avgpool_bwd_images(void *vc, size_t n0, size_t n1, int tid) {
    const pool_args *pa = vc;
    float *dx = pa->y;
    const float *dy = pa->x;
    size_t Cs = (size_t)pa->C, HWs = (size_t)pa->H;
    float fhw = (float)pa->H;
    for (size_t n = n0; n < n1; n++) {
        const float *dyn = dy + (size_t)n * Cs;
        float *dxn = dx + (size_t)n * HWs * Cs;
        for (size_t i = 0; i < HWs; i++)
            for (size_t c = 0; c < Cs; c++) dxn[i * Cs + c] = dyn[c] / fhw;
    }
}
