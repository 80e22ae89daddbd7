// Tests of src/ops/ops.h: every op against a naive direct-loop reference written here (in double),
// finite-difference gradient checks of every backward, accumulation into weight gradients,
// bitwise determinism across thread counts and conv tile sizes, and argument errors.
#include "core/rng.h"
#include "ops/ops.h"
#include "util.h"
#include "ref.h"
#include "test_data.h"

#include <stdint.h>


static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

#define EXPECT_STATUS(call, want)                                                                  \
    do {                                                                                           \
        bnl_status st_ = (call);                                                                   \
        CHECK(st_ == (want), "%s returned %s (%s), expected %s", #call, bnl_status_str(st_),       \
              bnl_last_error(), bnl_status_str(want));                                             \
    } while (0)

// Finite differences: central, 2-point, loss evaluated in double. Compares every entry.
// fd_loss(ctx) computes the loss from the current value of the parameter array.
typedef double (*loss_fn)(void *ctx);

static void fd_check(const char *what, float *param, size_t n, const float *grad, loss_fn f, void *ctx,
                     double h, double atol, double rtol) {
    float *num = fmalloc(n);
    for (size_t i = 0; i < n; i++) {
        float save = param[i];
        param[i] = (float)(save + h);
        double hp = (double)param[i] - save;
        double lp = f(ctx);
        param[i] = (float)(save - h);
        double hm = save - (double)param[i];
        double lm = f(ctx);
        param[i] = save;
        num[i] = (float)((lp - lm) / (hp + hm));
    }
    check_close(what, grad, num, n, atol, rtol);
    free(num);
}

// ---------------------------------------------------------------------------------------------
// GEMM

static void test_gemm_shape(size_t M, size_t N, size_t K, int variant, int accumulate) {
    float *A = frand(M * K, -1, 1), *B = frand(K * N, -1, 1), *C = frand(M * N, -1, 1);
    float *C0 = fmalloc(M * N), *want = fmalloc(M * N);
    double *R = malloc(M * N * sizeof(double));
    memcpy(C0, C, M * N * sizeof(float));
    if (!accumulate) fill(C, M * N, NAN);   // overwrite must not read C
    const char *name = variant == 0 ? "nn" : variant == 1 ? "nt" : "tn";
    if (variant == 0) bnl_gemm_nn(C, A, B, M, N, K, accumulate), ref_gemm(R, A, B, M, N, K, 0, 0);
    if (variant == 1) bnl_gemm_nt(C, A, B, M, N, K, accumulate), ref_gemm(R, A, B, M, N, K, 0, 1);
    if (variant == 2) bnl_gemm_tn(C, A, B, M, N, K, accumulate), ref_gemm(R, A, B, M, N, K, 1, 0);
    for (size_t i = 0; i < M * N; i++) want[i] = (float)(R[i] + (accumulate ? C0[i] : 0.0));
    char what[96];
    snprintf(what, sizeof what, "gemm_%s M=%zu N=%zu K=%zu acc=%d", name, M, N, K, accumulate);
    check_close(what, C, want, M * N, 1e-6 * (double)K + 1e-6, 1e-5);
    free(A), free(B), free(C), free(C0), free(want), free(R);
}

static void test_gemm(void) {
    static const size_t sz[] = {1, 7, 8, 9, 16, 17, 63, 64, 65};
    const size_t ns = sizeof sz / sizeof sz[0];
    for (int v = 0; v < 3; v++)
        for (size_t a = 0; a < ns; a++)
            for (size_t b = 0; b < ns; b++)
                for (size_t c = 0; c < ns; c++) test_gemm_shape(sz[a], sz[b], sz[c], v, (int)((a + b + c + v) & 1));
    // several KC passes, several tasks, threads
    for (int v = 0; v < 3; v++) {
        test_gemm_shape(300, 200, 600, v, 0);
        test_gemm_shape(130, 47, 520, v, 1);
    }
    // K == 0: overwrite gives zeros, accumulate leaves C alone
    float C[6] = {1, 2, 3, 4, 5, 6}, z[6] = {0}, one = 1;
    bnl_gemm_nn(C, &one, &one, 2, 3, 0, 1);
    CHECK(C[5] == 6.0f, "gemm with K=0, accumulate changed C");
    bnl_gemm_nt(C, &one, &one, 2, 3, 0, 0);
    check_close("gemm K=0 overwrite", C, z, 6, 0, 0);

    // bitwise the same for 1 and 3 threads
    size_t M = 190, N = 77, K = 300;
    float *A = frand(M * K, -1, 1), *B = frand(K * N, -1, 1), *C1 = fmalloc(M * N), *C3 = fmalloc(M * N);
    for (int v = 0; v < 3; v++) {
        bnl_set_threads(1);
        if (v == 0) bnl_gemm_nn(C1, A, B, M, N, K, 0);
        if (v == 1) bnl_gemm_nt(C1, A, B, M, N, K, 0);
        if (v == 2) bnl_gemm_tn(C1, A, B, M, N, K, 0);
        bnl_set_threads(3);
        if (v == 0) bnl_gemm_nn(C3, A, B, M, N, K, 0);
        if (v == 1) bnl_gemm_nt(C3, A, B, M, N, K, 0);
        if (v == 2) bnl_gemm_tn(C3, A, B, M, N, K, 0);
        bitwise_equal("gemm 1 vs 3 threads", C1, C3, M * N);
    }
    bnl_set_threads(0);
    free(A), free(B), free(C1), free(C3);
}

// ---------------------------------------------------------------------------------------------
// Convolution

typedef struct conv_case { int N, H, W, C, K, R, S, stride, pad; } conv_case;

static void conv_sizes(const bnl_conv_shape *s, size_t *nx, size_t *nw, size_t *ny) {
    *nx = (size_t)s->N * s->H * s->W * s->C;
    *nw = (size_t)s->K * s->R * s->S * s->C;
    *ny = (size_t)s->N * s->P * s->Q * s->K;
}

static void test_conv_case(const conv_case *cc, int tile) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, cc->N, cc->H, cc->W, cc->C, cc->K, cc->R, cc->S, cc->stride, cc->pad);
    CHECK(st == BNL_OK, "conv_shape_init: %s", bnl_last_error());
    if (st != BNL_OK) return;
    size_t nx, nw, ny;
    conv_sizes(&s, &nx, &nw, &ny);
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *dy = frand(ny, -1, 1);
    float *y = fmalloc(ny), *yr = fmalloc(ny), *dx = fmalloc(nx), *dxr = fmalloc(nx);
    float *dw = fmalloc(nw), *dwr = fmalloc(nw);
    char what[160];
    snprintf(what, sizeof what, "conv N=%d H=%d W=%d C=%d K=%d %dx%d/s%d/p%d tile=%d", cc->N, cc->H,
             cc->W, cc->C, cc->K, cc->R, cc->S, cc->stride, cc->pad, tile);
    bnl_conv_set_tile_pixels(tile);
    fill(y, ny, NAN);
    st = bnl_conv2d_forward(y, x, w, &s);
    CHECK(st == BNL_OK, "%s forward: %s", what, bnl_last_error());
    double *ref = malloc((ny > nx ? ny : nx) * sizeof(double)), *refw = malloc(nw * sizeof(double));
    ref_conv(ref, x, w, &s);
    ref_to_float(yr, ref, ny);
    double tol = 2e-6 * (double)(cc->R * cc->S * cc->C) + 1e-6;
    char w2[200];
    snprintf(w2, sizeof w2, "%s: y", what);
    check_close(w2, y, yr, ny, tol, 1e-5);

    fill(dx, nx, NAN);   // dx is written, never read
    fill(dw, nw, 0.0f);
    st = bnl_conv2d_backward(dx, dw, dy, x, w, &s);
    CHECK(st == BNL_OK, "%s backward: %s", what, bnl_last_error());
    ref_conv_backward(ref, refw, dy, x, w, &s);
    ref_to_float(dxr, ref, nx), ref_to_float(dwr, refw, nw);
    snprintf(w2, sizeof w2, "%s: dx", what);
    check_close(w2, dx, dxr, nx, 2e-6 * (double)(cc->R * cc->S * cc->K) + 1e-6, 1e-5);
    snprintf(w2, sizeof w2, "%s: dw", what);
    check_close(w2, dw, dwr, nw, 2e-6 * (double)(cc->N * s.P * s.Q) + 1e-6, 1e-5);

    // dw is added to: a second call doubles it; dx = NULL skips the input gradient
    float *dw2 = fmalloc(nw);
    memcpy(dw2, dw, nw * sizeof(float));
    st = bnl_conv2d_backward(NULL, dw2, dy, x, w, &s);
    CHECK(st == BNL_OK, "%s backward (dx NULL): %s", what, bnl_last_error());
    for (size_t i = 0; i < nw; i++) dwr[i] = 2.0f * dw[i];
    snprintf(w2, sizeof w2, "%s: dw after two calls", what);
    check_close(w2, dw2, dwr, nw, 1e-6 * (double)(cc->N * s.P * s.Q) + 1e-6, 1e-5);

    bnl_conv_set_tile_pixels(0);
    free(x), free(w), free(dy), free(y), free(yr), free(dx), free(dxr), free(dw), free(dwr), free(dw2);
    free(ref), free(refw);
}

// Finite differences on L = sum(conv(x, w) * rr).
typedef struct conv_fd { const bnl_conv_shape *s; float *x, *w, *y, *rr; size_t ny; } conv_fd;

static double conv_loss(void *ctx) {
    conv_fd *c = ctx;
    bnl_conv2d_forward(c->y, c->x, c->w, c->s);
    return dot(c->y, c->rr, c->ny);
}

static void test_conv_fd(int R, int stride, int pad, int H, int W) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, 2, H, W, 3, 4, R, R, stride, pad);
    CHECK(st == BNL_OK, "conv_shape_init: %s", bnl_last_error());
    if (st != BNL_OK) return;
    size_t nx, nw, ny;
    conv_sizes(&s, &nx, &nw, &ny);
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *rr = frand(ny, -1, 1), *y = fmalloc(ny);
    float *dx = fmalloc(nx), *dw = fmalloc(nw);
    fill(dw, nw, 0.0f);
    st = bnl_conv2d_backward(dx, dw, rr, x, w, &s);   // dL/dy = rr
    CHECK(st == BNL_OK, "conv backward: %s", bnl_last_error());
    conv_fd ctx = {&s, x, w, y, rr, ny};
    char what[96];
    snprintf(what, sizeof what, "conv fd %dx%d/s%d/p%d %dx%d: dx", R, R, stride, pad, H, W);
    fd_check(what, x, nx, dx, conv_loss, &ctx, 1e-2, 2e-3, 2e-3);
    snprintf(what, sizeof what, "conv fd %dx%d/s%d/p%d %dx%d: dw", R, R, stride, pad, H, W);
    fd_check(what, w, nw, dw, conv_loss, &ctx, 1e-2, 2e-3, 2e-3);
    free(x), free(w), free(rr), free(y), free(dx), free(dw);
}

// Same bits for any thread count and any tile size (the sums run in a fixed order).
static void test_conv_determinism(void) {
    const conv_case cases[] = {{3, 13, 11, 17, 9, 3, 3, 2, 1}, {2, 12, 12, 5, 8, 3, 3, 1, 1}, {2, 15, 15, 3, 8, 7, 7, 2, 3}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        bnl_conv_shape s;
        bnl_conv_shape_init(&s, cc->N, cc->H, cc->W, cc->C, cc->K, cc->R, cc->S, cc->stride, cc->pad);
        size_t nx, nw, ny;
        conv_sizes(&s, &nx, &nw, &ny);
        float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *dy = frand(ny, -1, 1);
        float *y[3], *dx[3], *dw[3];
        const int threads[3] = {1, 3, 2}, tiles[3] = {0, 5, 64};
        for (int v = 0; v < 3; v++) {
            y[v] = fmalloc(ny), dx[v] = fmalloc(nx), dw[v] = fmalloc(nw);
            fill(dw[v], nw, 0.0f);
            bnl_set_threads(threads[v]);
            bnl_conv_set_tile_pixels(tiles[v]);
            bnl_conv2d_forward(y[v], x, w, &s);
            bnl_conv2d_backward(dx[v], dw[v], dy, x, w, &s);
        }
        for (int v = 1; v < 3; v++) {
            bitwise_equal("conv y across threads/tiles", y[0], y[v], ny);
            bitwise_equal("conv dx across threads/tiles", dx[0], dx[v], nx);
            bitwise_equal("conv dw across threads/tiles", dw[0], dw[v], nw);
        }
        bnl_set_threads(0);
        bnl_conv_set_tile_pixels(0);
        for (int v = 0; v < 3; v++) free(y[v]), free(dx[v]), free(dw[v]);
        free(x), free(w), free(dy);
    }
}

static void test_conv(void) {
    const conv_case cases[] = {
        {2, 5, 7, 3, 5, 3, 3, 1, 1},    {1, 9, 9, 17, 8, 3, 3, 2, 1},   {2, 11, 13, 1, 4, 7, 7, 2, 3},
        {1, 8, 8, 64, 64, 1, 1, 1, 0},  {2, 9, 7, 5, 17, 1, 1, 2, 0},   {1, 6, 6, 64, 17, 3, 3, 1, 1},
        {3, 7, 5, 17, 3, 3, 3, 2, 1},   {1, 16, 16, 3, 64, 7, 7, 2, 3}, {2, 4, 4, 5, 3, 3, 3, 1, 0},
        {1, 1, 1, 5, 3, 1, 1, 1, 0},    {2, 3, 3, 1, 1, 3, 3, 1, 1},    {1, 10, 10, 64, 5, 1, 1, 2, 0},
        {4, 15, 17, 17, 64, 3, 3, 2, 1}, {1, 2, 2, 3, 2, 3, 3, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_conv_case(&cases[i], 0);    // automatic tiles
        test_conv_case(&cases[i], 7);    // tiles splitting rows and images
        test_conv_case(&cases[i], 1);
    }
    // many tiles and threads: the forward runs tiles in parallel
    bnl_set_threads(3);
    const conv_case big = {4, 14, 14, 17, 9, 3, 3, 1, 1};
    test_conv_case(&big, 16);
    bnl_set_threads(0);

    test_conv_fd(1, 1, 0, 4, 5);
    test_conv_fd(3, 1, 1, 5, 4);
    test_conv_fd(3, 2, 1, 5, 7);
    test_conv_fd(7, 2, 3, 7, 6);
    test_conv_fd(1, 2, 0, 5, 5);
    test_conv_determinism();
}

static void test_conv_errors(void) {
    bnl_conv_shape s;
    EXPECT_STATUS(bnl_conv_shape_init(NULL, 1, 4, 4, 3, 8, 3, 3, 1, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 0, 4, 4, 3, 8, 3, 3, 1, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 4, -4, 3, 8, 3, 3, 1, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 4, 4, 3, 0, 3, 3, 1, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 4, 4, 3, 8, 3, 3, 0, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 4, 4, 3, 8, 3, 3, 1, -1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 2, 2, 3, 8, 7, 7, 1, 1), BNL_ERR_SHAPE);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 8, 3, 3, 1, 1), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 2, 9, 7, 3, 4, 3, 3, 2, 1), BNL_OK);
    CHECK(s.P == 5 && s.Q == 4, "conv 9x7 3x3/s2/p1 gave %dx%d, expected 5x4", s.P, s.Q);
    EXPECT_STATUS(bnl_conv_shape_init(&s, 1, 224, 224, 3, 64, 7, 7, 2, 3), BNL_OK);
    CHECK(s.P == 112 && s.Q == 112, "stem gave %dx%d, expected 112x112", s.P, s.Q);

    bnl_conv_shape_init(&s, 1, 5, 5, 2, 3, 3, 3, 1, 1);
    float x[50] = {0}, w[54] = {0}, y[75], dy[75] = {0}, dx[50], dw[54] = {0};
    EXPECT_STATUS(bnl_conv2d_forward(NULL, x, w, &s), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_forward(y, NULL, w, &s), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_forward(y, x, NULL, &s), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_forward(y, x, w, NULL), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_backward(dx, dw, NULL, x, w, &s), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_backward(dx, dw, dy, NULL, w, &s), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_conv2d_backward(dx, dw, dy, x, NULL, &s), BNL_ERR_ARG);
    bnl_conv_shape bad = s;
    bad.P = 4;   // filled by hand, disagreeing with the input
    EXPECT_STATUS(bnl_conv2d_forward(y, x, w, &bad), BNL_ERR_SHAPE);
    EXPECT_STATUS(bnl_conv2d_backward(dx, dw, dy, x, w, &bad), BNL_ERR_SHAPE);
    bad = s;
    bad.C = 0;
    EXPECT_STATUS(bnl_conv2d_forward(y, x, w, &bad), BNL_ERR_ARG);
}

// ---------------------------------------------------------------------------------------------
// Pooling

// Direct max pool with PyTorch's rule: a value wins if greater than the max so far, or NaN.
static void ref_maxpool(float *y, int32_t *am, const float *x, int N, int H, int W, int C, int k, int st,
                        int pad, int P, int Q) {
    for (int n = 0; n < N; n++)
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++)
                for (int c = 0; c < C; c++) {
                    float best = -INFINITY;
                    int idx = -1;
                    for (int r = 0; r < k; r++)
                        for (int t = 0; t < k; t++) {
                            int h = p * st - pad + r, w = q * st - pad + t;
                            if (h < 0 || h >= H || w < 0 || w >= W) continue;
                            float v = x[(((size_t)n * H + h) * W + w) * C + c];
                            if (idx < 0) idx = h * W + w;
                            if (v > best || isnan(v)) best = v, idx = h * W + w;
                        }
                    size_t o = (((size_t)n * P + p) * Q + q) * C + c;
                    y[o] = best, am[o] = idx;
                }
}

typedef struct pool_fd { float *x, *y, *rr; int32_t *am; int N, H, W, C, P, Q, HW; size_t ny; int avg; } pool_fd;

static double pool_loss(void *ctx) {
    pool_fd *c = ctx;
    if (c->avg) bnl_avgpool_forward(c->y, c->x, c->N, c->HW, c->C);
    else bnl_maxpool_forward(c->y, c->am, c->x, c->N, c->H, c->W, c->C, 3, 2, 1, c->P, c->Q);
    return dot(c->y, c->rr, c->ny);
}

static void test_maxpool_case(int N, int H, int W, int C, int k, int st, int pad, int ties) {
    int P = (H + 2 * pad - k) / st + 1, Q = (W + 2 * pad - k) / st + 1;
    size_t nx = (size_t)N * H * W * C, ny = (size_t)N * P * Q * C;
    float *x = frand(nx, -2, 2), *y = fmalloc(ny), *yr = fmalloc(ny), *y2 = fmalloc(ny);
    // ties: few distinct values, so windows hold equal maxima; all negative, so padding must not win
    if (ties)
        for (size_t i = 0; i < nx; i++) x[i] = -1.0f - (float)bnl_rng_below(&g_rng, 3);
    int32_t *am = malloc(ny * sizeof(int32_t)), *amr = malloc(ny * sizeof(int32_t));
    char what[128];
    snprintf(what, sizeof what, "maxpool N=%d H=%d W=%d C=%d k=%d s=%d p=%d ties=%d", N, H, W, C, k, st, pad, ties);
    bnl_status s = bnl_maxpool_forward(y, am, x, N, H, W, C, k, st, pad, P, Q);
    CHECK(s == BNL_OK, "%s: %s", what, bnl_last_error());
    ref_maxpool(yr, amr, x, N, H, W, C, k, st, pad, P, Q);
    check_close(what, y, yr, ny, 0, 0);
    size_t bad = 0;
    for (size_t i = 0; i < ny; i++) bad += am[i] != amr[i];
    CHECK(bad == 0, "%s: %zu argmax values differ from the first-max reference", what, bad);
    s = bnl_maxpool_forward(y2, NULL, x, N, H, W, C, k, st, pad, P, Q);   // eval: no argmax
    CHECK(s == BNL_OK, "%s (no argmax): %s", what, bnl_last_error());
    check_close("maxpool without argmax", y2, yr, ny, 0, 0);

    // backward: scatter to the argmax, summed where one input wins several windows
    float *dy = frand(ny, -1, 1), *dx = fmalloc(nx), *dxr = fmalloc(nx);
    fill(dx, nx, NAN);
    s = bnl_maxpool_backward(dx, dy, am, N, H, W, C, P, Q);
    CHECK(s == BNL_OK, "%s backward: %s", what, bnl_last_error());
    double *acc = calloc(nx, sizeof(double));
    for (int n = 0; n < N; n++)
        for (int o = 0; o < P * Q; o++)
            for (int c = 0; c < C; c++) {
                size_t i = ((size_t)n * P * Q + o) * C + c;
                acc[((size_t)n * H * W + amr[i]) * C + c] += dy[i];
            }
    for (size_t i = 0; i < nx; i++) dxr[i] = (float)acc[i];
    check_close("maxpool backward", dx, dxr, nx, 1e-6, 1e-6);
    free(acc), free(x), free(y), free(yr), free(y2), free(am), free(amr), free(dy), free(dx), free(dxr);
}

static void test_pool(void) {
    test_maxpool_case(2, 9, 7, 3, 3, 2, 1, 0);
    test_maxpool_case(1, 8, 8, 64, 3, 2, 1, 0);
    test_maxpool_case(3, 5, 6, 17, 3, 2, 1, 1);
    test_maxpool_case(1, 1, 1, 5, 3, 2, 1, 1);
    test_maxpool_case(2, 6, 5, 1, 2, 2, 0, 1);
    test_maxpool_case(1, 7, 9, 5, 3, 1, 1, 1);
    test_maxpool_case(2, 112, 112, 64, 3, 2, 1, 0);   // ResNet stem size, threads

    // NaN propagates, with its index
    {
        float x[9] = {1, 2, 3, 4, NAN, 6, 7, 8, 9}, y[4];
        int32_t am[4];
        bnl_maxpool_forward(y, am, x, 1, 3, 3, 1, 3, 2, 1, 2, 2);
        CHECK(isnan(y[0]) && am[0] == 4 && isnan(y[3]) && am[3] == 4, "maxpool NaN: y0=%g am0=%d", y[0], am[0]);
    }
    // the same through the 4-channel vector path (C = 9: two vectors and a scalar channel): a NaN
    // in channel c of pixel 4 wins every window holding it, in that channel only, with or without argmax
    for (int c = 0; c < 9; c++) {
        float x[81], y[36], y2[36];
        int32_t am[36];
        for (int i = 0; i < 81; i++) x[i] = (float)(i / 9) - 0.5f * (float)(i % 9);
        x[4 * 9 + c] = NAN;
        bnl_maxpool_forward(y, am, x, 1, 3, 3, 9, 3, 2, 1, 2, 2);
        bnl_maxpool_forward(y2, NULL, x, 1, 3, 3, 9, 3, 2, 1, 2, 2);
        for (int o = 0; o < 4; o++)
            for (int d = 0; d < 9; d++) {
                int want_nan = d == c;
                CHECK(isnan(y[o * 9 + d]) == want_nan && isnan(y2[o * 9 + d]) == want_nan &&
                          (!want_nan || am[o * 9 + d] == 4),
                      "maxpool NaN (vector path) in channel %d: output %d channel %d = %g (argmax %d)", c, o, d,
                      y[o * 9 + d], am[o * 9 + d]);
            }
    }

    // finite differences, max pool: distinct values, so no window is near a tie
    {
        int N = 2, H = 7, W = 6, C = 3, P = 4, Q = 3;
        size_t nx = (size_t)N * H * W * C, ny = (size_t)N * P * Q * C;
        float *x = fmalloc(nx), *y = fmalloc(ny), *rr = frand(ny, -1, 1), *dx = fmalloc(nx);
        int32_t *am = malloc(ny * sizeof(int32_t));
        for (size_t i = 0; i < nx; i++) x[i] = (float)i * 0.1f;
        for (size_t i = nx - 1; i > 0; i--) {   // shuffle
            size_t j = bnl_rng_below(&g_rng, (uint32_t)(i + 1));
            float t = x[i];
            x[i] = x[j], x[j] = t;
        }
        bnl_maxpool_forward(y, am, x, N, H, W, C, 3, 2, 1, P, Q);
        bnl_maxpool_backward(dx, rr, am, N, H, W, C, P, Q);
        pool_fd ctx = {x, y, rr, am, N, H, W, C, P, Q, H * W, ny, 0};
        fd_check("maxpool fd dx", x, nx, dx, pool_loss, &ctx, 1e-2, 1e-3, 1e-3);
        free(x), free(y), free(rr), free(dx), free(am);
    }

    // average pool: direct reference, backward, finite differences
    {
        int N = 3, HW = 13, C = 17;
        size_t nx = (size_t)N * HW * C, ny = (size_t)N * C;
        float *x = frand(nx, -1, 1), *y = fmalloc(ny), *yr = fmalloc(ny), *rr = frand(ny, -1, 1);
        float *dx = fmalloc(nx), *dxr = fmalloc(nx);
        CHECK(bnl_avgpool_forward(y, x, N, HW, C) == BNL_OK, "avgpool: %s", bnl_last_error());
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int i = 0; i < HW; i++) s += x[((size_t)n * HW + i) * C + c];
                yr[(size_t)n * C + c] = (float)(s / HW);
            }
        check_close("avgpool forward", y, yr, ny, 1e-6, 1e-5);
        fill(dx, nx, NAN);
        CHECK(bnl_avgpool_backward(dx, rr, N, HW, C) == BNL_OK, "avgpool backward: %s", bnl_last_error());
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                for (int c = 0; c < C; c++) dxr[((size_t)n * HW + i) * C + c] = rr[(size_t)n * C + c] / HW;
        check_close("avgpool backward", dx, dxr, nx, 1e-7, 1e-6);
        pool_fd ctx = {x, y, rr, NULL, N, 0, 0, C, 0, 0, HW, ny, 1};
        fd_check("avgpool fd dx", x, nx, dx, pool_loss, &ctx, 1e-2, 1e-3, 1e-3);
        free(x), free(y), free(yr), free(rr), free(dx), free(dxr);
    }
    {   // ResNet-50 head size
        int N = 2, HW = 49, C = 2048;
        size_t nx = (size_t)N * HW * C, ny = (size_t)N * C;
        float *x = frand(nx, 0, 3), *y = fmalloc(ny), *yr = fmalloc(ny);
        bnl_avgpool_forward(y, x, N, HW, C);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int i = 0; i < HW; i++) s += x[((size_t)n * HW + i) * C + c];
                yr[(size_t)n * C + c] = (float)(s / HW);
            }
        check_close("avgpool 7x7x2048", y, yr, ny, 1e-6, 1e-5);
        free(x), free(y), free(yr);
    }

    // errors
    float x[64] = {0}, y[64], dy[64] = {0}, dx[64];
    int32_t am[64] = {0};
    EXPECT_STATUS(bnl_maxpool_forward(y, am, x, 1, 4, 4, 1, 3, 2, 1, 3, 2), BNL_ERR_SHAPE);
    EXPECT_STATUS(bnl_maxpool_forward(y, am, x, 1, 4, 4, 1, 3, 2, 2, 3, 3), BNL_ERR_ARG);   // pad > k/2
    EXPECT_STATUS(bnl_maxpool_forward(y, am, x, 0, 4, 4, 1, 3, 2, 1, 2, 2), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_maxpool_forward(y, am, NULL, 1, 4, 4, 1, 3, 2, 1, 2, 2), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_maxpool_forward(y, am, x, 1, 4, 4, 1, 0, 2, 0, 2, 2), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_maxpool_forward(y, am, x, 1, 4, 4, 1, 3, 2, 1, 2, 2), BNL_OK);
    am[2] = 16;   // outside the 4x4 plane
    EXPECT_STATUS(bnl_maxpool_backward(dx, dy, am, 1, 4, 4, 1, 2, 2), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_maxpool_backward(dx, dy, NULL, 1, 4, 4, 1, 2, 2), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_avgpool_forward(y, x, 1, 0, 4), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_avgpool_forward(NULL, x, 1, 4, 4), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_avgpool_backward(dx, dy, 1, 4, -1), BNL_ERR_ARG);
}

// ---------------------------------------------------------------------------------------------
// Linear

typedef struct lin_fd { float *x, *w, *b, *y, *rr; int N, I, O; } lin_fd;

static double lin_loss(void *ctx) {
    lin_fd *c = ctx;
    bnl_linear_forward(c->y, c->x, c->w, c->b, c->N, c->I, c->O);
    return dot(c->y, c->rr, (size_t)c->N * c->O);
}

static void test_linear(void) {
    const int shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {7, 64, 10}, {32, 65, 17}, {2, 2048, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int N = shapes[si][0], I = shapes[si][1], O = shapes[si][2];
        float *x = frand((size_t)N * I, -1, 1), *w = frand((size_t)O * I, -1, 1), *b = frand(O, -1, 1);
        float *y = fmalloc((size_t)N * O), *yr = fmalloc((size_t)N * O);
        for (int withb = 0; withb < 2; withb++) {
            CHECK(bnl_linear_forward(y, x, w, withb ? b : NULL, N, I, O) == BNL_OK, "linear: %s", bnl_last_error());
            for (int n = 0; n < N; n++)
                for (int o = 0; o < O; o++) {
                    double s = withb ? b[o] : 0.0;
                    for (int i = 0; i < I; i++) s += (double)x[(size_t)n * I + i] * w[(size_t)o * I + i];
                    yr[(size_t)n * O + o] = (float)s;
                }
            char what[64];
            snprintf(what, sizeof what, "linear N=%d I=%d O=%d bias=%d", N, I, O, withb);
            check_close(what, y, yr, (size_t)N * O, 2e-6 * I + 1e-6, 1e-5);
        }
        free(x), free(w), free(b), free(y), free(yr);
    }
    // finite differences for dx, dw, db; dw/db added, dx written
    int N = 4, I = 9, O = 5;
    float *x = frand((size_t)N * I, -1, 1), *w = frand((size_t)O * I, -1, 1), *b = frand(O, -1, 1);
    float *y = fmalloc((size_t)N * O), *rr = frand((size_t)N * O, -1, 1);
    float *dx = fmalloc((size_t)N * I), *dw = fmalloc((size_t)O * I), *db = fmalloc(O);
    fill(dx, (size_t)N * I, NAN), fill(dw, (size_t)O * I, 0.0f), fill(db, O, 0.0f);
    CHECK(bnl_linear_backward(dx, dw, db, rr, x, w, N, I, O) == BNL_OK, "linear backward: %s", bnl_last_error());
    lin_fd ctx = {x, w, b, y, rr, N, I, O};
    fd_check("linear fd dx", x, (size_t)N * I, dx, lin_loss, &ctx, 1e-2, 1e-3, 1e-3);
    fd_check("linear fd dw", w, (size_t)O * I, dw, lin_loss, &ctx, 1e-2, 1e-3, 1e-3);
    fd_check("linear fd db", b, O, db, lin_loss, &ctx, 1e-2, 1e-3, 1e-3);
    float *dw2 = fmalloc((size_t)O * I), *db2 = fmalloc(O), *twice = fmalloc((size_t)O * I);
    memcpy(dw2, dw, (size_t)O * I * sizeof(float)), memcpy(db2, db, O * sizeof(float));
    CHECK(bnl_linear_backward(NULL, dw2, db2, rr, x, w, N, I, O) == BNL_OK, "linear backward: %s", bnl_last_error());
    for (int i = 0; i < O * I; i++) twice[i] = 2 * dw[i];
    check_close("linear dw after two calls", dw2, twice, (size_t)O * I, 1e-6, 1e-6);
    for (int i = 0; i < O; i++) twice[i] = 2 * db[i];
    check_close("linear db after two calls", db2, twice, O, 1e-6, 1e-6);
    EXPECT_STATUS(bnl_linear_forward(y, x, w, b, 0, I, O), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_linear_forward(y, x, NULL, b, N, I, O), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_linear_backward(dx, dw, db, NULL, x, w, N, I, O), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_linear_backward(dx, dw, db, rr, x, w, N, -1, O), BNL_ERR_ARG);
#if SIZE_MAX <= 0xFFFFFFFFu
    EXPECT_STATUS(bnl_linear_forward(y, x, w, b, 1 << 20, 1 << 20, 4), BNL_ERR_ARG);   // wasm32: bytes overflow
#endif
    free(x), free(w), free(b), free(y), free(rr), free(dx), free(dw), free(db), free(dw2), free(db2), free(twice);
}

// ---------------------------------------------------------------------------------------------
// Elementwise

typedef struct relu_fd { float *a, *b, *y, *rr; size_t n; } relu_fd;

static double relu_loss(void *ctx) {
    relu_fd *c = ctx;
    bnl_add_relu_forward(c->y, c->a, c->b, c->n);
    return dot(c->y, c->rr, c->n);
}

// The residual add + ReLU of the blocks (bnl_add_relu_forward/backward).
static void test_elementwise(void) {
    size_t n = 1000;
    float *x = frand(n, -1, 1), *s = frand(n, -1, 1), *y = fmalloc(n), *yr = fmalloc(n), *rr = frand(n, -1, 1);
    float *dx = fmalloc(n);
    for (size_t i = 0; i < n; i++)   // keep a + b away from the kink for finite differences
        if (fabsf(x[i] + s[i]) < 0.05f) x[i] += 0.1f;
    bnl_add_relu_forward(y, x, s, n);
    for (size_t i = 0; i < n; i++) yr[i] = x[i] + s[i] > 0 ? x[i] + s[i] : 0.0f;
    check_close("add_relu forward", y, yr, n, 0, 0);
    bnl_add_relu_backward(dx, rr, NULL, y, n);   // the gradient through the ReLU alone
    for (size_t i = 0; i < n; i++) yr[i] = y[i] > 0 ? rr[i] : 0.0f;
    check_close("add_relu backward (no b)", dx, yr, n, 0, 0);
    relu_fd ctx = {x, s, y, rr, n};
    fd_check("add_relu fd da", x, n, dx, relu_loss, &ctx, 1e-2, 1e-3, 1e-3);
    bnl_add_relu_forward(y, x, s, n);
    bnl_add_relu_backward(dx, rr, s, y, n);   // (a + b) masked
    for (size_t i = 0; i < n; i++) yr[i] = y[i] > 0 ? rr[i] + s[i] : 0.0f;
    check_close("add_relu backward (a + b)", dx, yr, n, 0, 0);
    bnl_add_relu_backward(dx, rr, s, NULL, n);   // no ReLU: a + b everywhere
    for (size_t i = 0; i < n; i++) yr[i] = rr[i] + s[i];
    check_close("add_relu backward (no relu)", dx, yr, n, 0, 0);
    float nan_in = NAN, zero = 0, nan_out = 0;
    bnl_add_relu_forward(&nan_out, &nan_in, &zero, 1);
    CHECK(isnan(nan_out), "relu(NaN + 0) gave %g, expected NaN as torch does", nan_out);
    // in place, large (threads)
    size_t big = 1 << 20;
    float *a = frand(big, -1, 1), *b = frand(big, -1, 1), *cr = fmalloc(big);
    for (size_t i = 0; i < big; i++) cr[i] = a[i] + b[i] > 0 ? a[i] + b[i] : 0.0f;
    bnl_add_relu_forward(a, a, b, big);   // y aliases a
    check_close("add_relu forward in place", a, cr, big, 0, 0);
    bnl_add_relu_backward(b, b, NULL, a, big);   // g aliases a (the gradient)
    size_t bad = 0;
    for (size_t i = 0; i < big; i++) bad += (a[i] > 0) ? 0 : b[i] != 0.0f;
    CHECK(bad == 0, "add_relu backward in place left %zu gradients where y <= 0", bad);
    free(x), free(s), free(y), free(yr), free(rr), free(dx), free(a), free(b), free(cr);
}

// ---------------------------------------------------------------------------------------------
// Loss

typedef struct xent_fd { float *z, *p; const int64_t *lab; int N, K; } xent_fd;

static double xent_loss(void *ctx) {
    xent_fd *c = ctx;
    float l;
    bnl_softmax_xent_forward(&l, c->p, c->z, c->lab, c->N, c->K);
    return l;
}

static void test_loss(void) {
    int N = 5, K = 7;
    float *z = frand((size_t)N * K, -3, 3), *p = fmalloc((size_t)N * K), *pr = fmalloc((size_t)N * K);
    float *dz = fmalloc((size_t)N * K);
    int64_t lab[5] = {0, 6, 3, 3, 1};
    float loss = 0;
    CHECK(bnl_softmax_xent_forward(&loss, p, z, lab, N, K) == BNL_OK, "xent: %s", bnl_last_error());
    double lref = 0;
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += exp((double)z[n * K + k]);
        for (int k = 0; k < K; k++) pr[n * K + k] = (float)(exp((double)z[n * K + k]) / s);
        lref += -log(exp((double)z[n * K + lab[n]]) / s);
    }
    float lr = (float)(lref / N);
    check_close("xent probs", p, pr, (size_t)N * K, 1e-7, 1e-6);
    check_close("xent loss", &loss, &lr, 1, 1e-6, 1e-6);
    CHECK(bnl_softmax_xent_backward(dz, p, lab, N, K) == BNL_OK, "xent backward: %s", bnl_last_error());
    float *p2 = fmalloc((size_t)N * K);
    xent_fd ctx = {z, p2, lab, N, K};
    fd_check("xent fd dlogits", z, (size_t)N * K, dz, xent_loss, &ctx, 1e-2, 2e-4, 2e-3);

    // in place: probs over the logits, then dlogits over the probs
    float *za = fmalloc((size_t)N * K), la = 0;
    memcpy(za, z, (size_t)N * K * sizeof(float));
    CHECK(bnl_softmax_xent_forward(&la, za, za, lab, N, K) == BNL_OK, "xent in place: %s", bnl_last_error());
    check_close("xent in-place loss", &la, &loss, 1, 0, 0);
    check_close("xent in-place probs", za, p, (size_t)N * K, 0, 0);
    CHECK(bnl_softmax_xent_backward(za, za, lab, N, K) == BNL_OK, "xent backward in place: %s", bnl_last_error());
    check_close("xent in-place dlogits", za, dz, (size_t)N * K, 0, 0);
    free(za);

    // large logits: the row max is subtracted, nothing overflows
    float zb[4] = {1000.0f, 1001.0f, -1000.0f, 999.0f}, pb[4], lb = 0;
    int64_t lb_lab[1] = {0};
    CHECK(bnl_softmax_xent_forward(&lb, pb, zb, lb_lab, 1, 4) == BNL_OK, "xent large: %s", bnl_last_error());
    double e = log(exp(-1.0) + 1.0 + exp(-2.0)) + 1.0;
    CHECK(isfinite(lb) && fabs(lb - e) < 1e-5, "xent with logits ~1000: loss %g, expected %g", lb, e);
    CHECK(isfinite(pb[0]) && pb[2] == 0.0f, "xent with logits ~1000: probs %g %g", pb[0], pb[2]);

    // invalid labels name the row and the value
    int64_t badl[5] = {0, 1, 7, 2, 3};
    EXPECT_STATUS(bnl_softmax_xent_forward(&loss, p, z, badl, N, K), BNL_ERR_ARG);
    CHECK(strstr(bnl_last_error(), "row 2") && strstr(bnl_last_error(), "7"), "message: %s", bnl_last_error());
    badl[2] = -1;
    EXPECT_STATUS(bnl_softmax_xent_forward(&loss, p, z, badl, N, K), BNL_ERR_ARG);
    CHECK(strstr(bnl_last_error(), "row 2") && strstr(bnl_last_error(), "-1"), "message: %s", bnl_last_error());
    EXPECT_STATUS(bnl_softmax_xent_backward(dz, p, badl, N, K), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_softmax_xent_forward(&loss, p, z, lab, 0, K), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_softmax_xent_forward(&loss, p, z, NULL, N, K), BNL_ERR_ARG);
    EXPECT_STATUS(bnl_softmax_xent_forward(NULL, p, z, lab, N, K), BNL_ERR_ARG);
    free(z), free(p), free(pr), free(dz), free(p2);
}

int main(void) {
    g_rng = bnl_rng_seed(20240611);
    test_gemm();
    test_conv();
    test_conv_errors();
    test_pool();
    test_linear();
    test_elementwise();
    test_loss();
    return test_summary("test_ops");
}
