// The vector vocabulary for x86-64 AVX2 + FMA: 8 float lanes. Include in *__avx2.c files only.
#ifndef BNL_VEC_AVX2_H
#define BNL_VEC_AVX2_H
#include <immintrin.h>
#define BNL_VN 8
#define BNL_VALIGN 32
typedef __m256 vf;
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline void vf_stream(float *p, vf v) { _mm256_stream_ps(p, v); }   // p 32-byte aligned
static inline void vf_fence(void) { _mm_sfence(); }
static inline vf vf_set1(float x) { return _mm256_set1_ps(x); }
static inline vf vf_bcast(const float *p) { return _mm256_broadcast_ss(p); }   // all lanes = *p
static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }   // a*b+c
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vf_relu(vf v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }   // v < 0 ? 0 : v (NaN kept)
// v where t > 0, else 0 (the ReLU mask of t applied to v)
static inline vf vf_mask_pos(vf v, vf t) { return _mm256_and_ps(v, _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GT_OQ)); }
static inline float vf_lane(vf v, int i) { float t[8]; _mm256_storeu_ps(t, v); return t[i]; }
#endif
