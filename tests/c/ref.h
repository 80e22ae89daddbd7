// Reference computations shared by the C tests, in double with plain loops (no blocking, no SIMD),
// and the bitwise comparison. Include after util.h (it counts into g_checks/g_failures).
//
// bitwise_equal is strict: every float, NaN or not, must have the same 32 bits (sign and payload
// included). The C tests run natively, where x86 propagates NaNs deterministically (an input NaN's
// payload passes through; an invalid operation such as 0*inf gives the default NaN), so two code
// paths computing the same thing give the same NaN bits. Accepting any two NaNs as equal would hide
// a kernel that makes a new NaN where the reference passes an input NaN through (or flips its sign).
// (WebAssembly leaves NaN bits open in general; test_gemm's NaN checks also pass in wasm under V8
// on x64, where the README's emcc line runs it, but another engine or CPU may differ there.)
#ifndef BNL_TEST_REF_H
#define BNL_TEST_REF_H
#include "ops/ops.h"
#include "util.h"

#include <stdint.h>
#include <string.h>

static int bitwise_equal(const char *what, const float *a, const float *b, size_t n) {
    g_checks++;
    for (size_t i = 0; i < n; i++) {
        uint32_t ua, ub;
        memcpy(&ua, &a[i], sizeof ua), memcpy(&ub, &b[i], sizeof ub);
        if (ua != ub) {
            g_failures++;
            fprintf(stderr, "FAIL %s: not bitwise equal at [%zu]: %.9g (0x%08x) vs %.9g (0x%08x)\n", what, i,
                    (double)a[i], (unsigned)ua, (double)b[i], (unsigned)ub);
            return 0;
        }
    }
    return 1;
}

// C (M,N) = op(A) op(B) in double; ta: A is (K,M) instead of (M,K); tb: B is (N,K) instead of (K,N).
static void ref_gemm(double *C, const float *A, const float *B, size_t M, size_t N, size_t K, int ta, int tb) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0;
            for (size_t k = 0; k < K; k++) {
                double a = ta ? A[k * M + i] : A[i * K + k];
                double b = tb ? B[j * K + k] : B[k * N + j];
                s += a * b;
            }
            C[i * N + j] = s;
        }
}

// Direct convolution, NHWC: y (N,P,Q,K) = x (N,H,W,C) * w (K,R,S,C), zero padding, in double.
static void ref_conv(double *y, const float *x, const float *w, const bnl_conv_shape *s) {
    for (int n = 0; n < s->N; n++)
        for (int p = 0; p < s->P; p++)
            for (int q = 0; q < s->Q; q++)
                for (int k = 0; k < s->K; k++) {
                    double acc = 0;
                    for (int r = 0; r < s->R; r++)
                        for (int t = 0; t < s->S; t++) {
                            int h = p * s->stride - s->pad + r, ww = q * s->stride - s->pad + t;
                            if (h < 0 || h >= s->H || ww < 0 || ww >= s->W) continue;
                            for (int c = 0; c < s->C; c++)
                                acc += (double)x[(((size_t)n * s->H + h) * s->W + ww) * s->C + c] *
                                       w[(((size_t)k * s->R + r) * s->S + t) * s->C + c];
                        }
                    y[(((size_t)n * s->P + p) * s->Q + q) * s->K + k] = acc;
                }
}

// Its gradients in double: dx (N,H,W,C) and dw (K,R,S,C), both overwritten, from dy (N,P,Q,K).
static void ref_conv_backward(double *dx, double *dw, const float *dy, const float *x, const float *w,
                              const bnl_conv_shape *s) {
    size_t nx = (size_t)s->N * s->H * s->W * s->C, nw = (size_t)s->K * s->R * s->S * s->C;
    memset(dx, 0, nx * sizeof(double)), memset(dw, 0, nw * sizeof(double));
    for (int n = 0; n < s->N; n++)
        for (int p = 0; p < s->P; p++)
            for (int q = 0; q < s->Q; q++)
                for (int k = 0; k < s->K; k++) {
                    double g = dy[(((size_t)n * s->P + p) * s->Q + q) * s->K + k];
                    for (int r = 0; r < s->R; r++)
                        for (int t = 0; t < s->S; t++) {
                            int h = p * s->stride - s->pad + r, ww = q * s->stride - s->pad + t;
                            if (h < 0 || h >= s->H || ww < 0 || ww >= s->W) continue;
                            for (int c = 0; c < s->C; c++) {
                                size_t xi = (((size_t)n * s->H + h) * s->W + ww) * s->C + c;
                                size_t wi = (((size_t)k * s->R + r) * s->S + t) * s->C + c;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                        }
                }
}

static void ref_to_float(float *d, const double *s, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (float)s[i];
}
#endif
