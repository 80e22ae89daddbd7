// Kernel tables per ISA; NULL means "use the scalar reference".
#ifndef BNL_DISPATCH_H
#define BNL_DISPATCH_H
#include "bnlab.h"
#include "ops/batchnorm_kernels.h"
#include "ops/gemm_kernels.h"
const bnl_bn_kernels *bnl_bn_kernels_for(bnl_isa isa);
// Never NULL: the scalar reference table for BNL_ISA_SCALAR and for ISAs not compiled in.
const bnl_gemm_kernels *bnl_gemm_kernels_for(bnl_isa isa);
#endif
