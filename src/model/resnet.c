// torchvision ResNet in NHWC: forward (train and eval), backward, SGD, PreciseBN, on a context
// (model/context.c) over a state (model/state.c) in a layout (model/layout.c). Reading and writing
// state dicts: io/statedict.c.
// Sizes: N batch; H,W spatial; C channels; K classes; F features (fc input).
#include "model/resnet_internal.h"

#include "core/common.h"
#include "core/parallel.h"
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                              \
    do {                                       \
        bnl_status _s = (expr);                \
        if (_s != BNL_OK) return _s;           \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Forward and backward

// A forward without a backward runs 3x3 stride-1 convolutions through Winograd F(2x2, 3x3) (the
// unscaled weights packed once per parameter version: bnl_context_pack_train); a training step's
// forward (fwd_only = 0) and the other convolutions run the direct GEMM, as the backward expects.
static bnl_status conv_fwd(bnl_resnet *m, const bnl_lconv *cv, float *y, const float *x, int N, int H, int W) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    if (m->fwd_only && cv->k == 3 && cv->stride == 1 && bnl_conv_winograd()) {
        st = bnl_context_pack_train(m);
        if (st != BNL_OK) return st;
        const bnl_conv_packed *pw = m->pkt[cv - m->L->convs];
        if (pw) return bnl_conv2d_forward_fused(y, x, pw, NULL, NULL, 0, &s);
    }
    return bnl_conv2d_forward(y, x, m->st->params + cv->w, &s);
}

static bnl_status conv_bwd(bnl_resnet *m, const bnl_lconv *cv, float *dx, const float *dy, const float *x, int N,
                           int H, int W) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_backward(dx, m->st->grads + cv->w, dy, x, m->st->params + cv->w, &s);
}

// dx = gate > 0 ? conv backward + res : 0 in one pass (gate NULL: no ReLU)
static bnl_status conv_bwd_ex(bnl_resnet *m, const bnl_lconv *cv, float *dx, const float *dy, const float *x, int N,
                              int H, int W, const float *res, const float *gate) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_backward_ex(dx, m->st->grads + cv->w, dy, x, m->st->params + cv->w, res, gate, &s);
}

// Synchronized BatchNorm forward in one collective: every replica's (count, mean, M2) per channel
// is gathered and merged with Chan's formula in replica order, so every replica computes the same
// bits (exact and stable: no sum of squares), then the usual normalization.
static bnl_status bn_fwd_sync(bnl_resnet *m, int i, size_t M, const bnl_bn_config *cfg, int *deferred) {
    const bnl_lbn *x = &m->L->bns[i];
    const bnl_act_bn *a = &m->act[i];
    const size_t C = (size_t)x->C, n = 2 * C + 1;
    double *mine = m->sync_buf, *all = mine + n;   // mine: [count, mean (C), M2 (C)]; all: replicas * n
    double *mean = mine + 1, *m2 = mine + 1 + C;
    TRY(bnl_batchnorm_stats(mean, m2, a->pre, M, C));
    mine[0] = (double)M;
    TRY(m->sync_fn(m->sync_ctx, mine, all, n));
    // merge into mine: replica 0, then 1, 2, ... (the same order on every replica)
    memcpy(mine, all, n * sizeof(double));
    double Mt = all[0];
    for (int r = 1; r < m->sync_replicas; r++) {
        const double *o = all + (size_t)r * n, nb = o[0], tot = Mt + nb;
        if (nb <= 0) continue;
        for (size_t c = 0; c < C; c++) {
            double d = o[1 + c] - mean[c];
            mean[c] += d * (nb / tot);
            m2[c] += o[1 + C + c] + d * d * (Mt * nb / tot);
        }
        Mt = tot;
    }
    float *bm = m->batch + x->bm, *bv = m->batch + x->bv, *bis = m->batch + x->bis;
    for (size_t c = 0; c < C; c++) {
        double v = m2[c] / Mt;
        m2[c] = v > 0.0 ? v : 0.0;   // now the global biased variance
        bm[c] = (float)mean[c];
        bv[c] = (float)m2[c];
        bis[c] = (float)(1.0 / sqrt(m2[c] + (double)cfg->eps));
    }
    if (Mt < 2.0)
        return bnl_fail(BNL_ERR_BATCH, "%s: expected more than 1 value per channel when training (global N*H*W = 1)",
                        x->name);
    float *rs = bnl_ctx_stats(m);
    TRY(bnl_batchnorm_update_running(rs + x->rm, rs + x->rv, bnl_ctx_tracked(m) + i, bm, m2, (size_t)Mt, C, cfg));
    if (deferred) {   // the block's fused output pass applies it (bn_side: the same call's arithmetic)
        *deferred = 1;
        return BNL_OK;
    }
    const float *p = m->st->params;
    return bnl_batchnorm_apply(a->post, a->pre, bm, bis, p + x->gamma, p + x->beta, M, C, cfg);
}

// GroupNorm, Renorm, Ghost and frozen BatchNorm (train: 1 for the train-mode forward).
static bnl_status bn_fwd_other(bnl_resnet *m, int i, int N, int train, const bnl_bn_config *cfg) {
    const bnl_lbn *x = &m->L->bns[i];
    const bnl_act_bn *a = &m->act[i];
    size_t C = (size_t)x->C, HW = (size_t)a->H * a->W, M = (size_t)N * HW;
    const float *g = m->st->params + x->gamma, *b = m->st->params + x->beta;
    float *rs = bnl_ctx_stats(m), *rm = rs + x->rm, *rv = rs + x->rv, *e = m->nbuf + a->xo;
    int64_t *tracked = bnl_ctx_tracked(m) + i;
    switch (m->ns.kind) {
    case BNL_NORM_GROUP: {   // the same in both modes
        size_t NG = (size_t)N * m->ns.groups;
        return bnl_groupnorm_forward(a->post, e, e + 2 * NG, e + NG, a->pre, g, b, (size_t)N, HW, C,
                                     (size_t)m->ns.groups, cfg);
    }
    case BNL_NORM_RENORM:
        if (!train) break;
        return bnl_batchrenorm_forward_train(a->post, m->batch + x->bm, m->batch + x->bis, m->batch + x->bv, e, e + C,
                                             rm, rv, tracked, a->pre, g, b, M, C, m->ns.renorm_rmax,
                                             m->ns.renorm_dmax, cfg);
    case BNL_NORM_GHOST: {
        if (!train) break;
        size_t V = (size_t)m->ns.virtual_batch, nvC = (size_t)N / V * C;
        TRY(bnl_ghostbn_forward_train(a->post, e, e + 2 * nvC, e + nvC, rm, rv, tracked, a->pre, g, b, (size_t)N, HW,
                                      C, V, cfg));
        // the view's batch statistics: the virtual batches' average (what moved the running ones)
        float *bm = m->batch + x->bm, *bv = m->batch + x->bv;
        size_t nv = (size_t)N / V;
        for (size_t c = 0; c < C; c++) {
            double sm = 0.0, sv = 0.0;
            for (size_t v = 0; v < nv; v++) sm += e[v * C + c], sv += e[nvC + v * C + c];
            bm[c] = (float)(sm / (double)nv), bv[c] = (float)(sv / (double)nv);
        }
        return BNL_OK;
    }
    default: break;   // frozen: eval in both modes
    }
    return bnl_batchnorm_forward_eval(a->post, a->pre, g, b, rm, rv, M, C, cfg);
}

static bnl_status bn_bwd_other(bnl_resnet *m, int i, float *dx, const float *dy, int N, const bnl_bn_config *cfg) {
    const bnl_lbn *x = &m->L->bns[i];
    const bnl_act_bn *a = &m->act[i];
    size_t C = (size_t)x->C, HW = (size_t)a->H * a->W, M = (size_t)N * HW;
    const float *g = m->st->params + x->gamma, *b = m->st->params + x->beta, *e = m->nbuf + a->xo;
    float *dg = m->st->grads + x->gamma, *db = m->st->grads + x->beta;
    switch (m->ns.kind) {
    case BNL_NORM_GROUP: {
        size_t NG = (size_t)N * m->ns.groups;
        return bnl_groupnorm_backward(dx, dg, db, dy, a->pre, e, e + 2 * NG, g, b, (size_t)N, HW, C,
                                      (size_t)m->ns.groups, cfg);
    }
    case BNL_NORM_RENORM:
        return bnl_batchrenorm_backward_train(dx, dg, db, dy, a->pre, m->batch + x->bm, m->batch + x->bis, e, e + C, g,
                                              b, M, C, cfg);
    case BNL_NORM_GHOST: {
        size_t V = (size_t)m->ns.virtual_batch, nvC = (size_t)N / V * C;
        return bnl_ghostbn_backward_train(dx, dg, db, dy, a->pre, e, e + 2 * nvC, g, b, (size_t)N, HW, C, V, cfg);
    }
    default: {   // frozen: the running statistics are constants
        const float *rs = bnl_ctx_stats(m);
        return bnl_batchnorm_backward_eval(dx, dg, db, dy, a->pre, g, b, rs + x->rm, rs + x->rv, M, C, cfg);
    }
    }
}

// deferred not NULL: the layer's output feeds a residual add; plain and synchronized BatchNorm in
// train mode may then leave its apply to the block's fused output pass (*deferred = 1; bn_side).
static bnl_status bn_fwd(bnl_resnet *m, int i, int N, int train, int *deferred) {
    if (deferred) *deferred = 0;
    if (m->unfused) deferred = NULL;
    const bnl_lbn *x = &m->L->bns[i];
    const bnl_act_bn *a = &m->act[i];
    const float *p = m->st->params;
    float *rs = bnl_ctx_stats(m);
    bnl_bn_config cfg = m->bn;
    cfg.relu = x->relu;
    size_t M = (size_t)N * a->H * a->W;
    bnl_status s;
    if (m->info.norm != BNL_NORM_BATCH && m->info.norm != BNL_NORM_NONE) {
        s = bn_fwd_other(m, i, N, train, &cfg);
    } else if (m->info.norm == BNL_NORM_NONE) {   // no statistics at all: the same in train and eval mode
        return bnl_channel_affine_forward(a->post, a->pre, p + x->gamma, p + x->beta, M, (size_t)x->C, &cfg);
    } else if (train && m->sync_fn) {
        s = bn_fwd_sync(m, i, M, &cfg, deferred);
    } else if (train && deferred) {
        int applied = 1;
        s = bnl_batchnorm_forward_train_defer(a->post, &applied, m->batch + x->bm, m->batch + x->bis,
                                              m->batch + x->bv, rs + x->rm, rs + x->rv, bnl_ctx_tracked(m) + i, a->pre,
                                              p + x->gamma, p + x->beta, M, (size_t)x->C, &cfg);
        *deferred = s == BNL_OK && !applied;
    } else if (train) {
        s = bnl_batchnorm_forward_train(a->post, m->batch + x->bm, m->batch + x->bis, m->batch + x->bv, rs + x->rm,
                                        rs + x->rv, bnl_ctx_tracked(m) + i, a->pre, p + x->gamma, p + x->beta, M,
                                        (size_t)x->C, &cfg);
    } else {
        s = bnl_batchnorm_forward_eval(a->post, a->pre, p + x->gamma, p + x->beta, rs + x->rm, rs + x->rv, M,
                                       (size_t)x->C, &cfg);
    }
    if (s != BNL_OK && s == BNL_ERR_BATCH) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        return bnl_fail(s, "%s: %s", x->name, msg);
    }
    return s;
}

// Layer i's deferred apply as one side of the residual add: its input and the batch statistics
// its forward saved, as bn_fwd_sync's bnl_batchnorm_apply and the SIMD train forward's apply use them.
static bnl_bn_side bn_side(const bnl_resnet *m, int i, bnl_bn_config *cfg) {
    const bnl_lbn *x = &m->L->bns[i];
    const float *p = m->st->params;
    *cfg = m->bn;
    cfg->relu = x->relu;
    bnl_bn_side sd = {m->act[i].pre, m->batch + x->bm, m->batch + x->bis, p + x->gamma, p + x->beta, cfg};
    return sd;
}

// Block b's output relu(main + shortcut). dl, dd: the main path's last BatchNorm and the
// downsample's left their apply here (bn_fwd); then one pass from the convolutions' outputs, not
// three (apply, apply, add) over memory-bound arrays. The same bits either way.
static bnl_status block_output(bnl_resnet *m, int b, int N, int dl, int dd) {
    const bnl_lblock *blk = &m->L->blocks[b];
    const bnl_act_block *ab = &m->ablk[b];
    const int il = blk->bn3 >= 0 ? blk->bn3 : blk->bn2;
    const size_t M = (size_t)N * ab->Hout * ab->Wout, C = (size_t)blk->cout;
    bnl_bn_config ca, cs;
    bnl_bn_side a = bn_side(m, il, &ca), s = {ab->in, NULL, NULL, NULL, NULL, NULL};
    if (blk->dbn >= 0 && dd) s = bn_side(m, blk->dbn, &cs);
    else if (blk->dbn >= 0) s.x = m->act[blk->dbn].post;
    if (dl) return bnl_bn_add_relu_forward(ab->out, &a, &s, M, C);
    if (dd) {   // (both layers defer alike; kept correct all the same)
        const bnl_act_bn *d = &m->act[blk->dbn];
        TRY(bnl_batchnorm_apply(d->post, d->pre, s.mean, s.invstd, s.gamma, s.beta, M, C, &cs));
        s.x = d->post;
    }
    bnl_add_relu_forward(ab->out, m->act[il].post, s.x, M * C);
    return BNL_OK;
}

static bnl_status bn_bwd(bnl_resnet *m, int i, float *dx, const float *dy, int N) {
    const bnl_lbn *x = &m->L->bns[i];
    const bnl_act_bn *a = &m->act[i];
    const float *p = m->st->params;
    float *gr = m->st->grads;
    bnl_bn_config cfg = m->bn;
    cfg.relu = x->relu;
    size_t M = (size_t)N * a->H * a->W;
    if (m->info.norm != BNL_NORM_BATCH && m->info.norm != BNL_NORM_NONE) return bn_bwd_other(m, i, dx, dy, N, &cfg);
    if (m->info.norm == BNL_NORM_NONE)
        return bnl_channel_affine_backward(dx, gr + x->gamma, gr + x->beta, dy, a->pre, p + x->gamma, p + x->beta, M,
                                           (size_t)x->C, &cfg);
    if (m->sync_fn) {
        // local sums -> parameter gradients (replicas average those later); global sums -> dx.
        // One collective: every replica's [count, sum_g (C), sum_gxc (C)], added in replica order.
        const size_t C = (size_t)x->C, n = 2 * C + 1;
        double *mine = m->sync_buf, *all = mine + n;
        const float *mean = m->batch + x->bm, *is = m->batch + x->bis;
        TRY(bnl_batchnorm_backward_reduce(mine + 1, mine + 1 + C, dy, a->pre, mean, is, p + x->gamma, p + x->beta, M,
                                          C, &cfg));
        float *dg = gr + x->gamma, *db = gr + x->beta;
        for (size_t c = 0; c < C; c++) dg[c] += (float)(is[c] * mine[1 + C + c]), db[c] += (float)mine[1 + c];
        mine[0] = (double)M;
        TRY(m->sync_fn(m->sync_ctx, mine, all, n));
        memcpy(mine, all, n * sizeof(double));
        for (int r = 1; r < m->sync_replicas; r++)
            for (size_t k = 0; k < n; k++) mine[k] += all[(size_t)r * n + k];
        return bnl_batchnorm_backward_apply(dx, dy, a->pre, mean, is, p + x->gamma, p + x->beta, mine + 1,
                                            mine + 1 + C, M, (size_t)mine[0], C, &cfg);
    }
    return bnl_batchnorm_backward_train(dx, gr + x->gamma, gr + x->beta, dy, a->pre, m->batch + x->bm,
                                        m->batch + x->bis, p + x->gamma, p + x->beta, M, (size_t)x->C, &cfg);
}

// ---------------------------------------------------------------------------------------------
// Eval forward: BatchNorm folded into the convolutions, bias + residual + ReLU in the GEMM epilogue

static const float *fold_bias_of(const bnl_resnet *m, int ci) {
    const float *b = m->fold_bias;
    for (int c = 0; c < ci; c++) b += m->L->convs[c].cout;
    return b;
}

// y = relu?(conv_ci(x) folded + res)
static bnl_status conv_fused(bnl_resnet *m, int ci, float *y, const float *x, int N, int H, int W, const float *res,
                             int relu) {
    const bnl_lconv *cv = &m->L->convs[ci];
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_forward_fused(y, x, m->pk[ci], fold_bias_of(m, ci), res, relu, &s);
}

// Three ping-pong buffers, each as large as the largest activation. A block reads `in` and writes
// its output either to a free buffer or, when a downsample occupies one, back over `in`.
static bnl_status forward_eval(bnl_resnet *m, float *logits, const float *x, int N, int H, int W) {
    TRY(bnl_context_fold_and_pack(m));
    const bnl_layout *L = m->L;
    float **pp = m->pp;
    TRY(conv_fused(m, 0, pp[0], x, N, H, W, NULL, 1));
    TRY(bnl_maxpool_forward(pp[1], NULL, pp[0], N, m->Hs, m->Ws, L->bns[0].C, 3, 2, 1, m->Hp, m->Wp));
    int cur = 1;
    for (int b = 0; b < L->nblocks; b++) {
        const bnl_lblock *blk = &L->blocks[b];
        const bnl_act_block *ab = &m->ablk[b];
        float *in = pp[cur], *a = pp[(cur + 1) % 3], *c = pp[(cur + 2) % 3];
        if (m->info.bottleneck) {
            TRY(conv_fused(m, blk->conv1, a, in, N, ab->Hin, ab->Win, NULL, 1));
            TRY(conv_fused(m, blk->conv2, c, a, N, ab->Hin, ab->Win, NULL, 1));
            if (blk->dconv >= 0) {
                TRY(conv_fused(m, blk->dconv, a, in, N, ab->Hin, ab->Win, NULL, 0));
                TRY(conv_fused(m, blk->conv3, in, c, N, ab->Hout, ab->Wout, a, 1));
            } else {
                TRY(conv_fused(m, blk->conv3, a, c, N, ab->Hout, ab->Wout, in, 1));
                cur = (cur + 1) % 3;
            }
        } else {
            TRY(conv_fused(m, blk->conv1, a, in, N, ab->Hin, ab->Win, NULL, 1));
            if (blk->dconv >= 0) {
                TRY(conv_fused(m, blk->dconv, c, in, N, ab->Hin, ab->Win, NULL, 0));
                TRY(conv_fused(m, blk->conv2, in, a, N, ab->Hout, ab->Wout, c, 1));
            } else {
                TRY(conv_fused(m, blk->conv2, c, a, N, ab->Hout, ab->Wout, in, 1));
                cur = (cur + 2) % 3;
            }
        }
    }
    const bnl_act_block *lb = &m->ablk[L->nblocks - 1];
    TRY(bnl_avgpool_forward(m->feat, pp[cur], N, lb->Hout * lb->Wout, L->blocks[L->nblocks - 1].cout));
    bnl_conv_shape fs;   // fc on the packed weights: logits (N,1,1,K) = feat (N,1,1,F) w^T + b
    TRY(bnl_conv_shape_init(&fs, N, 1, 1, m->info.num_features, m->info.num_classes, 1, 1, 1, 0));
    return bnl_conv2d_forward_fused(logits, m->feat, m->pk_fc, m->st->params + L->fc_b, NULL, 0, &fs);
}

// p[i0, i1) = 0
static void zero_range(void *p, size_t i0, size_t i1, int tid) {
    memset((float *)p + i0, 0, (i1 - i0) * sizeof(float));
}

// Channel c of BatchNorm layer `layer`'s input (its convolution's output), copied out by
// bnl_resnet_bn_input after a forward stopped before the layer, or during a whole forward
// (bnl_resnet_forward_bn_input): the same values.
typedef struct bnl_bn_capture {
    int layer, c;
    float *out;
    size_t cap, *n;
    float *gbe;
} bnl_bn_capture;

static bnl_status copy_bn_input(const bnl_resnet *m, const bnl_bn_capture *k, int N) {
    const bnl_lbn *b = &m->L->bns[k->layer];
    const bnl_act_bn *a = &m->act[k->layer];
    const size_t M = (size_t)N * a->H * a->W, C = (size_t)b->C;
    if (M > k->cap) return bnl_fail(BNL_ERR_ARG, "bn_input: %zu values do not fit in %zu", M, k->cap);
    for (size_t i = 0; i < M; i++) k->out[i] = a->pre[i * C + (size_t)k->c];
    *k->n = M;
    k->gbe[0] = m->st->params[b->gamma + (size_t)k->c], k->gbe[1] = m->st->params[b->beta + (size_t)k->c];
    k->gbe[2] = m->bn.eps;
    return BNL_OK;
}

// stop >= 0 (train mode): return right after BatchNorm layer `stop` (bns order, which is the order
// they run in), logits not computed. stop <= -2: return right before BatchNorm layer -2 - stop runs
// (its input, act->pre, is then the convolution's output).
static bnl_status forward_impl(bnl_resnet *m, float *logits, const float *x, int N, int H, int W, int train,
                               int stop) {
    // GroupNorm's statistics come from the batch in eval mode too: no folding into the convolutions
    if (!train && m->ns.kind != BNL_NORM_GROUP) return forward_eval(m, logits, x, N, H, W);
    if (train && m->ns.kind == BNL_NORM_GHOST && N % m->ns.virtual_batch != 0)
        return bnl_fail(BNL_ERR_BATCH, "ghost:%d: virtual batches of %d images do not divide the batch of %d images",
                        m->ns.virtual_batch, m->ns.virtual_batch, N);
    const bnl_layout *L = m->L;
    const float *params = m->st->params;
    const int before = stop <= -2 ? -2 - stop : -1;
#define BN_FWD_D(i, deferred)                                                                                          \
    do {                                                                                                               \
        if ((i) == before) goto done;                                                                                  \
        if (m->cap && (i) == m->cap->layer) TRY(copy_bn_input(m, m->cap, N));                                         \
        TRY(bn_fwd(m, (i), N, train, (deferred)));                                                                     \
        if ((i) == stop) goto done;                                                                                    \
    } while (0)
#define BN_FWD(i) BN_FWD_D(i, NULL)
    TRY(bnl_context_norm_plan(m, N));
    if (train && m->update_running) {
        bnl_state_changed(m->st);   // running statistics move: every context's eval cache is stale
    } else if (train) {             // this context's own copy moves, from the state's values
        memcpy(m->run_stats, m->st->stats, L->ns * sizeof(float));
        memcpy(m->run_tracked, m->st->tracked, (size_t)L->nbn * sizeof(int64_t));
    }
    const bnl_act_bn *stem = &m->act[0];
    TRY(conv_fwd(m, &L->convs[0], stem->pre, x, N, H, W));
    BN_FWD(0);
    TRY(bnl_maxpool_forward(m->stem_pool, m->pkeep ? m->argmax : NULL, stem->post, N, m->Hs, m->Ws, L->bns[0].C, 3, 2,
                            1, m->Hp, m->Wp));
    for (int b = 0; b < L->nblocks; b++) {
        const bnl_lblock *blk = &L->blocks[b];
        const bnl_act_block *ab = &m->ablk[b];
        const bnl_act_bn *b1 = &m->act[blk->bn1], *b2 = &m->act[blk->bn2];
        TRY(conv_fwd(m, &L->convs[blk->conv1], b1->pre, ab->in, N, ab->Hin, ab->Win));
        BN_FWD(blk->bn1);
        int h2 = m->info.bottleneck ? ab->Hin : ab->Hout, w2 = m->info.bottleneck ? ab->Win : ab->Wout;
        TRY(conv_fwd(m, &L->convs[blk->conv2], b2->pre, b1->post, N, h2, w2));
        // the BatchNorms before the add may leave their applies to block_output's one pass (a
        // stop right after them returns with their statistics; nothing reads their outputs)
        int dl = 0, dd = 0;
        BN_FWD_D(blk->bn2, blk->bn3 >= 0 ? NULL : &dl);
        if (blk->bn3 >= 0) {
            const bnl_act_bn *b3 = &m->act[blk->bn3];
            TRY(conv_fwd(m, &L->convs[blk->conv3], b3->pre, b2->post, N, ab->Hout, ab->Wout));
            BN_FWD_D(blk->bn3, &dl);
        }
        if (blk->dbn >= 0) {
            const bnl_act_bn *db = &m->act[blk->dbn];
            TRY(conv_fwd(m, &L->convs[blk->dconv], db->pre, ab->in, N, ab->Hin, ab->Win));
            BN_FWD_D(blk->dbn, &dd);
        }
        TRY(block_output(m, b, N, dl, dd));
    }
    const bnl_act_block *lb = &m->ablk[L->nblocks - 1];
    TRY(bnl_avgpool_forward(m->feat, lb->out, N, lb->Hout * lb->Wout, L->blocks[L->nblocks - 1].cout));
    TRY(bnl_linear_forward(logits, m->feat, params + L->fc_w, params + L->fc_b, N, m->info.num_features,
                           m->info.num_classes));
done:
#undef BN_FWD
#undef BN_FWD_D
    if (train && (m->info.norm == BNL_NORM_BATCH || m->info.norm == BNL_NORM_RENORM || m->info.norm == BNL_NORM_GHOST))
        m->has_batch = 1;
    if (m->info.norm == BNL_NORM_GROUP || (train && (m->info.norm == BNL_NORM_RENORM || m->info.norm == BNL_NORM_GHOST)))
        m->has_norm_stats = 1;
    return BNL_OK;
}

static bnl_status check_input(const bnl_resnet *m, const float *x, int N, int H, int W, const char *who) {
    if (!x) return bnl_fail(BNL_ERR_ARG, "%s: input is NULL", who);
    if (N < 1 || H < 1 || W < 1 || N > 65536 || H > 8192 || W > 8192)
        return bnl_fail(BNL_ERR_SHAPE, "%s: bad input shape [%d,%d,%d,%d]", who, N, H, W, m->info.in_channels);
    return BNL_OK;
}

// A forward without backward keeps nothing: the lean plan serves both modes (a kept plan of the
// same shape is reused as it is).
static bnl_status plan_forward(bnl_resnet *m, int N, int H, int W) {
    return bnl_context_plan(m, N, H, W, m->pkeep && m->pN == N && m->pH == H && m->pW == W);
}

bnl_status bnl_resnet_forward(bnl_resnet *m, float *logits, const float *x, int N, int H, int W) {
    if (!m || !logits) return bnl_fail(BNL_ERR_ARG, "forward: NULL argument");
    TRY(check_input(m, x, N, H, W, "forward"));
    TRY(plan_forward(m, N, H, W));
    return forward_impl(m, logits, x, N, H, W, m->training, -1);
}

static bnl_status check_bn_input(const bnl_resnet *m, const float *out, const size_t *n, const float *gbe,
                                 const float *x, int N, int H, int W, int layer, int c, const char *who) {
    if (!out || !n || !gbe) return bnl_fail(BNL_ERR_ARG, "%s: NULL argument", who);
    const bnl_layout *L = m->L;
    if (layer < 0 || layer >= L->nbn)
        return bnl_fail(BNL_ERR_ARG, "%s: no BatchNorm layer #%d (the model has %d)", who, layer, L->nbn);
    if (!m->training)
        return bnl_fail(BNL_ERR_ARG, "%s: the model is in eval mode (it reads running statistics; train() first)", who);
    const bnl_lbn *b = &L->bns[layer];
    if (c < 0 || c >= b->C) return bnl_fail(BNL_ERR_ARG, "%s: no channel %d in %s (%d channels)", who, c, b->name, b->C);
    return check_input(m, x, N, H, W, who);
}

bnl_status bnl_resnet_bn_input(bnl_resnet *m, float *out, size_t cap, size_t *n, float gbe[3], const float *x, int N,
                               int H, int W, int layer, int c) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "bn_input: NULL argument");
    TRY(check_bn_input(m, out, n, gbe, x, N, H, W, layer, c, "bn_input"));
    TRY(plan_forward(m, N, H, W));
    TRY(forward_impl(m, NULL, x, N, H, W, 1, -2 - layer));
    bnl_bn_capture k = {layer, c, out, cap, n, gbe};
    return copy_bn_input(m, &k, N);
}

bnl_status bnl_resnet_forward_bn_input(bnl_resnet *m, float *logits, float *out, size_t cap, size_t *n, float gbe[3],
                                       const float *x, int N, int H, int W, int layer, int c) {
    if (!m || !logits) return bnl_fail(BNL_ERR_ARG, "forward_bn_input: NULL argument");
    TRY(check_bn_input(m, out, n, gbe, x, N, H, W, layer, c, "forward_bn_input"));
    TRY(plan_forward(m, N, H, W));
    bnl_bn_capture k = {layer, c, out, cap, n, gbe};
    m->cap = &k;
    bnl_status s = forward_impl(m, logits, x, N, H, W, 1, -1);
    m->cap = NULL;
    return s;
}

bnl_status bnl_resnet_forward_to(bnl_resnet *m, const float *x, int N, int H, int W, int stop) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "forward_to: NULL model");
    if (stop < 0 || stop >= m->L->nbn)
        return bnl_fail(BNL_ERR_ARG, "forward_to: no BatchNorm layer #%d (the model has %d)", stop, m->L->nbn);
    if (!m->training)
        return bnl_fail(BNL_ERR_ARG, "forward_to: the model is in eval mode (it reads running statistics; train() first)");
    TRY(check_input(m, x, N, H, W, "forward_to"));
    TRY(plan_forward(m, N, H, W));
    return forward_impl(m, NULL, x, N, H, W, 1, stop);
}

bnl_status bnl_resnet_forward_backward(bnl_resnet *m, float *loss, float *logits, const float *x, int N, int H, int W,
                                       const int64_t *labels) {
    if (!m || !loss || !labels) return bnl_fail(BNL_ERR_ARG, "forward_backward: NULL argument");
    TRY(check_input(m, x, N, H, W, "step"));
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= m->info.num_classes)
            return bnl_fail(BNL_ERR_ARG, "step: label %lld of image %d is outside [0, %d)", (long long)labels[i], i,
                            m->info.num_classes);
    TRY(bnl_state_need_grads(m->st));
    TRY(bnl_context_plan(m, N, H, W, 1));
    const bnl_layout *L = m->L;
    float *params = m->st->params, *grads = m->st->grads;
    size_t K = (size_t)m->info.num_classes, F = (size_t)m->info.num_features;
    float *lg = m->probs;
    float *tmp_logits = bnl_alloc((size_t)N * K * sizeof(float));
    if (!tmp_logits) return bnl_fail(BNL_ERR_NOMEM, "out of memory for logits");
    m->fwd_only = 0;   // the backward needs the direct convolution's outputs
    bnl_status s = forward_impl(m, tmp_logits, x, N, H, W, 1, -1);
    m->fwd_only = 1;
    if (s == BNL_OK) s = bnl_softmax_xent_forward(loss, lg, tmp_logits, labels, N, (int)K);
    if (s == BNL_OK && logits) memcpy(logits, tmp_logits, (size_t)N * K * sizeof(float));
    bnl_free(tmp_logits);
    if (s != BNL_OK) return s;
    // replicas in lockstep (synchronized BatchNorm, gradient hook) make every collective of the
    // backward even so: the others would wait in them; the step fails after it
    int bad_loss = !isfinite(*loss);
    if (bad_loss && !m->sync_fn && !m->grad_fn) return bnl_fail(BNL_ERR_NUMERIC, "step: the loss is %g", (double)*loss);

    {   // zero-grad, split across threads (100 MB for ResNet-50)
        size_t n = m->info.num_params;
        bnl_parallel_for(n, bnl_threads_for(n, (double)n, (double)(1u << 20)), zero_range, grads);
    }
    float **G = m->grad_buf;
    // head: dlogits -> fc -> avgpool
    float *dlog = m->scratch;   // (N,K) fits: scratch is as large as the largest activation
    TRY(bnl_softmax_xent_backward(dlog, m->probs, labels, N, (int)K));
    float *dfeat = dlog + (size_t)N * K;
    TRY(bnl_linear_backward(dfeat, grads + L->fc_w, grads + L->fc_b, dlog, m->feat, params + L->fc_w, N, (int)F,
                            (int)K));
    if (m->grad_fn) m->grad_fn(m->grad_ctx, L->fc_w);
    const bnl_act_block *lb = &m->ablk[L->nblocks - 1];
    TRY(bnl_avgpool_backward(G[0], dfeat, N, lb->Hout * lb->Wout, L->blocks[L->nblocks - 1].cout));
    int g0 = 0;   // index of the buffer holding the gradient of the current block's output
    for (int b = L->nblocks - 1; b >= 0; b--) {
        const bnl_lblock *blk = &L->blocks[b];
        const bnl_act_block *ab = &m->ablk[b];
        int i1 = (g0 + 1) % 4, i2 = (g0 + 2) % 4, i3 = (g0 + 3) % 4;
        size_t nout = (size_t)N * ab->Hout * ab->Wout * blk->cout;
        if (b == L->nblocks - 1) bnl_add_relu_backward(G[g0], G[g0], NULL, ab->out, nout);
        // (every other block output's ReLU is applied in the next block's conv1 backward epilogue)
        const float *mask = b > 0 ? m->ablk[b - 1].out : NULL;   // this block's input = previous output
        const bnl_act_bn *b1 = &m->act[blk->bn1], *b2 = &m->act[blk->bn2];
        const float *gmid;
        if (blk->bn3 >= 0) {
            TRY(bn_bwd(m, blk->bn3, G[i1], G[g0], N));
            TRY(conv_bwd(m, &L->convs[blk->conv3], G[i2], G[i1], b2->post, N, ab->Hout, ab->Wout));
            gmid = G[i2];
        } else {
            gmid = G[g0];
        }
        TRY(bn_bwd(m, blk->bn2, G[i1], gmid, N));
        int h2 = m->info.bottleneck ? ab->Hin : ab->Hout, w2 = m->info.bottleneck ? ab->Win : ab->Wout;
        TRY(conv_bwd(m, &L->convs[blk->conv2], G[i2], G[i1], b1->post, N, h2, w2));
        TRY(bn_bwd(m, blk->bn1, G[i1], G[i2], N));
        // the shortcut first; then conv1's input gradient is finished in its GEMM epilogue: plus the
        // shortcut's gradient, through the ReLU that made the block input (the previous output)
        const float *gshort = G[g0];
        if (blk->dbn >= 0) {
            TRY(bn_bwd(m, blk->dbn, G[i2], G[g0], N));
            TRY(conv_bwd(m, &L->convs[blk->dconv], G[i3], G[i2], ab->in, N, ab->Hin, ab->Win));
            gshort = G[i3];
        }
        TRY(conv_bwd_ex(m, &L->convs[blk->conv1], G[i2], G[i1], ab->in, N, ab->Hin, ab->Win, gshort, mask));
        g0 = i2;
        if (m->grad_fn) m->grad_fn(m->grad_ctx, L->convs[blk->conv1].w);   // parameters in block order
    }
    // stem: max pool, bn1 (+relu), conv1 (no input gradient)
    int i1 = (g0 + 1) % 4, i2 = (g0 + 2) % 4;
    TRY(bnl_maxpool_backward(G[i1], G[g0], m->argmax, N, m->Hs, m->Ws, L->bns[0].C, m->Hp, m->Wp));
    TRY(bn_bwd(m, 0, G[i2], G[i1], N));
    TRY(conv_bwd(m, &L->convs[0], NULL, G[i2], x, N, m->pH, m->pW));
    if (m->grad_fn) m->grad_fn(m->grad_ctx, 0);
    if (bad_loss) return bnl_fail(BNL_ERR_NUMERIC, "step: the loss is %g", (double)*loss);
    return BNL_OK;
}

typedef struct {
    float *p;
    const float *g;
    float *b;
    float wd;
    const bnl_sgd *o;
} sgd_t;

static void sgd_range(void *vc, size_t i0, size_t i1, int tid) {
    const sgd_t *u = vc;
    const bnl_sgd *o = u->o;
    float *p = u->p, *b = u->b, wd = u->wd;
    const float *g = u->g;
    for (size_t i = i0; i < i1; i++) {
        float d = g[i] + wd * p[i];
        if (o->momentum != 0.0f) {
            b[i] = o->momentum * b[i] + d;
            d = o->nesterov ? d + o->momentum * b[i] : b[i];
        }
        p[i] -= o->lr * d;
    }
}
bnl_status bnl_resnet_sgd_update(bnl_resnet *m, const bnl_sgd *o) {
    if (!m || !o) return bnl_fail(BNL_ERR_ARG, "sgd: NULL argument");
    if (!isfinite(o->lr) || o->lr < 0 || !(o->momentum >= 0) || !(o->weight_decay >= 0))
        return bnl_fail(BNL_ERR_ARG, "sgd: lr, momentum and weight decay must be finite and >= 0");
    TRY(bnl_state_need_grads(m->st));
    bnl_state *st = m->st;
    // PyTorch SGD: d = g + wd*p; buf = mom*buf + d (buf = d on the first step: the buffer starts
    // at zero, which is the same); p -= lr * (nesterov ? d + mom*buf : buf)
    for (int s = 0; s < m->L->nseg; s++) {
        const bnl_lseg *sg = &m->L->segs[s];
        float wd = (sg->decay || !o->no_decay_bn_bias) ? o->weight_decay : 0.0f;
        sgd_t u = {st->params + sg->off, st->grads + sg->off, st->mom + sg->off, wd, o};
        // elementwise: any split, same bits
        bnl_parallel_for(sg->n, bnl_threads_for(sg->n, (double)sg->n, (double)(1u << 16)), sgd_range, &u);
    }
    bnl_state_params_changed(st);
    return BNL_OK;
}

bnl_status bnl_resnet_step(bnl_resnet *m, float *loss, const float *x, int N, int H, int W, const int64_t *labels,
                           const bnl_sgd *opt) {
    if (!m || !opt) return bnl_fail(BNL_ERR_ARG, "step: NULL argument");
    TRY(bnl_resnet_forward_backward(m, loss, NULL, x, N, H, W, labels));
    return bnl_resnet_sgd_update(m, opt);
}

// ---------------------------------------------------------------------------------------------
// PreciseBN

struct bnl_precise_bn {
    int nbn, H, W;
    int64_t batches;
    double n;              // images so far (every layer's count is n times its H*W)
    size_t total;          // channels over all layers
    size_t *off;           // per layer: offset of its channels in mean/m2
    double *mean, *m2;     // per channel: running mean and sum of squared deviations
};

void bnl_precise_bn_free(bnl_precise_bn *p) {
    if (!p) return;
    free(p->off), free(p->mean), free(p->m2), free(p);
}

bnl_status bnl_precise_bn_begin(bnl_precise_bn **out, const bnl_resnet *m) {
    if (!out || !m) return bnl_fail(BNL_ERR_ARG, "precise_bn: NULL argument");
    *out = NULL;
    TRY(bnl_resnet_need_running_stats(m, "precise_bn"));
    if (m->info.norm != BNL_NORM_BATCH)
        return bnl_fail(BNL_ERR_ARG, "precise_bn: needs plain BatchNorm (norm kind %d); set_norm(BATCH) first",
                        m->info.norm);
    const bnl_layout *L = m->L;
    bnl_precise_bn *p = calloc(1, sizeof *p);
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "precise_bn: out of memory");
    p->nbn = L->nbn;
    p->off = calloc((size_t)L->nbn + 1, sizeof(size_t));
    for (int i = 0; p->off && i < L->nbn; i++) p->off[i + 1] = p->off[i] + (size_t)L->bns[i].C;
    p->total = p->off ? p->off[L->nbn] : 0;
    p->mean = calloc(p->total + 1, sizeof(double)), p->m2 = calloc(p->total + 1, sizeof(double));
    if (!p->off || !p->mean || !p->m2) {
        bnl_precise_bn_free(p);
        return bnl_fail(BNL_ERR_NOMEM, "precise_bn: out of memory");
    }
    *out = p;
    return BNL_OK;
}

bnl_status bnl_precise_bn_add(bnl_precise_bn *p, bnl_resnet *m, const float *x, int N, int H, int W) {
    if (!p || !m || !x) return bnl_fail(BNL_ERR_ARG, "precise_bn_add: NULL argument");
    const bnl_layout *L = m->L;
    if (L->nbn != p->nbn || m->info.norm != BNL_NORM_BATCH)
        return bnl_fail(BNL_ERR_ARG, "precise_bn_add: not the model (or norm) this accumulation began with");
    if (p->batches > 0 && (H != p->H || W != p->W))
        return bnl_fail(BNL_ERR_SHAPE, "precise_bn_add: batch is %dx%d, earlier batches %dx%d (one image size)", H, W,
                        p->H, p->W);
    // the model's own running statistics do not move: this forward moves the context's copy
    int was_training = m->training, was_updating = m->update_running;
    TRY(bnl_resnet_set_update_running(m, 0));
    m->training = 1;
    bnl_status s = bnl_resnet_forward_to(m, x, N, H, W, L->nbn - 1);
    m->training = was_training, m->update_running = was_updating;
    if (s != BNL_OK) return s;
    // Chan's merge of (count, mean, M2); batch_var is biased, so its M2 is var * count. Every layer's
    // count is N times its H*W (the same in every batch): counts in images give the same result.
    double na = p->n, nb = N, n = na + nb;
    for (int i = 0; i < L->nbn; i++) {
        const bnl_lbn *l = &L->bns[i];
        const float *bm = m->batch + l->bm, *bv = m->batch + l->bv;
        double *mu = p->mean + p->off[i], *m2 = p->m2 + p->off[i];
        for (int c = 0; c < l->C; c++) {
            double d = (double)bm[c] - mu[c];
            mu[c] += d * nb / n;
            m2[c] += (double)bv[c] * nb + d * d * na * nb / n;
        }
    }
    p->n = n, p->H = H, p->W = W, p->batches++;
    return BNL_OK;
}

bnl_status bnl_precise_bn_end(bnl_precise_bn *p, bnl_resnet *m) {
    if (!p || !m) return bnl_fail(BNL_ERR_ARG, "precise_bn_end: NULL argument");
    const bnl_layout *L = m->L;
    if (L->nbn != p->nbn || m->info.norm != BNL_NORM_BATCH)
        return bnl_fail(BNL_ERR_ARG, "precise_bn_end: not the model (or norm) this accumulation began with");
    if (p->batches == 0) return bnl_fail(BNL_ERR_ARG, "precise_bn_end: no batches were added");
    float *mv = bnl_alloc((p->total + 1) * 2 * sizeof(float));
    if (!mv) return bnl_fail(BNL_ERR_NOMEM, "precise_bn_end: out of memory");
    float *vv = mv + p->total + 1;
    for (size_t c = 0; c < p->total; c++) {
        mv[c] = (float)p->mean[c];
        double v = p->m2[c] / p->n;
        vv[c] = (float)(v > 0 ? v : 0);
        if (!isfinite(mv[c]) || !isfinite(vv[c])) {   // checked for all layers before any is set
            bnl_free(mv);
            return bnl_fail(BNL_ERR_NUMERIC, "precise_bn_end: non-finite statistics (the activations overflow float32)");
        }
    }
    bnl_status s = BNL_OK;
    for (int i = 0; i < L->nbn && s == BNL_OK; i++)
        s = bnl_resnet_set_running_stats(m, i, mv + p->off[i], vv + p->off[i], L->bns[i].C);
    bnl_free(mv);
    return s;
}
