// Winograd F(2x2, 3x3) for the inference forward of 3x3 stride-1 convolutions (Lavin & Gray, 2016),
// on the same GEMM engine as every other convolution.
//
// A 2x2 block of outputs needs a 4x4 window of the input; in the transformed domain the 3x3
// convolution of that window becomes 16 independent elementwise products, summed over input
// channels: for each of the 16 positions xi a GEMM  M_xi (tiles x K) = V_xi (tiles x C) * U_xi (C x K),
//   U = G g G^T   (per output/input channel pair, done once when the weights are packed)
//   V = B^T d B   (per 4x4 input window and channel)
//   y = A^T M A   (per tile and output channel, then + bias, + residual, ReLU)
// with G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
// A^T = [1 1 1 0; 0 1 -1 -1]. 16 multiplies per 2x2 outputs instead of 36: 2.25x fewer (less at
// small sizes, where the last tile row and column overhang: 7x7 computes 8x8).
//
// Numbers: not the direct convolution's bits. The transforms are exact in binary (x/2, +, -) except
// for rounding of sums; the error stays within a few ulps of the direct sum (tests/c/test_gemm.c
// judges both against a float64 reference). Results do not depend on the thread count: every
// transform is per element, and each of the 16 GEMMs is computed whole by one thread.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/gemm_kernels.h"
#include "ops/ops.h"
#include "ops/winograd.h"

#include <string.h>
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

static int g_winograd = 1;

void bnl_conv_set_winograd(int on) { g_winograd = on ? 1 : 0; }
int bnl_conv_winograd(void) { return g_winograd; }

size_t bnl_winograd_packed_floats(const bnl_gemm_kernels *kt, int K, int C) {
    return 16 * bnl_gemm_packed_floats(kt, (size_t)K, (size_t)C);
}

// U_xi[k][c] = (G g_kc G^T)[xi] * scale[k], packed per xi for the kernels kt.
bnl_status bnl_winograd_pack(float *dst, const bnl_gemm_kernels *kt, const float *w, const float *scale, int K,
                             int C) {
    size_t KC = (size_t)K * (size_t)C, pf = bnl_gemm_packed_floats(kt, (size_t)K, (size_t)C);
    float *u = bnl_alloc(16 * KC * sizeof(float));
    if (!u) return bnl_fail(BNL_ERR_NOMEM, "winograd: out of memory for %zu transformed weights", 16 * KC);
    for (size_t k = 0; k < (size_t)K; k++) {
        float sc = scale ? scale[k] : 1.0f;
        for (size_t c = 0; c < (size_t)C; c++) {
            const float *g = w + (k * 9) * (size_t)C + c;   // w: (K, 3, 3, C)
            float gg[3][3], t[4][3];
            for (int r = 0; r < 3; r++)
                for (int s = 0; s < 3; s++) gg[r][s] = g[(size_t)(r * 3 + s) * (size_t)C];
            for (int s = 0; s < 3; s++) {   // t = G g
                t[0][s] = gg[0][s];
                t[1][s] = 0.5f * (gg[0][s] + gg[1][s] + gg[2][s]);
                t[2][s] = 0.5f * (gg[0][s] - gg[1][s] + gg[2][s]);
                t[3][s] = gg[2][s];
            }
            for (int i = 0; i < 4; i++) {   // (G g) G^T
                float v[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                              t[i][2]};
                for (int j = 0; j < 4; j++) u[(size_t)(i * 4 + j) * KC + k * (size_t)C + c] = v[j] * sc;
            }
        }
    }
    for (int xi = 0; xi < 16; xi++) {
        bnl_gemm_src b = {BNL_SRC_STRIDED, u + (size_t)xi * KC, 1, (size_t)C, NULL, NULL};   // B(c, k) = U[k][c]
        bnl_gemm_pack_b(dst + (size_t)xi * pf, kt, &b, (size_t)K, (size_t)C, NULL);
    }
    bnl_free(u);
    return BNL_OK;
}

typedef float v4f __attribute__((vector_size(16)));
static inline v4f v4_load(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v4_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }

typedef struct {
    const bnl_conv_shape *s;
    const float *x;
    float *y;
    const float *zeros;      // max(C, K) zeros: input padding, residual of outputs past the edge
    float *sink;             // K floats per thread: outputs past the edge
    const float *bias, *res;
    int relu;
    size_t th, tw;           // tiles per image: rows, columns
    size_t t0, tb;           // this chunk's first tile and tile count
    float *V, *M;            // 16 x (tb, C), 16 x (tb, K)
    const float *U;
    const bnl_gemm_kernels *kt;
    size_t pf;
    bnl_first_error err;
} wino_t;

// V_xi[t][c] = (B^T d B)[xi] for tiles [i0, i1) of the chunk
static void input_tiles(void *vc, size_t i0, size_t i1, int tid) {
    (void)tid;
    const wino_t *w = vc;
    const bnl_conv_shape *s = w->s;
    size_t C = (size_t)s->C, H = (size_t)s->H, W = (size_t)s->W, ld = w->tb * C;
    for (size_t i = i0; i < i1; i++) {
        size_t t = w->t0 + i, n = t / (w->th * w->tw), r = t % (w->th * w->tw), ti = r / w->tw, tj = r % w->tw;
        const float *d[4][4];
        for (int a = 0; a < 4; a++) {
            long h = (long)(2 * ti + (size_t)a) - s->pad;
            for (int b = 0; b < 4; b++) {
                long q = (long)(2 * tj + (size_t)b) - s->pad;
                d[a][b] = (h >= 0 && h < (long)H && q >= 0 && q < (long)W)
                              ? w->x + ((n * H + (size_t)h) * W + (size_t)q) * C
                              : w->zeros;
            }
        }
        float *restrict v = w->V + i * C;
        size_t c = 0;
        // 4 channels at a time (GCC/clang vector extensions: SSE, AVX, wasm simd128 alike); the same
        // operations per element as the scalar loop below, so the same bits
        for (; c + 4 <= C; c += 4) {
            v4f e[4][4];
            for (int b = 0; b < 4; b++) {   // B^T d (rows)
                v4f d0 = v4_load(d[0][b] + c), d1 = v4_load(d[1][b] + c), d2 = v4_load(d[2][b] + c),
                    d3 = v4_load(d[3][b] + c);
                e[0][b] = d0 - d2, e[1][b] = d1 + d2, e[2][b] = d2 - d1, e[3][b] = d1 - d3;
            }
            for (int a = 0; a < 4; a++) {   // (B^T d) B (columns)
                v4_store(v + (size_t)(a * 4 + 0) * ld + c, e[a][0] - e[a][2]);
                v4_store(v + (size_t)(a * 4 + 1) * ld + c, e[a][1] + e[a][2]);
                v4_store(v + (size_t)(a * 4 + 2) * ld + c, e[a][2] - e[a][1]);
                v4_store(v + (size_t)(a * 4 + 3) * ld + c, e[a][1] - e[a][3]);
            }
        }
        for (; c < C; c++) {
            float e[4][4];
            for (int b = 0; b < 4; b++) {   // B^T d (rows)
                float d0 = d[0][b][c], d1 = d[1][b][c], d2 = d[2][b][c], d3 = d[3][b][c];
                e[0][b] = d0 - d2, e[1][b] = d1 + d2, e[2][b] = d2 - d1, e[3][b] = d1 - d3;
            }
            for (int a = 0; a < 4; a++) {   // (B^T d) B (columns)
                v[(size_t)(a * 4 + 0) * ld + c] = e[a][0] - e[a][2];
                v[(size_t)(a * 4 + 1) * ld + c] = e[a][1] + e[a][2];
                v[(size_t)(a * 4 + 2) * ld + c] = e[a][2] - e[a][1];
                v[(size_t)(a * 4 + 3) * ld + c] = e[a][1] - e[a][3];
            }
        }
    }
}

// M_xi = V_xi U_xi for xi in [x0, x1), each GEMM whole on this thread
static void products(void *vc, size_t x0, size_t x1, int tid) {
    (void)tid;
    wino_t *w = vc;
    size_t C = (size_t)w->s->C, K = (size_t)w->s->K;
    for (size_t xi = x0; xi < x1; xi++) {
        bnl_gemm_call g;
        memset(&g, 0, sizeof g);
        g.C = w->M + xi * w->tb * K, g.ldc = K;
        g.M = w->tb, g.N = K, g.K = C;
        g.a = (bnl_gemm_src){BNL_SRC_STRIDED, w->V + xi * w->tb * C, C, 1, NULL, NULL};
        g.b = (bnl_gemm_src){BNL_SRC_PACKED, w->U + xi * w->pf, C, 0, NULL, w->kt};
        g.no_split = 1;
        bnl_status st = bnl_gemm_run(&g);
        if (st != BNL_OK) bnl_first_error_note(&w->err, xi, st);
    }
}

typedef int v4i __attribute__((vector_size(16)));
// v < 0 ? 0 : v per lane, as the GEMM kernels' ReLU (NaN and -0 kept), with no branch: a scalar
// `v < 0 ? 0 : v` becomes wasm's f32.max, which V8 compiles to compares and branches that
// mispredict on activations of random sign (and turns -0 into +0).
static inline v4f v4_relu(v4f v) {
#ifdef __wasm_simd128__
    return (v4f)wasm_f32x4_pmax((v128_t)v, wasm_f32x4_splat(0.0f));   // clang makes the mask below f32x4.max: 7 instructions in V8
#else
    v4i neg = v < (v4f){0.0f, 0.0f, 0.0f, 0.0f};
    return (v4f)((v4i)v & ~neg);
#endif
}

// One 2x2 output tile, 4 output channels from k: y = A^T m A (+ bias, + res, ReLU). m: the 16
// GEMM results of the tile, ld apart.
static inline void out4(const float *restrict m, size_t ld, size_t k, const float *restrict bias, float *const y[4],
                        const float *const r[4], int has_bias, int has_res, int relu) {
    v4f u0[4], u1[4];
    for (int b = 0; b < 4; b++) {   // A^T m (rows)
        v4f m0 = v4_load(m + (size_t)(0 + b) * ld + k), m1 = v4_load(m + (size_t)(4 + b) * ld + k);
        v4f m2 = v4_load(m + (size_t)(8 + b) * ld + k), m3 = v4_load(m + (size_t)(12 + b) * ld + k);
        u0[b] = m0 + m1 + m2, u1[b] = m1 - m2 - m3;
    }
    v4f v[4] = {u0[0] + u0[1] + u0[2], u0[1] - u0[2] - u0[3], u1[0] + u1[1] + u1[2], u1[1] - u1[2] - u1[3]};
    if (has_bias) {
        v4f bb = v4_load(bias + k);
        for (int q = 0; q < 4; q++) v[q] = v[q] + bb;
    }
    if (has_res)
        for (int q = 0; q < 4; q++) v[q] = v[q] + v4_load(r[q] + k);
    if (relu)
        for (int q = 0; q < 4; q++) v[q] = v4_relu(v[q]);
    for (int q = 0; q < 4; q++) v4_store(y[q] + k, v[q]);
}

// A whole tile, K channels (constant flags: one specialized loop each). Outputs y[0..3] are
// (0,0), (0,1), (1,0), (1,1); r[] their residual rows.
static inline void output_full(const float *restrict m, size_t ld, size_t K, const float *restrict bias,
                               float *const y[4], const float *const r[4], int has_bias, int has_res, int relu) {
    size_t k = 0;
    for (; k + 4 <= K; k += 4) out4(m, ld, k, bias, y, r, has_bias, has_res, relu);
    if (k < K) {   // the last channels through padded copies: the same operations
        float mt[16][4] = {{0}}, bt[4] = {0}, rt[4][4] = {{0}}, yt[4][4];
        size_t n = K - k;
        for (int x = 0; x < 16; x++) memcpy(mt[x], m + (size_t)x * ld + k, n * sizeof(float));
        if (has_bias) memcpy(bt, bias + k, n * sizeof(float));
        if (has_res)
            for (int q = 0; q < 4; q++) memcpy(rt[q], r[q] + k, n * sizeof(float));
        float *yp[4] = {yt[0], yt[1], yt[2], yt[3]};
        const float *rp[4] = {rt[0], rt[1], rt[2], rt[3]};
        out4(&mt[0][0], 4, 0, bt, yp, rp, has_bias, has_res, relu);
        for (int q = 0; q < 4; q++) memcpy(y[q] + k, yt[q], n * sizeof(float));
    }
}

// y = A^T M A (+ bias, + res, ReLU) for tiles [i0, i1) of the chunk. A tile that overhangs the
// output (odd P or Q) writes its missing outputs to a sink and reads zeros as their residual.
static void output_tiles(void *vc, size_t i0, size_t i1, int tid) {
    const wino_t *w = vc;
    const bnl_conv_shape *s = w->s;
    size_t K = (size_t)s->K, P = (size_t)s->P, Q = (size_t)s->Q, ld = w->tb * K;
    float *sink = w->sink + (size_t)tid * K;
    int hb = w->bias != NULL, hr = w->res != NULL;
    for (size_t i = i0; i < i1; i++) {
        size_t t = w->t0 + i, n = t / (w->th * w->tw), r = t % (w->th * w->tw), ti = r / w->tw, tj = r % w->tw;
        size_t p0 = 2 * ti, q0 = 2 * tj;
        float *y[4];
        const float *rs[4];
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                size_t pix = (n * P + p0 + (size_t)a) * Q + q0 + (size_t)b;
                int in = p0 + (size_t)a < P && q0 + (size_t)b < Q;
                y[a * 2 + b] = in ? w->y + pix * K : sink;
                rs[a * 2 + b] = !hr ? NULL : in ? w->res + pix * K : w->zeros;
            }
        const float *m = w->M + i * K;
#define FULL(b_, r_, l_) output_full(m, ld, K, w->bias, y, rs, b_, r_, l_)
        if (hb && hr && w->relu) FULL(1, 1, 1);
        else if (hb && !hr && w->relu) FULL(1, 0, 1);
        else if (hb && hr && !w->relu) FULL(1, 1, 0);
        else FULL(hb, hr, w->relu);
#undef FULL
    }
}

bnl_status bnl_winograd_forward(float *y, const float *x, const float *U, const bnl_gemm_kernels *kt,
                                const float *bias, const float *res, int relu, const bnl_conv_shape *s) {
    size_t C = (size_t)s->C, K = (size_t)s->K;
    wino_t w;
    memset(&w, 0, sizeof w);
    w.s = s, w.x = x, w.y = y, w.bias = bias, w.res = res, w.relu = relu, w.U = U, w.kt = kt;
    w.pf = bnl_gemm_packed_floats(kt, K, C);
    w.th = ((size_t)s->P + 1) / 2, w.tw = ((size_t)s->Q + 1) / 2;
    size_t T = (size_t)s->N * w.th * w.tw;
    // tiles per chunk: V and M together within ~4 MB, a multiple of the kernel's rows
    size_t mr = (size_t)kt->mr, tb = ((size_t)1 << 20) / (16 * (C + K));
    tb = tb < 4 * mr ? 4 * mr : tb / mr * mr;
    if (tb > T) tb = T;
    size_t nz = C > K ? C : K, nthreads = (size_t)bnl_threads_effective();
    float *buf = bnl_gemm_scratch_get(16 * tb * (C + K) + nz + nthreads * K);
    if (!buf) return bnl_fail(BNL_ERR_NOMEM, "winograd: out of memory for %zu tiles of %zu+%zu channels", tb, C, K);
    w.V = buf, w.M = buf + 16 * tb * C;
    float *zeros = w.M + 16 * tb * K;
    memset(zeros, 0, nz * sizeof(float));
    w.zeros = zeros, w.sink = zeros + nz;
    bnl_first_error_init(&w.err);
    for (w.t0 = 0; w.t0 < T; w.t0 += tb) {
        w.tb = T - w.t0 < tb ? T - w.t0 : tb;
        double work = (double)w.tb * 16.0 * (double)(C > K ? C : K);
        bnl_parallel_for(w.tb, bnl_threads_for(w.tb, work, 65536.0), input_tiles, &w);
        bnl_parallel_for_dynamic(16, bnl_threads_for(16, 2.0 * (double)w.tb * (double)C * (double)K * 16.0, 131072.0),
                                 products, &w);
        if (bnl_first_error_status(&w.err) != BNL_OK) break;
        bnl_parallel_for(w.tb, bnl_threads_for(w.tb, work, 65536.0), output_tiles, &w);
    }
    bnl_gemm_scratch_put(buf);
    return bnl_first_error_status(&w.err);
}
