// GEMM internals shared by gemm.c (the engine), conv.c (convolutions through it) and the
// per-ISA micro-kernels gemm__avx2.c, gemm__avx512.c, gemm__wasmsimd.c (from gemm_impl.inc).
//
// The engine computes C (M,N) (+)= A (M,K) * B (K,N) [+ bias, + residual, ReLU] in BLIS style:
// C is split into MC x NC tasks (the unit of threading); per KC-deep pass a task copies its A
// block into rows of a fixed stride KC ("packed A": MR-row micro-panels, row i of a micro-panel
// at a[i*KC]) and each NR-column slice of B into [k][NR] ("packed B" micro-panels); a register
// tile of MR x NR accumulators then runs over them. A fixed A stride lets a kernel address every
// row from one pointer with constant offsets (no pointer per row), and lets A be packed with
// plain row copies: im2col rows straight from NHWC input, no transpose.
//
// Determinism: every C element is computed by exactly one task, as C (or 0) plus the products
// for k = 0, 1, ..., K-1 in order, then the epilogue; edge tiles run the same kernel on padded
// copies. So results depend on the ISA but not on threads, tasks or where tiles fall.
#ifndef BNL_GEMM_KERNELS_H
#define BNL_GEMM_KERNELS_H
#include "bnlab.h"
#include "ops/ops.h"
#include <stddef.h>

// Applied once, after the last K pass, in this order: acc = acc + bias[j]; acc = acc + res[i*ldr + j];
// acc = gate[i*ldr + j] > 0 ? acc : 0 (a ReLU's backward, gate = its output);
// acc = acc < 0 ? 0 : acc (ReLU, NaN kept). Pointers are at the tile's origin; NULL skips.
typedef struct bnl_gemm_epi {
    const float *bias;
    const float *res;
    size_t ldr;
    int relu;
    const float *gate;   // same layout as res (row stride ldr)
} bnl_gemm_epi;

// C tile (mr, nr) at c, row stride ldc:
//   acc = (load_c ? c : 0) + sum_{k < kb} a[i*kc + k] * b[k*nr + j]   (k ascending; FMA where the
//   ISA has one), then the epilogue when epi is not NULL, then stored to c.
typedef void (*bnl_gemm_ukernel_fn)(size_t kb, const float *a, const float *b, float *c, size_t ldc,
                                    int load_c, const bnl_gemm_epi *epi);

// The same tile with A read in place: row i at a + i*lda (NULL where it does not pay).
typedef void (*bnl_gemm_ukernel_lda_fn)(size_t kb, const float *a, size_t lda, const float *b, float *c,
                                        size_t ldc, int load_c, const bnl_gemm_epi *epi);

typedef struct bnl_gemm_kernels {
    const char *name;    // "gemm_14x32__avx512"
    int mr, nr;          // register tile
    int kc;              // A row stride and K pass depth (the kernel is compiled for it)
    int mc, nc;          // task rows (multiple of mr) and columns (multiple of nr)
    bnl_gemm_ukernel_fn ukernel;
    bnl_gemm_ukernel_lda_fn ukernel_lda;
} bnl_gemm_kernels;

#ifdef __x86_64__
extern const bnl_gemm_kernels bnl_gemm_kernels__avx2;
extern const bnl_gemm_kernels bnl_gemm_kernels__avx512;
#endif
#ifdef __wasm_simd128__
extern const bnl_gemm_kernels bnl_gemm_kernels__wasmsimd;
#endif
extern const bnl_gemm_kernels bnl_gemm_kernels__scalar;

// The table the active ISA uses (src/ops/dispatch.c).
const bnl_gemm_kernels *bnl_gemm_kernels_active(void);

// ---- engine ------------------------------------------------------------------------------------
// Where A(i,k) or B(k,j) comes from.
typedef enum bnl_gemm_src_kind {
    BNL_SRC_STRIDED = 0,   // element (r, c) of the operand at p[r*s0 + c*s1]
    BNL_SRC_PATCHES,       // the im2col matrix of a convolution, never formed: row = output pixel
                           // (n,p,q), column = window offset (r,s,c) of input x = p (NHWC, zeros
                           // in the padding). As A: A = patches (M = pixels); as B: B = patches (K = pixels)
    BNL_SRC_PACKED,        // B only: already packed by bnl_gemm_pack_b for this kernel table, s0 = the
                           // K it was packed with (panels are s0*nr floats apart)
    BNL_SRC_FLIPPED,       // B only: the kernel of a transposed convolution, read from the weights
                           // w = p (K,R,S,C) of convolution `conv`: B(k = (r,s,o), j = c) = w[o,R-1-r,S-1-s,c]
} bnl_gemm_src_kind;

typedef struct bnl_gemm_src {
    bnl_gemm_src_kind kind;
    const float *p;
    size_t s0, s1;                 // STRIDED (PACKED: s0 = packed K)
    const bnl_conv_shape *conv;    // PATCHES, FLIPPED
    const bnl_gemm_kernels *kt;    // PACKED: the table it was packed for
} bnl_gemm_src;

typedef struct bnl_gemm_call {
    float *C;
    size_t ldc;
    size_t M, N, K;
    bnl_gemm_src a, b;
    int accumulate;        // 1: C += A*B (C read); 0: C = A*B (C never read)
    const float *bias;     // (N) or NULL
    const float *res;      // (M, N), row stride ldr, or NULL; must not overlap C
    size_t ldr;
    int relu;
    const float *gate;     // (M, N), row stride ldr, or NULL: C = gate > 0 ? C : 0 after res
    size_t koff;           // the reduction runs over the sources' k in [koff, koff + K) (split K)
    int no_split;          // internal: a chunk of a split reduction is not split again
} bnl_gemm_call;

// Runs on bnl_threads_effective() threads (one when called inside a parallel region).
// Returns BNL_ERR_NOMEM when its scratch cannot be allocated.
bnl_status bnl_gemm_run(const bnl_gemm_call *g);

// The engine's scratch blocks (a few cached between calls, so that a model's many calls do not
// allocate and fault in fresh memory each time), for other ops' per-call buffers; NULL if out of
// memory. Give every block back with bnl_gemm_scratch_put.
float *bnl_gemm_scratch_get(size_t floats);
void bnl_gemm_scratch_put(float *p);

// Packed B for kernel table kt: ceil(N/nr) panels of [K][nr] floats, columns past N zero.
size_t bnl_gemm_packed_floats(const bnl_gemm_kernels *kt, size_t N, size_t K);
// dst <- B (K,N) from src (STRIDED or PATCHES), column j scaled by col_scale[j] when not NULL
// (folds an eval BatchNorm into the weights). Threads over panels.
void bnl_gemm_pack_b(float *dst, const bnl_gemm_kernels *kt, const bnl_gemm_src *src, size_t N, size_t K,
                     const float *col_scale);

#endif
