// Pooling, NHWC: max pool with argmax for backward (the ResNet stem's 3x3/2 pad 1) and the global
// average pool before the classifier.
//
// Sizes: N batch, H/W input, C channels, P/Q output, k window, HW = H*W.
#include "core/common.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int threads_for(size_t items, size_t work) {
    int T = bnl_threads_effective();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (work < 65536) T = 1;
    if ((size_t)T > items) T = (int)items;
    return T < 1 ? 1 : T;
}

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
    size_t rows = (size_t)N * (size_t)P, Cs = (size_t)C;
    int T = threads_for(rows, ny);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long g = 0; g < (long long)rows; g++) {   // one output row (n, p) per iteration
        size_t n = (size_t)g / (size_t)P, p = (size_t)g % (size_t)P;
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
                    if (ao) {
                        for (size_t c = 0; c < Cs; c++)
                            if (xv[c] > yo[c] || isnan(xv[c])) yo[c] = xv[c], ao[c] = idx;
                    } else {
                        for (size_t c = 0; c < Cs; c++)
                            if (xv[c] > yo[c] || isnan(xv[c])) yo[c] = xv[c];
                    }
                }
        }
    }
    return BNL_OK;
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
    size_t Cs = (size_t)C, PQ = (size_t)P * (size_t)Q, HW = (size_t)H * (size_t)W;
    for (size_t i = 0; i < ny; i++)
        if (argmax[i] < 0 || (size_t)argmax[i] >= HW)
            return bnl_fail(BNL_ERR_ARG, "maxpool_backward: argmax[%zu] = %d outside the %dx%d input", i, (int)argmax[i], H, W);
    // Parallel over (image, block of channels): each dx value belongs to one block, and gets its
    // terms in output order.
    const size_t CB = 16;
    size_t ncb = (Cs + CB - 1) / CB, items = (size_t)N * ncb;
    int T = threads_for(items, nx + ny);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long it = 0; it < (long long)items; it++) {
        size_t n = (size_t)it / ncb, c0 = ((size_t)it % ncb) * CB, c1 = c0 + CB < Cs ? c0 + CB : Cs;
        float *dxn = dx + n * HW * Cs;
        for (size_t i = 0; i < HW; i++) memset(dxn + i * Cs + c0, 0, (c1 - c0) * sizeof(float));
        const float *dyn = dy + n * PQ * Cs;
        const int32_t *an = argmax + n * PQ * Cs;
        for (size_t o = 0; o < PQ; o++)
            for (size_t c = c0; c < c1; c++) dxn[(size_t)an[o * Cs + c] * Cs + c] += dyn[o * Cs + c];
    }
    return BNL_OK;
}

// ---- global average pool ---------------------------------------------------------------------

bnl_status bnl_avgpool_forward(float *y, const float *x, int N, int HW, int C) {
    if (!y || !x) return bnl_fail(BNL_ERR_ARG, "avgpool_forward: NULL pointer (y=%p x=%p)", (void *)y, (const void *)x);
    if (N <= 0 || HW <= 0 || C <= 0)
        return bnl_fail(BNL_ERR_ARG, "avgpool_forward: sizes must be positive (N=%d HW=%d C=%d)", N, HW, C);
    size_t nx;
    if (!sizes_ok(&nx, N, HW, 1, C)) return bnl_fail(BNL_ERR_ARG, "avgpool_forward: tensor size overflows");
    size_t Cs = (size_t)C, HWs = (size_t)HW;
    float fhw = (float)HW;
    int T = threads_for((size_t)N, nx);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long n = 0; n < (long long)N; n++) {
        float *yn = y + (size_t)n * Cs;
        const float *xn = x + (size_t)n * HWs * Cs;
        memcpy(yn, xn, Cs * sizeof(float));
        for (size_t i = 1; i < HWs; i++)
            for (size_t c = 0; c < Cs; c++) yn[c] += xn[i * Cs + c];
        for (size_t c = 0; c < Cs; c++) yn[c] /= fhw;   // divide, as torch's mean does
    }
    return BNL_OK;
}

// dx[n,i,c] = dy[n,c] / HW for every position i: each input contributed 1/HW of the mean.
bnl_status bnl_avgpool_backward(float *dx, const float *dy, int N, int HW, int C) {
    if (!dx || !dy) return bnl_fail(BNL_ERR_ARG, "avgpool_backward: NULL pointer (dx=%p dy=%p)", (void *)dx, (const void *)dy);
    if (N <= 0 || HW <= 0 || C <= 0)
        return bnl_fail(BNL_ERR_ARG, "avgpool_backward: sizes must be positive (N=%d HW=%d C=%d)", N, HW, C);
    size_t nx;
    if (!sizes_ok(&nx, N, HW, 1, C)) return bnl_fail(BNL_ERR_ARG, "avgpool_backward: tensor size overflows");
    size_t Cs = (size_t)C, HWs = (size_t)HW;
    float fhw = (float)HW;
    int T = threads_for((size_t)N, nx);
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long n = 0; n < (long long)N; n++) {
        const float *dyn = dy + (size_t)n * Cs;
        float *dxn = dx + (size_t)n * HWs * Cs;
        for (size_t i = 0; i < HWs; i++)
            for (size_t c = 0; c < Cs; c++) dxn[i * Cs + c] = dyn[c] / fhw;
    }
    return BNL_OK;
}
