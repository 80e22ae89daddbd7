// BatchNorm row kernels for avx2 (see batchnorm_impl.inc).
#include "ops/simd/vec_avx2.h"
#define BNL_KNAME avx2
#include "ops/batchnorm_impl.inc"
