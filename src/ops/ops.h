// The ResNet ops other than BatchNorm (which is in bnlab.h), NHWC float32, forward and backward
// side by side. Backward kernels WRITE dx and ADD into weight gradients (dw, db): a separate
// zero-grad clears those. All return BNL_OK or an error status with bnl_last_error() set.
// Sizes legend: N batch, H/W input height/width, C input channels, K output channels,
// R/S kernel height/width, P/Q output height/width.
#ifndef BNL_OPS_H
#define BNL_OPS_H
#include "bnlab.h"
#include <stddef.h>
#include <stdint.h>

// ---- 2-D convolution, no bias (ResNet convs are followed by BatchNorm) -----------------------
typedef struct bnl_conv_shape {
    int N, H, W, C;      // input
    int K, R, S;         // output channels, kernel size
    int stride, pad;     // same in both directions
    int P, Q;            // output size: (H + 2*pad - R)/stride + 1, (W + 2*pad - S)/stride + 1
} bnl_conv_shape;

// Fills P, Q and checks the numbers (positive sizes, output at least 1x1).
bnl_status bnl_conv_shape_init(bnl_conv_shape *s, int N, int H, int W, int C, int K, int R, int S,
                               int stride, int pad);
// y: (N,P,Q,K)  x: (N,H,W,C)  w: (K,R,S,C) -- bnlab's OHWI layout (torch's OIHW is converted on load)
bnl_status bnl_conv2d_forward(float *y, const float *x, const float *w, const bnl_conv_shape *s);
// dx: (N,H,W,C) written (may be NULL: the stem needs no input gradient)  dw: (K,R,S,C) added
bnl_status bnl_conv2d_backward(float *dx, float *dw, const float *dy, const float *x,
                               const float *w, const bnl_conv_shape *s);
// The same, with the input gradient finished in one pass: dx = gate > 0 ? dx + res : 0, res and
// gate (N,H,W,C) or NULL (a residual branch's gradient; the output of the ReLU that made x). Neither
// may overlap dx.
bnl_status bnl_conv2d_backward_ex(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                  const float *res, const float *gate, const bnl_conv_shape *s);
// Output pixels per tile of the col2im input gradient (strided convolutions), for tests and
// benchmarks (0 = automatic: up to 512 pixels and about 4 MB of patches). Global, like
// bnl_set_threads; results do not depend on it.
void bnl_conv_set_tile_pixels(int pixels);

// Inference: weights packed once for the GEMM kernels of the active ISA, output channel k scaled
// by scale[k] when scale is not NULL (folds an eval BatchNorm into the convolution). *pk is reused
// when its sizes match, else (re)allocated; free with bnl_conv_packed_free.
typedef struct bnl_conv_packed bnl_conv_packed;
bnl_status bnl_conv_pack_weights(bnl_conv_packed **pk, const float *w, const float *scale, int K, int R, int S, int C);
// For a convolution of the given stride (0: unknown) and a given ISA's kernels (a model context
// packs for its own ISA; the fused forward runs the kernels the weights were packed for):
// BNL_ERR_UNSUPPORTED if the ISA is not available. 3x3 stride-1 weights are packed for Winograd
// F(2x2, 3x3) (src/ops/winograd.c: 2.25x fewer multiplies; not the direct sum's bits, within a
// few ulps of it) unless bnl_conv_set_winograd(0); such weights serve stride 1 only.
bnl_status bnl_conv_pack_weights_isa(bnl_conv_packed **pk, bnl_isa isa, const float *w, const float *scale, int K,
                                     int R, int S, int C, int stride);
// Global, like bnl_set_threads; read when weights are packed. Default on.
void bnl_conv_set_winograd(int on);
int bnl_conv_winograd(void);
void bnl_conv_packed_free(bnl_conv_packed *p);
int bnl_conv_packed_current(const bnl_conv_packed *p);   // packed for the active ISA's kernels
// y = conv(x, w) + bias + res, then ReLU if relu, in one pass. bias: (K) or NULL; res: (N,P,Q,K)
// or NULL, must not overlap y. w packed by bnl_conv_pack_weights(_isa): its ISA's kernels run.
bnl_status bnl_conv2d_forward_fused(float *y, const float *x, const bnl_conv_packed *w, const float *bias,
                                    const float *res, int relu, const bnl_conv_shape *s);

// ---- GEMM: the kernel boundary convolutions and linear layers share --------------------------
// C[M,N] (+)= A[M,K] * B^T where B is (N,K) row-major ("NT"); accumulate: 0 overwrite, 1 add.
void bnl_gemm_nt(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate);
// C[M,N] (+)= A[M,K] * B[K,N] ("NN").
void bnl_gemm_nn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate);
// C[M,N] (+)= A^T * B where A is (K,M), B is (K,N) ("TN").
void bnl_gemm_tn(float *Cm, const float *A, const float *B, size_t M, size_t N, size_t K, int accumulate);

// ---- pooling ---------------------------------------------------------------------------------
// Max pool kxk, stride, padding (padding never wins: -inf). y: (N,P,Q,C). argmax: (N,P,Q,C) int32
// index into the (H*W) plane of the input, for backward; may be NULL in eval mode.
bnl_status bnl_maxpool_forward(float *y, int32_t *argmax, const float *x, int N, int H, int W, int C,
                               int k, int stride, int pad, int P, int Q);
// dx: (N,H,W,C) written (zeroed, then dy scattered to the argmax positions)
bnl_status bnl_maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int N, int H, int W,
                                int C, int P, int Q);
// Global average pool: y: (N,C) = mean over H*W of x: (N,H,W,C)
bnl_status bnl_avgpool_forward(float *y, const float *x, int N, int HW, int C);
bnl_status bnl_avgpool_backward(float *dx, const float *dy, int N, int HW, int C);

// ---- linear ----------------------------------------------------------------------------------
// y: (N,O) = x: (N,I) * w^T + b, w: (O,I) as torch's fc.weight, b: (O) (may be NULL)
bnl_status bnl_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int I, int O);
// dx: (N,I) written (may be NULL), dw: (O,I) added, db: (O) added (may be NULL)
bnl_status bnl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, int N, int I, int O);

// ---- elementwise -----------------------------------------------------------------------------
// The residual add and its ReLU: y = relu(a + b), NaN kept as NaN (torch.relu). y may alias a or b.
void bnl_add_relu_forward(float *y, const float *a, const float *b, size_t n);
// g = (a + b) where y > 0, else 0: the gradient sum at a block input, through the ReLU that made it
// (y is that ReLU's output). b NULL: a alone; y NULL: no ReLU. g may alias a or b.
void bnl_add_relu_backward(float *g, const float *a, const float *b, const float *y, size_t n);

// ---- the residual block's output: BatchNorm apply + shortcut + add + ReLU in one pass ----------
// One side of the add: bnl_batchnorm_apply(x; mean, invstd, gamma, beta, cfg), or x as it is when
// mean is NULL (an identity shortcut; the other fields unused).
typedef struct bnl_bn_side {
    const float *x;              // (M,C)
    const float *mean, *invstd;  // (C)
    const float *gamma, *beta;   // (C)
    const bnl_bn_config *cfg;
} bnl_bn_side;
// y = relu(apply(a) + apply(s)), ReLU as bnl_add_relu_forward: the same bits as the two applies
// then bnl_add_relu_forward, on every ISA, in one pass over memory. a needs its statistics; y may
// alias a->x or s->x.
bnl_status bnl_bn_add_relu_forward(float *y, const bnl_bn_side *a, const bnl_bn_side *s, size_t M, size_t C);
// bnl_batchnorm_forward_train that leaves y to a later apply where that gives the same bits (where
// the active ISA's SIMD kernels run: *applied = 0, y untouched); the scalar reference normalizes
// with double statistics no float carries, so there it writes y itself (*applied = 1). Statistics,
// invstd and the running update as bnl_batchnorm_forward_train.
bnl_status bnl_batchnorm_forward_train_defer(float *y, int *applied, float *mean, float *invstd, float *var_out,
                                             float *running_mean, float *running_var, int64_t *num_batches_tracked,
                                             const float *x, const float *gamma, const float *beta, size_t M,
                                             size_t C, const bnl_bn_config *cfg);

// ---- loss ------------------------------------------------------------------------------------
// Softmax cross-entropy, mean over the batch. logits: (N,K), labels: (N) in [0,K) (else BNL_ERR_ARG
// naming the row), probs: (N,K) softmax written for backward. *loss = mean of -log p[label].
bnl_status bnl_softmax_xent_forward(float *loss, float *probs, const float *logits,
                                    const int64_t *labels, int N, int K);
// dlogits: (N,K) = (probs - onehot(labels)) / N
bnl_status bnl_softmax_xent_backward(float *dlogits, const float *probs, const int64_t *labels, int N, int K);

#endif
