// GEMM micro-kernel for WebAssembly simd128: 4 x 8 (8 v128 accumulators, 2 B vectors, 1 splat:
// 11 registers). V8 on x64 gives wasm 16 xmm registers but keeps some for itself: a 6 x 8 tile
// (15) spills inside the k loop and ran at half the speed (31 against 64 GFLOP/s alone; ResNet-50
// forward ~300 ms against ~230 ms on a Zen 5; 5 x 8, 4 x 12 spill too; 2 x 16, 3 x 8 and 3 x 12
// ran no faster). mul + add in the plain build (the relaxed one below). KC stays 256: it decides where long
// reductions are split (gemm.c), so changing it changes bits. See gemm_impl.inc.
//
// BNL_WASM_RELAXED (the relaxed-SIMD builds, CMake's BNL_WASM_RELAXED): the k loop's mul + add
// becomes one f32x4.relaxed_madd, which V8 compiles to an FMA where the CPU has one (one rounding
// instead of two; the same products in the same order, so still independent of the thread
// count). Only this loop: every other vector op of the build is the plain simd128 one. Clang 14
// knows the instruction only by its prototype opcode (__builtin_wasm_fma_f32x4, 0xfd 0xaf 0x01,
// which Binaryen 108 also reads); src/wasm/relaxed_opcodes.mjs rewrites it to the final
// encoding (0xfd 0x85 0x02) after the link. README: "Relaxed SIMD".
#include "ops/simd/vec_wasmsimd.h"
#ifdef BNL_WASM_RELAXED
#define BNL_GEMM_FMADD(a, b, c) __builtin_wasm_fma_f32x4((a), (b), (c))   // a * b + c
#define BNL_KNAME wasmsimd
#define BNL_GEMM_NAME "gemm_4x8__wasmrelaxed"
#else
#define BNL_KNAME wasmsimd
#define BNL_GEMM_NAME "gemm_4x8__wasmsimd"
#endif
#define BNL_GEMM_MR 4
#define BNL_GEMM_NV 2
#define BNL_GEMM_KC 256
#define BNL_GEMM_MC 64
#define BNL_GEMM_NC 256
#include "ops/gemm_impl.inc"
