// The exported C functions web/bnlab.mjs calls, and nothing else. Every function returns a
// bnl_status (0 = ok); bnl_wasm_last_error() gives the message. Pointers are wasm memory offsets.
// Argument order as in bnlab.h: the handle, then outputs, then inputs (a new handle's `out` first).
#include "bnlab.h"
#include "core/common.h"
#include "core/parallel.h"
#include "ops/dispatch.h"
#include "ops/gemm_kernels.h"

#include <emscripten.h>
#include <malloc.h>
#include <stdlib.h>

EMSCRIPTEN_KEEPALIVE void *bnl_wasm_malloc(size_t n) { return malloc(n ? n : 1); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_free(void *p) { free(p); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_last_error(void) { return bnl_last_error(); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_status_str(int s) { return bnl_status_str((bnl_status)s); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_isa(void) { return bnl_isa_name(bnl_isa_active()); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_isa_force(int isa) { return bnl_isa_force((bnl_isa)isa); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_isa_reset(void) { bnl_isa_reset(); }

static void start_worker(void *ctx, size_t i0, size_t i1, int tid) {}

// Threads for the parallel loops: the threaded build's pool size (the single-thread build has
// none: it stays 1). Returns the count in effect. The pool's workers are started here, while the
// heap has room: Emscripten 3.1.6's pthread_create does not check its 2 MB stack allocation, and a
// worker started lazily inside a loop when the heap is nearly full gets a stack at address 0 and
// overwrites the module's data (the out-of-memory test saw wrong logits from it).
EMSCRIPTEN_KEEPALIVE int bnl_wasm_set_threads(int n) {
    bnl_set_threads(n < 1 ? 1 : n);
    int T = bnl_threads_effective();
    if (T > 1) bnl_parallel_for((size_t)T, T, start_worker, NULL);
    return T;
}
EMSCRIPTEN_KEEPALIVE int bnl_wasm_threads(void) { return bnl_threads_effective(); }

// Bytes malloc has handed out and not had back (tests: memory given back).
EMSCRIPTEN_KEEPALIVE size_t bnl_wasm_heap_in_use(void) { return (size_t)mallinfo().uordblks; }

// Tests only: a parallel loop whose thread `tid` traps (a crashed worker must be reported, not
// waited for forever).
static void trap_on(void *ctx, size_t i0, size_t i1, int tid) {
    if (tid == *(const int *)ctx) __builtin_trap();
    for (volatile size_t i = i0; i < i1; i++) {
    }
}
EMSCRIPTEN_KEEPALIVE void bnl_wasm_test_trap_thread(int tid) {
    int T = bnl_threads_effective();
    bnl_parallel_for((size_t)T * 1000, T, trap_on, &tid);
}

// BatchNorm config packed as flags: bit0 cumulative, bit1 unbiased, bit2 no scale, bit3 no bias, bit4 relu.
static bnl_bn_config cfg_from(float eps, float momentum, int flags) {
    bnl_bn_config c = bnl_bn_config_default();
    c.eps = eps;
    c.momentum = momentum;
    c.cumulative = flags & 1;
    c.unbiased = (flags >> 1) & 1;
    c.use_scale = !((flags >> 2) & 1);
    c.use_bias = !((flags >> 3) & 1);
    c.relu = (flags >> 4) & 1;
    return c;
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_bn_forward_train(float *y, float *mean, float *invstd, float *var,
                                                   float *rm, float *rv, int64_t *nbt, const float *x,
                                                   const float *gamma, const float *beta, int M, int C,
                                                   float eps, float momentum, int flags) {
    if (M < 0 || C < 0) return bnl_fail(BNL_ERR_ARG, "batchnorm: negative size (M = %d, C = %d)", M, C);
    bnl_bn_config c = cfg_from(eps, momentum, flags);
    return bnl_batchnorm_forward_train(y, mean, invstd, var, rm, rv, nbt, x, gamma, beta, (size_t)M, (size_t)C, &c);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                                                  const float *rm, const float *rv, int M, int C, float eps,
                                                  int flags) {
    if (M < 0 || C < 0) return bnl_fail(BNL_ERR_ARG, "batchnorm: negative size (M = %d, C = %d)", M, C);
    bnl_bn_config c = cfg_from(eps, 0.9f, flags);
    return bnl_batchnorm_forward_eval(y, x, gamma, beta, rm, rv, (size_t)M, (size_t)C, &c);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_bn_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                                    const float *x, const float *mean, const float *invstd,
                                                    const float *gamma, const float *beta, int M, int C,
                                                    float eps, int flags) {
    if (M < 0 || C < 0) return bnl_fail(BNL_ERR_ARG, "batchnorm: negative size (M = %d, C = %d)", M, C);
    bnl_bn_config c = cfg_from(eps, 0.9f, flags);
    return bnl_batchnorm_backward_train(dx, dgamma, dbeta, dy, x, mean, invstd, gamma, beta, (size_t)M, (size_t)C, &c);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_bn_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy,
                                                   const float *x, const float *gamma, const float *beta,
                                                   const float *rm, const float *rv, int M, int C, float eps,
                                                   int flags) {
    if (M < 0 || C < 0) return bnl_fail(BNL_ERR_ARG, "batchnorm: negative size (M = %d, C = %d)", M, C);
    bnl_bn_config c = cfg_from(eps, 0.9f, flags);
    return bnl_batchnorm_backward_eval(dx, dgamma, dbeta, dy, x, gamma, beta, rm, rv, (size_t)M, (size_t)C, &c);
}

// ---- ResNet model -------------------------------------------------------------------------------
#include "io/statedict.h"
#include "model/resnet.h"

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_load(bnl_resnet **out, const uint8_t *buf, size_t len) {
    return bnl_resnet_load(out, buf, len);
}
// A second context over m's state (weights and running statistics shared, not copied; its
// train-mode forwards leave the shared running statistics alone): see bnl_resnet_clone_context.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_clone_context(bnl_resnet **out, const bnl_resnet *m) {
    return bnl_resnet_clone_context(out, m);
}
EMSCRIPTEN_KEEPALIVE void bnl_wasm_model_free(bnl_resnet *m) { bnl_resnet_free(m); }

EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_model_meta(const bnl_resnet *m, const char *key) { return bnl_resnet_meta(m, key); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_model_bn_name(const bnl_resnet *m, int i) { return bnl_resnet_bn_name(m, i); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_model_set_training(bnl_resnet *m, int t) { bnl_resnet_set_training(m, t); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_training(const bnl_resnet *m) { return bnl_resnet_training(m); }
// a double: exact up to 2^53 writes
EMSCRIPTEN_KEEPALIVE double bnl_wasm_model_state_version(const bnl_resnet *m) { return (double)bnl_resnet_state_version(m); }

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_set_bn(bnl_resnet *m, float momentum, float eps, int flags) {
    bnl_bn_config c = cfg_from(eps, momentum, flags);
    return bnl_resnet_set_bn_config(m, &c);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_forward(bnl_resnet *m, float *logits, const float *x, int N, int H, int W, int C) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "forward: input has %d channels, the model expects %d (NHWC [N,H,W,%d])", C,
                        in->in_channels, in->in_channels);
    return bnl_resnet_forward(m, logits, x, N, H, W);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_forward_to(bnl_resnet *m, const float *x, int N, int H, int W, int C, int stop) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "forwardTo: input has %d channels, the model expects %d (NHWC [N,H,W,%d])", C,
                        in->in_channels, in->in_channels);
    return bnl_resnet_forward_to(m, x, N, H, W, stop);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_bn_input(bnl_resnet *m, float *out, int cap, int32_t *n, float *gbe,
                                                 const float *x, int N, int H, int W, int C, int layer, int c) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "bnInput: input has %d channels, the model expects %d (NHWC [N,H,W,%d])", C,
                        in->in_channels, in->in_channels);
    size_t got = 0;
    bnl_status s = bnl_resnet_bn_input(m, out, cap < 0 ? 0 : (size_t)cap, &got, gbe, x, N, H, W, layer, c);
    *n = (int32_t)got;
    return s;
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_forward_bn_input(bnl_resnet *m, float *logits, float *out, int cap, int32_t *n,
                                                         float *gbe, const float *x, int N, int H, int W, int C,
                                                         int layer, int c) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "forwardBnInput: input has %d channels, the model expects %d (NHWC [N,H,W,%d])",
                        C, in->in_channels, in->in_channels);
    size_t got = 0;
    bnl_status s = bnl_resnet_forward_bn_input(m, logits, out, cap < 0 ? 0 : (size_t)cap, &got, gbe, x, N, H, W, layer, c);
    *n = (int32_t)got;
    return s;
}

// out: [channels, has_batch, tracked_lo, tracked_hi], ptrs: batch_mean, batch_var, running_mean, running_var
EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_bn_stats(const bnl_resnet *m, int32_t *out, const float **ptrs, int i) {
    bnl_bn_view v;
    bnl_status s = bnl_resnet_bn_stats(m, &v, i);
    if (s != BNL_OK) return s;
    out[0] = v.channels, out[1] = v.has_batch;
    out[2] = (int32_t)(v.num_batches_tracked & 0xffffffff), out[3] = (int32_t)(v.num_batches_tracked >> 32);
    ptrs[0] = v.batch_mean, ptrs[1] = v.batch_var, ptrs[2] = v.running_mean, ptrs[3] = v.running_var;
    return BNL_OK;
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_set_running_stats(bnl_resnet *m, int i, const float *mean, const float *var,
                                                         int C) {
    return bnl_resnet_set_running_stats(m, i, mean, var, C);
}

// PreciseBN accumulator (see bnl_precise_bn_begin in model/resnet.h)
EMSCRIPTEN_KEEPALIVE int bnl_wasm_precise_begin(bnl_precise_bn **out, const bnl_resnet *m) {
    return bnl_precise_bn_begin(out, m);
}
EMSCRIPTEN_KEEPALIVE int bnl_wasm_precise_add(bnl_precise_bn *p, bnl_resnet *m, const float *x, int N, int H, int W,
                                              int C) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "preciseBN: input has %d channels, the model expects %d (NHWC [N,H,W,%d])", C,
                        in->in_channels, in->in_channels);
    return bnl_precise_bn_add(p, m, x, N, H, W);
}
EMSCRIPTEN_KEEPALIVE int bnl_wasm_precise_end(bnl_precise_bn *p, bnl_resnet *m) { return bnl_precise_bn_end(p, m); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_precise_free(bnl_precise_bn *p) { bnl_precise_bn_free(p); }

// out: [rows, cols], ptrs: a, b (see bnl_norm_view: group mean/var (N,G), renorm r/d (C), ghost mean/var (N/V,C))
EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_norm_stats(const bnl_resnet *m, int32_t *out, const float **ptrs, int i) {
    bnl_norm_view v;
    bnl_status s = bnl_resnet_norm_stats(m, &v, i);
    if (s != BNL_OK) return s;
    out[0] = v.rows, out[1] = v.cols;
    ptrs[0] = v.a, ptrs[1] = v.b;
    return BNL_OK;
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_step(bnl_resnet *m, float *loss, const float *x, int N, int H, int W, int C,
                                             const int64_t *labels, float lr, float momentum, float wd, int nesterov) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    if (C != in->in_channels)
        return bnl_fail(BNL_ERR_SHAPE, "step: input has %d channels, the model expects %d", C, in->in_channels);
    bnl_sgd sgd = bnl_sgd_default();
    sgd.lr = lr, sgd.momentum = momentum, sgd.weight_decay = wd, sgd.nesterov = nesterov;
    return bnl_resnet_step(m, loss, x, N, H, W, labels, &sgd);
}

EMSCRIPTEN_KEEPALIVE int bnl_wasm_model_save(const bnl_resnet *m, uint8_t **buf, size_t *len) {
    return bnl_resnet_save(m, buf, len);
}

// The memcpy peer of the wasm BatchNorm benchmark (tests/bench_bn_wasm.mjs).
#include <string.h>
EMSCRIPTEN_KEEPALIVE void bnl_wasm_memcpy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

// model.info for web/bnlab.mjs as a malloc'd JSON string (free it with bnl_wasm_free), or 0 with
// bnl_wasm_last_error() set: the architecture and the normalization kind the C side holds, named
// once here (no integer-array layout for JS to mirror, no second reading of the metadata).
#include <stdio.h>
EMSCRIPTEN_KEEPALIVE char *bnl_wasm_model_describe(const bnl_resnet *m) {
    if (!m) {
        bnl_fail(BNL_ERR_ARG, "model_describe: no model");
        return NULL;
    }
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    bnl_norm_spec ns = bnl_resnet_norm_spec(m);
    char norm[48], blocks[16 * BNL_MAX_STAGES] = "", widths[16 * BNL_MAX_STAGES] = "", renorm[96] = "";
    bnl_norm_format(&ns, norm, sizeof norm);
    for (int i = 0, kb = 0, kw = 0; i < in->num_stages && i < BNL_MAX_STAGES; i++) {
        kb += snprintf(blocks + kb, sizeof blocks - (size_t)kb, "%s%d", i ? "," : "", in->blocks[i]);
        kw += snprintf(widths + kw, sizeof widths - (size_t)kw, "%s%d", i ? "," : "", in->widths[i]);
    }
    if (ns.kind == BNL_NORM_RENORM)
        snprintf(renorm, sizeof renorm, ",\"renorm\":{\"rmax\":%.9g,\"dmax\":%.9g}", (double)ns.renorm_rmax,
                 (double)ns.renorm_dmax);
    size_t cap = 512 + sizeof blocks + sizeof widths + sizeof renorm;
    char *s = malloc(cap);
    if (!s) {
        bnl_fail(BNL_ERR_NOMEM, "model_describe: out of memory");
        return NULL;
    }
    snprintf(s, cap,
             "{\"blocks\":[%s],\"widths\":[%s],\"block\":\"%s\",\"stemWidth\":%d,\"inChannels\":%d,"
             "\"numClasses\":%d,\"numFeatures\":%d,\"numParams\":%zu,\"numBn\":%d,\"norm\":\"%s\"%s}",
             blocks, widths, in->bottleneck ? "bottleneck" : "basic", in->stem_width, in->in_channels,
             in->num_classes, in->num_features, in->num_params, in->num_bn, norm, renorm);
    return s;
}

// The GEMM micro-kernel this module runs by default ("gemm_4x8__wasmsimd", or
// "gemm_4x8__wasmrelaxed" in the relaxed-SIMD build): web/bnlab.mjs's lab.kernel and lab.relaxed.
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_gemm_kernel(void) { return bnl_gemm_kernels_for(BNL_ISA_WASMSIMD)->name; }
