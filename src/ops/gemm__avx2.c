// GEMM micro-kernel for AVX2 + FMA: 6 x 16 (12 ymm accumulators, 2 B vectors, 1 broadcast: 15 of
// the 16 registers). See gemm_impl.inc.
#include "ops/simd/vec_avx2.h"
#define BNL_KNAME avx2
#define BNL_GEMM_NAME "gemm_6x16__avx2"
#define BNL_GEMM_MR 6
#define BNL_GEMM_NV 2
#define BNL_GEMM_KC 256
#define BNL_GEMM_MC 96
#define BNL_GEMM_NC 512
#include "ops/gemm_impl.inc"
