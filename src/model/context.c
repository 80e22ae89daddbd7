// The ResNet context: what one user of a state keeps to run it (train/eval switch, BatchNorm
// config, norm kind, ISA, activation plan, last batch statistics, packed eval weights, sync
// buffers). Several contexts may borrow one state (bnl_resnet_clone_context).
#include "model/resnet_internal.h"

#include "core/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                              \
    do {                                       \
        bnl_status _s = (expr);                \
        if (_s != BNL_OK) return _s;           \
    } while (0)

bnl_sgd bnl_sgd_default(void) {
    bnl_sgd s = {0.1f, 0.0f, 0.0f, 0, 0};
    return s;
}

bnl_status bnl_context_create(bnl_resnet **out, bnl_state *st) {
    *out = NULL;
    bnl_resnet *m = calloc(1, sizeof *m);
    if (!m) return bnl_fail(BNL_ERR_NOMEM, "out of memory allocating the model");
    const bnl_layout *L = st->L;
    m->st = st, m->L = L;
    st->refs++;
    m->info = L->info;
    m->bn = bnl_bn_config_default();
    m->ns.kind = BNL_NORM_BATCH, m->ns.renorm_rmax = BNL_RENORM_RMAX_DEFAULT, m->ns.renorm_dmax = BNL_RENORM_DMAX_DEFAULT;
    m->update_running = 1;
    m->fwd_only = 1;
    m->isa = bnl_isa_active();
    m->batch = bnl_calloc(L->nb, sizeof(float));
    m->act = calloc((size_t)L->nbn + 1, sizeof *m->act);
    m->ablk = calloc((size_t)L->nblocks + 1, sizeof *m->ablk);
    if (!m->batch || !m->act || !m->ablk) {
        bnl_resnet_free(m);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory allocating the model");
    }
    *out = m;
    return BNL_OK;
}

bnl_status bnl_resnet_clone_context(bnl_resnet **out, const bnl_resnet *m) {
    if (!out || !m) return bnl_fail(BNL_ERR_ARG, "clone_context: NULL argument");
    bnl_resnet *c;
    TRY(bnl_context_create(&c, m->st));
    c->info = m->info, c->bn = m->bn, c->ns = m->ns, c->isa = m->isa;
    bnl_status s = bnl_resnet_set_update_running(c, 0);
    if (s != BNL_OK) {
        bnl_resnet_free(c);
        return s;
    }
    *out = c;
    return BNL_OK;
}

bnl_status bnl_resnet_set_update_running(bnl_resnet *m, int update) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "set_update_running: NULL model");
    if (!update && !m->run_stats) {
        m->run_stats = bnl_calloc(m->L->ns + 1, sizeof(float));
        m->run_tracked = calloc((size_t)m->L->nbn + 1, sizeof(int64_t));
        if (!m->run_stats || !m->run_tracked) {
            bnl_free(m->run_stats), free(m->run_tracked);
            m->run_stats = NULL, m->run_tracked = NULL;
            return bnl_fail(BNL_ERR_NOMEM, "out of memory for a context's running statistics");
        }
    }
    m->update_running = update != 0;
    return BNL_OK;
}
int bnl_resnet_update_running(const bnl_resnet *m) { return m->update_running; }

static void free_plan(bnl_resnet *m) {
    bnl_free(m->arena);
    bnl_free(m->argmax);
    for (int i = 0; i < 3; i++) bnl_free(m->lean[i]), m->lean[i] = NULL;
    m->arena = NULL, m->argmax = NULL;
    m->pN = 0;
}

static void free_packed(bnl_resnet *m) {
    if (m->pk)
        for (int c = 0; c < m->L->nconv; c++) bnl_conv_packed_free(m->pk[c]);
    free(m->pk), bnl_free(m->fold_bias), bnl_conv_packed_free(m->pk_fc);
    m->pk = NULL, m->fold_bias = NULL, m->pk_fc = NULL, m->pk_valid = 0;
}

static void free_packed_train(bnl_resnet *m) {
    if (m->pkt)
        for (int c = 0; c < m->L->nconv; c++) bnl_conv_packed_free(m->pkt[c]);
    free(m->pkt);
    m->pkt = NULL, m->pkt_valid = 0;
}

void bnl_resnet_free(bnl_resnet *m) {
    if (!m) return;
    free_plan(m);
    free_packed(m);
    free_packed_train(m);
    bnl_free(m->batch), bnl_free(m->sync_buf), bnl_free(m->nbuf), bnl_free(m->run_stats);
    free(m->run_tracked), free(m->act), free(m->ablk);
    bnl_state_release(m->st);
    free(m);
}

const bnl_resnet_info *bnl_resnet_get_info(const bnl_resnet *m) { return &m->info; }

bnl_status bnl_resnet_set_isa(bnl_resnet *m, bnl_isa isa) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "set_isa: NULL model");
    if ((int)isa < 0 || isa >= BNL_ISA_COUNT || !bnl_isa_available(isa))
        return bnl_fail(BNL_ERR_UNSUPPORTED, "set_isa: %s is not available in this build or on this CPU",
                        bnl_isa_name(isa));
    if (isa != m->isa) m->pk_valid = 0, m->pkt_valid = 0;
    m->isa = isa;
    return BNL_OK;
}
bnl_isa bnl_resnet_isa(const bnl_resnet *m) { return m->isa; }

// ---------------------------------------------------------------------------------------------
// Norm kind

// A positive integer after "prefix:" (group:G, ghost:V); 0 if malformed.
static int parse_count(const char *s, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) || s[n] != ':' || s[n + 1] < '1' || s[n + 1] > '9') return 0;
    char *end;
    long v = strtol(s + n + 1, &end, 10);
    return *end || v < 1 || v > 65536 ? 0 : (int)v;
}

bnl_status bnl_norm_parse(bnl_norm_spec *out, const char *s) {
    if (!out || !s) return bnl_fail(BNL_ERR_ARG, "norm: NULL argument");
    memset(out, 0, sizeof *out);
    out->renorm_rmax = BNL_RENORM_RMAX_DEFAULT, out->renorm_dmax = BNL_RENORM_DMAX_DEFAULT;
    if (!strcmp(s, "batch")) out->kind = BNL_NORM_BATCH;
    else if (!strcmp(s, "none")) out->kind = BNL_NORM_NONE;
    else if (!strcmp(s, "renorm")) out->kind = BNL_NORM_RENORM;
    else if (!strcmp(s, "frozen")) out->kind = BNL_NORM_FROZEN;
    else if ((out->groups = parse_count(s, "group")) > 0) out->kind = BNL_NORM_GROUP;
    else if ((out->virtual_batch = parse_count(s, "ghost")) > 0) out->kind = BNL_NORM_GHOST;
    else
        return bnl_fail(BNL_ERR_ARG, "'%.60s' is not a normalization (expected batch, none, group:G, renorm, ghost:V or "
                        "frozen; G, V positive integers)", s);
    return BNL_OK;
}

void bnl_norm_format(const bnl_norm_spec *sp, char *buf, size_t cap) {
    static const char *names[] = {"batch", "none", "group", "renorm", "ghost", "frozen"};
    int k = sp && sp->kind >= BNL_NORM_BATCH && sp->kind <= BNL_NORM_FROZEN ? (int)sp->kind : 0;
    if (k == BNL_NORM_GROUP) snprintf(buf, cap, "group:%d", sp->groups);
    else if (k == BNL_NORM_GHOST) snprintf(buf, cap, "ghost:%d", sp->virtual_batch);
    else snprintf(buf, cap, "%s", names[k]);
}

// GroupNorm's G must divide every layer's channels: names the first layer where it does not.
bnl_status bnl_context_check_groups(const bnl_resnet *m, int G, int from_file) {
    for (int i = 0; i < m->L->nbn; i++)
        if (m->L->bns[i].C % G != 0)
            return bnl_fail(from_file ? BNL_ERR_FORMAT : BNL_ERR_ARG,
                            "%s'group:%d': %d groups do not divide the %d channels of layer '%s'",
                            from_file ? "metadata '" BNL_NORM_META_KEY "' is " : "norm ", G, G, m->L->bns[i].C,
                            m->L->bns[i].name);
    return BNL_OK;
}

bnl_status bnl_resnet_set_norm_spec(bnl_resnet *m, const bnl_norm_spec *sp) {
    if (!m || !sp) return bnl_fail(BNL_ERR_ARG, "set_norm: NULL argument");
    bnl_norm_spec ns = *sp;
    switch (ns.kind) {
    case BNL_NORM_GROUP:
        if (ns.groups < 1) return bnl_fail(BNL_ERR_ARG, "norm group:G needs G >= 1 (got %d)", ns.groups);
        TRY(bnl_context_check_groups(m, ns.groups, 0));
        break;
    case BNL_NORM_GHOST:
        if (ns.virtual_batch < 1)
            return bnl_fail(BNL_ERR_ARG, "norm ghost:V needs V >= 1 images per virtual batch (got %d)", ns.virtual_batch);
        break;
    case BNL_NORM_RENORM:
        if (!(ns.renorm_rmax >= 1.0f) || !isfinite(ns.renorm_rmax) || !(ns.renorm_dmax >= 0.0f) ||
            !isfinite(ns.renorm_dmax))
            return bnl_fail(BNL_ERR_ARG, "norm renorm: rmax must be >= 1 and dmax >= 0 (got %g, %g)",
                            (double)ns.renorm_rmax, (double)ns.renorm_dmax);
        break;
    case BNL_NORM_BATCH: case BNL_NORM_NONE: case BNL_NORM_FROZEN: break;
    default: return bnl_fail(BNL_ERR_ARG, "set_norm: unknown normalization %d", (int)ns.kind);
    }
    char v[48], r[32], d[32];
    bnl_norm_format(&ns, v, sizeof v);
    snprintf(r, sizeof r, "%.9g", (double)ns.renorm_rmax), snprintf(d, sizeof d, "%.9g", (double)ns.renorm_dmax);
    int rn = ns.kind == BNL_NORM_RENORM;
    TRY(bnl_state_meta_set(m->st, BNL_NORM_META_KEY, ns.kind == BNL_NORM_BATCH ? NULL : v));
    TRY(bnl_state_meta_set(m->st, BNL_RMAX_META_KEY, rn ? r : NULL));
    TRY(bnl_state_meta_set(m->st, BNL_DMAX_META_KEY, rn ? d : NULL));
    m->ns = ns;
    m->info.norm = ns.kind;
    m->has_batch = 0, m->has_norm_stats = 0, m->nbuf_N = 0;
    m->pk_valid = 0;
    return BNL_OK;
}

bnl_status bnl_resnet_set_norm(bnl_resnet *m, bnl_norm norm) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "set_norm: NULL model");
    if (norm == BNL_NORM_GROUP || norm == BNL_NORM_GHOST)
        return bnl_fail(BNL_ERR_ARG, "set_norm: %s needs a parameter: use bnl_resnet_set_norm_spec",
                        norm == BNL_NORM_GROUP ? "group:G" : "ghost:V");
    bnl_norm_spec sp = {norm, 0, 0, BNL_RENORM_RMAX_DEFAULT, BNL_RENORM_DMAX_DEFAULT};
    return bnl_resnet_set_norm_spec(m, &sp);
}
bnl_norm bnl_resnet_norm(const bnl_resnet *m) { return (bnl_norm)m->info.norm; }
bnl_norm_spec bnl_resnet_norm_spec(const bnl_resnet *m) { return m->ns; }

// ---------------------------------------------------------------------------------------------
// Switches and views

void bnl_resnet_set_training(bnl_resnet *m, int training) { m->training = training != 0; }
int bnl_resnet_training(const bnl_resnet *m) { return m->training; }
uint64_t bnl_resnet_state_version(const bnl_resnet *m) { return m ? m->st->version : 0; }

bnl_status bnl_resnet_set_bn_config(bnl_resnet *m, const bnl_bn_config *cfg) {
    if (!cfg) return bnl_fail(BNL_ERR_ARG, "bn config is NULL");
    if (!(cfg->eps > 0.0f) || !(cfg->momentum >= 0.0f && cfg->momentum <= 1.0f))
        return bnl_fail(BNL_ERR_ARG, "bn config: eps must be > 0 and momentum in [0, 1] (got eps %g, momentum %g)",
                        (double)cfg->eps, (double)cfg->momentum);
    m->bn = *cfg;
    m->bn.relu = 0, m->bn.use_scale = 1, m->bn.use_bias = 1;
    m->pk_valid = 0;   // eps is folded into the packed weights
    return BNL_OK;
}
bnl_bn_config bnl_resnet_bn_config(const bnl_resnet *m) { return m->bn; }

int bnl_resnet_bn_count(const bnl_resnet *m) { return m->L->nbn; }
const char *bnl_resnet_bn_name(const bnl_resnet *m, int i) { return i >= 0 && i < m->L->nbn ? m->L->bns[i].name : NULL; }
int bnl_resnet_bn_find(const bnl_resnet *m, const char *name) {
    for (int i = 0; i < m->L->nbn; i++)
        if (!strcmp(m->L->bns[i].name, name)) return i;
    return -1;
}

bnl_status bnl_resnet_norm_stats(const bnl_resnet *m, bnl_norm_view *out, int i) {
    if (!m || !out) return bnl_fail(BNL_ERR_ARG, "norm_stats: NULL argument");
    const int nbn = m->L->nbn;
    if (i < 0 || i >= nbn) return bnl_fail(BNL_ERR_ARG, "no normalization layer #%d (the model has %d)", i, nbn);
    int k = m->ns.kind;
    if (k != BNL_NORM_GROUP && k != BNL_NORM_RENORM && k != BNL_NORM_GHOST)
        return bnl_fail(BNL_ERR_ARG, "norm_stats: only group, renorm and ghost layers keep statistics of their own");
    if (!m->has_norm_stats || !m->nbuf)
        return bnl_fail(BNL_ERR_ARG, "norm_stats: no %sforward has run yet", k == BNL_NORM_GROUP ? "" : "train-mode ");
    const bnl_lbn *x = &m->L->bns[i];
    const float *e = m->nbuf + m->act[i].xo;
    if (k == BNL_NORM_GROUP) out->rows = m->nbuf_N, out->cols = m->ns.groups;
    else if (k == BNL_NORM_RENORM) out->rows = 1, out->cols = x->C;
    else out->rows = m->nbuf_N / m->ns.virtual_batch, out->cols = x->C;
    out->a = e, out->b = e + (size_t)out->rows * out->cols;
    return BNL_OK;
}

bnl_status bnl_resnet_bn_stats(const bnl_resnet *m, bnl_bn_view *out, int i) {
    if (i < 0 || i >= m->L->nbn)
        return bnl_fail(BNL_ERR_ARG, "no BatchNorm layer #%d (the model has %d)", i, m->L->nbn);
    const bnl_lbn *x = &m->L->bns[i];
    out->channels = x->C;
    out->batch_mean = m->batch + x->bm, out->batch_var = m->batch + x->bv;
    out->running_mean = m->st->stats + x->rm, out->running_var = m->st->stats + x->rv;
    out->num_batches_tracked = m->st->tracked[i];
    out->has_batch = m->has_batch;
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Synchronized BatchNorm and the gradient hook

bnl_status bnl_resnet_set_sync_bn(bnl_resnet *m, bnl_allgather_fn fn, void *ctx, int replicas) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "set_sync_bn: NULL model");
    if (fn && replicas < 1) return bnl_fail(BNL_ERR_ARG, "set_sync_bn: %d replicas", replicas);
    bnl_free(m->sync_buf);
    m->sync_buf = NULL, m->sync_fn = NULL, m->sync_ctx = NULL, m->sync_replicas = 0;
    if (!fn) return BNL_OK;
    int maxc = 0;
    for (int i = 0; i < m->L->nbn; i++) maxc = m->L->bns[i].C > maxc ? m->L->bns[i].C : maxc;
    m->sync_buf = bnl_calloc(((size_t)replicas + 1) * (2 * (size_t)maxc + 1), sizeof(double));
    if (!m->sync_buf) return bnl_fail(BNL_ERR_NOMEM, "synchronized BatchNorm: out of memory for the gather buffer");
    m->sync_fn = fn, m->sync_ctx = ctx, m->sync_replicas = replicas;
    return BNL_OK;
}

void bnl_resnet_set_grad_hook(bnl_resnet *m, bnl_grad_ready_fn fn, void *ctx) {
    if (m) m->grad_fn = fn, m->grad_ctx = fn ? ctx : NULL;
}

// ---------------------------------------------------------------------------------------------
// Activation plan

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

// keep = 1: every activation backward needs gets its own slice of one arena.
// keep = 0: three ping-pong buffers of the largest activation; BN runs in place.
bnl_status bnl_context_plan(bnl_resnet *m, int N, int H, int W, int keep) {
    if (m->pN == N && m->pH == H && m->pW == W && m->pkeep == keep && m->arena) return BNL_OK;
    free_plan(m);
    const bnl_layout *L = m->L;
    const bnl_resnet_info *info = &L->info;
    int Hs = out_size(H, 7, 2, 3), Ws = out_size(W, 7, 2, 3);
    if (Hs < 1 || Ws < 1) return bnl_fail(BNL_ERR_SHAPE, "input %dx%d is too small for the 7x7/2 stem", H, W);
    int Hp = out_size(Hs, 3, 2, 1), Wp = out_size(Ws, 3, 2, 1);
    if (Hp < 1 || Wp < 1) return bnl_fail(BNL_ERR_SHAPE, "input %dx%d is too small for the stem max pool", H, W);
    m->Hs = Hs, m->Ws = Ws, m->Hp = Hp, m->Wp = Wp;
    // spatial sizes through the blocks
    int h = Hp, w = Wp;
    // Sizes are summed in 64 bits (size_t is 32 bits in wasm) and checked before any allocation.
    uint64_t maxact = (uint64_t)Hs * Ws * info->stem_width;
    uint64_t total = 2 * (uint64_t)Hs * Ws * info->stem_width + (uint64_t)Hp * Wp * info->stem_width;
    for (int b = 0; b < L->nblocks; b++) {
        const bnl_lblock *blk = &L->blocks[b];
        bnl_act_block *ab = &m->ablk[b];
        ab->Hin = h, ab->Win = w;
        int ho = out_size(h, 3, blk->stride, 1), wo = out_size(w, 3, blk->stride, 1);
        ab->Hout = ho, ab->Wout = wo;
        int bns[4] = {blk->bn1, blk->bn2, blk->bn3, blk->dbn};
        for (int j = 0; j < 4; j++) {
            if (bns[j] < 0) continue;
            bnl_act_bn *x = &m->act[bns[j]];
            // bottleneck bn1 runs at the input resolution, everything after conv2 at the output's;
            // basic: both at the output resolution
            int at_in = info->bottleneck && j == 0;
            x->H = at_in ? h : ho, x->W = at_in ? w : wo;
            uint64_t n = (uint64_t)x->H * x->W * L->bns[bns[j]].C;
            if (n > maxact) maxact = n;
            total += (j == 3 ? 1 : 2) * n;   // keep: the downsample's output lives in scratch
        }
        h = ho, w = wo;
    }
    // the scratch buffer also holds the head's gradients (N*(K+F)) during backward
    uint64_t head_need = (uint64_t)info->num_features + (uint64_t)info->num_classes;
    uint64_t per_image_max = maxact > head_need ? maxact : head_need;
    uint64_t nimg64 = (uint64_t)N;
    // keep: every slice + 4 gradient buffers + one scratch; lean: three ping-pong buffers
    uint64_t floats64 = nimg64 * (keep ? total + 5 * per_image_max : 3 * per_image_max);
    uint64_t head64 = nimg64 * ((uint64_t)info->num_features + 2 * (uint64_t)info->num_classes);
    uint64_t argmax64 = keep ? nimg64 * (uint64_t)Hp * Wp * info->stem_width : 0;
    double need_mb = ((double)floats64 + (double)head64 + (double)argmax64) * 4.0 / 1e6;
    if ((floats64 + head64 + argmax64) > (uint64_t)((SIZE_MAX - 64) / sizeof(float)))
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for activations: batch %d at %dx%d needs %.1f MB, more than this "
                        "build can address", N, H, W, need_mb);
    size_t nimg = (size_t)N, floats = (size_t)floats64, head = (size_t)head64;
    size_t big = (size_t)per_image_max * nimg;
    // Lean: three buffers allocated apart, not one arena: a batch of 256 at 224x224 (ResNet-50)
    // needs 3 x 822 MB, and one 2.5 GB request is refused by wasm's malloc (requests over 2 GB
    // fail in its sbrk path) where three of 822 MB fit in the 4 GB memory.
    m->arena = bnl_alloc(((keep ? floats : 0) + head) * sizeof(float));
    if (keep) m->argmax = bnl_alloc((size_t)argmax64 * sizeof(int32_t));
    for (int i = 0; i < 3 && !keep && m->arena; i++)
        if (!(m->lean[i] = bnl_alloc(big * sizeof(float)))) break;
    if (!m->arena || (keep && !m->argmax) || (!keep && !m->lean[2])) {
        free_plan(m);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for activations: batch %d at %dx%d needs %.1f MB", N, H, W,
                        need_mb);
    }
    float *p = m->arena;
    bnl_act_bn *stem = &m->act[0];
    const int stemC = L->bns[0].C;
    stem->H = Hs, stem->W = Ws;
    if (keep) {
        stem->pre = p, p += nimg * (size_t)Hs * Ws * stemC;
        stem->post = p, p += nimg * (size_t)Hs * Ws * stemC;
        m->stem_pool = p, p += nimg * (size_t)Hp * Wp * stemC;
        float *in = m->stem_pool;
        for (int b = 0; b < L->nblocks; b++) {
            const bnl_lblock *blk = &L->blocks[b];
            bnl_act_block *ab = &m->ablk[b];
            ab->in = in;
            int bns[4] = {blk->bn1, blk->bn2, blk->bn3, blk->dbn};
            int last = info->bottleneck ? 2 : 1;   // the BN whose output feeds the residual add
            for (int j = 0; j < 4; j++) {
                if (bns[j] < 0) continue;
                bnl_act_bn *x = &m->act[bns[j]];
                size_t n = nimg * (size_t)x->H * x->W * L->bns[bns[j]].C;
                x->pre = p, p += n;
                x->post = NULL;   // the downsample's: scratch, set below (only the unfused add reads it)
                if (j != 3) x->post = p, p += n;
                if (j == last) ab->out = x->post;   // out = relu(post + shortcut), in place
            }
            in = ab->out;
        }
        for (int i = 0; i < 4; i++) m->grad_buf[i] = p, p += big;
        m->scratch = p, p += big;
        for (int i = 0; i < 3; i++) m->pp[i] = m->grad_buf[i];   // free outside backward
        for (int b = 0; b < L->nblocks; b++)
            if (L->blocks[b].dbn >= 0) m->act[L->blocks[b].dbn].post = m->scratch;
    } else {
        float *buf[3] = {m->lean[0], m->lean[1], m->lean[2]};
        for (int i = 0; i < 3; i++) m->pp[i] = buf[i];
        stem->pre = stem->post = buf[0];
        m->stem_pool = buf[1];
        int in = 1;
        for (int b = 0; b < L->nblocks; b++) {
            const bnl_lblock *blk = &L->blocks[b];
            bnl_act_block *ab = &m->ablk[b];
            int a = (in + 1) % 3, c = (in + 2) % 3;
            ab->in = buf[in];
            m->act[blk->bn1].pre = m->act[blk->bn1].post = buf[a];
            m->act[blk->bn2].pre = m->act[blk->bn2].post = buf[c];
            if (blk->bn3 >= 0) m->act[blk->bn3].pre = m->act[blk->bn3].post = buf[a];
            if (blk->dbn >= 0) m->act[blk->dbn].pre = m->act[blk->dbn].post = buf[c];
            // the output lands where the last BN of the main path wrote
            ab->out = info->bottleneck ? buf[a] : buf[c];
            if (!info->bottleneck && blk->dbn >= 0) m->act[blk->dbn].pre = m->act[blk->dbn].post = buf[a];
            in = info->bottleneck ? a : c;
        }
        m->scratch = NULL;
    }
    m->feat = p, p += nimg * (size_t)info->num_features;
    m->probs = p, p += nimg * (size_t)info->num_classes;
    m->pN = N, m->pH = H, m->pW = W, m->pkeep = keep;
    return BNL_OK;
}

// Room for the kind-specific statistics of every layer at batch size N (see bnl_resnet's nbuf).
bnl_status bnl_context_norm_plan(bnl_resnet *m, int N) {
    if (m->nbuf_N == N && m->nbuf) return BNL_OK;
    size_t total = 0;
    for (int i = 0; i < m->L->nbn; i++) {
        size_t C = (size_t)m->L->bns[i].C, n = 0;
        if (m->ns.kind == BNL_NORM_GROUP) n = 3 * (size_t)N * (size_t)m->ns.groups;
        else if (m->ns.kind == BNL_NORM_RENORM) n = 2 * C;
        else if (m->ns.kind == BNL_NORM_GHOST) n = 3 * (size_t)(N / m->ns.virtual_batch) * C;
        m->act[i].xo = total;
        total += n;
    }
    if (total > m->nbuf_cap) {
        float *p = bnl_calloc(total, sizeof(float));
        if (!p) return bnl_fail(BNL_ERR_NOMEM, "out of memory for the normalization statistics (batch %d)", N);
        bnl_free(m->nbuf);
        m->nbuf = p, m->nbuf_cap = total;
    }
    m->nbuf_N = N, m->has_norm_stats = 0;
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Eval weights: BatchNorm folded into the convolutions, packed for the context's ISA

// The train-mode Winograd weights: every 3x3 stride-1 conv's own weights (no BatchNorm folded: a
// train-mode forward normalizes with the batch's statistics after the convolution).
bnl_status bnl_context_pack_train(bnl_resnet *m) {
    const bnl_layout *L = m->L;
    const bnl_state *st = m->st;
    if (m->pkt_valid && m->pkt && m->pkt_version == st->pversion) return BNL_OK;
    if (!m->pkt && !(m->pkt = calloc((size_t)L->nconv, sizeof *m->pkt)))
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for the train-mode Winograd weights");
    for (int c = 0; c < L->nconv; c++) {
        const bnl_lconv *cv = &L->convs[c];
        if (cv->k != 3 || cv->stride != 1) continue;
        bnl_status s = bnl_conv_pack_weights_isa(&m->pkt[c], m->isa, st->params + cv->w, NULL, cv->cout, 3, 3, cv->cin, 1);
        if (s != BNL_OK) {
            free_packed_train(m);
            return s;
        }
    }
    m->pkt_valid = 1, m->pkt_version = st->pversion;
    return BNL_OK;
}

// Conv c is followed by BatchNorm c (the layout is built that way): w' = w*s, bias = beta - mean*s
// with s = gamma/sqrt(running_var + eps), per output channel, in double.
bnl_status bnl_context_fold_and_pack(bnl_resnet *m) {
    const bnl_layout *L = m->L;
    const bnl_state *st = m->st;
    if (m->pk_valid && m->pk && m->pk_version == st->version) return BNL_OK;
    if (!m->pk) {
        size_t nb = 0;
        for (int c = 0; c < L->nconv; c++) nb += (size_t)L->convs[c].cout;
        m->pk = calloc((size_t)L->nconv, sizeof *m->pk);
        m->fold_bias = bnl_alloc(nb * sizeof(float));
        if (!m->pk || !m->fold_bias) {
            free_packed(m);
            return bnl_fail(BNL_ERR_NOMEM, "out of memory for the packed eval weights");
        }
    }
    int maxc = 0;
    for (int c = 0; c < L->nconv; c++) maxc = L->convs[c].cout > maxc ? L->convs[c].cout : maxc;
    float *scale = bnl_alloc((size_t)maxc * sizeof(float));
    if (!scale) return bnl_fail(BNL_ERR_NOMEM, "out of memory for the packed eval weights");
    float *bias = m->fold_bias;
    bnl_status s = BNL_OK;
    for (int c = 0; c < L->nconv && s == BNL_OK; c++) {
        const bnl_lconv *cv = &L->convs[c];
        const bnl_lbn *x = &L->bns[c];
        const float *g = st->params + x->gamma, *b = st->params + x->beta, *rm = st->stats + x->rm,
                    *rv = st->stats + x->rv;
        for (int k = 0; k < cv->cout; k++) {
            if (m->info.norm == BNL_NORM_NONE) {   // the affine layer: w' = w*gamma, bias = beta
                scale[k] = g[k], bias[k] = b[k];
                continue;
            }
            double sk = (double)g[k] / sqrt((double)rv[k] + (double)m->bn.eps);
            scale[k] = (float)sk;
            bias[k] = (float)((double)b[k] - (double)rm[k] * sk);
        }
        s = bnl_conv_pack_weights_isa(&m->pk[c], m->isa, st->params + cv->w, scale, cv->cout, cv->k, cv->k, cv->cin,
                                       cv->stride);
        bias += cv->cout;
    }
    bnl_free(scale);
    if (s == BNL_OK)   // fc.weight (classes, features) is a 1x1 conv's (K, 1, 1, C)
        s = bnl_conv_pack_weights_isa(&m->pk_fc, m->isa, st->params + L->fc_w, NULL, m->info.num_classes, 1, 1,
                                      m->info.num_features, 1);
    if (s != BNL_OK) {
        free_packed(m);
        return s;
    }
    m->pk_valid = 1, m->pk_version = st->version;
    return BNL_OK;
}
