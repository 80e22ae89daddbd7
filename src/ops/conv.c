// 2-D convolution, NHWC, no bias: im2col-style patch gathering in tiles of output pixels plus the
// shared GEMMs (src/ops/gemm.c).
//
// Sizes: N batch, H/W input, C input channels, K output channels, R/S kernel, P/Q output.
// x: (N,H,W,C)  w: (K,R,S,C)  y: (N,P,Q,K). A patch row is (R,S,C) = RSC floats, in w's order, so
//   y[pix, k] = sum_j patch[pix, j] * w[k, j]                           (forward: GEMM NT)
//   dw[k, j] += sum_pix dy[pix, k] * patch[pix, j]                      (GEMM TN)
//   dpatch[pix, j] = sum_k dy[pix, k] * w[k, j], then col2im into dx    (GEMM NN)
// Tiles are ranges of flattened output pixels (n,p,q): 128 to 512 of them, about 4 MB of patches,
// so the scratch stays bounded whatever the batch. 1x1 stride-1 unpadded convs are GEMMs on x
// itself, no copy.
//
// Threads: forward runs tiles in parallel (one patch buffer per thread) when there are enough of
// them, else tiles in order with the gather and the GEMM parallel inside. Backward runs tiles in
// order with each stage parallel inside; dw is split by its own rows/columns inside the GEMM and
// col2im by input rows, so no two threads ever add into the same value and every sum runs in
// output-pixel order: results are bitwise the same for any thread count and any tile size.
#include "core/common.h"
#include "ops/ops.h"

#include <limits.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CONV_TILE_FLOATS (1024 * 1024)   // target patch buffer: 4 MB
#define CONV_TILE_MIN 128
#define CONV_TILE_MAX 512

static int g_tile_pixels = 0;   // 0: automatic

void bnl_conv_set_tile_pixels(int pixels) { g_tile_pixels = pixels > 0 ? pixels : 0; }

// a*b*c*d floats fit in size_t bytes (sizes positive)
static int bytes_fit(int a, int b, int c, int d) {
    size_t n = sizeof(float);
    return bnl_mul_ok(n, (size_t)a, &n) && bnl_mul_ok(n, (size_t)b, &n) && bnl_mul_ok(n, (size_t)c, &n) &&
           bnl_mul_ok(n, (size_t)d, &n);
}

bnl_status bnl_conv_shape_init(bnl_conv_shape *s, int N, int H, int W, int C, int K, int R, int S,
                               int stride, int pad) {
    if (!s) return bnl_fail(BNL_ERR_ARG, "conv: shape pointer is NULL");
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || K <= 0)
        return bnl_fail(BNL_ERR_ARG, "conv: sizes must be positive (N=%d H=%d W=%d C=%d K=%d)", N, H, W, C, K);
    if (R <= 0 || S <= 0) return bnl_fail(BNL_ERR_ARG, "conv: kernel size must be positive (R=%d S=%d)", R, S);
    if (stride <= 0) return bnl_fail(BNL_ERR_ARG, "conv: stride must be positive (got %d)", stride);
    if (pad < 0) return bnl_fail(BNL_ERR_ARG, "conv: padding must be non-negative (got %d)", pad);
    int64_t hp = (int64_t)H + 2 * (int64_t)pad, wp = (int64_t)W + 2 * (int64_t)pad;
    if (hp < R || wp < S)
        return bnl_fail(BNL_ERR_SHAPE, "conv: kernel %dx%d larger than the padded input %lldx%lld",
                        R, S, (long long)hp, (long long)wp);
    int64_t P = (hp - R) / stride + 1, Q = (wp - S) / stride + 1;
    if (P > INT_MAX || Q > INT_MAX) return bnl_fail(BNL_ERR_ARG, "conv: output size overflows int");
    // every tensor's byte count must fit size_t (32 bits in wasm)
    if (!bytes_fit(N, H, W, C) || !bytes_fit(N, (int)P, (int)Q, K) || !bytes_fit(K, R, S, C))
        return bnl_fail(BNL_ERR_ARG, "conv: tensor sizes overflow (N=%d H=%d W=%d C=%d K=%d R=%d S=%d)",
                        N, H, W, C, K, R, S);
    s->N = N, s->H = H, s->W = W, s->C = C, s->K = K, s->R = R, s->S = S;
    s->stride = stride, s->pad = pad, s->P = (int)P, s->Q = (int)Q;
    return BNL_OK;
}

// A shape filled by hand must agree with bnl_conv_shape_init.
static bnl_status check_shape(const bnl_conv_shape *s, const char *who) {
    if (!s) return bnl_fail(BNL_ERR_ARG, "%s: shape is NULL", who);
    bnl_conv_shape t = {0};
    bnl_status st = bnl_conv_shape_init(&t, s->N, s->H, s->W, s->C, s->K, s->R, s->S, s->stride, s->pad);
    if (st != BNL_OK) return st;
    if (t.P != s->P || t.Q != s->Q)
        return bnl_fail(BNL_ERR_SHAPE, "%s: output %dx%d does not match input %dx%d, kernel %dx%d, stride %d, pad %d (expected %dx%d)",
                        who, s->P, s->Q, s->H, s->W, s->R, s->S, s->stride, s->pad, t.P, t.Q);
    return BNL_OK;
}

static int is_pointwise(const bnl_conv_shape *s) {
    return s->R == 1 && s->S == 1 && s->stride == 1 && s->pad == 0;
}

static size_t tile_pixels(const bnl_conv_shape *s, size_t rsc) {
    if (g_tile_pixels > 0) return (size_t)g_tile_pixels;
    size_t t = CONV_TILE_FLOATS / rsc;
    if (t < CONV_TILE_MIN) t = CONV_TILE_MIN;
    if (t > CONV_TILE_MAX) t = CONV_TILE_MAX;
    return t;
}

static int threads_for(size_t items) {
    int T = bnl_threads_effective();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if ((size_t)T > items) T = (int)items;
    return T < 1 ? 1 : T;
}

// One patch row: the (R,S,C) window of output pixel `pix` (flattened n,p,q), zeros in the padding.
static void gather_pixel(float *restrict dst, const float *restrict x, const bnl_conv_shape *s, size_t pix) {
    size_t C = (size_t)s->C, SC = (size_t)s->S * C;
    size_t q = pix % (size_t)s->Q, np = pix / (size_t)s->Q;
    size_t p = np % (size_t)s->P, n = np / (size_t)s->P;
    long h0 = (long)p * s->stride - s->pad, w0 = (long)q * s->stride - s->pad;
    const float *xn = x + n * (size_t)s->H * (size_t)s->W * C;
    for (int r = 0; r < s->R; r++, dst += SC) {
        long h = h0 + r;
        if (h < 0 || h >= s->H) {
            memset(dst, 0, SC * sizeof(float));
            continue;
        }
        const float *xr = xn + (size_t)h * (size_t)s->W * C;
        if (w0 >= 0 && w0 + s->S <= s->W) {   // this row of the window is inside: S*C contiguous floats
            memcpy(dst, xr + (size_t)w0 * C, SC * sizeof(float));
            continue;
        }
        for (int c0 = 0; c0 < s->S; c0++) {
            long w = w0 + c0;
            if (w < 0 || w >= s->W) memset(dst + (size_t)c0 * C, 0, C * sizeof(float));
            else memcpy(dst + (size_t)c0 * C, xr + (size_t)w * C, C * sizeof(float));
        }
    }
}

// Patches of output pixels [t0, t1) into buf: ((t1-t0), RSC).
static void gather_tile(float *buf, const float *x, const bnl_conv_shape *s, size_t rsc, size_t t0,
                        size_t t1, int T) {
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long t = (long long)t0; t < (long long)t1; t++)
        gather_pixel(buf + ((size_t)t - t0) * rsc, x, s, (size_t)t);
}

// col2im for output pixels [t0, t1): dx += the patch gradients, summed where windows overlap.
// Parallel over input rows (n,h): each thread writes only its own rows. r runs downwards so that
// p, and then q, go upwards: every dx value gets its terms in output-pixel order, whatever the
// thread count and wherever the tile boundaries fall.
static void col2im_tile(float *dx, const float *dpatch, const bnl_conv_shape *s, size_t rsc,
                        size_t t0, size_t t1, int T) {
    size_t P = (size_t)s->P, Q = (size_t)s->Q, H = (size_t)s->H, W = (size_t)s->W, C = (size_t)s->C;
    size_t g0 = t0 / Q, g1 = (t1 - 1) / Q;                // output rows (n*P + p), inclusive
    size_t n0 = g0 / P, p0 = g0 % P, n1 = g1 / P, p1 = g1 % P;
    long lo = (long)p0 * s->stride - s->pad, hi = (long)p1 * s->stride - s->pad + s->R - 1;
    if (lo < 0) lo = 0;
    if (hi > (long)H - 1) hi = (long)H - 1;
    size_t G0 = n0 * H + (size_t)lo, G1 = n1 * H + (size_t)hi;   // input rows (n*H + h), inclusive
    if (G1 < G0) return;
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long G = (long long)G0; G <= (long long)G1; G++) {
        size_t n = (size_t)G / H, h = (size_t)G % H;
        float *dxr = dx + (size_t)G * W * C;
        for (int r = s->R - 1; r >= 0; r--) {
            long ph = (long)h + s->pad - r;
            if (ph < 0 || ph % s->stride) continue;
            size_t p = (size_t)(ph / s->stride);
            if (p >= P) continue;
            size_t base = (n * P + p) * Q;                     // first pixel of output row (n,p)
            if (base + Q <= t0 || base >= t1) continue;
            size_t qa = t0 > base ? t0 - base : 0, qb = t1 - base < Q ? t1 - base : Q;
            for (size_t q = qa; q < qb; q++) {
                const float *src = dpatch + (base + q - t0) * rsc + (size_t)r * s->S * C;
                long w0 = (long)q * s->stride - s->pad;
                for (int c0 = 0; c0 < s->S; c0++) {
                    long w = w0 + c0;
                    if (w < 0 || w >= (long)W) continue;
                    float *d = dxr + (size_t)w * C;
                    const float *g = src + (size_t)c0 * C;
                    for (size_t c = 0; c < C; c++) d[c] += g[c];
                }
            }
        }
    }
}

bnl_status bnl_conv2d_forward(float *y, const float *x, const float *w, const bnl_conv_shape *s) {
    bnl_status st = check_shape(s, "conv2d_forward");
    if (st != BNL_OK) return st;
    if (!y || !x || !w) return bnl_fail(BNL_ERR_ARG, "conv2d_forward: NULL pointer (y=%p x=%p w=%p)", (void *)y, (const void *)x, (const void *)w);
    size_t K = (size_t)s->K, rsc = (size_t)s->R * s->S * s->C;
    size_t npix = (size_t)s->N * s->P * s->Q;
    if (is_pointwise(s)) {   // y (NHW,K) = x (NHW,C) * w (K,C)^T
        bnl_gemm_nt(y, x, w, npix, K, (size_t)s->C, 0);
        return BNL_OK;
    }
    size_t tp = tile_pixels(s, rsc), ntiles = (npix + tp - 1) / tp;
    int T = threads_for(ntiles);
    int tiles_parallel = T > 1 && ntiles >= 2 * (size_t)T;
    if (!tiles_parallel) T = threads_for(tp);
    size_t nbuf = tiles_parallel ? (size_t)T : 1;
    size_t bytes = 0;
    float *buf = NULL;
    if (bnl_mul_ok(nbuf * tp, rsc * sizeof(float), &bytes)) buf = bnl_alloc(bytes);
    if (!buf) return bnl_fail(BNL_ERR_NOMEM, "conv2d_forward: out of memory for %zu x %zu patches", tp, rsc);
    if (tiles_parallel) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T)
#endif
        for (long long t = 0; t < (long long)ntiles; t++) {
#ifdef _OPENMP
            float *b = buf + (size_t)omp_get_thread_num() * tp * rsc;
#else
            float *b = buf;
#endif
            size_t t0 = (size_t)t * tp, t1 = t0 + tp < npix ? t0 + tp : npix;
            gather_tile(b, x, s, rsc, t0, t1, 1);
            bnl_gemm_nt(y + t0 * K, b, w, t1 - t0, K, rsc, 0);   // serial inside a parallel region
        }
    } else {
        for (size_t t0 = 0; t0 < npix; t0 += tp) {
            size_t t1 = t0 + tp < npix ? t0 + tp : npix;
            gather_tile(buf, x, s, rsc, t0, t1, T);
            bnl_gemm_nt(y + t0 * K, buf, w, t1 - t0, K, rsc, 0);
        }
    }
    bnl_free(buf);
    return BNL_OK;
}

bnl_status bnl_conv2d_backward(float *dx, float *dw, const float *dy, const float *x,
                               const float *w, const bnl_conv_shape *s) {
    bnl_status st = check_shape(s, "conv2d_backward");
    if (st != BNL_OK) return st;
    if (!dy) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: dy is NULL");
    if (dw && !x) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: x is NULL (needed for dw)");
    if (dx && !w) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: w is NULL (needed for dx)");
    if (!dx && !dw) return BNL_OK;
    size_t K = (size_t)s->K, C = (size_t)s->C, rsc = (size_t)s->R * s->S * s->C;
    size_t npix = (size_t)s->N * s->P * s->Q, nin = (size_t)s->N * s->H * s->W;
    if (is_pointwise(s)) {
        if (dw) bnl_gemm_tn(dw, dy, x, K, C, npix, 1);    // dw (K,C) += dy^T (K,NHW) x (NHW,C)
        if (dx) bnl_gemm_nn(dx, dy, w, nin, C, K, 0);     // dx (NHW,C) = dy (NHW,K) w (K,C)
        return BNL_OK;
    }
    size_t tp = tile_pixels(s, rsc);
    int T = threads_for(tp);
    size_t bytes = 0;
    float *buf = NULL;
    if (bnl_mul_ok(tp, rsc * sizeof(float), &bytes)) buf = bnl_alloc(bytes);
    if (!buf) return bnl_fail(BNL_ERR_NOMEM, "conv2d_backward: out of memory for %zu x %zu patches", tp, rsc);
    if (dx) {
        size_t total = nin * C;
        int Tz = threads_for(total / 65536 + 1);
        (void)Tz;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(Tz) if (Tz > 1)
#endif
        for (long long i = 0; i < (long long)nin; i++) memset(dx + (size_t)i * C, 0, C * sizeof(float));
    }
    for (size_t t0 = 0; t0 < npix; t0 += tp) {
        size_t t1 = t0 + tp < npix ? t0 + tp : npix, m = t1 - t0;
        const float *dyt = dy + t0 * K;   // (m, K)
        if (dw) {
            gather_tile(buf, x, s, rsc, t0, t1, T);
            bnl_gemm_tn(dw, dyt, buf, K, rsc, m, 1);
        }
        if (dx) {
            bnl_gemm_nn(buf, dyt, w, m, rsc, K, 0);
            col2im_tile(dx, buf, s, rsc, t0, t1, T);
        }
    }
    bnl_free(buf);
    return BNL_OK;
}
