// GEMM: the kernel boundary that convolutions and linear layers share. Row-major float32.
//
// One portable engine serves all three variants: C[M,N] (+)= A(M,K) * B(K,N), where A is read
// through two strides (so A and A^T need no copy) and B is (K,N) row-major (the "NT" variant
// transposes its B once into a scratch buffer). The engine is cache-blocked (KC rows of B at a
// time, C split into MC x NC tasks) around a 4x16 register tile of local accumulators, written so
// that gcc -O3 / clang vectorize the inner loops over the contiguous N dimension. No intrinsics,
// no fast-math: a later packed SIMD micro-kernel replaces tile_4x16 and friends.
//
// Determinism: every element of C is computed by exactly one task, as C (or 0) plus the products
// for k = 0, 1, ..., K-1 in order, whatever the tile, task or thread it lands in. So results do
// not depend on the thread count or on how C is partitioned.
//
// Sizes: C (M,N). A(i,k) at A[i*a_si + k*a_sk]. B (K,N) with row stride ldb.
#include "core/common.h"
#include "ops/ops.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GEMM_MR 4     // register tile rows
#define GEMM_NR 16    // register tile columns (4 SSE / 2 AVX / 4 wasm simd128 vectors)
#define GEMM_KC 256   // depth of one pass: a KC x NR panel of B stays in L1 across a task's rows
#define GEMM_MC 64    // task rows
#define GEMM_NC 256   // task columns

typedef struct gemm_args {
    float *C;
    size_t ldc;
    const float *A;
    size_t a_si, a_sk;
    const float *B;
    size_t ldb;
    size_t M, N, K;
    int accumulate;
} gemm_args;

// The 4x16 register tile over kb steps. init: start from 0 instead of C (first pass, overwrite).
static void tile_4x16(float *restrict C, size_t ldc, const float *restrict A, size_t a_si,
                      size_t a_sk, const float *restrict B, size_t ldb, size_t kb, int init) {
    float acc[GEMM_MR][GEMM_NR];
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < GEMM_NR; j++) acc[r][j] = init ? 0.0f : C[r * ldc + j];
    for (size_t k = 0; k < kb; k++) {
        const float *b = B + k * ldb;
        const float *a = A + k * a_sk;
        for (int r = 0; r < GEMM_MR; r++) {
            float ar = a[r * a_si];
            for (int j = 0; j < GEMM_NR; j++) acc[r][j] += ar * b[j];
        }
    }
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < GEMM_NR; j++) C[r * ldc + j] = acc[r][j];
}

// Edges: mr rows (< 4 or anything) x nr columns (<= NR), same arithmetic order as the tile.
static void tile_edge(float *restrict C, size_t ldc, const float *restrict A, size_t a_si,
                      size_t a_sk, const float *restrict B, size_t ldb, size_t kb, size_t mr,
                      size_t nr, int init) {
    for (size_t r = 0; r < mr; r++) {
        float acc[GEMM_NR];
        float *c = C + r * ldc;
        const float *a = A + r * a_si;
        for (size_t j = 0; j < nr; j++) acc[j] = init ? 0.0f : c[j];
        for (size_t k = 0; k < kb; k++) {
            float ar = a[k * a_sk];
            const float *b = B + k * ldb;
            for (size_t j = 0; j < nr; j++) acc[j] += ar * b[j];
        }
        for (size_t j = 0; j < nr; j++) c[j] = acc[j];
    }
}

// One task: rows [i0,i1) x columns [j0,j1) of C, all of K.
static void gemm_task(const gemm_args *g, size_t i0, size_t i1, size_t j0, size_t j1) {
    for (size_t k0 = 0; k0 < g->K; k0 += GEMM_KC) {
        size_t kb = g->K - k0 < GEMM_KC ? g->K - k0 : GEMM_KC;
        int init = !g->accumulate && k0 == 0;
        const float *Ak = g->A + k0 * g->a_sk;
        const float *Bk = g->B + k0 * g->ldb;
        for (size_t j = j0; j < j1; j += GEMM_NR) {
            size_t nr = j1 - j < GEMM_NR ? j1 - j : GEMM_NR;
            size_t i = i0;
            if (nr == GEMM_NR)
                for (; i + GEMM_MR <= i1; i += GEMM_MR)
                    tile_4x16(g->C + i * g->ldc + j, g->ldc, Ak + i * g->a_si, g->a_si, g->a_sk,
                              Bk + j, g->ldb, kb, init);
            if (i < i1)
                tile_edge(g->C + i * g->ldc + j, g->ldc, Ak + i * g->a_si, g->a_si, g->a_sk,
                          Bk + j, g->ldb, kb, i1 - i, nr, init);
        }
    }
}

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

static int in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 1;
#endif
}

static void gemm_run(const gemm_args *g) {
    if (g->M == 0 || g->N == 0) return;
    if (g->K == 0) {
        if (!g->accumulate)
            for (size_t i = 0; i < g->M; i++) memset(g->C + i * g->ldc, 0, g->N * sizeof(float));
        return;
    }
    size_t mc = GEMM_MC, nc = GEMM_NC;
    int T = 1;
    // Threads only for work worth a fork (about 0.25 MFLOP) and never inside another parallel region
    // (convolutions run tiles in parallel and call the GEMM from each thread).
    double work = (double)g->M * (double)g->N * (double)g->K;
    if (work >= 131072.0 && !in_parallel()) T = bnl_threads_effective();
    if (T > 1) {
        // Smaller tasks until every thread has about four: balance matters more than reuse here.
        size_t want = 4 * (size_t)T;
        while (cdiv(g->M, mc) * cdiv(g->N, nc) < want) {
            if (nc > 2 * GEMM_NR && nc >= mc) nc /= 2;
            else if (mc > 4 * GEMM_MR) mc /= 2;
            else if (nc > GEMM_NR) nc /= 2;
            else break;
        }
    }
    size_t mt = cdiv(g->M, mc), nt = cdiv(g->N, nc), ntasks = mt * nt;
    if ((size_t)T > ntasks) T = (int)ntasks;
    if (T <= 1) {
        for (size_t t = 0; t < ntasks; t++) {
            size_t i0 = (t / nt) * mc, j0 = (t % nt) * nc;
            gemm_task(g, i0, i0 + mc < g->M ? i0 + mc : g->M, j0, j0 + nc < g->N ? j0 + nc : g->N);
        }
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T)
#endif
    for (long long t = 0; t < (long long)ntasks; t++) {
        size_t i0 = ((size_t)t / nt) * mc, j0 = ((size_t)t % nt) * nc;
        gemm_task(g, i0, i0 + mc < g->M ? i0 + mc : g->M, j0, j0 + nc < g->N ? j0 + nc : g->N);
    }
}

void bnl_gemm_nn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_args g = {Cm, N, A, K, 1, B, N, M, N, K, accumulate};
    gemm_run(&g);
}

void bnl_gemm_tn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_args g = {Cm, N, A, 1, M, B, N, M, N, K, accumulate};
    gemm_run(&g);
}

// dst (cols, rows) = src (rows, cols)^T, in 32x32 blocks so both sides stay in cache.
static void transpose(float *restrict dst, const float *restrict src, size_t rows, size_t cols) {
    const size_t TB = 32;
    size_t nbr = cdiv(rows, TB), nbc = cdiv(cols, TB);
    int T = rows * cols >= (1u << 18) && !in_parallel() ? bnl_threads_effective() : 1;
    (void)T;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
#endif
    for (long long b = 0; b < (long long)(nbr * nbc); b++) {
        size_t r0 = ((size_t)b / nbc) * TB, c0 = ((size_t)b % nbc) * TB;
        size_t r1 = r0 + TB < rows ? r0 + TB : rows, c1 = c0 + TB < cols ? c0 + TB : cols;
        for (size_t r = r0; r < r1; r++)
            for (size_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
    }
}

void bnl_gemm_nt(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    if (M == 0 || N == 0) return;
    size_t bytes;
    float *Bt = NULL;
    if (K > 0 && bnl_mul_ok(N, K, &bytes) && bnl_mul_ok(bytes, sizeof(float), &bytes)) Bt = bnl_alloc(bytes);
    if (Bt) {
        transpose(Bt, B, N, K);   // (N,K) -> (K,N)
        gemm_args g = {Cm, N, A, K, 1, Bt, N, M, N, K, accumulate};
        gemm_run(&g);
        bnl_free(Bt);
        return;
    }
    // No memory for the transposed copy (or K == 0): plain dot products, the same summation order.
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            float acc = accumulate ? Cm[i * N + j] : 0.0f;
            for (size_t k = 0; k < K; k++) acc += A[i * K + k] * B[j * K + k];
            Cm[i * N + j] = acc;
        }
}
