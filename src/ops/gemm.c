// GEMM: the kernel boundary that convolutions and linear layers share. Row-major float32.
//
// One portable engine serves all three variants: C[M,N] (+)= A(M,K) * B(K,N), with A and B read
// through a pair of strides each, so A^T and B^T need no copy. The engine is cache-blocked: C is
// split into MC x NC tasks (the unit of threading); per KC-deep pass a task packs its A block into
// 4-row panels ([k][4]) and each 16-column panel of B into [k][16], then runs a 4x16 register tile
// over them. Packing makes every kernel read contiguous memory whatever the layout (a B row stride
// of 2 KB used to thrash L1) and lets edges run the same tile on zero-padded panels. The loops
// are written so gcc -O3 / clang vectorize them over the 16 columns. No intrinsics, no fast-math:
// a later packed SIMD micro-kernel replaces kernel_4x16.
//
// Determinism: every element of C is computed by exactly one task, as C (or 0) plus the products
// for k = 0, 1, ..., K-1 in order, whatever the tile, task or thread it lands in. So results do
// not depend on the thread count or on how C is partitioned.
//
// Sizes: C (M,N) with row stride ldc. A(i,k) at A[i*a_si + k*a_sk]; B(k,j) at B[k*b_sk + j*b_sj].
#include "core/common.h"
#include "ops/ops.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GEMM_MR 4     // register tile rows
#define GEMM_NR 16    // register tile columns (4 SSE / 2 AVX / 4 wasm simd128 vectors)
#define GEMM_KC 256   // depth of one pass: a KC x NR panel of B (16 KB) stays in L1
#define GEMM_MC 64    // task rows: the packed A block (64 KB) stays in L2
#define GEMM_NC 256   // task columns

typedef struct gemm_args {
    float *C;
    size_t ldc;
    const float *A;
    size_t a_si, a_sk;
    const float *B;
    size_t b_sk, b_sj;
    size_t M, N, K;
    int accumulate;
} gemm_args;

// C (4,16) = (init ? 0 : C) + ap (kb,4 packed)^T * bp (kb,16 packed), k ascending.
// Four named accumulator rows and one j loop with the four A values hoisted: gcc and clang keep
// c0..c3 in vector registers (a 2-D acc[4][16] array got spilled to the stack).
static void kernel_4x16(float *restrict C, size_t ldc, const float *restrict ap,
                        const float *restrict bp, size_t kb, int init) {
    float c0[GEMM_NR], c1[GEMM_NR], c2[GEMM_NR], c3[GEMM_NR];
    if (init) {
        for (int j = 0; j < GEMM_NR; j++) c0[j] = c1[j] = c2[j] = c3[j] = 0.0f;
    } else {
        for (int j = 0; j < GEMM_NR; j++) {
            c0[j] = C[j], c1[j] = C[ldc + j], c2[j] = C[2 * ldc + j], c3[j] = C[3 * ldc + j];
        }
    }
    for (size_t k = 0; k < kb; k++) {
        const float *b = bp + k * GEMM_NR;
        float a0 = ap[4 * k], a1 = ap[4 * k + 1], a2 = ap[4 * k + 2], a3 = ap[4 * k + 3];
        for (int j = 0; j < GEMM_NR; j++) {
            float bj = b[j];
            c0[j] += a0 * bj, c1[j] += a1 * bj, c2[j] += a2 * bj, c3[j] += a3 * bj;
        }
    }
    for (int j = 0; j < GEMM_NR; j++) {
        C[j] = c0[j], C[ldc + j] = c1[j], C[2 * ldc + j] = c2[j], C[3 * ldc + j] = c3[j];
    }
}

// Rows [i0, i0+mb) x depth [k0, k0+kb) of A into 4-row panels: panel p holds ap[p*4*kb + k*4 + r],
// rows past mb are zero.
static void pack_a(float *restrict ap, const gemm_args *g, size_t i0, size_t mb, size_t k0, size_t kb) {
    for (size_t p = 0; p < mb; p += GEMM_MR) {
        float *dst = ap + p * kb;
        size_t rows = mb - p < GEMM_MR ? mb - p : GEMM_MR;
        if (rows < GEMM_MR) memset(dst, 0, GEMM_MR * kb * sizeof(float));
        const float *src = g->A + (i0 + p) * g->a_si + k0 * g->a_sk;
        if (g->a_sk == 1) {
            for (size_t r = 0; r < rows; r++)
                for (size_t k = 0; k < kb; k++) dst[k * GEMM_MR + r] = src[r * g->a_si + k];
        } else {
            for (size_t k = 0; k < kb; k++)
                for (size_t r = 0; r < rows; r++) dst[k * GEMM_MR + r] = src[k * g->a_sk + r * g->a_si];
        }
    }
}

// Columns [j, j+nr) x depth [k0, k0+kb) of B into bp[k*16 + c], columns past nr zero.
static void pack_b(float *restrict bp, const gemm_args *g, size_t k0, size_t kb, size_t j, size_t nr) {
    const float *src = g->B + k0 * g->b_sk + j * g->b_sj;
    if (nr < GEMM_NR) memset(bp, 0, kb * GEMM_NR * sizeof(float));
    if (g->b_sj == 1) {
        for (size_t k = 0; k < kb; k++) memcpy(bp + k * GEMM_NR, src + k * g->b_sk, nr * sizeof(float));
    } else {
        for (size_t c = 0; c < nr; c++)
            for (size_t k = 0; k < kb; k++) bp[k * GEMM_NR + c] = src[c * g->b_sj + k * g->b_sk];
    }
}

// One task: rows [i0,i1) x columns [j0,j1) of C, all of K. i1 - i0 <= GEMM_MC.
static void gemm_task(const gemm_args *g, size_t i0, size_t i1, size_t j0, size_t j1) {
    _Alignas(64) float ap[GEMM_MC * GEMM_KC];
    _Alignas(64) float bp[GEMM_KC * GEMM_NR];
    _Alignas(64) float edge[GEMM_MR * GEMM_NR];
    size_t mb = i1 - i0;
    for (size_t k0 = 0; k0 < g->K; k0 += GEMM_KC) {
        size_t kb = g->K - k0 < GEMM_KC ? g->K - k0 : GEMM_KC;
        int init = !g->accumulate && k0 == 0;
        pack_a(ap, g, i0, mb, k0, kb);
        for (size_t j = j0; j < j1; j += GEMM_NR) {
            size_t nr = j1 - j < GEMM_NR ? j1 - j : GEMM_NR;
            pack_b(bp, g, k0, kb, j, nr);
            for (size_t p = 0; p < mb; p += GEMM_MR) {
                size_t mr = mb - p < GEMM_MR ? mb - p : GEMM_MR;
                float *c = g->C + (i0 + p) * g->ldc + j;
                if (mr == GEMM_MR && nr == GEMM_NR) {
                    kernel_4x16(c, g->ldc, ap + p * kb, bp, kb, init);
                    continue;
                }
                // edge: the same tile on a zero-padded copy, so every value gets the same sums
                memset(edge, 0, sizeof edge);
                if (!init)
                    for (size_t r = 0; r < mr; r++) memcpy(edge + r * GEMM_NR, c + r * g->ldc, nr * sizeof(float));
                kernel_4x16(edge, GEMM_NR, ap + p * kb, bp, kb, init);
                for (size_t r = 0; r < mr; r++) memcpy(c + r * g->ldc, edge + r * GEMM_NR, nr * sizeof(float));
            }
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
    gemm_args g = {Cm, N, A, K, 1, B, N, 1, M, N, K, accumulate};   // A (M,K), B (K,N)
    gemm_run(&g);
}

void bnl_gemm_nt(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_args g = {Cm, N, A, K, 1, B, 1, K, M, N, K, accumulate};   // A (M,K), B (N,K)
    gemm_run(&g);
}

void bnl_gemm_tn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_args g = {Cm, N, A, 1, M, B, N, 1, M, N, K, accumulate};   // A (K,M), B (K,N)
    gemm_run(&g);
}
