// The BatchNorm kernel table: one per ISA, filled by batchnorm_impl.inc compiled with that ISA's
// vector vocabulary. The driver (batchnorm.c) does the per-channel math, threading and dispatch;
// kernels stream over rows. x, dy, y, dx: (rows, C) row-major NHWC views.
#ifndef BNL_BATCHNORM_KERNELS_H
#define BNL_BATCHNORM_KERNELS_H
#include <stddef.h>

typedef struct bnl_bn_kernels {
    // Block statistics over rows [0, R), shifted two-pass inside the block (cache-resident on the
    // second pass): shift[c] = the float block mean, s1[c] = sum (x - shift), s2[c] = sum (x - shift)^2.
    // The caller forms mean = shift + s1/R and M2 = s2 - s1^2/R in double: a float block mean would
    // add its own rounding (ulp(mean)^2/12) to the variance.
    void (*block_stats)(float *shift, float *s1, float *s2, const float *x, size_t R, size_t C);
    // y = (x - mean)*scale + beta, then max(.,0) if relu. stream: y is aligned and large, write
    // around the cache (x86 non-temporal stores).
    void (*apply)(float *y, const float *x, const float *mean, const float *scale,
                  const float *beta, size_t R, size_t C, int relu, int stream);
    // The residual block's output, one pass: y = relu(t + u) with t = apply(x) as above (relu: its
    // own ReLU) and u = apply(xs; smean, sscale, sbeta, srelu) or, smean NULL, u = xs as it is (an
    // identity shortcut); the final ReLU as bnl_add_relu_forward computes it. The same operations
    // per element as apply, apply, then bnl_add_relu_forward: the same bits. y may alias x or xs.
    void (*apply_add_relu)(float *y, const float *x, const float *mean, const float *scale, const float *beta,
                           int relu, const float *xs, const float *smean, const float *sscale, const float *sbeta,
                           int srelu, size_t R, size_t C, int stream);
    // g = dy, masked where (x - mean)*scale + beta <= 0 if relu.
    // sum_g[c] = sum g, sum_gxc[c] = sum g*(x - mean) over the R rows (written, not added).
    void (*bwd_reduce)(float *sum_g, float *sum_gxc, const float *dy, const float *x,
                       const float *mean, const float *scale, const float *beta, size_t R,
                       size_t C, int relu);
    // dx = a*g + b*(x - mean) + d, g as above.
    void (*bwd_apply)(float *dx, const float *dy, const float *x, const float *mean,
                      const float *a, const float *b, const float *d, const float *scale,
                      const float *beta, size_t R, size_t C, int relu);
} bnl_bn_kernels;

// Folds one block's statistics (block_stats over nb rows) into running per-channel (mean am, M2 a2)
// over na rows, with Chan's parallel formula in double. BatchNorm's driver and GroupNorm both merge
// their row blocks with it, in block order.
static inline void bnl_bn_merge_block(double *am, double *a2, double na, const float *shift, const float *s1,
                                      const float *s2, double nb, size_t C) {
    double n = na + nb;
    for (size_t c = 0; c < C; c++) {
        double corr = (double)s1[c] / nb, bmean = (double)shift[c] + corr;
        double bm2 = (double)s2[c] - (double)s1[c] * corr;
        double delta = bmean - am[c];
        am[c] += delta * nb / n;
        a2[c] += bm2 + delta * delta * na * nb / n;
    }
}

#ifdef __x86_64__
extern const bnl_bn_kernels bnl_bn_kernels__avx2;
extern const bnl_bn_kernels bnl_bn_kernels__avx512;
#endif
#ifdef __wasm_simd128__
extern const bnl_bn_kernels bnl_bn_kernels__wasmsimd;
#endif

#endif
