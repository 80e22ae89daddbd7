// GEMM micro-kernel for AVX-512F: 14 x 32 (28 zmm accumulators, 2 B vectors, broadcasts folded
// into the FMAs). 14 rows divide ResNet's 112/56/28/14 feature maps; KC 192 divides every 3x3
// conv's depth (9*64k) and keeps a B micro-panel (24 KB) and an A micro-panel (10.5 KB) together in a
// 48 KB L1. See gemm_impl.inc.
#include "ops/simd/vec_avx512.h"
#define BNL_KNAME avx512
#define BNL_GEMM_NAME "gemm_14x32__avx512"
#define BNL_GEMM_MR 14
#define BNL_GEMM_NV 2
#define BNL_GEMM_KC 192
#define BNL_GEMM_MC 112
#define BNL_GEMM_NC 512
#include "ops/gemm_impl.inc"
