// bnlab: BatchNorm in a real ResNet, in C, natively and in WebAssembly.
//
// A short tour (BatchNorm on one NHWC activation; M = N*H*W rows, C channels):
//
//     bnl_bn_config cfg = bnl_bn_config_default();      // eps 1e-5, momentum 0.9, biased running var
//     float mean[C], invstd[C];                         // saved for backward
//     bnl_status s = bnl_batchnorm_forward_train(y, mean, invstd, run_mean, run_var, &tracked,
//                                                x, gamma, beta, M, C, &cfg);
//     if (s != BNL_OK) fprintf(stderr, "%s\n", bnl_last_error());
//     bnl_batchnorm_forward_eval(y, x, gamma, beta, run_mean, run_var, M, C, &cfg);  // never writes stats
//     bnl_batchnorm_backward_train(dx, dgamma, dbeta, dy, x, mean, invstd, gamma, beta, M, C, &cfg);
//
// Conventions
// - Errors are values: functions return bnl_status; bnl_last_error() holds a one-line message naming
//   what was wrong (per thread). The library never prints and never exits.
// - Argument order: the handle (a model, an accumulator) if there is one, then outputs, then
//   inputs, then weights, then sizes; functions that make a handle take its `**out` first. Backward
//   kernels ADD into dgamma/dbeta (a separate zero-grad clears them) and WRITE dx.
// - Whoever calls a *_load/*_create function calls the matching *_free. Buffers the library
//   allocates with its aligned allocator (named where handed out) are freed with bnl_free.
// - Running statistics follow the blog and Flax: running = momentum*running + (1-momentum)*batch.
//   PyTorch users: bnlab momentum 0.9 == torch momentum 0.1.
#ifndef BNLAB_H
#define BNLAB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// Status
typedef enum bnl_status {
    BNL_OK = 0,
    BNL_ERR_ARG,          // an argument is invalid (null pointer, zero size, bad option)
    BNL_ERR_NOMEM,        // an allocation failed
    BNL_ERR_IO,           // a file could not be read or written
    BNL_ERR_FORMAT,       // a file is malformed (safetensors, dataset)
    BNL_ERR_SHAPE,        // shapes do not agree, or do not form a ResNet
    BNL_ERR_BATCH,        // train-mode BatchNorm with one value per channel
    BNL_ERR_UNSUPPORTED,  // a valid request this build cannot do
    BNL_ERR_NUMERIC,      // NaN or Inf where a finite number is required
} bnl_status;

// Short, fixed name of a status ("invalid argument", ...).
const char *bnl_status_str(bnl_status s);
// The message of the last failing call on this thread ("" if none): names the problem and where.
const char *bnl_last_error(void);
// Frees memory the library handed out from its aligned allocator (NULL is ignored).
void bnl_free(void *p);

// ---------------------------------------------------------------------------------------------
// Instruction sets. Every SIMD kernel has a scalar reference that is always compiled; one place
// (src/ops/dispatch.c) picks the best variant the CPU supports. Tests force each in turn.
typedef enum bnl_isa {
    BNL_ISA_SCALAR = 0,
    BNL_ISA_AVX2,      // x86-64 AVX2 + FMA
    BNL_ISA_AVX512,    // x86-64 AVX-512F
    BNL_ISA_WASMSIMD,  // WebAssembly simd128
    BNL_ISA_COUNT
} bnl_isa;

const char *bnl_isa_name(bnl_isa isa);
int bnl_isa_available(bnl_isa isa);        // compiled in and supported by this CPU
bnl_isa bnl_isa_active(void);              // the variant kernels use now
bnl_status bnl_isa_force(bnl_isa isa);     // for tests and benchmarks; BNL_ERR_UNSUPPORTED if absent
void bnl_isa_reset(void);                  // back to the best available

// Threads used by the kernels (OpenMP natively; always 1 in wasm). 0 = all cores.
void bnl_set_threads(int n);
int bnl_get_threads(void);

// ---------------------------------------------------------------------------------------------
// BatchNorm over NHWC activations, viewed as x: (M, C) with M = N*H*W.
typedef struct bnl_bn_config {
    float eps;        // 1e-5
    float momentum;   // 0.9: running = momentum*running + (1-momentum)*batch (Flax/blog convention)
    int cumulative;   // 1: running = cumulative average of all batches (PyTorch momentum=None);
                      //    uses and increments num_batches_tracked
    int unbiased;     // 1: the running variance gets batch_var * M/(M-1) (PyTorch); 0: biased (blog)
    int use_scale;    // 0: gamma treated as 1 (gamma may be NULL)
    int use_bias;     // 0: beta treated as 0 (beta may be NULL)
    int relu;         // 1: fused ReLU on the output (backward masks dy accordingly)
} bnl_bn_config;

bnl_bn_config bnl_bn_config_default(void);

// Train mode: normalizes with the batch mean and biased variance, writes them to mean/var_out
// (per channel; var_out may be NULL), saves invstd = 1/sqrt(var+eps) for backward, and updates
// running_mean/running_var (both may be NULL to skip) and *num_batches_tracked (may be NULL).
// Statistics are computed in blocks with a shifted two-pass and merged in double (Chan et al.),
// so they stay accurate when |mean| >> std. M == 1 returns BNL_ERR_BATCH.
// y: (M,C) may alias x.
bnl_status bnl_batchnorm_forward_train(float *y, float *mean, float *invstd, float *var_out,
                                       float *running_mean, float *running_var,
                                       int64_t *num_batches_tracked, const float *x,
                                       const float *gamma, const float *beta, size_t M, size_t C,
                                       const bnl_bn_config *cfg);

// Eval mode: normalizes with running statistics; never writes them. y may alias x.
bnl_status bnl_batchnorm_forward_eval(float *y, const float *x, const float *gamma,
                                      const float *beta, const float *running_mean,
                                      const float *running_var, size_t M, size_t C,
                                      const bnl_bn_config *cfg);

// Backward of the train-mode forward, through the batch statistics:
//   xhat = (x-mean)*invstd, g = dy masked by the ReLU (if fused),
//   dbeta += sum(g), dgamma += sum(g*xhat), dx = gamma*invstd/M * (M*g - sum(g) - xhat*sum(g*xhat)).
// x: (M,C) is the forward's input; dgamma/dbeta may be NULL. dx may alias dy.
bnl_status bnl_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                        const float *x, const float *mean, const float *invstd,
                                        const float *gamma, const float *beta, size_t M, size_t C,
                                        const bnl_bn_config *cfg);

// Backward of the eval-mode forward (statistics are constants): dx = g*gamma*invstd_running.
bnl_status bnl_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy,
                                       const float *x, const float *gamma, const float *beta,
                                       const float *running_mean, const float *running_var,
                                       size_t M, size_t C, const bnl_bn_config *cfg);

// A per-channel affine layer without statistics, y = x*gamma + beta (+ReLU): what a BatchNorm
// layer becomes in a network trained without normalization (bnl_resnet_set_norm). cfg: only
// use_scale, use_bias and relu matter. Its backward: dx = g*gamma, dgamma += sum(g*x), dbeta += sum(g).
bnl_status bnl_channel_affine_forward(float *y, const float *x, const float *gamma, const float *beta, size_t M,
                                      size_t C, const bnl_bn_config *cfg);
bnl_status bnl_channel_affine_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                       const float *gamma, const float *beta, size_t M, size_t C,
                                       const bnl_bn_config *cfg);

// ---------------------------------------------------------------------------------------------
// Other normalizations of the same layer (src/ops/norms.c). cfg as for BatchNorm: eps, momentum,
// unbiased, cumulative (running statistics), use_scale/use_bias, fused relu. They run on the same
// per-ISA row kernels as BatchNorm; the scalar ISA is the double-precision reference.
//
// GroupNorm (Wu & He 2018): x viewed as (N, HW, C); statistics per sample and per group of C/G
// consecutive channels over HW*(C/G) values; gamma/beta per channel; no running statistics; the
// same in train and eval mode. mean, invstd: (N, G) written (saved for backward); var_out (N, G)
// biased variance, may be NULL. G must divide C (BNL_ERR_ARG otherwise). y may alias x.
bnl_status bnl_groupnorm_forward(float *y, float *mean, float *invstd, float *var_out, const float *x,
                                 const float *gamma, const float *beta, size_t N, size_t HW, size_t C, size_t G,
                                 const bnl_bn_config *cfg);
// Per group (Mg = HW*C/G values, xhat = (x-mean)*invstd, gh = gamma*g):
//   dx = invstd*(gh - sum(gh)/Mg - xhat*sum(gh*xhat)/Mg), dgamma += sum(g*xhat), dbeta += sum(g).
bnl_status bnl_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                  const float *mean, const float *invstd, const float *gamma, const float *beta,
                                  size_t N, size_t HW, size_t C, size_t G, const bnl_bn_config *cfg);

// Batch Renormalization (Ioffe 2017), train mode: xhat from the batch statistics, then
//   y = gamma*(xhat*r + d) + beta, r = clip(sigma_B/sigma_run, 1/r_max, r_max),
//   d = clip((mean_B - running_mean)/sigma_run, -d_max, d_max), sigma = sqrt(var + eps),
// r and d computed from the running statistics BEFORE this batch updates them (as BatchNorm's
// rule), written to r_out/d_out (C each, may be NULL) and held constant in backward. Eval mode is
// BatchNorm's eval (bnl_batchnorm_forward_eval). r_max >= 1, d_max >= 0. M == 1: BNL_ERR_BATCH.
bnl_status bnl_batchrenorm_forward_train(float *y, float *mean, float *invstd, float *var_out, float *r_out,
                                         float *d_out, float *running_mean, float *running_var,
                                         int64_t *num_batches_tracked, const float *x, const float *gamma,
                                         const float *beta, size_t M, size_t C, float r_max, float d_max,
                                         const bnl_bn_config *cfg);
// BatchNorm's train backward with gamma*r in place of gamma, plus dgamma += sum(g*(xhat*r + d)).
bnl_status bnl_batchrenorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                          const float *mean, const float *invstd, const float *r, const float *d,
                                          const float *gamma, const float *beta, size_t M, size_t C,
                                          const bnl_bn_config *cfg);

// Ghost BatchNorm (Hoffer et al. 2017), train mode: x viewed as (N, HW, C), split into N/V virtual
// batches of V images, each normalized with its own statistics. mean, invstd, var_out: (N/V, C)
// (var_out may be NULL). The running statistics move once per call by the average over the virtual
// batches of their means and (biased) variances (Keras virtual_batch_size; with cfg->unbiased each
// variance gets V*HW/(V*HW-1)). V must divide N, V*HW > 1 (BNL_ERR_BATCH otherwise). Eval mode is
// BatchNorm's eval. y may alias x.
bnl_status bnl_ghostbn_forward_train(float *y, float *mean, float *invstd, float *var_out, float *running_mean,
                                     float *running_var, int64_t *num_batches_tracked, const float *x,
                                     const float *gamma, const float *beta, size_t N, size_t HW, size_t C, size_t V,
                                     const bnl_bn_config *cfg);
// BatchNorm's train backward per virtual batch (dgamma/dbeta summed over them).
bnl_status bnl_ghostbn_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                      const float *mean, const float *invstd, const float *gamma, const float *beta,
                                      size_t N, size_t HW, size_t C, size_t V, const bnl_bn_config *cfg);
// Frozen BatchNorm (detectron2's FrozenBatchNorm2d) needs no kernel of its own: in training too it is
// bnl_batchnorm_forward_eval / bnl_batchnorm_backward_eval (running statistics as constants, never
// updated).

// ---------------------------------------------------------------------------------------------
// The train-mode passes one by one, for synchronized BatchNorm across replicas (each replica has
// M_local rows; sums are combined by the caller, e.g. MPI_Allreduce, before the next pass):
//   stats (local mean, m2) -> combine -> apply (+ update_running with M_total)
//   backward_reduce (local sums) -> sum over replicas -> backward_apply with M_total
// Local statistics in double: mean[c] and m2[c] = sum over rows of (x - mean)^2.
bnl_status bnl_batchnorm_stats(double *mean, double *m2, const float *x, size_t M, size_t C);
// y = (x - mean)*invstd*gamma + beta (+ReLU) with the given statistics. y may alias x.
bnl_status bnl_batchnorm_apply(float *y, const float *x, const float *mean, const float *invstd,
                               const float *gamma, const float *beta, size_t M, size_t C,
                               const bnl_bn_config *cfg);
// Running statistics from a batch of M_total rows with mean and biased variance var.
bnl_status bnl_batchnorm_update_running(float *running_mean, float *running_var,
                                        int64_t *num_batches_tracked, const float *mean,
                                        const double *var, size_t M_total, size_t C,
                                        const bnl_bn_config *cfg);
// sum_g[c] = sum g, sum_gxc[c] = sum g*(x - mean), g = dy masked by the fused ReLU (written).
bnl_status bnl_batchnorm_backward_reduce(double *sum_g, double *sum_gxc, const float *dy,
                                         const float *x, const float *mean, const float *invstd,
                                         const float *gamma, const float *beta, size_t M, size_t C,
                                         const bnl_bn_config *cfg);
// dx from the (global) sums over M_total rows; dgamma/dbeta are not touched (add
// invstd*sum_gxc and sum_g of the LOCAL sums yourself: replicas average parameter gradients).
bnl_status bnl_batchnorm_backward_apply(float *dx, const float *dy, const float *x, const float *mean,
                                        const float *invstd, const float *gamma, const float *beta,
                                        const double *sum_g, const double *sum_gxc, size_t M_local,
                                        size_t M_total, size_t C, const bnl_bn_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
