// 2-D convolution, NHWC, no bias, through the GEMM engine (src/ops/gemm.c, gemm_kernels.h).
//
// Sizes: N batch, H/W input, C input channels, K output channels, R/S kernel, P/Q output.
// x: (N,H,W,C)  w: (K,R,S,C)  y: (N,P,Q,K). A patch row is (R,S,C) = RSC floats, in w's order, so
//   y[pix, k] = sum_j patch[pix, j] * w[k, j]                      (forward: A = patches, B = w^T)
//   dw[k, j] += sum_pix dy[pix, k] * patch[pix, j]                 (A = dy^T, B = patches)
//   dx: stride 1 is the forward convolution of dy with the flipped, transposed kernel
//       (padding R-1-pad); other strides form dpatch = dy w in tiles, then col2im.
// The patch matrix is never formed for the forward and dw: the engine gathers each packed block
// straight from x (zeros in the padding). 1x1 stride-1 unpadded convs read x as a plain matrix.
// Inference passes weights packed once (bnl_conv_pack_weights, optionally scaled per output
// channel to fold an eval BatchNorm) and a fused epilogue: bias, residual, ReLU.
//
// Threads: the engine splits C into blocks, each computed whole by one thread, with every sum in
// k order. col2im runs by input rows, every dx value getting its terms in output-pixel order. So
// results are bitwise the same for any thread count and any tile size.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/dispatch.h"
#include "ops/gemm_kernels.h"
#include "ops/ops.h"
#include "ops/winograd.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

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

static int threads_for(size_t items) { return bnl_threads_for(items, (double)items, 0.0); }

typedef struct {
    float *dx;
    size_t C;
} dx_zero_t;

// Rows [i0, i1) of dx (C floats each) = 0.
static void dx_zero_rows(void *vc, size_t i0, size_t i1, int tid) {
    const dx_zero_t *z = vc;
    memset(z->dx + i0 * z->C, 0, (i1 - i0) * z->C * sizeof(float));
}

typedef struct {
    float *dx;
    const float *dpatch;
    const bnl_conv_shape *s;
    size_t rsc, t0, t1, G0;
} col2im_t;

// Input rows G0 + [i0, i1) of a col2im tile.
static void col2im_rows(void *vc, size_t i0, size_t i1, int tid) {
    const col2im_t *c = vc;
    const bnl_conv_shape *s = c->s;
    size_t P = (size_t)s->P, Q = (size_t)s->Q, H = (size_t)s->H, W = (size_t)s->W, C = (size_t)s->C;
    size_t rsc = c->rsc, t0 = c->t0, t1 = c->t1;
    for (size_t G = c->G0 + i0; G < c->G0 + i1; G++) {
        size_t n = G / H, h = G % H;
        float *dxr = c->dx + G * W * C;
        for (int r = s->R - 1; r >= 0; r--) {
            long ph = (long)h + s->pad - r;
            if (ph < 0 || ph % s->stride) continue;
            size_t p = (size_t)(ph / s->stride);
            if (p >= P) continue;
            size_t base = (n * P + p) * Q;                     // first pixel of output row (n,p)
            if (base + Q <= t0 || base >= t1) continue;
            size_t qa = t0 > base ? t0 - base : 0, qb = t1 - base < Q ? t1 - base : Q;
            for (size_t q = qa; q < qb; q++) {
                const float *src = c->dpatch + (base + q - t0) * rsc + (size_t)r * s->S * C;
                long w0 = (long)q * s->stride - s->pad;
                for (int c0 = 0; c0 < s->S; c0++) {
                    long w = w0 + c0;
                    if (w < 0 || w >= (long)W) continue;
                    float *d = dxr + (size_t)w * C;
                    const float *g = src + (size_t)c0 * C;
                    for (size_t k = 0; k < C; k++) d[k] += g[k];
                }
            }
        }
    }
}

// col2im for output pixels [t0, t1): dx += the patch gradients, summed where windows overlap.
// Parallel over input rows (n,h): each thread writes only its own rows. r runs downwards so that
// p, and then q, go upwards: every dx value gets its terms in output-pixel order, whatever the
// thread count and wherever the tile boundaries fall.
static void col2im_tile(float *dx, const float *dpatch, const bnl_conv_shape *s, size_t rsc,
                        size_t t0, size_t t1, int T) {
    size_t P = (size_t)s->P, Q = (size_t)s->Q, H = (size_t)s->H;
    size_t g0 = t0 / Q, g1 = (t1 - 1) / Q;                // output rows (n*P + p), inclusive
    size_t n0 = g0 / P, p0 = g0 % P, n1 = g1 / P, p1 = g1 % P;
    long lo = (long)p0 * s->stride - s->pad, hi = (long)p1 * s->stride - s->pad + s->R - 1;
    if (lo < 0) lo = 0;
    if (hi > (long)H - 1) hi = (long)H - 1;
    size_t G0 = n0 * H + (size_t)lo, G1 = n1 * H + (size_t)hi;   // input rows (n*H + h), inclusive
    if (G1 < G0) return;
    col2im_t c = {dx, dpatch, s, rsc, t0, t1, G0};
    bnl_parallel_for(G1 - G0 + 1, T, col2im_rows, &c);
}

// The GEMM operands of a convolution.
static bnl_gemm_src src_patches(const float *x, const bnl_conv_shape *s) {
    bnl_gemm_src a = {BNL_SRC_PATCHES, x, 0, 0, s, NULL};
    if (is_pointwise(s)) a.kind = BNL_SRC_STRIDED, a.s0 = (size_t)s->C, a.s1 = 1;   // x itself, (NHW, C)
    return a;
}
static bnl_gemm_src src_strided(const float *p, size_t s0, size_t s1) {
    bnl_gemm_src b = {BNL_SRC_STRIDED, p, s0, s1, NULL, NULL};
    return b;
}

static bnl_status conv_gemm(float *y, const bnl_gemm_src *a, const bnl_gemm_src *b, const float *bias, const float *res,
                            const float *gate, int relu, const bnl_conv_shape *s) {
    bnl_gemm_call g;
    memset(&g, 0, sizeof g);
    g.C = y, g.ldc = (size_t)s->K;
    g.M = (size_t)s->N * s->P * s->Q, g.N = (size_t)s->K, g.K = (size_t)s->R * s->S * s->C;
    g.a = *a, g.b = *b;
    g.bias = bias, g.res = res, g.gate = gate, g.ldr = (size_t)s->K, g.relu = relu;
    return bnl_gemm_run(&g);
}

bnl_status bnl_conv2d_forward(float *y, const float *x, const float *w, const bnl_conv_shape *s) {
    bnl_status st = check_shape(s, "conv2d_forward");
    if (st != BNL_OK) return st;
    if (!y || !x || !w) return bnl_fail(BNL_ERR_ARG, "conv2d_forward: NULL pointer (y=%p x=%p w=%p)", (void *)y, (const void *)x, (const void *)w);
    size_t rsc = (size_t)s->R * s->S * s->C;
    bnl_gemm_src a = src_patches(x, s), b = src_strided(w, 1, rsc);   // B(j, k) = w[k, j]
    return conv_gemm(y, &a, &b, NULL, NULL, NULL, 0, s);
}

// ---------------------------------------------------------------------------------------------
// Packed weights and the fused forward (inference)

struct bnl_conv_packed {
    const bnl_gemm_kernels *kt;   // the kernel table the layout is for
    int K, R, S, C;
    int wino;                     // 1: Winograd F(2x2,3x3) transformed weights (3x3, stride 1 only)
    float *data;
};

bnl_status bnl_conv_pack_weights(bnl_conv_packed **pk, const float *w, const float *scale, int K, int R, int S, int C) {
    return bnl_conv_pack_weights_isa(pk, bnl_isa_active(), w, scale, K, R, S, C, 0);
}

bnl_status bnl_conv_pack_weights_isa(bnl_conv_packed **pk, bnl_isa isa, const float *w, const float *scale, int K,
                                     int R, int S, int C, int stride) {
    if (!pk || !w || K <= 0 || R <= 0 || S <= 0 || C <= 0 || stride < 0 || !bytes_fit(K, R, S, C))
        return bnl_fail(BNL_ERR_ARG, "conv_pack_weights: bad arguments (K=%d R=%d S=%d C=%d stride=%d)", K, R, S, C,
                        stride);
    if ((int)isa < 0 || isa >= BNL_ISA_COUNT || !bnl_isa_available(isa))
        return bnl_fail(BNL_ERR_UNSUPPORTED, "conv_pack_weights: ISA %s is not available", bnl_isa_name(isa));
    const bnl_gemm_kernels *kt = bnl_gemm_kernels_for(isa);
    int wino = stride == 1 && R == 3 && S == 3 && bnl_conv_winograd() && bytes_fit(16, K, C, 1);
    size_t rsc = (size_t)R * S * C;
    size_t n = wino ? bnl_winograd_packed_floats(kt, K, C) : bnl_gemm_packed_floats(kt, (size_t)K, rsc);
    bnl_conv_packed *p = *pk;
    if (p && (p->K != K || p->R != R || p->S != S || p->C != C || p->wino != wino ||
              (wino ? bnl_winograd_packed_floats(p->kt, K, C) : bnl_gemm_packed_floats(p->kt, (size_t)K, rsc)) != n)) {
        bnl_conv_packed_free(p);
        *pk = p = NULL;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (p) p->data = bnl_alloc(n * sizeof(float));
        if (!p || !p->data) {
            if (p) free(p);
            return bnl_fail(BNL_ERR_NOMEM, "conv_pack_weights: out of memory for %zu floats", n);
        }
        p->K = K, p->R = R, p->S = S, p->C = C, p->wino = wino;
        *pk = p;
    }
    p->kt = kt;
    if (wino) return bnl_winograd_pack(p->data, kt, w, scale, K, C);
    bnl_gemm_src b = src_strided(w, 1, rsc);
    bnl_gemm_pack_b(p->data, kt, &b, (size_t)K, rsc, scale);
    return BNL_OK;
}

void bnl_conv_packed_free(bnl_conv_packed *p) {
    if (!p) return;
    bnl_free(p->data);
    free(p);
}

int bnl_conv_packed_current(const bnl_conv_packed *p) { return p && p->kt == bnl_gemm_kernels_active(); }

bnl_status bnl_conv2d_forward_fused(float *y, const float *x, const bnl_conv_packed *w, const float *bias,
                                    const float *res, int relu, const bnl_conv_shape *s) {
    bnl_status st = check_shape(s, "conv2d_forward_fused");
    if (st != BNL_OK) return st;
    if (!y || !x || !w) return bnl_fail(BNL_ERR_ARG, "conv2d_forward_fused: NULL pointer");
    if (w->K != s->K || w->R != s->R || w->S != s->S || w->C != s->C)
        return bnl_fail(BNL_ERR_SHAPE, "conv2d_forward_fused: weights packed for %dx%dx%dx%d, shape wants %dx%dx%dx%d",
                        w->K, w->R, w->S, w->C, s->K, s->R, s->S, s->C);
    if (w->wino) {
        if (s->stride != 1)
            return bnl_fail(BNL_ERR_SHAPE, "conv2d_forward_fused: weights packed for stride 1 (Winograd), shape has stride %d",
                            s->stride);
        return bnl_winograd_forward(y, x, w->data, w->kt, bias, res, relu, s);
    }
    bnl_gemm_src a = src_patches(x, s), b = {BNL_SRC_PACKED, w->data, (size_t)w->R * w->S * w->C, 0, NULL, w->kt};
    return conv_gemm(y, &a, &b, bias, res, NULL, relu, s);
}

// ---------------------------------------------------------------------------------------------
// Backward

// dx of a stride-1 convolution as a forward convolution of dy: flipped kernel, in and out
// channels swapped, padding R-1-pad. The engine reads the flipped kernel straight from w.
static bnl_status dx_transposed(float *dx, const float *dy, const float *w, const float *res, const float *gate,
                                const bnl_conv_shape *s) {
    bnl_conv_shape t;
    bnl_status st = bnl_conv_shape_init(&t, s->N, s->P, s->Q, s->K, s->C, s->R, s->S, 1, s->R - 1 - s->pad);
    if (st != BNL_OK) return st;
    bnl_gemm_src a = src_patches(dy, &t), b = {BNL_SRC_FLIPPED, w, 0, 0, s, NULL};
    return conv_gemm(dx, &a, &b, NULL, res, gate, 0, &t);
}

// dx of any other convolution: dpatch = dy w in tiles of output pixels, then col2im.
static bnl_status dx_col2im(float *dx, const float *dy, const float *w, const bnl_conv_shape *s) {
    size_t K = (size_t)s->K, C = (size_t)s->C, rsc = (size_t)s->R * s->S * s->C;
    size_t npix = (size_t)s->N * s->P * s->Q, nin = (size_t)s->N * s->H * s->W;
    size_t tp = tile_pixels(s, rsc);
    const bnl_gemm_kernels *kt = bnl_gemm_kernels_active();
    size_t bytes = 0, pbytes = 0;
    float *buf = NULL, *wp = NULL;
    if (bnl_mul_ok(tp, rsc * sizeof(float), &bytes)) buf = bnl_alloc(bytes);
    if (bnl_mul_ok(bnl_gemm_packed_floats(kt, rsc, K), sizeof(float), &pbytes)) wp = bnl_alloc(pbytes);
    if (!buf || !wp) {
        bnl_free(buf), bnl_free(wp);
        return bnl_fail(BNL_ERR_NOMEM, "conv2d_backward: out of memory for %zu x %zu patches", tp, rsc);
    }
    bnl_gemm_src b = src_strided(w, rsc, 1);   // B (K, rsc) = w, packed once for every tile
    bnl_gemm_pack_b(wp, kt, &b, rsc, K, NULL);
    bnl_gemm_src bp = {BNL_SRC_PACKED, wp, K, 0, NULL, kt};
    dx_zero_t z = {dx, C};
    bnl_parallel_for(nin, threads_for(nin * C / 65536 + 1), dx_zero_rows, &z);
    int T = threads_for(tp);
    bnl_status st = BNL_OK;
    for (size_t t0 = 0; t0 < npix && st == BNL_OK; t0 += tp) {
        size_t t1 = t0 + tp < npix ? t0 + tp : npix;
        bnl_gemm_call g;
        memset(&g, 0, sizeof g);
        g.C = buf, g.ldc = rsc, g.M = t1 - t0, g.N = rsc, g.K = K;
        g.a = src_strided(dy + t0 * K, K, 1), g.b = bp;
        st = bnl_gemm_run(&g);
        if (st == BNL_OK) col2im_tile(dx, buf, s, rsc, t0, t1, T);
    }
    bnl_free(buf), bnl_free(wp);
    return st;
}

typedef struct {
    float *dx;
    const float *res, *gate;
} dx_epi_t;

static void dx_epilogue_range(void *vc, size_t i0, size_t i1, int tid) {
    const dx_epi_t *e = vc;
    float *dx = e->dx;
    for (size_t i = i0; i < i1; i++) {
        float v = e->res ? dx[i] + e->res[i] : dx[i];
        dx[i] = !e->gate || e->gate[i] > 0.0f ? v : 0.0f;
    }
}

// dx = gate > 0 ? dx + res : 0 after col2im (the GEMM epilogue does it on the other paths).
static void dx_epilogue(float *dx, const float *res, const float *gate, size_t n) {
    if (!res && !gate) return;
    dx_epi_t e = {dx, res, gate};
    bnl_parallel_for(n, threads_for(n / 65536 + 1), dx_epilogue_range, &e);
}

bnl_status bnl_conv2d_backward(float *dx, float *dw, const float *dy, const float *x,
                               const float *w, const bnl_conv_shape *s) {
    return bnl_conv2d_backward_ex(dx, dw, dy, x, w, NULL, NULL, s);
}

bnl_status bnl_conv2d_backward_ex(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                  const float *res, const float *gate, const bnl_conv_shape *s) {
    bnl_status st = check_shape(s, "conv2d_backward");
    if (st != BNL_OK) return st;
    if (!dy) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: dy is NULL");
    if (dw && !x) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: x is NULL (needed for dw)");
    if (dx && !w) return bnl_fail(BNL_ERR_ARG, "conv2d_backward: w is NULL (needed for dx)");
    if (!dx && !dw) return BNL_OK;
    size_t K = (size_t)s->K, C = (size_t)s->C, rsc = (size_t)s->R * s->S * s->C;
    size_t npix = (size_t)s->N * s->P * s->Q, nin = (size_t)s->N * s->H * s->W;
    if (dw) {   // dw (K, rsc) += dy^T (K, pixels) patches (pixels, rsc), summed in pixel order
        bnl_gemm_call g;
        memset(&g, 0, sizeof g);
        g.C = dw, g.ldc = rsc, g.M = K, g.N = rsc, g.K = npix, g.accumulate = 1;
        g.a = src_strided(dy, 1, K), g.b = src_patches(x, s);
        if ((st = bnl_gemm_run(&g)) != BNL_OK) return st;
    }
    if (!dx) return BNL_OK;
    if (is_pointwise(s)) {   // dx (NHW, C) = dy (NHW, K) w (K, C)
        bnl_gemm_call g;
        memset(&g, 0, sizeof g);
        g.C = dx, g.ldc = C, g.M = nin, g.N = C, g.K = K;
        g.a = src_strided(dy, K, 1), g.b = src_strided(w, C, 1);
        g.res = res, g.gate = gate, g.ldr = C;
        return bnl_gemm_run(&g);
    }
    if (s->stride == 1 && s->R == s->S && s->pad <= s->R - 1) return dx_transposed(dx, dy, w, res, gate, s);
    if ((st = dx_col2im(dx, dy, w, s)) != BNL_OK) return st;
    dx_epilogue(dx, res, gate, nin * C);
    return BNL_OK;
}
