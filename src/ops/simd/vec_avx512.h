// The vector vocabulary for x86-64 AVX-512F: 16 float lanes. Include in *__avx512.c files only.
#ifndef BNL_VEC_AVX512_H
#define BNL_VEC_AVX512_H
#include <immintrin.h>
#define BNL_VN 16
#define BNL_VALIGN 64
typedef __m512 vf;
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline void vf_stream(float *p, vf v) { _mm512_stream_ps(p, v); }   // p 64-byte aligned
static inline void vf_fence(void) { _mm_sfence(); }
static inline vf vf_set1(float x) { return _mm512_set1_ps(x); }
static inline vf vf_bcast(const float *p) { return _mm512_set1_ps(*p); }   // all lanes = *p
static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vf_relu(vf v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }   // v < 0 ? 0 : v (NaN kept)
static inline vf vf_mask_pos(vf v, vf t) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ), v);
}
static inline float vf_lane(vf v, int i) { float t[16]; _mm512_storeu_ps(t, v); return t[i]; }
#endif
