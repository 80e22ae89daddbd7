// GEMM micro-kernel for WebAssembly simd128: 4 x 8 (8 v128 accumulators, 2 B vectors, 1 splat:
// 11 registers). V8 on x64 gives wasm 16 xmm registers but keeps some for itself: a 6 x 8 tile
// (15) spills inside the k loop and ran at half the speed (31 against 64 GFLOP/s alone; ResNet-50
// forward ~300 ms against ~230 ms on a Zen 5; 5 x 8, 4 x 12 spill too; 2 x 16, 3 x 8 and 3 x 12
// ran no faster). mul + add: clang 14 has no relaxed FMA. KC stays 256: it decides where long
// reductions are split (gemm.c), so changing it changes bits. See gemm_impl.inc.
#include "ops/simd/vec_wasmsimd.h"
#define BNL_KNAME wasmsimd
#define BNL_GEMM_NAME "gemm_4x8__wasmsimd"
#define BNL_GEMM_MR 4
#define BNL_GEMM_NV 2
#define BNL_GEMM_KC 256
#define BNL_GEMM_MC 64
#define BNL_GEMM_NC 256
#include "ops/gemm_impl.inc"
