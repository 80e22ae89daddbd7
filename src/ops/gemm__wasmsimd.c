// GEMM micro-kernel for WebAssembly simd128: 6 x 8 (12 v128 accumulators, 2 B vectors, 1 splat:
// 15 registers, which V8 keeps in xmm0-15 on x86). mul + add: clang 14 has no relaxed FMA.
// See gemm_impl.inc.
#include "ops/simd/vec_wasmsimd.h"
#define BNL_KNAME wasmsimd
#define BNL_GEMM_NAME "gemm_6x8__wasmsimd"
#define BNL_GEMM_MR 6
#define BNL_GEMM_NV 2
#define BNL_GEMM_KC 256
#define BNL_GEMM_MC 96
#define BNL_GEMM_NC 256
#include "ops/gemm_impl.inc"
