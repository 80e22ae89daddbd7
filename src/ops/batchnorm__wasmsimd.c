// BatchNorm row kernels for wasmsimd (see batchnorm_impl.inc).
#include "ops/simd/vec_wasmsimd.h"
#define BNL_KNAME wasmsimd
#include "ops/batchnorm_impl.inc"
