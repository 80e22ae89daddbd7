// GEMM: the kernel boundary that convolutions and linear layers share. Row-major float32.
//
// One engine (see gemm_kernels.h for the layout of packed operands and the determinism rule)
// serves every caller: C[M,N] (+)= A(M,K) * B(K,N) with A and B read through a pair of strides
// each (so A^T and B^T need no copy), or as the im2col matrix of a convolution that is never
// formed (rows gathered from the NHWC input while packing), or B already packed (weights packed
// once per model). An epilogue (bias per column, a residual, ReLU) is applied in registers after
// the last K pass. The micro-kernel comes from the active ISA's table (src/ops/dispatch.c); the
// scalar reference below is always compiled and is the judge in tests.
//
// Sizes: C (M,N) with row stride ldc; a K-deep reduction.
#include "core/common.h"
#include "core/parallel.h"
#include "ops/gemm_kernels.h"
#include "ops/ops.h"

#include <string.h>

// ---------------------------------------------------------------------------------------------
// The scalar reference micro-kernel: 4 x 16 in plain C (no intrinsics; the compiler may vectorize
// the j loops). Four named accumulator rows: a 2-D acc[4][16] array gets spilled.

#define SC_MR 4
#define SC_NR 16
#define SC_KC 256

static inline float epi_one(float acc, const bnl_gemm_epi *e, size_t i, size_t j) {
    if (e->bias) acc = acc + e->bias[j];
    if (e->res) acc = acc + e->res[i * e->ldr + j];
    if (e->gate) acc = e->gate[i * e->ldr + j] > 0.0f ? acc : 0.0f;
    if (e->relu) acc = acc < 0.0f ? 0.0f : acc;
    return acc;
}

static void gemm_ukernel__scalar(size_t kb, const float *restrict a, const float *restrict b, float *restrict c,
                                 size_t ldc, int load_c, const bnl_gemm_epi *epi) {
    float c0[SC_NR], c1[SC_NR], c2[SC_NR], c3[SC_NR];
    if (load_c) {
        for (int j = 0; j < SC_NR; j++) c0[j] = c[j], c1[j] = c[ldc + j], c2[j] = c[2 * ldc + j], c3[j] = c[3 * ldc + j];
    } else {
        for (int j = 0; j < SC_NR; j++) c0[j] = c1[j] = c2[j] = c3[j] = 0.0f;
    }
    for (size_t k = 0; k < kb; k++) {
        const float *bk = b + k * SC_NR;
        float a0 = a[k], a1 = a[SC_KC + k], a2 = a[2 * SC_KC + k], a3 = a[3 * SC_KC + k];
        for (int j = 0; j < SC_NR; j++) {
            float bj = bk[j];
            c0[j] += a0 * bj, c1[j] += a1 * bj, c2[j] += a2 * bj, c3[j] += a3 * bj;
        }
    }
    float *rows[4] = {c0, c1, c2, c3};
    for (int i = 0; i < SC_MR; i++)
        for (int j = 0; j < SC_NR; j++) c[(size_t)i * ldc + j] = epi ? epi_one(rows[i][j], epi, (size_t)i, (size_t)j) : rows[i][j];
}

const bnl_gemm_kernels bnl_gemm_kernels__scalar = {
    "gemm_4x16__scalar", SC_MR, SC_NR, SC_KC, 64, 256, gemm_ukernel__scalar, NULL,
};

// ---------------------------------------------------------------------------------------------
// Packing

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }
static size_t round_up(size_t a, size_t b) { return cdiv(a, b) * b; }

// One output pixel of a convolution: its image and the top-left corner of its window.
typedef struct {
    const float *xn;   // the pixel's image in x
    long h0, w0;
} pix_t;

static inline pix_t pix_decode(const bnl_conv_shape *s, const float *x, size_t pix) {
    size_t q = pix % (size_t)s->Q, np = pix / (size_t)s->Q;
    size_t p = np % (size_t)s->P, n = np / (size_t)s->P;
    pix_t r = {x + n * (size_t)s->H * (size_t)s->W * (size_t)s->C, (long)p * s->stride - s->pad,
               (long)q * s->stride - s->pad};
    return r;
}

// The run of the pixel's patch row that starts at column k (window order r, s, c) and ends at
// most at `end`: *len floats at the returned pointer, or zeros when it returns NULL (padding).
// Whole window rows are one run where they lie inside the image.
static inline const float *patch_run(const bnl_conv_shape *s, pix_t px, size_t k, size_t end, size_t *len) {
    size_t C = (size_t)s->C, SC = (size_t)s->S * C;
    size_t r = k / SC, rem = k - r * SC, run;
    long h = px.h0 + (long)r;
    const float *src = NULL;
    if (h < 0 || h >= s->H) {
        run = SC - rem;
    } else if (px.w0 >= 0 && px.w0 + s->S <= s->W) {
        run = SC - rem;
        src = px.xn + ((size_t)h * (size_t)s->W + (size_t)px.w0) * C + rem;
    } else {
        size_t si = rem / C, c = rem - si * C;
        long w = px.w0 + (long)si;
        run = C - c;
        if (w >= 0 && w < s->W) src = px.xn + ((size_t)h * (size_t)s->W + (size_t)w) * C + c;
    }
    *len = run < end - k ? run : end - k;
    return src;
}

// Short runs (the stem's 3-channel window rows) are copied inline: a libc call per 21 floats costs
// more than the copy.
static inline void copy_run(float *restrict dst, const float *restrict src, size_t n) {
    if (n > 48) {
        if (src) memcpy(dst, src, n * sizeof(float));
        else memset(dst, 0, n * sizeof(float));
    } else if (src) {
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = 0.0f;
    }
}

// dst[0, len) = entries [k0, k0+len) of the pixel's patch row.
static void patch_row(float *restrict dst, const bnl_conv_shape *s, pix_t px, size_t k0, size_t len) {
    for (size_t k = k0, end = k0 + len; k < end;) {
        size_t run;
        const float *src = patch_run(s, px, k, end, &run);
        copy_run(dst, src, run);
        dst += run, k += run;
    }
}

// n <= nr floats (zeros when src is NULL); whole micro-panel rows as fixed-size copies (inlined
// vector moves).
static inline void copy_piece(float *restrict dst, const float *restrict src, size_t n, size_t nr) {
    if (src && n == nr && nr == 32) memcpy(dst, src, 32 * sizeof(float));
    else if (src && n == nr && nr == 16) memcpy(dst, src, 16 * sizeof(float));
    else if (src && n == nr && nr == 8) memcpy(dst, src, 8 * sizeof(float));
    else copy_run(dst, src, n);   // NULL src: zeros
}

// Row k of every B micro-panel (panel q at bp + q*ldp, [k][nr]) from a contiguous row of N floats.
static void row_panels(float *restrict bp, size_t ldp, size_t nr, const float *src, size_t k, size_t N) {
    size_t j = 0;
    for (; j + nr <= N; j += nr) copy_piece(bp + (j / nr) * ldp + k * nr, src + j, nr, nr);
    if (j < N) {
        float *dst = bp + (j / nr) * ldp + k * nr;
        memcpy(dst, src + j, (N - j) * sizeof(float));
        memset(dst + (N - j), 0, (nr - (N - j)) * sizeof(float));
    }
}

// Row k of every B micro-panel (panel q at bp + q*ldp, [k][nr]) from pixel pix's patch row:
// B (pixels, N) = patches, columns past N zero. One walk over the window per pixel.
static void patch_row_panels(float *restrict bp, size_t ldp, size_t nr, const bnl_conv_shape *s, const float *x,
                             size_t pix, size_t k, size_t N) {
    pix_t px = pix_decode(s, x, pix);
    size_t j = 0;
    while (j < N) {
        size_t run;
        const float *src = patch_run(s, px, j, N, &run);
        while (run) {
            size_t q = j / nr, c = j - q * nr, piece = nr - c < run ? nr - c : run;
            float *dst = bp + q * ldp + k * nr + c;
            copy_piece(dst, src, piece, nr);
            if (src) src += piece;
            j += piece, run -= piece;
        }
    }
    size_t Np = (N + nr - 1) / nr * nr;
    if (Np > N) memset(bp + (N / nr) * ldp + k * nr + (N % nr), 0, (Np - N) * sizeof(float));
}

// dst[q*ldd + i] = src[i*lds + q] for a 4x4 block, in 4-lane vectors (GCC/Clang vector extensions:
// SSE on x86-64, simd128 in wasm).
typedef float v4f __attribute__((vector_size(16)));
static inline void transpose4(float *dst, size_t ldd, const float *src, size_t lds) {
    v4f r0, r1, r2, r3;
    memcpy(&r0, src, 16), memcpy(&r1, src + lds, 16), memcpy(&r2, src + 2 * lds, 16), memcpy(&r3, src + 3 * lds, 16);
    v4f t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
    v4f t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
    v4f o0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5), o1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
    v4f o2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5), o3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
    memcpy(dst, &o0, 16), memcpy(dst + ldd, &o1, 16), memcpy(dst + 2 * ldd, &o2, 16), memcpy(dst + 3 * ldd, &o3, 16);
}

// Rows [i0, i0+mb) x depth [k0, k0+kb) of A into ap: row r at ap[r*kc], rows up to the next
// multiple of mr zero.
static void pack_a(float *restrict ap, const bnl_gemm_kernels *kt, const bnl_gemm_src *a, size_t i0, size_t mb,
                   size_t k0, size_t kb) {
    size_t kc = (size_t)kt->kc, mbp = round_up(mb, (size_t)kt->mr);
    if (a->kind == BNL_SRC_PATCHES) {
        for (size_t r = 0; r < mb; r++) patch_row(ap + r * kc, a->conv, pix_decode(a->conv, a->p, i0 + r), k0, kb);
    } else if (a->s1 == 1) {
        for (size_t r = 0; r < mb; r++) memcpy(ap + r * kc, a->p + (i0 + r) * a->s0 + k0, kb * sizeof(float));
    } else if (a->s0 == 1) {
        // transposed A (A^T row-major: rows of A are columns of the source), 4x4 blocks
        const float *src = a->p + i0 + k0 * a->s1;
        size_t r = 0, s1 = a->s1;
        for (; r + 4 <= mb; r += 4) {
            size_t k = 0;
            for (; k + 4 <= kb; k += 4) transpose4(ap + r * kc + k, kc, src + k * s1 + r, s1);
            for (; k < kb; k++)
                for (size_t q = 0; q < 4; q++) ap[(r + q) * kc + k] = src[k * s1 + r + q];
        }
        for (; r < mb; r++)
            for (size_t k = 0; k < kb; k++) ap[r * kc + k] = src[k * s1 + r];
    } else {
        for (size_t r = 0; r < mb; r++)
            for (size_t k = 0; k < kb; k++) ap[r * kc + k] = a->p[(i0 + r) * a->s0 + (k0 + k) * a->s1];
    }
    for (size_t r = mb; r < mbp; r++) memset(ap + r * kc, 0, kb * sizeof(float));
}

// Columns [j, j+nb) x depth [k0, k0+kb) of B into bp[k*nr + c], columns past nb zero, column c
// scaled by scale[j+c] when scale is not NULL.
static void pack_b_panel(float *restrict bp, size_t nr, const bnl_gemm_src *b, size_t k0, size_t kb, size_t j,
                         size_t nb, const float *scale) {
    if (b->kind == BNL_SRC_PATCHES) {
        for (size_t k = 0; k < kb; k++) {
            patch_row(bp + k * nr, b->conv, pix_decode(b->conv, b->p, k0 + k), j, nb);
            if (nb < nr) memset(bp + k * nr + nb, 0, (nr - nb) * sizeof(float));
        }
    } else if (b->kind == BNL_SRC_FLIPPED) {
        // B (k = (r, s, o), j = c) = w[o, R-1-r, S-1-s, c]: the transposed convolution's kernel
        const bnl_conv_shape *cs = b->conv;
        size_t K = (size_t)cs->K, S = (size_t)cs->S, C = (size_t)cs->C, R = (size_t)cs->R;
        for (size_t k = 0; k < kb; k++) {
            size_t kk = k0 + k, o = kk % K, rs = kk / K, r = rs / S, q = rs % S;
            const float *src = b->p + ((o * R + (R - 1 - r)) * S + (S - 1 - q)) * C + j;
            copy_piece(bp + k * nr, src, nb, nr);
            if (nb < nr) memset(bp + k * nr + nb, 0, (nr - nb) * sizeof(float));
        }
    } else if (b->s1 == 1) {
        for (size_t k = 0; k < kb; k++) {
            copy_piece(bp + k * nr, b->p + (k0 + k) * b->s0 + j, nb, nr);
            if (nb < nr) memset(bp + k * nr + nb, 0, (nr - nb) * sizeof(float));
        }
    } else {
        if (nb < nr)
            for (size_t k = 0; k < kb; k++) memset(bp + k * nr + nb, 0, (nr - nb) * sizeof(float));
        size_t c = 0;
        if (b->s0 == 1) {   // B^T row-major (weights (N,K) in a forward): 4x4 transposes
            for (; c + 4 <= nb; c += 4) {
                const float *src = b->p + k0 + (j + c) * b->s1;
                size_t k = 0;
                for (; k + 4 <= kb; k += 4) transpose4(bp + k * nr + c, nr, src + k, b->s1);
                for (; k < kb; k++)
                    for (size_t q = 0; q < 4; q++) bp[k * nr + c + q] = src[q * b->s1 + k];
            }
        }
        for (; c < nb; c++) {
            const float *src = b->p + k0 * b->s0 + (j + c) * b->s1;
            for (size_t k = 0; k < kb; k++) bp[k * nr + c] = src[k * b->s0];
        }
    }
    if (scale)
        for (size_t k = 0; k < kb; k++)
            for (size_t c = 0; c < nb; c++) bp[k * nr + c] *= scale[j + c];
}

size_t bnl_gemm_packed_floats(const bnl_gemm_kernels *kt, size_t N, size_t K) {
    return round_up(N, (size_t)kt->nr) * K;
}

// threads only for work worth a fork (about 0.25 MFLOP), never inside another parallel loop
static int threads_for_work(size_t items, double flops) { return bnl_threads_for(items, flops, 131072.0); }

typedef struct {
    float *dst;
    const bnl_gemm_src *src;
    size_t N, K, koff, nr;
    const float *col_scale;
} pack_b_ctx;

static void pack_b_range(void *vc, size_t p0, size_t p1, int tid) {
    const pack_b_ctx *c = vc;
    for (size_t p = p0; p < p1; p++) {
        size_t j = p * c->nr, nb = c->N - j < c->nr ? c->N - j : c->nr;
        pack_b_panel(c->dst + p * c->K * c->nr, c->nr, c->src, c->koff, c->K, j, nb, c->col_scale);
    }
}

static void pack_b_full(float *dst, const bnl_gemm_kernels *kt, const bnl_gemm_src *src, size_t N, size_t K,
                        size_t koff, const float *col_scale) {
    size_t nr = (size_t)kt->nr, np = cdiv(N, nr);
    pack_b_ctx c = {dst, src, N, K, koff, nr, col_scale};
    bnl_parallel_for(np, threads_for_work(np, (double)N * (double)K), pack_b_range, &c);
}

void bnl_gemm_pack_b(float *dst, const bnl_gemm_kernels *kt, const bnl_gemm_src *src, size_t N, size_t K,
                     const float *col_scale) {
    pack_b_full(dst, kt, src, N, K, 0, col_scale);
}

// ---------------------------------------------------------------------------------------------
// Scratch: packing buffers outlive a call in two cached blocks, so that a model's hundreds of GEMMs
// per step do not map and fault in fresh pages each time (3% of a training step otherwise).
// Lock-free: a block is taken by atomic exchange, so concurrent callers each get their own.

static float *scratch_get(size_t floats);
static void scratch_put(float *p);

#define SCRATCH_SLOTS 2
#define SCRATCH_HEAD 16   // floats before the data: the block's capacity in bytes (64-byte aligned data)
static float *g_scratch[SCRATCH_SLOTS];

static size_t block_cap(const float *b) {
    size_t cap;
    memcpy(&cap, b, sizeof cap);
    return cap;
}

// Into an empty slot, else freed.
static void block_put(float *b) {
    for (int i = 0; i < SCRATCH_SLOTS && b; i++) {
        float *expected = NULL;
        if (__atomic_compare_exchange_n(&g_scratch[i], &expected, b, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) b = NULL;
    }
    bnl_free(b);
}

// The smallest cached block that is large enough (the others go back), else a new one.
float *bnl_gemm_scratch_get(size_t floats) { return scratch_get(floats); }
void bnl_gemm_scratch_put(float *p) { scratch_put(p); }

static float *scratch_get(size_t floats) {
    size_t bytes = (floats + SCRATCH_HEAD) * sizeof(float);
    float *best = NULL, *others[SCRATCH_SLOTS];
    int no = 0;
    for (int i = 0; i < SCRATCH_SLOTS; i++) {
        float *b = __atomic_exchange_n(&g_scratch[i], NULL, __ATOMIC_ACQ_REL);
        if (!b) continue;
        if (block_cap(b) >= bytes && (!best || block_cap(b) < block_cap(best))) {
            if (best) others[no++] = best;
            best = b;
        } else {
            others[no++] = b;
        }
    }
    if (!best && no > 0) {   // none fits: the smallest makes room for the new block
        int small = 0;
        for (int i = 1; i < no; i++)
            if (block_cap(others[i]) < block_cap(others[small])) small = i;
        bnl_free(others[small]);
        others[small] = others[--no];
    }
    for (int i = 0; i < no; i++) block_put(others[i]);
    if (best) return best + SCRATCH_HEAD;
    float *b = bnl_alloc(bytes);
    if (!b) return NULL;
    memcpy(b, &bytes, sizeof bytes);
    return b + SCRATCH_HEAD;
}

static void scratch_put(float *p) {
    if (p) block_put(p - SCRATCH_HEAD);
}

// ---------------------------------------------------------------------------------------------
// The engine

typedef struct {
    const bnl_gemm_call *g;
    const bnl_gemm_kernels *kt;
    const float *bpacked;   // whole B packed ([N/nr][K][nr]) or NULL: packed per task
    size_t bstride, boff;   // its panel stride (floats) and the k of this call's first row
    size_t mc, nc, mt, nt;
    size_t per_thread;      // scratch floats per thread
    float *scratch;
} engine_t;

// One register tile: rows [row, row+m) x columns [j, j+nb) of C from a packed A micro-panel and a
// packed B micro-panel, kb deep. Edge tiles run the same kernel on a padded copy, then the same
// epilogue in scalar code (bitwise what the kernel's own epilogue gives).
// lda == 0: a is a packed micro-panel (rows kc apart); else A in place, rows lda apart (full tiles).
static void do_tile(const bnl_gemm_call *g, const bnl_gemm_kernels *kt, const float *a, size_t lda, const float *b,
                    float *edge, size_t row, size_t m, size_t j, size_t nb, size_t kb, int load_c, int last) {
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr;
    float *c = g->C + row * g->ldc + j;
    bnl_gemm_epi epi = {g->bias ? g->bias + j : NULL, g->res ? g->res + row * g->ldr + j : NULL, g->ldr, g->relu,
                        g->gate ? g->gate + row * g->ldr + j : NULL};
    const bnl_gemm_epi *ep = last && (g->bias || g->res || g->relu || g->gate) ? &epi : NULL;
    if (m == mr && nb == nr) {
        if (lda) kt->ukernel_lda(kb, a, lda, b, c, g->ldc, load_c, ep);
        else kt->ukernel(kb, a, b, c, g->ldc, load_c, ep);
        return;
    }
    if (load_c) {
        memset(edge, 0, mr * nr * sizeof(float));
        for (size_t r = 0; r < m; r++) memcpy(edge + r * nr, c + r * g->ldc, nb * sizeof(float));
    }
    if (lda) kt->ukernel_lda(kb, a, lda, b, edge, nr, load_c, NULL);
    else kt->ukernel(kb, a, b, edge, nr, load_c, NULL);
    for (size_t r = 0; r < m; r++)
        for (size_t q = 0; q < nb; q++) c[r * g->ldc + q] = ep ? epi_one(edge[r * nr + q], ep, r, q) : edge[r * nr + q];
}

// Full tiles down one column panel from row `row`: where C and the epilogue's rows are, moved on
// by run_next (what do_tile computes per call, computed once per panel).
typedef struct {
    float *c;
    bnl_gemm_epi epi;
    const bnl_gemm_epi *ep;   // &epi or NULL
} tile_run;

static inline void run_start(tile_run *r, const bnl_gemm_call *g, size_t row, size_t j, int last) {
    r->c = g->C + row * g->ldc + j;
    r->epi.bias = g->bias ? g->bias + j : NULL;
    r->epi.res = g->res ? g->res + row * g->ldr + j : NULL;
    r->epi.ldr = g->ldr, r->epi.relu = g->relu;
    r->epi.gate = g->gate ? g->gate + row * g->ldr + j : NULL;
    r->ep = last && (g->bias || g->res || g->relu || g->gate) ? &r->epi : NULL;
}

static inline void run_next(tile_run *r, const bnl_gemm_call *g, size_t rows) {
    r->c += rows * g->ldc;
    if (r->epi.res) r->epi.res += rows * g->ldr;
    if (r->epi.gate) r->epi.gate += rows * g->ldr;
}

// B micro-panel for columns [j, ...) and depth [k0, k0+kb): from the whole packed B, or packed now.
static const float *b_panel(const engine_t *e, float *bp, size_t nr, size_t k0, size_t kb, size_t j, size_t nb) {
    if (e->bpacked) return e->bpacked + (j / nr) * e->bstride + (e->boff + k0) * nr;
    pack_b_panel(bp, nr, &e->g->b, e->g->koff + k0, kb, j, nb, NULL);
    return bp;
}

// One task: rows [i0,i1) x columns [j0,j1) of C, all of K. Per KC pass the A block is packed once
// and every B micro-panel (L1-resident) sweeps over it (L2-resident).
static void run_task(const engine_t *e, float *scratch, size_t i0, size_t i1, size_t j0, size_t j1) {
    const bnl_gemm_call *g = e->g;
    const bnl_gemm_kernels *kt = e->kt;
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc;
    float *ap = scratch, *bp = ap + e->mc * kc, *edge = bp + kc * nr;
    size_t mb = i1 - i0;
    // A with contiguous rows is read in place by the full micro-panels; only a last partial one is
    // copied (a kernel reads all mr rows)
    int in_place = g->a.kind == BNL_SRC_STRIDED && g->a.s1 == 1 && g->a.s0 > 0 && kt->ukernel_lda;
    size_t mfull = in_place ? mb / mr * mr : 0;
    for (size_t k0 = 0; k0 < g->K; k0 += kc) {
        size_t kb = g->K - k0 < kc ? g->K - k0 : kc;
        int load_c = g->accumulate || k0 > 0, last = k0 + kb == g->K;
        if (mfull < mb) pack_a(ap + mfull * kc, kt, &g->a, i0 + mfull, mb - mfull, g->koff + k0, kb);
        for (size_t j = j0; j < j1; j += nr) {
            size_t nb = j1 - j < nr ? j1 - j : nr;
            const float *b = b_panel(e, bp, nr, k0, kb, j, nb);
            size_t p0 = 0;
            if (nb == nr) {   // full tiles: one epilogue record moved down the rows, direct kernel calls
                size_t mpk = mb / mr * mr;
                tile_run run;
                run_start(&run, g, i0, j, last);
                for (; p0 < mfull; p0 += mr, run_next(&run, g, mr))
                    kt->ukernel_lda(kb, g->a.p + (i0 + p0) * g->a.s0 + g->koff + k0, g->a.s0, b, run.c, g->ldc, load_c,
                                    run.ep);
                for (; p0 < mpk; p0 += mr, run_next(&run, g, mr))
                    kt->ukernel(kb, ap + p0 * kc, b, run.c, g->ldc, load_c, run.ep);
            }
            for (size_t p = p0; p < mb; p += mr) {
                size_t m = mb - p < mr ? mb - p : mr;
                if (p < mfull)
                    do_tile(g, kt, g->a.p + (i0 + p) * g->a.s0 + g->koff + k0, g->a.s0, b, edge, i0 + p, m, j, nb, kb,
                            load_c, last);
                else
                    do_tile(g, kt, ap + p * kc, 0, b, edge, i0 + p, m, j, nb, kb, load_c, last);
            }
        }
    }
}

static void run_task_index(const engine_t *e, float *scratch, size_t t) {
    const bnl_gemm_call *g = e->g;
    size_t i0 = (t / e->nt) * e->mc, j0 = (t % e->nt) * e->nc;
    run_task(e, scratch, i0, i0 + e->mc < g->M ? i0 + e->mc : g->M, j0, j0 + e->nc < g->N ? j0 + e->nc : g->N);
}

static void run_task_range(void *ve, size_t t0, size_t t1, int tid) {
    const engine_t *e = ve;
    for (size_t t = t0; t < t1; t++) run_task_index(e, e->scratch + (size_t)tid * e->per_thread, t);
}

// K outer, for reductions much longer than C is wide or tall (weight gradients: K = pixels): per
// round of S passes of KC, all of A and all of B are packed once (threads share the work), then
// every tile adds its S passes into C, in order. The tiles compute exactly what a task would (same
// passes, same order), so the choice between the two schedules never changes a bit. S passes per
// round: two parallel loops per round, not per pass, as many passes as keep the packed operands in L2.
typedef struct {
    const engine_t *e;
    size_t r0, ns, mp, np, asz, bsz, nb_items;
    int packed, by_row;
    float *abuf, *bbuf, *edges;
} kouter_t;

// Item it of a round's packing: A panels and B rows/panels of every pass, dealt round-robin
// (transposes and copies cost differently: every thread gets its share of both).
static void kouter_pack(void *vc, size_t i0, size_t i1, int tid) {
    const kouter_t *o = vc;
    const bnl_gemm_call *g = o->e->g;
    const bnl_gemm_kernels *kt = o->e->kt;
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc, per = o->mp + o->nb_items;
    for (size_t it = i0; it < i1; it++) {
        size_t si = it / per, w = it % per;
        size_t k0 = o->r0 + si * kc, kb = g->K - k0 < kc ? g->K - k0 : kc;
        float *ab = o->abuf + si * o->asz, *bb = o->bbuf + si * o->bsz;
        if (w < o->mp) {
            size_t i0a = w * mr;
            pack_a(ab + i0a * kc, kt, &g->a, i0a, g->M - i0a < mr ? g->M - i0a : mr, g->koff + k0, kb);
        } else if (o->by_row) {
            size_t k = w - o->mp;
            if (k >= kb) continue;
            size_t kk = g->koff + k0 + k;
            if (g->b.kind == BNL_SRC_PATCHES) patch_row_panels(bb, kc * nr, nr, g->b.conv, g->b.p, kk, k, g->N);
            else row_panels(bb, kc * nr, nr, g->b.p + kk * g->b.s0, k, g->N);
        } else {
            size_t j = (w - o->mp) * nr;
            pack_b_panel(bb + (w - o->mp) * kc * nr, nr, &g->b, g->koff + k0, kb, j, g->N - j < nr ? g->N - j : nr,
                         NULL);
        }
    }
}

// Tiles [t0, t1) of a round: each adds its ns passes into C, in order.
static void kouter_tiles(void *vc, size_t t0, size_t t1, int tid) {
    const kouter_t *o = vc;
    const bnl_gemm_call *g = o->e->g;
    const bnl_gemm_kernels *kt = o->e->kt;
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc;
    float *edge = o->edges + (size_t)tid * mr * nr;
    for (size_t t = t0; t < t1; t++) {
        size_t q = t / o->mp, p = t % o->mp, j = q * nr, i0 = p * mr;
        size_t m = g->M - i0 < mr ? g->M - i0 : mr, nb = g->N - j < nr ? g->N - j : nr;
        tile_run run;
        run_start(&run, g, i0, j, 1);
        for (size_t si = 0; si < o->ns; si++) {
            size_t k0 = o->r0 + si * kc, kb = g->K - k0 < kc ? g->K - k0 : kc;
            const float *b = o->packed ? g->b.p + q * g->b.s0 * nr + (g->koff + k0) * nr : o->bbuf + si * o->bsz + q * kc * nr;
            int load_c = g->accumulate || k0 > 0, last = k0 + kb == g->K;
            if (m == mr && nb == nr)   // a full tile: the kernel directly (what do_tile would call)
                kt->ukernel(kb, o->abuf + si * o->asz + i0 * kc, b, run.c, g->ldc, load_c, last ? run.ep : NULL);
            else
                do_tile(g, kt, o->abuf + si * o->asz + i0 * kc, 0, b, edge, i0, m, j, nb, kb, load_c, last);
        }
    }
}

static void run_kouter(const engine_t *e, int T, size_t S, float *abuf, float *bbuf, float *edges) {
    const bnl_gemm_call *g = e->g;
    const bnl_gemm_kernels *kt = e->kt;
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc;
    kouter_t o;
    memset(&o, 0, sizeof o);
    o.e = e, o.abuf = abuf, o.bbuf = bbuf, o.edges = edges;
    o.mp = cdiv(g->M, mr), o.np = cdiv(g->N, nr), o.asz = o.mp * mr * kc, o.bsz = o.np * nr * kc;
    o.packed = g->b.kind == BNL_SRC_PACKED;
    // B rows come from a contiguous row (1x1 conv: x) or a patch row: one item per row, all panels
    o.by_row = g->b.kind == BNL_SRC_PATCHES || (g->b.kind == BNL_SRC_STRIDED && g->b.s1 == 1);
    o.nb_items = o.packed ? 0 : o.by_row ? kc : o.np;
    for (o.r0 = 0; o.r0 < g->K; o.r0 += S * kc) {
        o.ns = cdiv(g->K - o.r0 < S * kc ? g->K - o.r0 : S * kc, kc);   // passes this round
        bnl_parallel_for_dynamic(o.ns * (o.mp + o.nb_items), T, kouter_pack, &o);
        bnl_parallel_for(o.mp * o.np, T, kouter_tiles, &o);
    }
}

// Split K, for long reductions: the K passes cut into a fixed number of chunks (decided by the shape
// alone, so results never depend on the thread count), each chunk computed whole by one thread with
// no barrier inside (a long K otherwise costs two barriers per pass), then summed in chunk order:
// C = epilogue((C +) ((P0 + P1) + P2) + P3).
static size_t split_chunks(const bnl_gemm_call *g, const bnl_gemm_kernels *kt) {
    size_t kc = (size_t)kt->kc, blocks = cdiv(g->K, kc);
    if (g->no_split || g->K <= g->M || g->K <= g->N || blocks < 8) return 1;
    size_t n = blocks >= 16 ? 4 : 2;
    return n * g->M * g->N <= ((size_t)1 << 22) ? n : 1;
}

typedef struct {
    const bnl_gemm_call *g;
    float *P;                  // nch partial sums (M, N)
    size_t per, MN, nch;
    int bad;
} split_t;

// Chunk c of the reduction, whole, into P[c] (one thread: nested GEMMs run inline).
static void split_chunk(void *vc, size_t c0, size_t c1, int tid) {
    split_t *sp = vc;
    const bnl_gemm_call *g = sp->g;
    for (size_t c = c0; c < c1; c++) {
        bnl_gemm_call sub = *g;
        size_t k0 = c * sp->per;
        sub.C = sp->P + c * sp->MN, sub.ldc = g->N;
        sub.koff = g->koff + k0, sub.K = g->K - k0 < sp->per ? g->K - k0 : sp->per;
        sub.accumulate = 0, sub.bias = NULL, sub.res = NULL, sub.gate = NULL, sub.relu = 0, sub.no_split = 1;
        if (bnl_gemm_run(&sub) != BNL_OK) __atomic_store_n(&sp->bad, 1, __ATOMIC_RELAXED);
    }
}

// Rows [i0, i1) of C = epilogue((C +) ((P0 + P1) + P2) + P3).
static void split_sum(void *vc, size_t i0, size_t i1, int tid) {
    const split_t *sp = vc;
    const bnl_gemm_call *g = sp->g;
    int has_epi = g->bias || g->res || g->relu || g->gate;
    for (size_t i = i0; i < i1; i++) {
        float *c = g->C + i * g->ldc;
        const float *p0 = sp->P + i * g->N;
        bnl_gemm_epi epi = {g->bias, g->res ? g->res + i * g->ldr : NULL, g->ldr, g->relu,
                            g->gate ? g->gate + i * g->ldr : NULL};
        for (size_t j = 0; j < g->N; j++) {
            float v = p0[j];
            for (size_t q = 1; q < sp->nch; q++) v += p0[q * sp->MN + j];
            if (g->accumulate) v = c[j] + v;
            c[j] = has_epi ? epi_one(v, &epi, 0, j) : v;
        }
    }
}

static bnl_status run_split(const bnl_gemm_call *g, const bnl_gemm_kernels *kt, size_t nch, int T) {
    size_t kc = (size_t)kt->kc, per = cdiv(cdiv(g->K, kc), nch) * kc, MN = g->M * g->N;
    nch = cdiv(g->K, per);
    float *P = scratch_get(nch * MN);
    if (!P) return bnl_fail(BNL_ERR_NOMEM, "gemm: out of memory for %zu partial sums", nch * MN);
    split_t sp = {g, P, per, MN, nch, 0};
    bnl_parallel_for_dynamic(nch, T, split_chunk, &sp);
    if (sp.bad) {
        scratch_put(P);
        return bnl_fail(BNL_ERR_NOMEM, "gemm: out of memory in a split reduction");
    }
    bnl_parallel_for(g->M, MN >= ((size_t)1 << 15) ? T : 1, split_sum, &sp);
    scratch_put(P);
    return BNL_OK;
}

bnl_status bnl_gemm_run(const bnl_gemm_call *g) {
    if (g->M == 0 || g->N == 0) return BNL_OK;
    const bnl_gemm_kernels *kt = g->b.kind == BNL_SRC_PACKED ? g->b.kt : bnl_gemm_kernels_active();
    if (g->K == 0) {
        for (size_t i = 0; i < g->M; i++) {
            float *c = g->C + i * g->ldc;
            bnl_gemm_epi epi = {g->bias, g->res ? g->res + i * g->ldr : NULL, g->ldr, g->relu,
                                g->gate ? g->gate + i * g->ldr : NULL};
            for (size_t j = 0; j < g->N; j++) {
                float v = g->accumulate ? c[j] : 0.0f;
                c[j] = (g->bias || g->res || g->relu || g->gate) ? epi_one(v, &epi, 0, j) : v;
            }
        }
        return BNL_OK;
    }
    size_t mr = (size_t)kt->mr, nr = (size_t)kt->nr, kc = (size_t)kt->kc;
    int T = threads_for_work((size_t)-1, 2.0 * (double)g->M * (double)g->N * (double)g->K);
    size_t nch = split_chunks(g, kt);
    if (nch > 1) return run_split(g, kt, nch, T);
    engine_t e;
    memset(&e, 0, sizeof e);
    e.g = g, e.kt = kt;

    // K outer for long reductions (the shape decides, never the thread count)
    size_t Mp = round_up(g->M, mr), Np = round_up(g->N, nr);
    if (g->K > g->M && g->K > g->N && g->K >= 2 * kc && (Mp + Np) * kc <= ((size_t)1 << 22)) {
        size_t S = ((size_t)1 << 18) / ((Mp + Np) * kc);   // passes per round: packed operands within ~1 MB (L2)
        if (S > 8) S = 8;
        if (S < 1) S = 1;
        if (S > cdiv(g->K, kc)) S = cdiv(g->K, kc);
        size_t nbb = g->b.kind == BNL_SRC_PACKED ? 0 : S * Np * kc;
        float *buf = scratch_get(S * Mp * kc + nbb + (size_t)(T > 0 ? T : 1) * mr * nr + 16);
        if (buf) {
            run_kouter(&e, T, S, buf, buf + S * Mp * kc, buf + S * Mp * kc + nbb);
            scratch_put(buf);
            return BNL_OK;
        }
    }

    // Tasks: row blocks of equal size (multiples of mr), all columns at once; with threads, split
    // further until every thread has work and the count divides evenly (or there are plenty).
    size_t mt = cdiv(g->M, (size_t)kt->mc), nt = 1;
    if (T > 1) {
        for (;;) {
            size_t n = mt * nt;
            if (n >= 4 * (size_t)T || (n >= (size_t)T && n % (size_t)T == 0)) break;
            if (cdiv(g->N, nt + 1) >= 2 * nr && nt <= mt) nt++;
            else if (cdiv(g->M, mt + 1) >= mr) mt++;
            else if (cdiv(g->N, nt + 1) >= nr) nt++;
            else break;
        }
    }
    e.mc = round_up(cdiv(g->M, mt), mr), e.nc = round_up(cdiv(g->N, nt), nr);
    e.mt = cdiv(g->M, e.mc), e.nt = cdiv(g->N, e.nc);
    size_t ntasks = e.mt * e.nt;
    if ((size_t)T > ntasks) T = (int)ntasks;
    e.per_thread = e.mc * kc + kc * nr + mr * nr + 16;
    e.scratch = scratch_get((size_t)T * e.per_thread);
    if (!e.scratch && T > 1) T = 1, e.scratch = scratch_get(e.per_thread);
    if (!e.scratch) return bnl_fail(BNL_ERR_NOMEM, "gemm: out of memory for %zu x %zu packing buffers", e.mc, kc);
    // B packed once for all tasks when several row blocks would each pack it again (and it is not huge)
    float *bfull = NULL;
    if (g->b.kind == BNL_SRC_PACKED) {
        e.bpacked = g->b.p, e.bstride = g->b.s0 * nr, e.boff = g->koff;
    } else if (e.mt > 1 && bnl_gemm_packed_floats(kt, g->N, g->K) <= ((size_t)1 << 22)) {
        bfull = scratch_get(bnl_gemm_packed_floats(kt, g->N, g->K));
        if (bfull) pack_b_full(bfull, kt, &g->b, g->N, g->K, g->koff, NULL);
        e.bpacked = bfull, e.bstride = g->K * nr, e.boff = 0;
    }
    // dynamic: tasks may differ in size at the edges; any task order gives the same bits
    bnl_parallel_for_dynamic(ntasks, T, run_task_range, &e);
    scratch_put(bfull);
    scratch_put(e.scratch);
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// The plain GEMMs

static void gemm_strided(float *Cm, const float *A, size_t a0, size_t a1, const float *B, size_t b0, size_t b1,
                         size_t M, size_t N, size_t K, int accumulate) {
    bnl_gemm_call g;
    memset(&g, 0, sizeof g);
    g.C = Cm, g.ldc = N, g.M = M, g.N = N, g.K = K, g.accumulate = accumulate;
    g.a.kind = BNL_SRC_STRIDED, g.a.p = A, g.a.s0 = a0, g.a.s1 = a1;
    g.b.kind = BNL_SRC_STRIDED, g.b.p = B, g.b.s0 = b0, g.b.s1 = b1;
    bnl_gemm_run(&g);
}

void bnl_gemm_nn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_strided(Cm, A, K, 1, B, N, 1, M, N, K, accumulate);   // A (M,K), B (K,N)
}

void bnl_gemm_nt(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_strided(Cm, A, K, 1, B, 1, K, M, N, K, accumulate);   // A (M,K), B (N,K)
}

void bnl_gemm_tn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate) {
    if (!Cm || ((!A || !B) && K > 0 && M > 0 && N > 0)) return;
    gemm_strided(Cm, A, 1, M, B, N, 1, M, N, K, accumulate);   // A (K,M), B (K,N)
}
