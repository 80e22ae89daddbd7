// BatchNorm row kernels for wasmsimd (see batchnorm_impl.inc).
#include "ops/simd/vec_wasmsimd.h"
#define BNL_KNAME wasmsimd
// The residual ReLU as bnl_add_relu_forward runs in wasm: clang 14 compiles its `v < 0 ? 0 : v`
// to f32.max / f32x4.max (-0 becomes +0, NaN canonical), not to pmax (vf_relu), so the fused pass
// uses max too and gives the unfused passes' bits.
#define BNL_RES_RELU(v) wasm_f32x4_max((v), wasm_f32x4_splat(0.0f))
#include "ops/batchnorm_impl.inc"
