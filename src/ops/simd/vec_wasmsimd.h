// The vector vocabulary for WebAssembly simd128: 4 float lanes. clang 14 has no relaxed FMA, so
// fmadd is mul+add (two roundings; the scalar reference is the judge, with a tolerance).
#ifndef BNL_VEC_WASMSIMD_H
#define BNL_VEC_WASMSIMD_H
#include <wasm_simd128.h>
#define BNL_VN 4
#define BNL_VALIGN 16
typedef v128_t vf;
static inline vf vf_load(const float *p) { return wasm_v128_load(p); }
static inline void vf_store(float *p, vf v) { wasm_v128_store(p, v); }
static inline void vf_stream(float *p, vf v) { wasm_v128_store(p, v); }   // no streaming stores in wasm
static inline void vf_fence(void) {}
static inline vf vf_set1(float x) { return wasm_f32x4_splat(x); }
static inline vf vf_bcast(const float *p) { return wasm_v128_load32_splat(p); }   // all lanes = *p
static inline vf vf_zero(void) { return wasm_f32x4_splat(0.0f); }
static inline vf vf_add(vf a, vf b) { return wasm_f32x4_add(a, b); }
static inline vf vf_sub(vf a, vf b) { return wasm_f32x4_sub(a, b); }
static inline vf vf_mul(vf a, vf b) { return wasm_f32x4_mul(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }
static inline vf vf_max(vf a, vf b) { return wasm_f32x4_pmax(a, b); }
static inline vf vf_relu(vf v) { return wasm_f32x4_pmax(v, wasm_f32x4_splat(0.0f)); }   // v < 0 ? 0 : v (NaN kept)
static inline vf vf_mask_pos(vf v, vf t) { return wasm_v128_and(v, wasm_f32x4_gt(t, wasm_f32x4_splat(0.0f))); }
static inline float vf_lane(vf v, int i) { float t[4]; wasm_v128_store(t, v); return t[i]; }
#endif
