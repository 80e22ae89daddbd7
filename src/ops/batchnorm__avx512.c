// BatchNorm row kernels for avx512 (see batchnorm_impl.inc).
#include "ops/simd/vec_avx512.h"
#define BNL_KNAME avx512
#include "ops/batchnorm_impl.inc"
