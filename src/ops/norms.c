// GroupNorm, Batch Renormalization and Ghost BatchNorm over NHWC activations. Renorm and Ghost are
// BatchNorm with other per-channel constants or on slices of rows, so they call the BatchNorm
// entry points (scalar reference or SIMD, whichever is active). GroupNorm's statistics run per
// sample: the scalar ISA uses plain two-pass loops in double (the reference); the SIMD ISAs run
// BatchNorm's row kernels over one sample's rows and merge channels into groups in double.
//
// Sizes: N images, HW = H*W rows per image, C channels, G groups (Cg = C/G channels each), V images
// per virtual batch. x, y, dy, dx: (N, HW, C). Per-channel vectors: (C). GroupNorm statistics: (N, G).
#include "core/common.h"
#include "ops/dispatch.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "core/parallel.h"

static bnl_status check_args(const char *who, const void *out, const void *in, const float *gamma,
                             const float *beta, size_t rows, size_t C, const bnl_bn_config *cfg) {
    if (!cfg) return bnl_fail(BNL_ERR_ARG, "%s: config is NULL", who);
    if (!(cfg->eps > 0.0f) || !isfinite(cfg->eps))
        return bnl_fail(BNL_ERR_ARG, "%s: eps must be a positive finite number (got %g)", who, (double)cfg->eps);
    if (!out || !in) return bnl_fail(BNL_ERR_ARG, "%s: input or output pointer is NULL", who);
    if (rows == 0 || C == 0) return bnl_fail(BNL_ERR_ARG, "%s: empty tensor (rows = %zu, C = %zu)", who, rows, C);
    size_t n;
    if (!bnl_mul_ok(rows, C, &n) || !bnl_mul_ok(n, sizeof(float), &n))
        return bnl_fail(BNL_ERR_ARG, "%s: tensor size %zu*%zu overflows", who, rows, C);
    if (cfg->use_scale && !gamma) return bnl_fail(BNL_ERR_ARG, "%s: gamma is NULL but use_scale is set", who);
    if (cfg->use_bias && !beta) return bnl_fail(BNL_ERR_ARG, "%s: beta is NULL but use_bias is set", who);
    return BNL_OK;
}

// one thread per sample at most; nested inside another parallel loop: 1
static int thread_count(size_t work_items) { return bnl_threads_for(work_items, (double)work_items, 2.0); }

// ---------------------------------------------------------------------------------------------
// GroupNorm

static bnl_status check_groups(const char *who, size_t N, size_t HW, size_t C, size_t G) {
    if (N == 0 || HW == 0) return bnl_fail(BNL_ERR_ARG, "%s: empty tensor (N = %zu, HW = %zu)", who, N, HW);
    if (G == 0 || C % G != 0)
        return bnl_fail(BNL_ERR_ARG, "%s: %zu groups do not divide %zu channels (GroupNorm needs C %% G == 0)", who,
                        G, C);
    return BNL_OK;
}

// Rows per block of one sample's statistics (as BatchNorm's driver: about 64 KB of activations).
static size_t gn_block_rows(size_t C) {
    size_t R = 16384 / C;
    return R < 16 ? 16 : R > 4096 ? 4096 : R;
}

// Per-channel mean and M2 of one sample's HW rows, blocks merged with Chan's formula in double.
static void gn_channel_stats(double *cm, double *cm2, float *sc, const bnl_bn_kernels *k, const float *x, size_t HW,
                             size_t C) {
    float *sh = sc, *s1 = sc + C, *s2 = sc + 2 * C;
    size_t R = gn_block_rows(C);
    double na = 0.0;
    for (size_t c = 0; c < C; c++) cm[c] = 0.0, cm2[c] = 0.0;
    for (size_t r0 = 0; r0 < HW; r0 += R) {
        size_t rows = r0 + R <= HW ? R : HW - r0;
        k->block_stats(sh, s1, s2, x + r0 * C, rows, C);
        bnl_bn_merge_block(cm, cm2, na, sh, s1, s2, (double)rows, C);
        na += (double)rows;
    }
}

// Group statistics of sample n from the x rows xs (HW, C): mean, var (double, per group).
static void gn_ref_stats(double *gm, double *gv, const float *xs, size_t HW, size_t C, size_t G) {
    size_t Cg = C / G;
    double cnt = (double)HW * (double)Cg;
    for (size_t g = 0; g < G; g++) {
        double s = 0.0, q = 0.0;
        for (size_t r = 0; r < HW; r++)
            for (size_t j = 0; j < Cg; j++) s += xs[r * C + g * Cg + j];
        double mu = s / cnt;
        for (size_t r = 0; r < HW; r++)
            for (size_t j = 0; j < Cg; j++) {
                double d = xs[r * C + g * Cg + j] - mu;
                q += d * d;
            }
        gm[g] = mu, gv[g] = q / cnt;
    }
}

typedef struct {
    float *y;
    float *mean;
    float *invstd;
    float *var_out;
    const float *x;
    const float *gamma;
    const float *beta;
    size_t HW;
    size_t C;
    size_t G;
    size_t Cg;
    const bnl_bn_kernels *k;
    double *dbl;
    float *flt;
    const bnl_bn_config *cfg;
} gn_fwd_ctx;

// GroupNorm forward of samples [n0, n1) on thread t (per-thread scratch at t); the fields are
// bnl_groupnorm_forward's arguments, unpacked under their own names
static void gn_fwd_range(void *vc, size_t n0, size_t n1, int t) {
    const gn_fwd_ctx *c = vc;
    float *y = c->y;
    float *mean = c->mean;
    float *invstd = c->invstd;
    float *var_out = c->var_out;
    const float *x = c->x;
    const float *gamma = c->gamma;
    const float *beta = c->beta;
    size_t HW = c->HW;
    size_t C = c->C;
    size_t G = c->G;
    size_t Cg = c->Cg;
    const bnl_bn_kernels *k = c->k;
    double *dbl = c->dbl;
    float *flt = c->flt;
    const bnl_bn_config *cfg = c->cfg;
    double *gm = dbl + (size_t)t * (2 * G + 2 * C), *gv = gm + G, *cm = gv + G, *cm2 = cm + C;
    float *sc = flt + (size_t)t * 6 * C, *meanc = sc + 3 * C, *scale = meanc + C, *bc = scale + C;
    for (size_t n = n0; n < n1; n++) {
        const float *xs = x + n * HW * C;
        float *ys = y + n * HW * C;
        if (!k) {
            gn_ref_stats(gm, gv, xs, HW, C, G);
        } else {
            gn_channel_stats(cm, cm2, sc, k, xs, HW, C);
            // channels of equal count: the group mean is the channels' mean, M2 adds their spread
            for (size_t g = 0; g < G; g++) {
                double mu = 0.0, m2 = 0.0;
                for (size_t j = 0; j < Cg; j++) mu += cm[g * Cg + j];
                mu /= (double)Cg;
                for (size_t j = 0; j < Cg; j++) {
                    double d = cm[g * Cg + j] - mu;
                    m2 += cm2[g * Cg + j] + (double)HW * d * d;
                }
                double v = m2 / ((double)HW * (double)Cg);
                gm[g] = mu, gv[g] = v > 0.0 ? v : 0.0;
            }
        }
        for (size_t g = 0; g < G; g++) {
            double is = 1.0 / sqrt(gv[g] + (double)cfg->eps);
            mean[n * G + g] = (float)gm[g];
            invstd[n * G + g] = (float)is;
            if (var_out) var_out[n * G + g] = (float)gv[g];
            if (!k) {
                for (size_t r = 0; r < HW; r++)
                    for (size_t j = 0; j < Cg; j++) {
                        size_t c = g * Cg + j;
                        double gg = cfg->use_scale ? gamma[c] : 1.0, bb = cfg->use_bias ? beta[c] : 0.0;
                        double v = (xs[r * C + c] - gm[g]) * is * gg + bb;
                        ys[r * C + c] = cfg->relu && !(v > 0.0) ? 0.0f : (float)v;
                    }
            } else {
                for (size_t j = 0; j < Cg; j++) {
                    size_t c = g * Cg + j;
                    meanc[c] = (float)gm[g];
                    scale[c] = (float)((cfg->use_scale ? gamma[c] : 1.0f) * (float)is);
                    bc[c] = cfg->use_bias ? beta[c] : 0.0f;
                }
            }
        }
        if (k) k->apply(ys, xs, meanc, scale, bc, HW, C, cfg->relu, 0);
    }
}

bnl_status bnl_groupnorm_forward(float *y, float *mean, float *invstd, float *var_out, const float *x,
                                 const float *gamma, const float *beta, size_t N, size_t HW, size_t C, size_t G,
                                 const bnl_bn_config *cfg) {
    const char *who = "groupnorm forward";
    bnl_status s = check_groups(who, N, HW, C, G);
    size_t rows = 0;
    if (s == BNL_OK && !bnl_mul_ok(N, HW, &rows)) s = bnl_fail(BNL_ERR_ARG, "%s: N*HW overflows", who);
    if (s == BNL_OK) s = check_args(who, y, x, gamma, beta, rows, C, cfg);
    if (s != BNL_OK) return s;
    if (!mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: mean/invstd outputs are NULL", who);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    size_t Cg = C / G;
    int T = thread_count(N);
    // per thread: group mean/var (2G doubles), channel mean/M2 (2C doubles); 3C block scratch and
    // meanC/scale/beta (3C floats)
    double *dbl = bnl_calloc((size_t)T * (2 * G + 2 * C), sizeof(double));
    float *flt = bnl_calloc((size_t)T * 6 * C, sizeof(float));
    if (!dbl || !flt) {
        bnl_free(dbl), bnl_free(flt);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu, G = %zu)", who, C, G);
    }
    gn_fwd_ctx ctx = {y, mean, invstd, var_out, x, gamma, beta, HW, C, G, Cg, k, dbl, flt, cfg};
    bnl_parallel_for(N, T, gn_fwd_range, &ctx);
    bnl_free(dbl), bnl_free(flt);
    return BNL_OK;
}

typedef struct {
    float *dx;
    const float *dy;
    const float *x;
    const float *mean;
    const float *invstd;
    const float *gamma;
    const float *beta;
    size_t HW;
    size_t C;
    size_t G;
    size_t Cg;
    double Mg;
    const bnl_bn_kernels *k;
    double *dbl;
    float *flt;
    double *per;
    const bnl_bn_config *cfg;
} gn_bwd_ctx;

// samples [n0, n1) on thread t (per-thread scratch at t)
static void gn_bwd_range(void *vc, size_t n0, size_t n1, int t) {
    const gn_bwd_ctx *c = vc;
    float *dx = c->dx;
    const float *dy = c->dy;
    const float *x = c->x;
    const float *mean = c->mean;
    const float *invstd = c->invstd;
    const float *gamma = c->gamma;
    const float *beta = c->beta;
    size_t HW = c->HW;
    size_t C = c->C;
    size_t G = c->G;
    size_t Cg = c->Cg;
    double Mg = c->Mg;
    const bnl_bn_kernels *k = c->k;
    double *dbl = c->dbl;
    float *flt = c->flt;
    double *per = c->per;
    const bnl_bn_config *cfg = c->cfg;
    double *sg = dbl + (size_t)t * 2 * C, *sgx = sg + C;
    float *bg = flt + (size_t)t * 8 * C, *bgx = bg + C, *meanc = bgx + C, *scale = meanc + C, *bc = scale + C;
    float *a = bc + C, *b = a + C, *d = b + C;
    for (size_t n = n0; n < n1; n++) {
        const float *xs = x + n * HW * C, *gs = dy + n * HW * C;
        float *dxs = dx + n * HW * C;
        for (size_t c = 0; c < C; c++) {
            size_t g = c / Cg;
            meanc[c] = mean[n * G + g];
            scale[c] = (cfg->use_scale ? gamma[c] : 1.0f) * invstd[n * G + g];
            bc[c] = cfg->use_bias ? beta[c] : 0.0f;
        }
        // per channel: sum g and sum g*(x - mean), g = dy masked by the fused ReLU
        if (!k) {
            for (size_t c = 0; c < C; c++) sg[c] = 0.0, sgx[c] = 0.0;
            for (size_t r = 0; r < HW; r++)
                for (size_t c = 0; c < C; c++) {
                    double xc = (double)xs[r * C + c] - meanc[c], gr = gs[r * C + c];
                    double gg = cfg->use_scale ? gamma[c] : 1.0, bb = cfg->use_bias ? beta[c] : 0.0;
                    if (cfg->relu && !(xc * invstd[n * G + c / Cg] * gg + bb > 0.0)) gr = 0.0;
                    sg[c] += gr, sgx[c] += gr * xc;
                }
        } else {
            size_t R = gn_block_rows(C);
            for (size_t c = 0; c < C; c++) sg[c] = 0.0, sgx[c] = 0.0;
            for (size_t r0 = 0; r0 < HW; r0 += R) {
                size_t rr = r0 + R <= HW ? R : HW - r0;
                k->bwd_reduce(bg, bgx, gs + r0 * C, xs + r0 * C, meanc, scale, bc, rr, C, cfg->relu);
                for (size_t c = 0; c < C; c++) sg[c] += bg[c], sgx[c] += bgx[c];
            }
        }
        double *pg = per + n * 2 * C, *pb = pg + C;
        for (size_t g = 0; g < G; g++) {
            double is = invstd[n * G + g], s1 = 0.0, s2 = 0.0;   // sum(gh), sum(gh*xhat)
            for (size_t j = 0; j < Cg; j++) {
                size_t c = g * Cg + j;
                double gg = cfg->use_scale ? gamma[c] : 1.0;
                s1 += gg * sg[c], s2 += gg * sgx[c] * is;
                pg[c] = is * sgx[c], pb[c] = sg[c];
            }
            double B = -is * is * s2 / Mg, D = -is * s1 / Mg;
            if (!k) {
                for (size_t r = 0; r < HW; r++)
                    for (size_t j = 0; j < Cg; j++) {
                        size_t c = g * Cg + j;
                        double gg = cfg->use_scale ? gamma[c] : 1.0, bb = cfg->use_bias ? beta[c] : 0.0;
                        double xc = (double)xs[r * C + c] - mean[n * G + g], gr = gs[r * C + c];
                        if (cfg->relu && !(xc * is * gg + bb > 0.0)) gr = 0.0;
                        dxs[r * C + c] = (float)(gg * is * gr + B * xc + D);
                    }
            } else {
                for (size_t j = 0; j < Cg; j++) {
                    size_t c = g * Cg + j;
                    a[c] = (float)((cfg->use_scale ? gamma[c] : 1.0) * is);
                    b[c] = (float)B, d[c] = (float)D;
                }
            }
        }
        if (k) k->bwd_apply(dxs, gs, xs, meanc, a, b, d, scale, bc, HW, C, cfg->relu);
    }
}

bnl_status bnl_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                  const float *mean, const float *invstd, const float *gamma, const float *beta,
                                  size_t N, size_t HW, size_t C, size_t G, const bnl_bn_config *cfg) {
    const char *who = "groupnorm backward";
    bnl_status s = check_groups(who, N, HW, C, G);
    size_t rows = 0;
    if (s == BNL_OK && !bnl_mul_ok(N, HW, &rows)) s = bnl_fail(BNL_ERR_ARG, "%s: N*HW overflows", who);
    if (s == BNL_OK) s = check_args(who, dx, dy, gamma, beta, rows, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: saved x/mean/invstd are NULL", who);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    size_t Cg = C / G;
    double Mg = (double)HW * (double)Cg;
    int T = thread_count(N);
    // per sample: its contributions to dgamma, dbeta (2C doubles), summed in sample order after the
    // parallel part (the same bits for any thread count); per thread: 2C doubles of channel sums,
    // 2C float block sums and meanc/scale/bc/a/b/d (6C floats)
    double *per = bnl_calloc(N * 2 * C, sizeof(double));
    double *dbl = bnl_calloc((size_t)T * 2 * C, sizeof(double));
    float *flt = bnl_calloc((size_t)T * 8 * C, sizeof(float));
    if (!per || !dbl || !flt) {
        bnl_free(per), bnl_free(dbl), bnl_free(flt);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (N = %zu, C = %zu)", who, N, C);
    }
    gn_bwd_ctx ctx = {dx, dy, x, mean, invstd, gamma, beta, HW, C, G, Cg, Mg, k, dbl, flt, per, cfg};
    bnl_parallel_for(N, T, gn_bwd_range, &ctx);
    for (size_t c = 0; c < C; c++) {
        double g0 = 0.0, g1 = 0.0;
        for (size_t n = 0; n < N; n++) g0 += per[n * 2 * C + c], g1 += per[n * 2 * C + C + c];
        if (dgamma && cfg->use_scale) dgamma[c] += (float)g0;
        if (dbeta && cfg->use_bias) dbeta[c] += (float)g1;
    }
    bnl_free(per), bnl_free(dbl), bnl_free(flt);
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Batch Renormalization: BatchNorm's kernels with gamma' = gamma*r, beta' = beta + gamma*d.

static bnl_status renorm_affine(float **buf, const float *gamma, const float *beta, const float *r, const float *d,
                                size_t C, const bnl_bn_config *cfg, const char *who) {
    float *p = bnl_alloc(2 * C * sizeof(float));
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    for (size_t c = 0; c < C; c++) {
        double g = cfg->use_scale ? gamma[c] : 1.0, b = cfg->use_bias ? beta[c] : 0.0;
        p[c] = (float)(g * r[c]);
        p[C + c] = (float)(b + g * d[c]);
    }
    *buf = p;
    return BNL_OK;
}

bnl_status bnl_batchrenorm_forward_train(float *y, float *mean, float *invstd, float *var_out, float *r_out,
                                         float *d_out, float *running_mean, float *running_var,
                                         int64_t *num_batches_tracked, const float *x, const float *gamma,
                                         const float *beta, size_t M, size_t C, float r_max, float d_max,
                                         const bnl_bn_config *cfg) {
    const char *who = "batch renorm train forward";
    bnl_status s = check_args(who, y, x, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!mean || !invstd || !running_mean || !running_var)
        return bnl_fail(BNL_ERR_ARG, "%s: mean/invstd outputs or running statistics are NULL", who);
    if (!(r_max >= 1.0f) || !isfinite(r_max) || !(d_max >= 0.0f) || !isfinite(d_max))
        return bnl_fail(BNL_ERR_ARG, "%s: r_max must be >= 1 and d_max >= 0, both finite (got r_max %g, d_max %g)", who,
                        (double)r_max, (double)d_max);
    if (M == 1)
        return bnl_fail(BNL_ERR_BATCH,
                        "%s: expected more than 1 value per channel when training (N*H*W = 1, C = %zu)", who, C);
    double *dm = bnl_calloc(3 * C, sizeof(double));   // mean, var, then r and d as floats in the third
    float *rd = bnl_alloc(2 * C * sizeof(float));
    if (!dm || !rd) {
        bnl_free(dm), bnl_free(rd);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    }
    double *var = dm + C;
    float *r = rd, *d = rd + C, *aff = NULL;
    s = bnl_batchnorm_stats(dm, var, x, M, C);
    if (s == BNL_OK) {
        for (size_t c = 0; c < C; c++) {
            var[c] = var[c] / (double)M;
            double sb = sqrt(var[c] + (double)cfg->eps), srun = sqrt((double)running_var[c] + (double)cfg->eps);
            double rr = sb / srun, dd = (dm[c] - (double)running_mean[c]) / srun;
            rr = rr < 1.0 / r_max ? 1.0 / r_max : rr > r_max ? r_max : rr;
            dd = dd < -d_max ? -d_max : dd > d_max ? d_max : dd;
            r[c] = (float)rr, d[c] = (float)dd;
            mean[c] = (float)dm[c];
            invstd[c] = (float)(1.0 / sb);
            if (var_out) var_out[c] = (float)var[c];
            if (r_out) r_out[c] = r[c];
            if (d_out) d_out[c] = d[c];
        }
        s = renorm_affine(&aff, gamma, beta, r, d, C, cfg, who);
    }
    if (s == BNL_OK) {
        bnl_bn_config c2 = *cfg;
        c2.use_scale = 1, c2.use_bias = 1;
        s = bnl_batchnorm_apply(y, x, mean, invstd, aff, aff + C, M, C, &c2);
    }
    if (s == BNL_OK) s = bnl_batchnorm_update_running(running_mean, running_var, num_batches_tracked, mean, var, M, C, cfg);
    bnl_free(dm), bnl_free(rd), bnl_free(aff);
    return s;
}

bnl_status bnl_batchrenorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                          const float *mean, const float *invstd, const float *r, const float *d,
                                          const float *gamma, const float *beta, size_t M, size_t C,
                                          const bnl_bn_config *cfg) {
    const char *who = "batch renorm train backward";
    bnl_status s = check_args(who, dx, dy, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !mean || !invstd || !r || !d) return bnl_fail(BNL_ERR_ARG, "%s: saved x/mean/invstd/r/d are NULL", who);
    float *aff = NULL, *sums = bnl_calloc(2 * C, sizeof(float));   // sum(g*xhat), sum(g)
    if (!sums) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    s = renorm_affine(&aff, gamma, beta, r, d, C, cfg, who);
    if (s == BNL_OK) {
        bnl_bn_config c2 = *cfg;
        c2.use_scale = 1, c2.use_bias = 1;
        s = bnl_batchnorm_backward_train(dx, sums, sums + C, dy, x, mean, invstd, aff, aff + C, M, C, &c2);
    }
    if (s == BNL_OK)
        for (size_t c = 0; c < C; c++) {
            // y = gamma*(xhat*r + d) + beta: dgamma = r*sum(g*xhat) + d*sum(g)
            if (dgamma && cfg->use_scale) dgamma[c] += (float)((double)r[c] * sums[c] + (double)d[c] * sums[C + c]);
            if (dbeta && cfg->use_bias) dbeta[c] += sums[C + c];
        }
    bnl_free(aff), bnl_free(sums);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Ghost BatchNorm: BatchNorm on each virtual batch (V images = V*HW consecutive rows).

static bnl_status check_ghost(const char *who, size_t N, size_t HW, size_t V) {
    if (N == 0 || HW == 0) return bnl_fail(BNL_ERR_ARG, "%s: empty tensor (N = %zu, HW = %zu)", who, N, HW);
    if (V == 0 || N % V != 0)
        return bnl_fail(BNL_ERR_BATCH, "%s: virtual batch size %zu does not divide the batch of %zu images", who, V, N);
    if (V * HW < 2)
        return bnl_fail(BNL_ERR_BATCH,
                        "%s: expected more than 1 value per channel in each virtual batch when training (V*H*W = 1)", who);
    return BNL_OK;
}

bnl_status bnl_ghostbn_forward_train(float *y, float *mean, float *invstd, float *var_out, float *running_mean,
                                     float *running_var, int64_t *num_batches_tracked, const float *x,
                                     const float *gamma, const float *beta, size_t N, size_t HW, size_t C, size_t V,
                                     const bnl_bn_config *cfg) {
    const char *who = "ghost batchnorm train forward";
    bnl_status s = check_ghost(who, N, HW, V);
    if (s == BNL_OK) s = check_args(who, y, x, gamma, beta, N * HW, C, cfg);
    if (s != BNL_OK) return s;
    if (!mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: mean/invstd outputs are NULL", who);
    size_t nv = N / V, rows = V * HW;
    float *vv = bnl_alloc(nv * C * sizeof(float));
    double *avg = bnl_calloc(C, sizeof(double));
    float *am = bnl_alloc(C * sizeof(float));
    if (!vv || !avg || !am) {
        bnl_free(vv), bnl_free(avg), bnl_free(am);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    }
    for (size_t v = 0; v < nv && s == BNL_OK; v++)
        s = bnl_batchnorm_forward_train(y + v * rows * C, mean + v * C, invstd + v * C, vv + v * C, NULL, NULL, NULL,
                                        x + v * rows * C, gamma, beta, rows, C, cfg);
    if (s == BNL_OK) {
        // the running statistics move once, by the average of the virtual batches' statistics
        for (size_t c = 0; c < C; c++) {
            double sm = 0.0, sv = 0.0;
            for (size_t v = 0; v < nv; v++) sm += mean[v * C + c], sv += vv[v * C + c];
            am[c] = (float)(sm / (double)nv), avg[c] = sv / (double)nv;
        }
        if (running_mean || running_var || num_batches_tracked)
            s = bnl_batchnorm_update_running(running_mean, running_var, num_batches_tracked, am, avg, rows, C, cfg);
        if (var_out) memcpy(var_out, vv, nv * C * sizeof(float));
    }
    bnl_free(vv), bnl_free(avg), bnl_free(am);
    return s;
}

bnl_status bnl_ghostbn_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                      const float *mean, const float *invstd, const float *gamma, const float *beta,
                                      size_t N, size_t HW, size_t C, size_t V, const bnl_bn_config *cfg) {
    const char *who = "ghost batchnorm train backward";
    bnl_status s = check_ghost(who, N, HW, V);
    if (s == BNL_OK) s = check_args(who, dx, dy, gamma, beta, N * HW, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: saved x/mean/invstd are NULL", who);
    size_t nv = N / V, rows = V * HW;
    for (size_t v = 0; v < nv && s == BNL_OK; v++)
        s = bnl_batchnorm_backward_train(dx + v * rows * C, dgamma, dbeta, dy + v * rows * C, x + v * rows * C,
                                         mean + v * C, invstd + v * C, gamma, beta, rows, C, cfg);
    return s;
}
