// BatchNorm over NHWC activations: the scalar reference (always compiled, the judge of every SIMD
// variant) and the driver that runs an ISA's row kernels over blocks of rows, across threads.
//
// Sizes: M = N*H*W rows, C channels. x, y, dy, dx: (M, C). Per-channel vectors: (C).
#include "core/common.h"
#include "core/parallel.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

bnl_bn_config bnl_bn_config_default(void) {
    bnl_bn_config c;
    c.eps = 1e-5f;
    c.momentum = 0.9f;
    c.cumulative = 0;
    c.unbiased = 0;
    c.use_scale = 1;
    c.use_bias = 1;
    c.relu = 0;
    return c;
}

static bnl_status check_config(const bnl_bn_config *cfg, const char *who) {
    if (!cfg) return bnl_fail(BNL_ERR_ARG, "%s: config is NULL", who);
    if (!(cfg->eps > 0.0f) || !isfinite(cfg->eps))
        return bnl_fail(BNL_ERR_ARG, "%s: eps must be a positive finite number (got %g)", who, (double)cfg->eps);
    if (!(cfg->momentum >= 0.0f && cfg->momentum <= 1.0f))
        return bnl_fail(BNL_ERR_ARG, "%s: momentum must be in [0, 1] (got %g)", who, (double)cfg->momentum);
    return BNL_OK;
}

// Running statistics, in double as PyTorch's CPU kernel does. Flax/blog convention:
// running = momentum*running + (1-momentum)*batch; cumulative: the average of all batches so far.
static void update_running(float *running_mean, float *running_var, int64_t *num_batches_tracked,
                           const float *mean, const double *var, size_t M, size_t C,
                           const bnl_bn_config *cfg) {
    int64_t tracked = num_batches_tracked ? *num_batches_tracked + 1 : 1;
    if (num_batches_tracked) *num_batches_tracked = tracked;
    double f = cfg->cumulative ? 1.0 / (double)tracked : 1.0 - (double)cfg->momentum;
    double vscale = cfg->unbiased ? (double)M / (double)(M - 1) : 1.0;
    for (size_t c = 0; c < C; c++) {
        if (running_mean) running_mean[c] = (float)((1.0 - f) * running_mean[c] + f * mean[c]);
        if (running_var) running_var[c] = (float)((1.0 - f) * running_var[c] + f * var[c] * vscale);
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar reference: plain two-pass statistics in double, every formula written out.

static void ref_forward_train(float *y, float *mean, float *invstd, double *var, const float *x,
                              const float *gamma, const float *beta, size_t M, size_t C,
                              const bnl_bn_config *cfg) {
    for (size_t c = 0; c < C; c++) {
        double s = 0.0;
        for (size_t r = 0; r < M; r++) s += x[r * C + c];
        double mu = s / (double)M;
        double s2 = 0.0;
        for (size_t r = 0; r < M; r++) {
            double d = x[r * C + c] - mu;
            s2 += d * d;
        }
        var[c] = s2 / (double)M;
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(var[c] + (double)cfg->eps));
        double g = cfg->use_scale ? gamma[c] : 1.0, b = cfg->use_bias ? beta[c] : 0.0;
        double is = 1.0 / sqrt(var[c] + (double)cfg->eps);
        for (size_t r = 0; r < M; r++) {
            double t = (x[r * C + c] - mu) * is * g + b;
            if (cfg->relu && !(t > 0.0)) t = 0.0;
            y[r * C + c] = (float)t;
        }
    }
}

// Shared by train and eval backward. With batch statistics (train): the mean and variance depend
// on x, giving the two correction terms; with running statistics (eval) they are constants.
static void ref_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                         const float *gamma, const float *beta, const double *mean,
                         const double *invstd, size_t M, size_t C, int train,
                         const bnl_bn_config *cfg) {
    for (size_t c = 0; c < C; c++) {
        double g = cfg->use_scale ? gamma[c] : 1.0, b = cfg->use_bias ? beta[c] : 0.0;
        double is = invstd[c], mu = mean[c];
        double sum_g = 0.0, sum_gxhat = 0.0;
        for (size_t r = 0; r < M; r++) {
            double xhat = (x[r * C + c] - mu) * is;
            double gr = dy[r * C + c];
            if (cfg->relu && !(xhat * g + b > 0.0)) gr = 0.0;
            sum_g += gr;
            sum_gxhat += gr * xhat;
        }
        for (size_t r = 0; r < M; r++) {
            double xhat = (x[r * C + c] - mu) * is;
            double gr = dy[r * C + c];
            if (cfg->relu && !(xhat * g + b > 0.0)) gr = 0.0;
            double d = train ? g * is / (double)M * ((double)M * gr - sum_g - xhat * sum_gxhat) : g * is * gr;
            dx[r * C + c] = (float)d;
        }
        if (dgamma && cfg->use_scale) dgamma[c] += (float)sum_gxhat;
        if (dbeta && cfg->use_bias) dbeta[c] += (float)sum_g;
    }
}

// ---------------------------------------------------------------------------------------------
// SIMD driver

// Rows per block: about 64 KB of activations, so a block's second pass hits L2.
static size_t block_rows(size_t C) {
    size_t R = 16384 / C;
    if (R < 16) R = 16;
    if (R > 4096) R = 4096;
    return R;
}

static int thread_count(size_t work_items) { return bnl_threads_for(work_items, (double)work_items, 2.0); }

// The reductions run over a fixed number of chunks of blocks (the shape decides, not the thread
// count), each reduced in order by one thread, then merged in chunk order: the same bits on any
// number of threads, in the native build and the threaded wasm build alike.
#define BN_CHUNKS 16

typedef struct {
    const bnl_bn_kernels *k;
    const float *x, *dy, *mean, *scale, *beta;
    size_t M, C, R, nblocks, nch;
    int relu;
    double *acc, *cnt;     // per chunk: 2C doubles (mean, m2 / sum_g, sum_gxc), and a count
    float *scratch;        // per thread: 3C floats
} bn_reduce_t;

static void stats_chunks(void *vc, size_t q0, size_t q1, int tid) {
    const bn_reduce_t *r = vc;
    size_t C = r->C, R = r->R;
    float *sh = r->scratch + (size_t)tid * 3 * C, *s1 = sh + C, *s2 = s1 + C;
    for (size_t q = q0; q < q1; q++) {
        size_t b0, b1;
        bnl_split(r->nblocks, (int)q, (int)r->nch, &b0, &b1);
        double *am = r->acc + q * 2 * C, *a2 = am + C;
        double na = 0.0;
        for (size_t b = b0; b < b1; b++) {
            size_t r0 = b * R, rows = r0 + R <= r->M ? R : r->M - r0;
            r->k->block_stats(sh, s1, s2, r->x + r0 * C, rows, C);
            bnl_bn_merge_block(am, a2, na, sh, s1, s2, (double)rows, C);
            na += (double)rows;
        }
        r->cnt[q] = na;
    }
}

static bnl_status reduce_alloc(bn_reduce_t *r, const bnl_bn_kernels *k, size_t M, size_t C, int T) {
    memset(r, 0, sizeof *r);
    r->k = k, r->M = M, r->C = C, r->R = block_rows(C), r->nblocks = (M + r->R - 1) / r->R;
    r->nch = r->nblocks < BN_CHUNKS ? r->nblocks : BN_CHUNKS;
    r->acc = bnl_calloc(r->nch * 2 * C, sizeof(double));
    r->cnt = bnl_calloc(r->nch, sizeof(double));
    r->scratch = bnl_calloc((size_t)T * 3 * C, sizeof(float));
    if (r->acc && r->cnt && r->scratch) return BNL_OK;
    bnl_free(r->acc), bnl_free(r->cnt), bnl_free(r->scratch);
    return BNL_ERR_NOMEM;
}

static void reduce_free(bn_reduce_t *r) { bnl_free(r->acc), bnl_free(r->cnt), bnl_free(r->scratch); }

// Per-channel batch mean (float) and biased variance (double) by blocks merged with Chan's formula.
static bnl_status simd_stats(double *mean, double *var, const bnl_bn_kernels *k, const float *x,
                             size_t M, size_t C) {
    bn_reduce_t r;
    size_t nblocks = (M + block_rows(C) - 1) / block_rows(C);
    int T = thread_count(nblocks < BN_CHUNKS ? nblocks : BN_CHUNKS);
    if (reduce_alloc(&r, k, M, C, T) != BNL_OK)
        return bnl_fail(BNL_ERR_NOMEM, "batchnorm: out of memory for statistics (C = %zu)", C);
    r.x = x;
    bnl_parallel_for(r.nch, T, stats_chunks, &r);
    // merge the chunks' partial results in chunk order
    double *acc = r.acc, na = r.cnt[0];
    for (size_t q = 1; q < r.nch; q++) {
        double nb = r.cnt[q], n = na + nb;
        if (nb == 0.0) continue;
        double *bm = acc + q * 2 * C, *b2 = bm + C;
        for (size_t c = 0; c < C; c++) {
            double delta = bm[c] - acc[c];
            acc[c] += delta * nb / n;
            acc[C + c] += b2[c] + delta * delta * na * nb / n;
        }
        na = n;
    }
    for (size_t c = 0; c < C; c++) {
        mean[c] = acc[c];
        double v = acc[C + c] / (double)M;
        var[c] = v > 0.0 ? v : 0.0;
    }
    reduce_free(&r);
    return BNL_OK;
}

typedef struct {
    const bnl_bn_kernels *k;
    float *y;
    const float *x, *dy, *mean, *scale, *beta, *a, *b, *d;
    size_t C;
    int relu, stream;
} bn_apply_t;

static void apply_rows(void *vc, size_t r0, size_t r1, int tid) {
    const bn_apply_t *p = vc;
    p->k->apply(p->y + r0 * p->C, p->x + r0 * p->C, p->mean, p->scale, p->beta, r1 - r0, p->C, p->relu, p->stream);
}

static void simd_apply(const bnl_bn_kernels *k, float *y, const float *x, const float *mean,
                       const float *scale, const float *beta, size_t M, size_t C, int relu) {
    // Write around the cache when the output is far larger than the caches and is not the input.
    int stream = y != x && M * C * sizeof(float) >= ((size_t)8 << 20);
    bn_apply_t p = {k, y, x, NULL, mean, scale, beta, NULL, NULL, NULL, C, relu, stream};
    bnl_parallel_for(M, thread_count(M / 64 + 1), apply_rows, &p);
}

static void bwd_chunks(void *vc, size_t q0, size_t q1, int tid) {
    const bn_reduce_t *r = vc;
    size_t C = r->C, R = r->R;
    float *sg = r->scratch + (size_t)tid * 3 * C, *sgx = sg + C;
    for (size_t q = q0; q < q1; q++) {
        size_t b0, b1;
        bnl_split(r->nblocks, (int)q, (int)r->nch, &b0, &b1);
        double *ag = r->acc + q * 2 * C, *agx = ag + C;
        for (size_t b = b0; b < b1; b++) {
            size_t r0 = b * R, rows = r0 + R <= r->M ? R : r->M - r0;
            r->k->bwd_reduce(sg, sgx, r->dy + r0 * C, r->x + r0 * C, r->mean, r->scale, r->beta, rows, C, r->relu);
            for (size_t c = 0; c < C; c++) ag[c] += sg[c], agx[c] += sgx[c];
        }
    }
}

// Backward reduction: per-channel sum(g) and sum(g*(x-mean)), blocked, merged in double.
static bnl_status simd_bwd_reduce(double *sum_g, double *sum_gxc, const bnl_bn_kernels *k,
                                  const float *dy, const float *x, const float *mean,
                                  const float *scale, const float *beta, size_t M, size_t C, int relu) {
    bn_reduce_t r;
    size_t nblocks = (M + block_rows(C) - 1) / block_rows(C);
    int T = thread_count(nblocks < BN_CHUNKS ? nblocks : BN_CHUNKS);
    if (reduce_alloc(&r, k, M, C, T) != BNL_OK)
        return bnl_fail(BNL_ERR_NOMEM, "batchnorm: out of memory for backward (C = %zu)", C);
    r.dy = dy, r.x = x, r.mean = mean, r.scale = scale, r.beta = beta, r.relu = relu;
    bnl_parallel_for(r.nch, T, bwd_chunks, &r);
    for (size_t c = 0; c < C; c++) {
        double a = 0.0, b = 0.0;
        for (size_t q = 0; q < r.nch; q++) a += r.acc[q * 2 * C + c], b += r.acc[q * 2 * C + C + c];
        sum_g[c] = a, sum_gxc[c] = b;
    }
    reduce_free(&r);
    return BNL_OK;
}

static void bwd_apply_rows(void *vc, size_t r0, size_t r1, int tid) {
    const bn_apply_t *p = vc;
    size_t C = p->C;
    p->k->bwd_apply(p->y + r0 * C, p->dy + r0 * C, p->x + r0 * C, p->mean, p->a, p->b, p->d, p->scale, p->beta,
                    r1 - r0, C, p->relu);
}

static void simd_bwd_apply(const bnl_bn_kernels *k, float *dx, const float *dy, const float *x,
                           const float *mean, const float *a, const float *b, const float *d,
                           const float *scale, const float *beta, size_t M, size_t C, int relu) {
    bn_apply_t p = {k, dx, x, dy, mean, scale, beta, a, b, d, C, relu, 0};
    bnl_parallel_for(M, thread_count(M / 64 + 1), bwd_apply_rows, &p);
}

// ---------------------------------------------------------------------------------------------
// Public entry points

static bnl_status check_common(const char *who, const void *out, const void *in, const float *gamma,
                               const float *beta, size_t M, size_t C, const bnl_bn_config *cfg) {
    bnl_status s = check_config(cfg, who);
    if (s != BNL_OK) return s;
    if (!out || !in) return bnl_fail(BNL_ERR_ARG, "%s: input or output pointer is NULL", who);
    if (M == 0 || C == 0) return bnl_fail(BNL_ERR_ARG, "%s: empty tensor (M = %zu, C = %zu)", who, M, C);
    size_t n;
    if (!bnl_mul_ok(M, C, &n) || !bnl_mul_ok(n, sizeof(float), &n))
        return bnl_fail(BNL_ERR_ARG, "%s: tensor size M*C = %zu*%zu overflows", who, M, C);
    if (cfg->use_scale && !gamma) return bnl_fail(BNL_ERR_ARG, "%s: gamma is NULL but use_scale is set", who);
    if (cfg->use_bias && !beta) return bnl_fail(BNL_ERR_ARG, "%s: beta is NULL but use_bias is set", who);
    return BNL_OK;
}

// Per-channel work arrays for the SIMD path: scale = gamma*invstd and an effective beta.
typedef struct {
    float *buf, *scale, *beta, *a, *b, *d, *mean;
    double *dbl;
} bn_work;

static bnl_status work_alloc(bn_work *w, size_t C, const char *who) {
    memset(w, 0, sizeof *w);
    w->buf = bnl_calloc(6 * C, sizeof(float));
    w->dbl = bnl_calloc(2 * C, sizeof(double));
    if (!w->buf || !w->dbl) {
        bnl_free(w->buf), bnl_free(w->dbl);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    }
    w->scale = w->buf, w->beta = w->buf + C, w->a = w->buf + 2 * C, w->b = w->buf + 3 * C;
    w->d = w->buf + 4 * C, w->mean = w->buf + 5 * C;
    return BNL_OK;
}

static void work_free(bn_work *w) { bnl_free(w->buf), bnl_free(w->dbl); }

static void fill_scale(bn_work *w, const float *gamma, const float *beta, const float *invstd,
                       size_t C, const bnl_bn_config *cfg) {
    for (size_t c = 0; c < C; c++) {
        w->scale[c] = (cfg->use_scale ? gamma[c] : 1.0f) * invstd[c];
        w->beta[c] = cfg->use_bias ? beta[c] : 0.0f;
    }
}

// defer: leave y to a later bnl_batchnorm_apply (or bnl_bn_add_relu_forward) where that gives the
// same bits, i.e. where SIMD kernels run; *applied says whether y was written.
static bnl_status forward_train(const char *who, float *y, int *applied, int defer, float *mean, float *invstd,
                                float *var_out, float *running_mean, float *running_var,
                                int64_t *num_batches_tracked, const float *x, const float *gamma, const float *beta,
                                size_t M, size_t C, const bnl_bn_config *cfg) {
    bnl_status s = check_common(who, y, x, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: mean/invstd outputs are NULL", who);
    if (M == 1)
        return bnl_fail(BNL_ERR_BATCH,
                        "%s: expected more than 1 value per channel when training (N*H*W = 1, C = %zu)", who, C);
    bn_work w;
    if ((s = work_alloc(&w, C, who)) != BNL_OK) return s;
    double *var = w.dbl;
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    *applied = 1;
    if (!k) {
        ref_forward_train(y, mean, invstd, var, x, gamma, beta, M, C, cfg);
    } else {
        double *dmean = (double *)(void *)w.buf;   // 6*C floats hold 3*C doubles; scale/beta are filled after
        if ((s = simd_stats(dmean, var, k, x, M, C)) != BNL_OK) {
            work_free(&w);
            return s;
        }
        for (size_t c = 0; c < C; c++) mean[c] = (float)dmean[c];
        for (size_t c = 0; c < C; c++) invstd[c] = (float)(1.0 / sqrt(var[c] + (double)cfg->eps));
        if (defer) {
            *applied = 0;
        } else {
            fill_scale(&w, gamma, beta, invstd, C, cfg);
            simd_apply(k, y, x, mean, w.scale, w.beta, M, C, cfg->relu);
        }
    }
    if (var_out)
        for (size_t c = 0; c < C; c++) var_out[c] = (float)var[c];
    update_running(running_mean, running_var, num_batches_tracked, mean, var, M, C, cfg);
    work_free(&w);
    return BNL_OK;
}

bnl_status bnl_batchnorm_forward_train(float *y, float *mean, float *invstd, float *var_out,
                                       float *running_mean, float *running_var,
                                       int64_t *num_batches_tracked, const float *x,
                                       const float *gamma, const float *beta, size_t M, size_t C,
                                       const bnl_bn_config *cfg) {
    int applied;
    return forward_train("batchnorm train forward", y, &applied, 0, mean, invstd, var_out, running_mean, running_var,
                         num_batches_tracked, x, gamma, beta, M, C, cfg);
}

bnl_status bnl_batchnorm_forward_train_defer(float *y, int *applied, float *mean, float *invstd, float *var_out,
                                             float *running_mean, float *running_var, int64_t *num_batches_tracked,
                                             const float *x, const float *gamma, const float *beta, size_t M,
                                             size_t C, const bnl_bn_config *cfg) {
    if (!applied) return bnl_fail(BNL_ERR_ARG, "batchnorm train forward: applied is NULL");
    return forward_train("batchnorm train forward", y, applied, 1, mean, invstd, var_out, running_mean, running_var,
                         num_batches_tracked, x, gamma, beta, M, C, cfg);
}

// y = (x - mean)*invstd*gamma + beta (+ReLU) with constant per-channel statistics: the eval
// forward (running statistics) and the affine layer (mean 0, invstd 1) share it.
static bnl_status const_forward(const char *who, float *y, const float *x, const float *gamma, const float *beta,
                                const float *mean, const float *invstd, size_t M, size_t C,
                                const bnl_bn_config *cfg) {
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    if (!k) {
        for (size_t c = 0; c < C; c++) {
            double is = invstd[c], mu = mean[c];
            double g = cfg->use_scale ? gamma[c] : 1.0, b = cfg->use_bias ? beta[c] : 0.0;
            for (size_t r = 0; r < M; r++) {
                double t = ((double)x[r * C + c] - mu) * is * g + b;
                if (cfg->relu && !(t > 0.0)) t = 0.0;
                y[r * C + c] = (float)t;
            }
        }
        return BNL_OK;
    }
    bn_work w;
    bnl_status s = work_alloc(&w, C, who);
    if (s != BNL_OK) return s;
    fill_scale(&w, gamma, beta, invstd, C, cfg);
    simd_apply(k, y, x, mean, w.scale, w.beta, M, C, cfg->relu);
    work_free(&w);
    return BNL_OK;
}

bnl_status bnl_batchnorm_forward_eval(float *y, const float *x, const float *gamma,
                                      const float *beta, const float *running_mean,
                                      const float *running_var, size_t M, size_t C,
                                      const bnl_bn_config *cfg) {
    const char *who = "batchnorm eval forward";
    bnl_status s = check_common(who, y, x, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!running_mean || !running_var) return bnl_fail(BNL_ERR_ARG, "%s: running statistics are NULL", who);
    float *is = bnl_alloc(C * sizeof(float));
    if (!is) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    for (size_t c = 0; c < C; c++) is[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)cfg->eps));
    s = const_forward(who, y, x, gamma, beta, running_mean, is, M, C, cfg);
    bnl_free(is);
    return s;
}

// The backward shared by train mode (train = 1: mean and invstd are the batch's, so they depend on
// x and add two correction terms) and constant statistics (train = 0: eval mode, the affine layer):
//   dgamma += invstd*sum(g*(x-mean)), dbeta += sum(g), dx = A*g + B*(x-mean) + D per channel with
//   A = gamma*invstd and, in train mode only, B = -A*invstd^2*sum(g*(x-mean))/M, D = -A*sum(g)/M.
static bnl_status backward_with(const char *who, float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *invstd, const float *gamma,
                                const float *beta, size_t M, size_t C, int train, const bnl_bn_config *cfg) {
    bn_work w;
    bnl_status s = work_alloc(&w, C, who);
    if (s != BNL_OK) return s;
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    if (!k) {
        for (size_t c = 0; c < C; c++) w.dbl[c] = mean[c], w.dbl[C + c] = invstd[c];
        ref_backward(dx, dgamma, dbeta, dy, x, gamma, beta, w.dbl, w.dbl + C, M, C, train, cfg);
        work_free(&w);
        return BNL_OK;
    }
    fill_scale(&w, gamma, beta, invstd, C, cfg);
    double *sum_g = w.dbl, *sum_gxc = w.dbl + C;
    if ((s = simd_bwd_reduce(sum_g, sum_gxc, k, dy, x, mean, w.scale, w.beta, M, C, cfg->relu)) != BNL_OK) {
        work_free(&w);
        return s;
    }
    for (size_t c = 0; c < C; c++) {
        double A = w.scale[c], is = invstd[c];
        w.a[c] = (float)A;
        w.b[c] = train ? (float)(-A * is * is * sum_gxc[c] / (double)M) : 0.0f;
        w.d[c] = train ? (float)(-A * sum_g[c] / (double)M) : 0.0f;
        if (dgamma && cfg->use_scale) dgamma[c] += (float)(is * sum_gxc[c]);
        if (dbeta && cfg->use_bias) dbeta[c] += (float)sum_g[c];
    }
    simd_bwd_apply(k, dx, dy, x, mean, w.a, w.b, w.d, w.scale, w.beta, M, C, cfg->relu);
    work_free(&w);
    return BNL_OK;
}

bnl_status bnl_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                        const float *x, const float *mean, const float *invstd,
                                        const float *gamma, const float *beta, size_t M, size_t C,
                                        const bnl_bn_config *cfg) {
    const char *who = "batchnorm train backward";
    bnl_status s = check_common(who, dx, dy, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: saved x/mean/invstd are NULL", who);
    return backward_with(who, dx, dgamma, dbeta, dy, x, mean, invstd, gamma, beta, M, C, 1, cfg);
}

bnl_status bnl_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy,
                                       const float *x, const float *gamma, const float *beta,
                                       const float *running_mean, const float *running_var,
                                       size_t M, size_t C, const bnl_bn_config *cfg) {
    const char *who = "batchnorm eval backward";
    bnl_status s = check_common(who, dx, dy, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !running_mean || !running_var)
        return bnl_fail(BNL_ERR_ARG, "%s: x or running statistics are NULL", who);
    float *is = bnl_alloc(C * sizeof(float));
    if (!is) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    for (size_t c = 0; c < C; c++) is[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)cfg->eps));
    s = backward_with(who, dx, dgamma, dbeta, dy, x, running_mean, is, gamma, beta, M, C, 0, cfg);
    bnl_free(is);
    return s;
}

// ---------------------------------------------------------------------------------------------
// The per-channel affine layer (no normalization): mean 0 and invstd 1 make (x - 0)*1*gamma + beta
// exactly x*gamma + beta, so the same kernels serve.

static bnl_status affine_consts(float **zeros_ones, size_t C, const char *who) {
    float *p = bnl_alloc(2 * C * sizeof(float));
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory (C = %zu)", who, C);
    for (size_t c = 0; c < C; c++) p[c] = 0.0f, p[C + c] = 1.0f;
    *zeros_ones = p;
    return BNL_OK;
}

bnl_status bnl_channel_affine_forward(float *y, const float *x, const float *gamma, const float *beta, size_t M,
                                      size_t C, const bnl_bn_config *cfg) {
    const char *who = "affine forward";
    bnl_status s = check_common(who, y, x, gamma, beta, M, C, cfg);
    float *zo = NULL;
    if (s == BNL_OK) s = affine_consts(&zo, C, who);
    if (s == BNL_OK) s = const_forward(who, y, x, gamma, beta, zo, zo + C, M, C, cfg);
    bnl_free(zo);
    return s;
}

bnl_status bnl_channel_affine_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                       const float *gamma, const float *beta, size_t M, size_t C,
                                       const bnl_bn_config *cfg) {
    const char *who = "affine backward";
    bnl_status s = check_common(who, dx, dy, gamma, beta, M, C, cfg);
    if (s == BNL_OK && !x) s = bnl_fail(BNL_ERR_ARG, "%s: x is NULL", who);
    float *zo = NULL;
    if (s == BNL_OK) s = affine_consts(&zo, C, who);
    if (s == BNL_OK) s = backward_with(who, dx, dgamma, dbeta, dy, x, zo, zo + C, gamma, beta, M, C, 0, cfg);
    bnl_free(zo);
    return s;
}

// ---------------------------------------------------------------------------------------------
// The passes one by one (synchronized BatchNorm)

bnl_status bnl_batchnorm_stats(double *mean, double *m2, const float *x, size_t M, size_t C) {
    if (!mean || !m2 || !x) return bnl_fail(BNL_ERR_ARG, "batchnorm stats: NULL argument");
    if (M == 0 || C == 0) return bnl_fail(BNL_ERR_ARG, "batchnorm stats: empty tensor (M = %zu, C = %zu)", M, C);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    if (k) {
        bnl_status s = simd_stats(mean, m2, k, x, M, C);
        if (s != BNL_OK) return s;
        for (size_t c = 0; c < C; c++) m2[c] *= (double)M;
        return BNL_OK;
    }
    for (size_t c = 0; c < C; c++) {
        double s = 0.0, q = 0.0;
        for (size_t r = 0; r < M; r++) s += x[r * C + c];
        double mu = s / (double)M;
        for (size_t r = 0; r < M; r++) q += (x[r * C + c] - mu) * (x[r * C + c] - mu);
        mean[c] = mu, m2[c] = q;
    }
    return BNL_OK;
}

// bnl_batchnorm_apply's scalar arithmetic for one value of channel c (in double, rounded once).
static inline float ref_apply_one(float x, const float *mean, const float *invstd, const float *gamma,
                                  const float *beta, size_t c, const bnl_bn_config *cfg) {
    double t = ((double)x - mean[c]) * invstd[c] * (cfg->use_scale ? gamma[c] : 1.0) + (cfg->use_bias ? beta[c] : 0.0);
    return cfg->relu && !(t > 0.0) ? 0.0f : (float)t;
}

bnl_status bnl_batchnorm_apply(float *y, const float *x, const float *mean, const float *invstd,
                               const float *gamma, const float *beta, size_t M, size_t C,
                               const bnl_bn_config *cfg) {
    const char *who = "batchnorm apply";
    bnl_status s = check_common(who, y, x, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: mean/invstd are NULL", who);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    bn_work w;
    if ((s = work_alloc(&w, C, who)) != BNL_OK) return s;
    fill_scale(&w, gamma, beta, invstd, C, cfg);
    if (k) {
        simd_apply(k, y, x, mean, w.scale, w.beta, M, C, cfg->relu);
    } else {
        for (size_t r = 0; r < M; r++)
            for (size_t c = 0; c < C; c++)
                y[r * C + c] = ref_apply_one(x[r * C + c], mean, invstd, gamma, beta, c, cfg);
    }
    work_free(&w);
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// The residual block's output: BatchNorm apply (+ the shortcut's) + add + ReLU in one pass

typedef struct {
    const bnl_bn_kernels *k;
    float *y;
    const bnl_bn_side *a, *s;
    const float *sc[2], *be[2];   // per side: gamma*invstd and the effective beta (SIMD path)
    size_t C;
    int stream;
} bn_add_relu_t;

static void add_relu_rows(void *vc, size_t r0, size_t r1, int tid) {
    const bn_add_relu_t *p = vc;
    const bnl_bn_side *a = p->a, *s = p->s;
    const size_t C = p->C;
    float *y = p->y + r0 * C;
    const float *xa = a->x + r0 * C, *xs = s->x + r0 * C;
    if (p->k) {
        p->k->apply_add_relu(y, xa, a->mean, p->sc[0], p->be[0], a->cfg->relu, xs, s->mean, p->sc[1], p->be[1],
                             s->mean ? s->cfg->relu : 0, r1 - r0, C, p->stream);
        return;
    }
    for (size_t i = 0; i < (r1 - r0) * C; i += C)   // bnl_batchnorm_apply's scalar path, then the add's
        for (size_t c = 0; c < C; c++) {
            float u = s->mean ? ref_apply_one(xs[i + c], s->mean, s->invstd, s->gamma, s->beta, c, s->cfg) : xs[i + c];
            float v = ref_apply_one(xa[i + c], a->mean, a->invstd, a->gamma, a->beta, c, a->cfg) + u;
            y[i + c] = v < 0.0f ? 0.0f : v;
        }
}

static bnl_status check_side(const char *who, const bnl_bn_side *b, size_t M, size_t C, float *y) {
    if (!b->mean) return b->x ? BNL_OK : bnl_fail(BNL_ERR_ARG, "%s: the shortcut is NULL", who);
    bnl_status s = check_common(who, y, b->x, b->gamma, b->beta, M, C, b->cfg);
    if (s == BNL_OK && !b->invstd) s = bnl_fail(BNL_ERR_ARG, "%s: invstd is NULL", who);
    return s;
}

bnl_status bnl_bn_add_relu_forward(float *y, const bnl_bn_side *a, const bnl_bn_side *s, size_t M, size_t C) {
    const char *who = "batchnorm add relu";
    if (!y || !a || !s) return bnl_fail(BNL_ERR_ARG, "%s: NULL argument", who);
    if (!a->mean) return bnl_fail(BNL_ERR_ARG, "%s: the first side needs its statistics (mean is NULL)", who);
    bnl_status st = check_side(who, a, M, C, y);
    if (st == BNL_OK) st = check_side(who, s, M, C, y);
    if (st != BNL_OK) return st;
    bn_work w[2];
    if ((st = work_alloc(&w[0], C, who)) != BNL_OK) return st;
    if ((st = work_alloc(&w[1], C, who)) != BNL_OK) {
        work_free(&w[0]);
        return st;
    }
    fill_scale(&w[0], a->gamma, a->beta, a->invstd, C, a->cfg);
    if (s->mean) fill_scale(&w[1], s->gamma, s->beta, s->invstd, C, s->cfg);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    // streaming stores as simd_apply's: a large output that is neither input
    int stream = y != a->x && y != s->x && M * C * sizeof(float) >= ((size_t)8 << 20);
    bn_add_relu_t p = {k, y, a, s, {w[0].scale, w[1].scale}, {w[0].beta, w[1].beta}, C, stream};
    bnl_parallel_for(M, thread_count(M / 64 + 1), add_relu_rows, &p);
    work_free(&w[0]), work_free(&w[1]);
    return BNL_OK;
}

bnl_status bnl_batchnorm_update_running(float *running_mean, float *running_var,
                                        int64_t *num_batches_tracked, const float *mean,
                                        const double *var, size_t M_total, size_t C,
                                        const bnl_bn_config *cfg) {
    bnl_status s = check_config(cfg, "batchnorm running update");
    if (s != BNL_OK) return s;
    if (!mean || !var) return bnl_fail(BNL_ERR_ARG, "batchnorm running update: NULL statistics");
    if (M_total < 2)
        return bnl_fail(BNL_ERR_BATCH, "batchnorm: expected more than 1 value per channel when training (N*H*W = %zu)",
                        M_total);
    update_running(running_mean, running_var, num_batches_tracked, mean, var, M_total, C, cfg);
    return BNL_OK;
}

bnl_status bnl_batchnorm_backward_reduce(double *sum_g, double *sum_gxc, const float *dy,
                                         const float *x, const float *mean, const float *invstd,
                                         const float *gamma, const float *beta, size_t M, size_t C,
                                         const bnl_bn_config *cfg) {
    const char *who = "batchnorm backward reduce";
    bnl_status s = check_common(who, sum_g, dy, gamma, beta, M, C, cfg);
    if (s != BNL_OK) return s;
    if (!sum_gxc || !x || !mean || !invstd) return bnl_fail(BNL_ERR_ARG, "%s: NULL argument", who);
    bn_work w;
    if ((s = work_alloc(&w, C, who)) != BNL_OK) return s;
    fill_scale(&w, gamma, beta, invstd, C, cfg);
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    if (k) {
        s = simd_bwd_reduce(sum_g, sum_gxc, k, dy, x, mean, w.scale, w.beta, M, C, cfg->relu);
    } else {
        for (size_t c = 0; c < C; c++) {
            double g0 = 0.0, g1 = 0.0, sc = (double)(cfg->use_scale ? gamma[c] : 1.0) * invstd[c];
            double b = cfg->use_bias ? beta[c] : 0.0;
            for (size_t r = 0; r < M; r++) {
                double xc = (double)x[r * C + c] - mean[c], g = dy[r * C + c];
                if (cfg->relu && !(xc * sc + b > 0.0)) g = 0.0;
                g0 += g, g1 += g * xc;
            }
            sum_g[c] = g0, sum_gxc[c] = g1;
        }
    }
    work_free(&w);
    return s;
}

bnl_status bnl_batchnorm_backward_apply(float *dx, const float *dy, const float *x, const float *mean,
                                        const float *invstd, const float *gamma, const float *beta,
                                        const double *sum_g, const double *sum_gxc, size_t M_local,
                                        size_t M_total, size_t C, const bnl_bn_config *cfg) {
    const char *who = "batchnorm backward apply";
    bnl_status s = check_common(who, dx, dy, gamma, beta, M_local, C, cfg);
    if (s != BNL_OK) return s;
    if (!x || !mean || !invstd || !sum_g || !sum_gxc || M_total < M_local)
        return bnl_fail(BNL_ERR_ARG, "%s: NULL argument or M_total < M_local", who);
    bn_work w;
    if ((s = work_alloc(&w, C, who)) != BNL_OK) return s;
    fill_scale(&w, gamma, beta, invstd, C, cfg);
    for (size_t c = 0; c < C; c++) {
        double A = w.scale[c], is = invstd[c];
        w.a[c] = (float)A;
        w.b[c] = (float)(-A * is * is * sum_gxc[c] / (double)M_total);
        w.d[c] = (float)(-A * sum_g[c] / (double)M_total);
    }
    const bnl_bn_kernels *k = bnl_bn_kernels_for(bnl_isa_active());
    if (k) {
        simd_bwd_apply(k, dx, dy, x, mean, w.a, w.b, w.d, w.scale, w.beta, M_local, C, cfg->relu);
    } else {
        for (size_t r = 0; r < M_local; r++)
            for (size_t c = 0; c < C; c++) {
                double xc = (double)x[r * C + c] - mean[c], g = dy[r * C + c];
                double b = cfg->use_bias ? beta[c] : 0.0;
                if (cfg->relu && !(xc * w.scale[c] + b > 0.0)) g = 0.0;
                dx[r * C + c] = (float)((double)w.a[c] * g + (double)w.b[c] * xc + (double)w.d[c]);
            }
    }
    work_free(&w);
    return BNL_OK;
}
