// The exported C functions web/bnlab.mjs calls, and nothing else. Every function returns a
// bnl_status (0 = ok); bnl_wasm_last_error() gives the message. Pointers are wasm memory offsets.
#include "bnlab.h"
#include "core/common.h"

#include <emscripten.h>
#include <stdlib.h>

EMSCRIPTEN_KEEPALIVE void *bnl_wasm_malloc(size_t n) { return malloc(n ? n : 1); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_free(void *p) { free(p); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_last_error(void) { return bnl_last_error(); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_status_str(int s) { return bnl_status_str((bnl_status)s); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_isa(void) { return bnl_isa_name(bnl_isa_active()); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_isa_force(int isa) { return bnl_isa_force((bnl_isa)isa); }
EMSCRIPTEN_KEEPALIVE void bnl_wasm_isa_reset(void) { bnl_isa_reset(); }

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
