// Tests of the GEMM micro-kernels and engine (src/ops/gemm.c, gemm_impl.inc, gemm_kernels.h) on
// every ISA this CPU has (bnl_isa_force), each against a double-precision reference and against
// the scalar reference kernel:
// - tile-edge shapes: M, N, K equal to, one below, one above and multiples of the register tile
//   (mr, nr) and of the blocking (kc passes, mc/nc tasks), for NN, NT and TN, overwrite and add;
// - the micro-kernel alone, with and without loading C, and its epilogue (bias, residual, ReLU
//   with NaN kept) bitwise equal to the scalar epilogue the engine runs on edge tiles;
// - bitwise the same results for 1, 2 and 3 threads and for a sub-matrix (tiles falling elsewhere);
// - convolutions through the engine: patches gathered on the fly, packed weights scaled per
//   channel (BatchNorm folding), the fused epilogue, the backward (dx, dw) against direct loops.
#include "core/rng.h"
#include "ops/dispatch.h"
#include "ops/gemm_kernels.h"
#include "ops/ops.h"
#include "util.h"
#include "ref.h"
#include "test_data.h"

#include <stdint.h>


static void run_variant(int v, float *C, const float *A, const float *B, size_t M, size_t N, size_t K, int acc) {
    if (v == 0) bnl_gemm_nn(C, A, B, M, N, K, acc);
    if (v == 1) bnl_gemm_nt(C, A, B, M, N, K, acc);
    if (v == 2) bnl_gemm_tn(C, A, B, M, N, K, acc);
}

// One shape on the active ISA: against double, against the scalar reference, across threads.
static void gemm_shape(size_t M, size_t N, size_t K, int v, int acc) {
    static const char *names[3] = {"nn", "nt", "tn"};
    bnl_isa isa = bnl_isa_active();
    float *A = frand(M * K, -1, 1), *B = frand(K * N, -1, 1), *C0 = frand(M * N, -1, 1);
    float *C = fmalloc(M * N), *Cs = fmalloc(M * N), *Ct = fmalloc(M * N), *want = fmalloc(M * N);
    double *R = malloc(M * N * sizeof(double));
    ref_gemm(R, A, B, M, N, K, v == 2, v == 1);
    for (size_t i = 0; i < M * N; i++) want[i] = (float)(R[i] + (acc ? C0[i] : 0.0));
    char what[160];
    snprintf(what, sizeof what, "%s %s M=%zu N=%zu K=%zu acc=%d", bnl_isa_name(isa), names[v], M, N, K, acc);

    if (acc) memcpy(C, C0, M * N * sizeof(float));
    else fill(C, M * N, NAN);   // overwrite must never read C
    run_variant(v, C, A, B, M, N, K, acc);
    double tol = 2e-6 * (double)K + 1e-6;
    check_close(what, C, want, M * N, tol, 1e-5);

    // the scalar reference kernel is the judge
    bnl_isa_force(BNL_ISA_SCALAR);
    memcpy(Cs, C0, M * N * sizeof(float));
    run_variant(v, Cs, A, B, M, N, K, acc);
    bnl_isa_force(isa);
    char w2[200];
    snprintf(w2, sizeof w2, "%s vs scalar", what);
    check_close(w2, C, Cs, M * N, tol, 1e-5);

    // the same bits for other thread counts
    for (int T = 1; T <= 3; T += 2) {
        bnl_set_threads(T);
        memcpy(Ct, C0, M * N * sizeof(float));
        run_variant(v, Ct, A, B, M, N, K, acc);
        snprintf(w2, sizeof w2, "%s threads=%d vs default", what, T);
        bitwise_equal(w2, Ct, C, M * N);
    }
    bnl_set_threads(0);
    free(A), free(B), free(C0), free(C), free(Cs), free(Ct), free(want), free(R);
}

static void test_edges(void) {
    const bnl_gemm_kernels *kt = bnl_gemm_kernels_active();
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc, mc = (size_t)kt->mc;
    // equal to, below, above, multiples of the tile; past one task of rows; several K passes
    size_t Ms[] = {1, mr - 1, mr, mr + 1, 2 * mr, 3 * mr + 1, mc + 1};
    size_t Ns[] = {1, nr - 1, nr, nr + 1, 2 * nr, 3 * nr + 5};
    size_t Ks[] = {1, 3, kc - 1, kc, kc + 1, 2 * kc + 3};
    size_t nM = sizeof Ms / sizeof Ms[0], nN = sizeof Ns / sizeof Ns[0], nK = sizeof Ks / sizeof Ks[0];
    int count = 0;
    for (size_t a = 0; a < nM; a++)
        for (size_t b = 0; b < nN; b++)
            for (size_t c = 0; c < nK; c++) {
                if (Ms[a] == 0 || Ns[b] == 0) continue;
                int v = (int)((a + b + c) % 3), acc = (int)((a + 2 * b + c) & 1);
                gemm_shape(Ms[a], Ns[b], Ks[c], v, acc);
                count++;
            }
    // every variant on the shapes that matter most: full tiles, several tasks and passes
    for (int v = 0; v < 3; v++) {
        gemm_shape(2 * mr, 2 * nr, kc, v, 0);
        gemm_shape(mc * 2 + mr + 3, 5 * nr + 1, 2 * kc + 1, v, v & 1);
        gemm_shape(1, 300, 2 * kc, v, 1);
        // long reductions: split into 2 and 4 chunks summed in order (the same for any thread count)
        gemm_shape(33, 17, 8 * kc + 1, v, v & 1);
        gemm_shape(2 * mr + 1, nr + 3, 16 * kc + 5, v, (v + 1) & 1);
    }
    printf("isa %s (%s): %d edge shapes\n", bnl_isa_name(bnl_isa_active()), kt->name, count);
}

// The micro-kernel alone, on packed operands: k order, load_c, epilogue bitwise equal to the
// scalar formula the engine applies on edge tiles.
static void test_ukernel(void) {
    const bnl_gemm_kernels *kt = bnl_gemm_kernels_active();
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc;
    size_t kbs[] = {1, 2, 7, kc - 1, kc};
    for (size_t t = 0; t < sizeof kbs / sizeof kbs[0]; t++) {
        size_t kb = kbs[t], ldc = nr + 3, ldr = nr + 5;
        float *a = frand(mr * kc, -1, 1), *b = frand(kb * nr, -1, 1), *c0 = frand(mr * ldc, -2, 2);
        float *bias = frand(nr, -1, 1), *res = frand(mr * ldr, -1, 1), *gate = frand(mr * ldr, -1, 1);
        float *c = fmalloc(mr * ldc), *plain = fmalloc(mr * ldc), *want = fmalloc(mr * ldc);
        res[1] = NAN;    // NaN passes through the ReLU, like torch.relu
        gate[2] = NAN;   // and a NaN gate closes (NaN > 0 is false)
        for (int load = 0; load < 2; load++) {
            char what[160];
            // plain: against double
            memcpy(plain, c0, mr * ldc * sizeof(float));
            kt->ukernel(kb, a, b, plain, ldc, load, NULL);
            for (size_t i = 0; i < mr; i++)
                for (size_t j = 0; j < nr; j++) {
                    double s = load ? c0[i * ldc + j] : 0.0;
                    for (size_t k = 0; k < kb; k++) s += (double)a[i * kc + k] * b[k * nr + j];
                    want[i * ldc + j] = (float)s;
                }
            for (size_t i = 0; i < mr; i++) {
                snprintf(what, sizeof what, "%s ukernel kb=%zu load_c=%d row %zu", kt->name, kb, load, i);
                check_close(what, plain + i * ldc, want + i * ldc, nr, 2e-6 * (double)kb + 1e-6, 1e-5);
            }
            CHECK(plain[nr] == c0[nr], "%s: ukernel wrote past its %zu columns", kt->name, nr);
            if (kt->ukernel_lda) {   // A read in place, rows lda apart: the same bits
                size_t lda = kb + 5;
                float *ar = fmalloc(mr * lda), *cl = fmalloc(mr * ldc);
                for (size_t i = 0; i < mr; i++) memcpy(ar + i * lda, a + i * kc, kb * sizeof(float));
                memcpy(cl, c0, mr * ldc * sizeof(float));
                kt->ukernel_lda(kb, ar, lda, b, cl, ldc, load, NULL);
                snprintf(what, sizeof what, "%s ukernel_lda kb=%zu load_c=%d", kt->name, kb, load);
                bitwise_equal(what, cl, plain, mr * ldc);
                free(ar), free(cl);
            }
            // epilogue: the kernel's own equals acc + bias, + res, gate, ReLU on the plain result
            for (int e = 0; e < 16; e++) {
                bnl_gemm_epi epi = {e & 1 ? bias : NULL, e & 2 ? res : NULL, ldr, (e & 8) != 0, e & 4 ? gate : NULL};
                memcpy(c, c0, mr * ldc * sizeof(float));
                kt->ukernel(kb, a, b, c, ldc, load, &epi);
                for (size_t i = 0; i < mr; i++)
                    for (size_t j = 0; j < nr; j++) {
                        float v = plain[i * ldc + j];
                        if (epi.bias) v = v + bias[j];
                        if (epi.res) v = v + res[i * ldr + j];
                        if (epi.gate) v = gate[i * ldr + j] > 0.0f ? v : 0.0f;
                        want[i * ldc + j] = !epi.relu || !(v < 0.0f) ? v : 0.0f;
                    }
                for (size_t i = 0; i < mr; i++) {
                    snprintf(what, sizeof what, "%s ukernel epilogue %d kb=%zu load_c=%d row %zu", kt->name, e, kb,
                             load, i);
                    bitwise_equal(what, c + i * ldc, want + i * ldc, nr);
                }
            }
        }
        free(a), free(b), free(c0), free(bias), free(res), free(gate), free(c), free(plain), free(want);
    }
}

// The engine's epilogue: interior tiles (in the kernel) and edge tiles (scalar) agree bitwise, so
// a sub-matrix, whose tiles fall elsewhere, gives the same bits.
static void test_epilogue(size_t K) {
    const bnl_gemm_kernels *kt = bnl_gemm_kernels_active();
    size_t M = 3 * (size_t)kt->mr + 2, N = 2 * (size_t)kt->nr + 3;
    float *A = frand(M * K, -1, 1), *B = frand(N * K, -1, 1), *bias = frand(N, -1, 1), *res = frand(M * N, -1, 1);
    float *C = fmalloc(M * N), *want = fmalloc(M * N), *Cs = fmalloc(M * N);
    double *R = malloc(M * N * sizeof(double));
    ref_gemm(R, A, B, M, N, K, 0, 1);
    for (size_t i = 0; i < M * N; i++) {
        double v = R[i] + bias[i % N] + res[i];
        want[i] = (float)(v < 0 ? 0 : v);
    }
    bnl_gemm_call g;
    memset(&g, 0, sizeof g);
    g.C = C, g.ldc = N, g.M = M, g.N = N, g.K = K;
    g.a = (bnl_gemm_src){BNL_SRC_STRIDED, A, K, 1, NULL, NULL};
    g.b = (bnl_gemm_src){BNL_SRC_STRIDED, B, 1, K, NULL, NULL};
    g.bias = bias, g.res = res, g.ldr = N, g.relu = 1;
    fill(C, M * N, NAN);
    CHECK(bnl_gemm_run(&g) == BNL_OK, "gemm_run: %s", bnl_last_error());
    char what[128];
    snprintf(what, sizeof what, "%s epilogue bias+res+relu K=%zu", kt->name, K);
    check_close(what, C, want, M * N, 2e-6 * (double)K + 1e-6, 1e-5);
    // the sub-matrix of rows 1.. and columns 1..: every tile boundary moves
    size_t Ms = M - 1, Ns = N - 1;
    bnl_gemm_call h = g;
    h.C = Cs, h.ldc = N, h.M = Ms, h.N = Ns;
    h.a.p = A + K, h.b.p = B + K, h.bias = bias + 1, h.res = res + N + 1;
    fill(Cs, M * N, NAN);
    CHECK(bnl_gemm_run(&h) == BNL_OK, "gemm_run: %s", bnl_last_error());
    for (size_t i = 0; i < Ms; i++) {
        snprintf(what, sizeof what, "%s epilogue, sub-matrix row %zu", kt->name, i);
        bitwise_equal(what, Cs + i * N, C + (i + 1) * N + 1, Ns);
    }
    // pre-packed B (with a column scale) gives the same as scaling B first
    float *scale = frand(N, 0.5, 1.5), *Bs = fmalloc(N * K), *P = fmalloc(bnl_gemm_packed_floats(kt, N, K));
    for (size_t j = 0; j < N; j++)
        for (size_t k = 0; k < K; k++) Bs[j * K + k] = B[j * K + k] * scale[j];
    bnl_gemm_src bsrc = {BNL_SRC_STRIDED, B, 1, K, NULL, NULL};
    bnl_gemm_pack_b(P, kt, &bsrc, N, K, scale);
    bnl_gemm_call p = g;
    p.b = (bnl_gemm_src){BNL_SRC_PACKED, P, K, 0, NULL, kt};
    p.C = Cs;
    CHECK(bnl_gemm_run(&p) == BNL_OK, "gemm_run: %s", bnl_last_error());
    g.b.p = Bs;
    CHECK(bnl_gemm_run(&g) == BNL_OK, "gemm_run: %s", bnl_last_error());
    snprintf(what, sizeof what, "%s packed+scaled B vs scaled B", kt->name);
    bitwise_equal(what, Cs, C, M * N);
    free(A), free(B), free(bias), free(res), free(C), free(want), free(Cs), free(R), free(scale), free(Bs), free(P);
}

// ---------------------------------------------------------------------------------------------
// Convolutions through the engine

static void test_conv_case(int N, int H, int W, int C, int K, int R, int stride, int pad) {
    bnl_conv_shape s;
    if (bnl_conv_shape_init(&s, N, H, W, C, K, R, R, stride, pad) != BNL_OK) {
        CHECK(0, "conv_shape_init: %s", bnl_last_error());
        return;
    }
    size_t nx = (size_t)N * H * W * C, nw = (size_t)K * R * R * C, ny = (size_t)N * s.P * s.Q * K;
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *dy = frand(ny, -1, 1), *y = fmalloc(ny), *yr = fmalloc(ny);
    float *scale = frand((size_t)K, 0.5, 2), *bias = frand((size_t)K, -1, 1), *res = frand(ny, -1, 1);
    float *dx = fmalloc(nx), *dxr = fmalloc(nx), *dw = fmalloc(nw), *dwr = fmalloc(nw);
    double *ref = malloc((ny > nx ? ny : nx) * sizeof(double)), *refw = malloc(nw * sizeof(double));
    char what[200];
    snprintf(what, sizeof what, "%s conv N=%d %dx%d C=%d K=%d %dx%d/s%d/p%d", bnl_isa_name(bnl_isa_active()), N, H,
             W, C, K, R, R, stride, pad);
    int rsc = R * R * C;
    double tol = 2e-6 * rsc + 1e-6;

    ref_conv(ref, x, w, &s);
    ref_to_float(yr, ref, ny);
    fill(y, ny, NAN);
    CHECK(bnl_conv2d_forward(y, x, w, &s) == BNL_OK, "%s: %s", what, bnl_last_error());
    char w2[260];
    snprintf(w2, sizeof w2, "%s: y", what);
    check_close(w2, y, yr, ny, tol, 1e-5);

    // fused: relu(conv(x, w*scale) + bias + res), weights packed once
    bnl_conv_packed *pk = NULL;
    CHECK(bnl_conv_pack_weights(&pk, w, scale, K, R, R, C) == BNL_OK, "%s pack: %s", what, bnl_last_error());
    CHECK(bnl_conv_packed_current(pk), "%s: packed weights not current", what);
    for (size_t i = 0; i < ny; i++) {
        double v = ref[i] * scale[i % (size_t)K] + bias[i % (size_t)K] + res[i];
        yr[i] = (float)(v < 0 ? 0 : v);
    }
    fill(y, ny, NAN);
    CHECK(bnl_conv2d_forward_fused(y, x, pk, bias, res, 1, &s) == BNL_OK, "%s fused: %s", what, bnl_last_error());
    snprintf(w2, sizeof w2, "%s: fused y", what);
    check_close(w2, y, yr, ny, 2 * tol, 1e-5);
    if (R == 3 && stride == 1) {
        // Winograd F(2x2,3x3): against float64, its error at most a few times the direct path's own
        double e_direct = 0, e_wino = 0;
        for (size_t i = 0; i < ny; i++) e_direct = fmax(e_direct, fabs((double)y[i] - (double)yr[i]));
        float *yw = fmalloc(ny);
        fill(yw, ny, NAN);
        bnl_conv_packed *pw = NULL;
        CHECK(bnl_conv_pack_weights_isa(&pw, bnl_isa_active(), w, scale, K, R, R, C, 1) == BNL_OK, "%s winograd pack: %s", what,
              bnl_last_error());
        CHECK(bnl_conv2d_forward_fused(yw, x, pw, bias, res, 1, &s) == BNL_OK, "%s winograd: %s", what,
              bnl_last_error());
        for (size_t i = 0; i < ny; i++) {
            double e = fabs((double)yw[i] - (double)yr[i]);
            e_wino = e != e ? INFINITY : fmax(e_wino, e);
        }
        CHECK(e_wino <= 4 * e_direct + 1e-6, "%s: winograd max error %.3g, direct %.3g", what, e_wino, e_direct);
        snprintf(w2, sizeof w2, "%s: winograd y", what);
        check_close(w2, yw, yr, ny, 2 * tol, 1e-5);
        // packed for stride 1: a stride-2 shape is refused, not computed wrong
        bnl_conv_shape s2;
        if (H >= 3 && W >= 3 && bnl_conv_shape_init(&s2, N, H, W, C, K, 3, 3, 2, pad) == BNL_OK)
            CHECK(bnl_conv2d_forward_fused(yw, x, pw, NULL, NULL, 0, &s2) == BNL_ERR_SHAPE,
                  "%s: winograd weights ran a stride-2 convolution", what);
        bnl_conv_packed_free(pw);
        free(yw);
    }
    // repacking into the same buffer, no scale, no epilogue: the plain forward's bits
    float *y2 = fmalloc(ny);
    CHECK(bnl_conv_pack_weights(&pk, w, NULL, K, R, R, C) == BNL_OK, "%s repack: %s", what, bnl_last_error());
    CHECK(bnl_conv2d_forward_fused(y2, x, pk, NULL, NULL, 0, &s) == BNL_OK, "%s fused: %s", what, bnl_last_error());
    CHECK(bnl_conv2d_forward(y, x, w, &s) == BNL_OK, "%s: %s", what, bnl_last_error());
    snprintf(w2, sizeof w2, "%s: packed vs plain", what);
    bitwise_equal(w2, y2, y, ny);
    bnl_conv_packed_free(pk);

    // backward
    ref_conv_backward(ref, refw, dy, x, w, &s);
    ref_to_float(dxr, ref, nx), ref_to_float(dwr, refw, nw);
    fill(dx, nx, NAN), fill(dw, nw, 0.0f);
    CHECK(bnl_conv2d_backward(dx, dw, dy, x, w, &s) == BNL_OK, "%s backward: %s", what, bnl_last_error());
    snprintf(w2, sizeof w2, "%s: dx", what);
    check_close(w2, dx, dxr, nx, 2e-6 * R * R * K + 1e-6, 1e-5);
    snprintf(w2, sizeof w2, "%s: dw", what);
    check_close(w2, dw, dwr, nw, 2e-6 * N * s.P * s.Q + 1e-6, 1e-5);
    // the input gradient finished in the same pass: gate > 0 ? dx + res : 0, the same bits as after
    float *res2 = frand(nx, -1, 1), *gate2 = frand(nx, -1, 1), *dx2 = fmalloc(nx), *dw2 = fmalloc(nw);
    fill(dx2, nx, NAN), fill(dw2, nw, 0.0f);
    CHECK(bnl_conv2d_backward_ex(dx2, dw2, dy, x, w, res2, gate2, &s) == BNL_OK, "%s backward_ex: %s", what,
          bnl_last_error());
    for (size_t i = 0; i < nx; i++) {
        float v = dx[i] + res2[i];
        dxr[i] = gate2[i] > 0.0f ? v : 0.0f;
    }
    snprintf(w2, sizeof w2, "%s: dx with residual and gate", what);
    bitwise_equal(w2, dx2, dxr, nx);
    snprintf(w2, sizeof w2, "%s: dw of backward_ex", what);
    bitwise_equal(w2, dw2, dw, nw);
    free(res2), free(gate2), free(dx2), free(dw2);
    free(x), free(w), free(dy), free(y), free(yr), free(y2), free(scale), free(bias), free(res);
    free(dx), free(dxr), free(dw), free(dwr), free(ref), free(refw);
}

static void test_conv(void) {
    // ResNet's kinds (stem 7x7/2 on 3 channels, 3x3/1 and /2, 1x1/1 and /2) at small sizes whose
    // pixel and channel counts straddle the tiles
    test_conv_case(1, 19, 17, 3, 16, 7, 2, 3);
    test_conv_case(2, 9, 9, 16, 33, 3, 1, 1);
    test_conv_case(1, 12, 10, 40, 17, 3, 2, 1);
    test_conv_case(2, 7, 7, 64, 32, 1, 1, 0);
    test_conv_case(1, 9, 8, 24, 48, 1, 2, 0);
    test_conv_case(1, 6, 6, 5, 7, 3, 1, 0);
    test_conv_case(1, 5, 5, 3, 2, 3, 1, 2);
    // many pixels: the weight gradient runs K outer (K = pixels), patches packed per pixel row
    test_conv_case(2, 20, 20, 16, 8, 3, 1, 1);
    test_conv_case(4, 24, 24, 3, 16, 7, 2, 3);
    test_conv_case(1, 24, 24, 40, 24, 1, 1, 0);
    test_conv_case(3, 17, 15, 36, 20, 3, 2, 1);
    // so many pixels that the weight gradient's reduction is split
    test_conv_case(2, 48, 48, 8, 8, 3, 1, 1);
    test_conv_case(2, 40, 39, 128, 120, 3, 1, 1);   // Winograd in several chunks of tiles, the last partial
}

int main(void) {
    g_rng = bnl_rng_seed(77);
    for (int isa = 0; isa < BNL_ISA_COUNT; isa++) {
        if (!bnl_isa_available((bnl_isa)isa)) continue;
        bnl_isa_force((bnl_isa)isa);
        int before = g_failures;
        test_ukernel();
        test_edges();
        test_epilogue((size_t)bnl_gemm_kernels_active()->kc + 9);
        test_epilogue(4 * (size_t)bnl_gemm_kernels_active()->kc + 9);    // K outer: the epilogue on the last pass only
        test_epilogue(16 * (size_t)bnl_gemm_kernels_active()->kc + 9);   // split reduction
        test_conv();
        printf("isa %s: %s\n", bnl_isa_name((bnl_isa)isa), g_failures == before ? "ok" : "FAILED");
    }
    bnl_isa_reset();
    // a pack made for one ISA is not current for another
    if (bnl_isa_available(BNL_ISA_AVX2) || bnl_isa_available(BNL_ISA_AVX512) || bnl_isa_available(BNL_ISA_WASMSIMD)) {
        float w[2 * 3 * 3 * 4] = {0};
        bnl_conv_packed *pk = NULL;
        bnl_isa_force(BNL_ISA_SCALAR);
        CHECK(bnl_conv_pack_weights(&pk, w, NULL, 2, 3, 3, 4) == BNL_OK, "pack: %s", bnl_last_error());
        bnl_isa_reset();
        CHECK(!bnl_conv_packed_current(pk), "weights packed for scalar are current for %s", bnl_isa_name(bnl_isa_active()));
        bnl_conv_packed_free(pk);
    }
    return test_summary("test_gemm");
}
