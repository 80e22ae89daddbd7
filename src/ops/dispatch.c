// The one place that decides which ISA variant the kernels use.
#include "core/common.h"
#include "ops/dispatch.h"

static int g_forced = -1;

const char *bnl_isa_name(bnl_isa isa) {
    switch (isa) {
    case BNL_ISA_SCALAR: return "scalar";
    case BNL_ISA_AVX2: return "avx2";
    case BNL_ISA_AVX512: return "avx512";
    case BNL_ISA_WASMSIMD: return "wasmsimd";
    default: return "unknown";
    }
}

int bnl_isa_available(bnl_isa isa) {
    switch (isa) {
    case BNL_ISA_SCALAR: return 1;
#ifdef __x86_64__
    case BNL_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BNL_ISA_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512vl");
#endif
#ifdef __wasm_simd128__
    case BNL_ISA_WASMSIMD: return 1;
#endif
    default: return 0;
    }
}

static bnl_isa best(void) {
    // AVX-512 first where present; BNL_ISA env var may lower it (e.g. BNL_ISA=avx2 for comparisons).
    static const bnl_isa order[] = {BNL_ISA_AVX512, BNL_ISA_AVX2, BNL_ISA_WASMSIMD, BNL_ISA_SCALAR};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (bnl_isa_available(order[i])) return order[i];
    return BNL_ISA_SCALAR;
}

bnl_isa bnl_isa_active(void) {
    if (g_forced >= 0) return (bnl_isa)g_forced;
    static int cached = -1;
    if (cached < 0) cached = (int)best();
    return (bnl_isa)cached;
}

bnl_status bnl_isa_force(bnl_isa isa) {
    if ((int)isa < 0 || isa >= BNL_ISA_COUNT)
        return bnl_fail(BNL_ERR_ARG, "isa: unknown instruction set %d", (int)isa);
    if (!bnl_isa_available(isa))
        return bnl_fail(BNL_ERR_UNSUPPORTED, "isa: %s is not available in this build or on this CPU",
                        bnl_isa_name(isa));
    g_forced = (int)isa;
    return BNL_OK;
}

void bnl_isa_reset(void) { g_forced = -1; }

const bnl_bn_kernels *bnl_bn_kernels_for(bnl_isa isa) {
    switch (isa) {
#ifdef __x86_64__
    case BNL_ISA_AVX2: return &bnl_bn_kernels__avx2;
    case BNL_ISA_AVX512: return &bnl_bn_kernels__avx512;
#endif
#ifdef __wasm_simd128__
    case BNL_ISA_WASMSIMD: return &bnl_bn_kernels__wasmsimd;
#endif
    default: return NULL;   // scalar: the reference implementation in batchnorm.c
    }
}

const bnl_gemm_kernels *bnl_gemm_kernels_for(bnl_isa isa) {
    switch (isa) {
#ifdef __x86_64__
    case BNL_ISA_AVX2: return &bnl_gemm_kernels__avx2;
    case BNL_ISA_AVX512: return &bnl_gemm_kernels__avx512;
#endif
#ifdef __wasm_simd128__
    case BNL_ISA_WASMSIMD: return &bnl_gemm_kernels__wasmsimd;
#endif
    default: return &bnl_gemm_kernels__scalar;
    }
}

const bnl_gemm_kernels *bnl_gemm_kernels_active(void) { return bnl_gemm_kernels_for(bnl_isa_active()); }
