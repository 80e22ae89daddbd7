// Winograd F(2x2, 3x3) for the inference forward of 3x3 stride-1 convolutions: see winograd.c.
// Internal to src/ops (conv.c packs and dispatches); the switch is public in ops.h.
#ifndef BNL_WINOGRAD_H
#define BNL_WINOGRAD_H
#include "ops/gemm_kernels.h"
#include "ops/ops.h"

// Floats of the 16 packed transformed weight matrices for K output and C input channels.
size_t bnl_winograd_packed_floats(const bnl_gemm_kernels *kt, int K, int C);
// dst = the transformed weights of w (K,3,3,C), output channel k scaled by scale[k] (or NULL).
bnl_status bnl_winograd_pack(float *dst, const bnl_gemm_kernels *kt, const float *w, const float *scale, int K,
                             int C);
// y = relu?(conv3x3(x) + bias + res), stride 1, any padding, weights packed by bnl_winograd_pack.
bnl_status bnl_winograd_forward(float *y, const float *x, const float *U, const bnl_gemm_kernels *kt,
                                const float *bias, const float *res, int relu, const bnl_conv_shape *s);
#endif
