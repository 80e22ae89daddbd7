// torchvision ResNet in NHWC: layout from the state dict, forward, backward, SGD, save.
// Sizes: N batch; H,W spatial; C channels; K classes; F features (fc input).
#include "model/resnet.h"

#include "core/common.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "ops/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY_RET(expr)                          \
    do {                                       \
        bnl_status _s = (expr);                \
        if (_s != BNL_OK) return _s;           \
    } while (0)
#define TRY(expr)                              \
    do {                                       \
        bnl_status _s = (expr);                \
        if (_s != BNL_OK) return _s;           \
    } while (0)

#define NAME_LEN 64
#define NORM_META_KEY "bnlab.norm"
#define RMAX_META_KEY "bnlab.renorm_rmax"
#define DMAX_META_KEY "bnlab.renorm_dmax"

typedef struct {
    char name[NAME_LEN];   // "layer1.0.conv1" (".weight" appended in the file)
    int cin, cout, k, stride, pad;
    size_t w;              // params offset of (cout,k,k,cin), OHWI
} conv_t;

typedef struct {
    char name[NAME_LEN];   // "layer1.0.bn1"
    int C;
    int relu;              // a ReLU follows directly: fused
    size_t gamma, beta;    // params offsets
    size_t rm, rv;         // stats offsets (running mean, running var)
    size_t bm, bv, bis;    // batch offsets (batch mean, batch var, invstd saved for backward)
    int64_t tracked;
    size_t xo;             // offset in nbuf of this layer's kind-specific statistics (norm_plan)
    // plan: input (the conv output) and output of this layer for the current batch shape
    float *pre, *post;
    int H, W;              // spatial size of its input
} bn_t;

typedef struct {
    int conv1, conv2, conv3, dconv;   // indices (conv3/dconv -1 if absent)
    int bn1, bn2, bn3, dbn;
    int cin, cout, stride;
    float *in, *out;                  // plan: block input and output
    int Hin, Win, Hout, Wout;
} block_t;

typedef struct { size_t off, n; int decay; } segment_t;

struct bnl_resnet {
    bnl_resnet_info info;
    conv_t *convs;
    int nconv;
    bn_t *bns;
    int nbn;
    block_t *blocks;
    int nblocks;
    size_t fc_w, fc_b;
    segment_t *segs;
    int nseg;
    float *params, *grads, *mom;
    float *stats;
    float *batch;
    int has_batch, has_tracked, training;
    bnl_bn_config bn;
    // normalization kind and, per layer, what group/renorm/ghost keep beyond BatchNorm's batch
    // statistics (group: mean, var, invstd (N,G); renorm: r, d (C); ghost: mean, var, invstd (N/V,C))
    bnl_norm_spec ns;
    float *nbuf;
    size_t nbuf_cap;
    int nbuf_N, has_norm_stats;
    char **meta_k, **meta_v;
    size_t nmeta;
    bnl_allgather_fn sync_fn;
    void *sync_ctx;
    int sync_replicas;
    double *sync_buf;   // (replicas + 1) * (2C + 1) doubles of the widest BN layer: one gather
    bnl_grad_ready_fn grad_fn;   // data parallel: gradients [lo, np) are final (backward in progress)
    void *grad_ctx;
    // activation plan for (N,H,W,keep)
    int pN, pH, pW, pkeep;
    float *arena;
    int32_t *argmax;
    float *stem_pool, *feat, *probs, *grad_buf[4], *scratch;
    float *pp[3];         // the eval forward's ping-pong buffers (lean: the plan's three; keep: grad_buf)
    int Hs, Ws, Hp, Wp;   // stem conv output, pool output
    // Eval inference: every conv with its BatchNorm folded in (weights scaled per output channel,
    // a bias added), packed once for the active ISA's GEMM. Rebuilt lazily when stale: after load,
    // sgd_update, a train-mode forward (running stats move), a BN config change, or when a params or
    // stats pointer is handed out (the caller may write through it).
    bnl_conv_packed **pk;   // one per conv
    bnl_conv_packed *pk_fc; // fc as a 1x1 convolution on the pooled features
    float *fold_bias;       // per conv, cout floats each, in conv order
    int pk_valid;
};

bnl_sgd bnl_sgd_default(void) {
    bnl_sgd s = {0.1f, 0.0f, 0.0f, 0, 0};
    return s;
}

// ---------------------------------------------------------------------------------------------
// Building the layout

typedef struct {
    bnl_resnet *m;
    size_t np, ns, nb;   // running sizes of params, stats, batch buffers
    int cap_conv, cap_bn, cap_seg;
} builder;

// Makes room for one more element in a growing array (*arr holds n of elem bytes, *cap capacity).
static int grow(void **arr, int *cap, int n, size_t elem) {
    if (n < *cap) return 1;
    int nc = *cap ? 2 * *cap : 64;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return 0;
    *arr = p, *cap = nc;
    return 1;
}

static int add_seg(builder *b, size_t off, size_t n, int decay) {
    bnl_resnet *m = b->m;
    if (!grow((void **)&m->segs, &b->cap_seg, m->nseg, sizeof *m->segs)) return 0;
    m->segs[m->nseg++] = (segment_t){off, n, decay};
    return 1;
}

static int add_conv(builder *b, const char *name, int cin, int cout, int k, int stride) {
    bnl_resnet *m = b->m;
    if (!grow((void **)&m->convs, &b->cap_conv, m->nconv, sizeof *m->convs)) return -1;
    conv_t *c = &m->convs[m->nconv];
    memset(c, 0, sizeof *c);
    snprintf(c->name, NAME_LEN, "%s", name);
    c->cin = cin, c->cout = cout, c->k = k, c->stride = stride, c->pad = k / 2;
    c->w = b->np;
    size_t n = (size_t)cout * (size_t)k * (size_t)k * (size_t)cin;
    if (!add_seg(b, b->np, n, 1)) return -1;
    b->np += n;
    return m->nconv++;
}

static int add_bn(builder *b, const char *name, int C, int relu) {
    bnl_resnet *m = b->m;
    if (!grow((void **)&m->bns, &b->cap_bn, m->nbn, sizeof *m->bns)) return -1;
    bn_t *x = &m->bns[m->nbn];
    memset(x, 0, sizeof *x);
    snprintf(x->name, NAME_LEN, "%s", name);
    x->C = C, x->relu = relu;
    x->gamma = b->np, x->beta = b->np + (size_t)C;
    if (!add_seg(b, b->np, 2 * (size_t)C, 0)) return -1;
    b->np += 2 * (size_t)C;
    x->rm = b->ns, x->rv = b->ns + (size_t)C;
    b->ns += 2 * (size_t)C;
    x->bm = b->nb, x->bv = b->nb + (size_t)C, x->bis = b->nb + 2 * (size_t)C;
    b->nb += 3 * (size_t)C;
    return m->nbn++;
}

// Shape of a tensor in the file as text, for messages.
static void shape_str(char *out, size_t cap, const bnl_st_tensor *t) {
    size_t p = 0;
    p += (size_t)snprintf(out + p, cap - p, "[");
    for (int i = 0; i < t->ndim && p < cap; i++)
        p += (size_t)snprintf(out + p, cap - p, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (p < cap) snprintf(out + p, cap - p, "]");
}

static const bnl_st_tensor *find_fmt(const bnl_st_file *f, char *name, size_t cap, const char *fmt, ...)
    BNL_PRINTF(4, 5);
static const bnl_st_tensor *find_fmt(const bnl_st_file *f, char *name, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, cap, fmt, ap);
    va_end(ap);
    return bnl_st_find(f, name);
}

// Checks a tensor's shape against the expected dims; names it in the message.
static bnl_status expect_shape(const bnl_st_file *f, const char *name, int ndim, const int64_t *dims,
                               const char *hint) {
    const bnl_st_tensor *t = bnl_st_find(f, name);
    if (!t) return bnl_fail(BNL_ERR_FORMAT, "missing tensor '%s'%s%s", name, hint ? ": " : "", hint ? hint : "");
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        char got[128], want[128];
        shape_str(got, sizeof got, t);
        size_t p = (size_t)snprintf(want, sizeof want, "[");
        for (int i = 0; i < ndim && p < sizeof want; i++)
            p += (size_t)snprintf(want + p, sizeof want - p, "%s%lld", i ? "," : "", (long long)dims[i]);
        if (p < sizeof want) snprintf(want + p, sizeof want - p, "]");
        return bnl_fail(BNL_ERR_SHAPE, "tensor '%s' has shape %s, expected %s for a torchvision ResNet%s%s", name,
                        got, want, hint ? " " : "", hint ? hint : "");
    }
    if (t->dtype != BNL_DT_F32 && t->dtype != BNL_DT_F16 && t->dtype != BNL_DT_BF16 && t->dtype != BNL_DT_F64)
        return bnl_fail(BNL_ERR_FORMAT, "tensor '%s' has dtype %s, expected a float type (F32, F16, BF16)", name,
                        bnl_dtype_name(t->dtype));
    return BNL_OK;
}

// Reads a 4-D conv weight's dims from the file (for layers whose widths the file decides).
static bnl_status conv_dims(const bnl_st_file *f, const char *name, int64_t d[4]) {
    const bnl_st_tensor *t = bnl_st_find(f, name);
    if (!t) return bnl_fail(BNL_ERR_FORMAT, "missing tensor '%s'", name);
    if (t->ndim != 4) {
        char got[128];
        shape_str(got, sizeof got, t);
        return bnl_fail(BNL_ERR_SHAPE, "tensor '%s' has shape %s, expected a 4-D convolution weight [O,I,kh,kw]",
                        name, got);
    }
    for (int i = 0; i < 4; i++) {
        if (t->shape[i] <= 0 || t->shape[i] > 65536)
            return bnl_fail(BNL_ERR_SHAPE, "tensor '%s' has an implausible dimension %lld", name, (long long)t->shape[i]);
        d[i] = t->shape[i];
    }
    return BNL_OK;
}

static bnl_status check_conv(const bnl_st_file *f, const char *layer, int cin, int cout, int k, const char *hint) {
    char name[192];
    snprintf(name, sizeof name, "%s.weight", layer);
    int64_t dims[4] = {cout, cin, k, k};
    return expect_shape(f, name, 4, dims, hint);
}

// GroupNorm files may lack the running statistics (nn.GroupNorm has none): need_stats 0.
static bnl_status check_bn(const bnl_st_file *f, const char *layer, int C, int need_stats) {
    static const char *parts[] = {"weight", "bias", "running_mean", "running_var"};
    char name[NAME_LEN + 32];
    int64_t dims[1] = {C};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", layer, parts[i]);
        if (i >= 2 && !need_stats && !bnl_st_find(f, name)) continue;
        bnl_status s = expect_shape(f, name, 1, dims, NULL);
        if (s != BNL_OK) return s;
    }
    return BNL_OK;
}

// One convolution "<pre>.<conv>" (cin -> cout, k x k, checked against the file) and the BatchNorm
// "<pre>.<bn>" after it, added to the layer tables; *ci and *bi get their indices.
static bnl_status add_conv_bn(builder *b, const bnl_st_file *f, const char *pre, const char *conv, const char *bn,
                              int cin, int cout, int k, int stride, int relu, const char *hint, int *ci, int *bi) {
    char lname[NAME_LEN];
    bnl_status s;
    snprintf(lname, sizeof lname, "%s.%s", pre, conv);
    if ((s = check_conv(f, lname, cin, cout, k, hint)) != BNL_OK) return s;
    if ((*ci = add_conv(b, lname, cin, cout, k, stride)) < 0) return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout");
    snprintf(lname, sizeof lname, "%s.%s", pre, bn);
    if ((s = check_bn(f, lname, cout, b->m->ns.kind != BNL_NORM_GROUP)) != BNL_OK) return s;
    if ((*bi = add_bn(b, lname, cout, relu)) < 0) return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout");
    return BNL_OK;
}

// Derives the architecture and checks every expected tensor; fills the layer tables.
static bnl_status build_layout(bnl_resnet *m, const bnl_st_file *f) {
    builder b;
    memset(&b, 0, sizeof b);
    b.m = m;
    char name[160];
    bnl_status s;
    int64_t d[4];
    bnl_resnet_info *info = &m->info;

    if (!bnl_st_find(f, "conv1.weight"))
        return bnl_fail(BNL_ERR_FORMAT, "missing tensor 'conv1.weight': not a torchvision ResNet state dict");
    if ((s = conv_dims(f, "conv1.weight", d)) != BNL_OK) return s;
    if (d[2] != 7 || d[3] != 7)
        return bnl_fail(BNL_ERR_SHAPE, "tensor 'conv1.weight' has a %lldx%lld kernel, expected the 7x7 ResNet stem",
                        (long long)d[2], (long long)d[3]);
    info->stem_width = (int)d[0], info->in_channels = (int)d[1];
    if (add_conv(&b, "conv1", info->in_channels, info->stem_width, 7, 2) < 0) goto oom;
    if ((s = check_bn(f, "bn1", info->stem_width, m->ns.kind != BNL_NORM_GROUP)) != BNL_OK) return s;
    if (add_bn(&b, "bn1", info->stem_width, 1) < 0) goto oom;

    info->bottleneck = bnl_st_find(f, "layer1.0.conv3.weight") != NULL;
    int cin = info->stem_width, cap_blocks = 0;
    for (int st = 0; st < BNL_MAX_STAGES; st++) {
        if (!find_fmt(f, name, sizeof name, "layer%d.0.conv1.weight", st + 1)) break;
        int nb = 0;
        while (find_fmt(f, name, sizeof name, "layer%d.%d.conv1.weight", st + 1, nb)) nb++;
        for (int bi = 0; bi < nb; bi++) {
            char pre[NAME_LEN / 2], lname[NAME_LEN];
            snprintf(pre, sizeof pre, "layer%d.%d", st + 1, bi);
            int stride = (st > 0 && bi == 0) ? 2 : 1;
            if (!grow((void **)&m->blocks, &cap_blocks, m->nblocks, sizeof *m->blocks)) goto oom;
            block_t *blk = &m->blocks[m->nblocks];
            memset(blk, 0, sizeof *blk);
            blk->cin = cin, blk->stride = stride, blk->conv3 = blk->bn3 = blk->dconv = blk->dbn = -1;
            snprintf(lname, sizeof lname, "%s.conv1.weight", pre);
            if ((s = conv_dims(f, lname, d)) != BNL_OK) return s;
            int mid = (int)d[0], cout;
            if (info->bottleneck) {
                snprintf(lname, sizeof lname, "%s.conv3.weight", pre);
                if ((s = conv_dims(f, lname, d)) != BNL_OK) {
                    return bnl_fail(BNL_ERR_FORMAT,
                                    "missing tensor '%s': layer1.0 is a bottleneck block, so every block needs conv3",
                                    lname);
                }
                cout = (int)d[0];
                if ((s = add_conv_bn(&b, f, pre, "conv1", "bn1", cin, mid, 1, 1, 1, "(bottleneck 1x1)", &blk->conv1,
                                     &blk->bn1)) != BNL_OK ||
                    (s = add_conv_bn(&b, f, pre, "conv2", "bn2", mid, mid, 3, stride, 1,
                                     "(3x3; grouped convolutions are not supported)", &blk->conv2, &blk->bn2)) != BNL_OK ||
                    (s = add_conv_bn(&b, f, pre, "conv3", "bn3", mid, cout, 1, 1, 0, "(bottleneck 1x1)", &blk->conv3,
                                     &blk->bn3)) != BNL_OK)
                    return s;
            } else {
                cout = mid;
                if ((s = add_conv_bn(&b, f, pre, "conv1", "bn1", cin, cout, 3, stride, 1, "(basic block 3x3)",
                                     &blk->conv1, &blk->bn1)) != BNL_OK ||
                    (s = add_conv_bn(&b, f, pre, "conv2", "bn2", cout, cout, 3, 1, 0, "(basic block 3x3)", &blk->conv2,
                                     &blk->bn2)) != BNL_OK)
                    return s;
            }
            snprintf(lname, sizeof lname, "%s.downsample.0.weight", pre);
            int has_down = bnl_st_find(f, lname) != NULL;
            if (!has_down && (stride != 1 || cin != cout))
                return bnl_fail(BNL_ERR_FORMAT,
                                "missing tensor '%s': block %s changes %s (%d -> %d channels, stride %d) and needs a downsample",
                                lname, pre, stride != 1 ? "resolution" : "width", cin, cout, stride);
            if (has_down && (s = add_conv_bn(&b, f, pre, "downsample.0", "downsample.1", cin, cout, 1, stride, 0,
                                             "(downsample 1x1)", &blk->dconv, &blk->dbn)) != BNL_OK)
                return s;
            blk->cout = cout;
            cin = cout;
            m->nblocks++;
        }
        info->blocks[st] = nb;
        info->widths[st] = cin;
        info->num_stages = st + 1;
    }
    if (info->num_stages == 0)
        return bnl_fail(BNL_ERR_FORMAT, "missing tensor 'layer1.0.conv1.weight': a ResNet needs at least one stage");
    if (find_fmt(f, name, sizeof name, "layer%d.0.conv1.weight", BNL_MAX_STAGES + 1))
        return bnl_fail(BNL_ERR_SHAPE, "tensor '%s': more than %d stages are not supported", name, BNL_MAX_STAGES);

    const bnl_st_tensor *fw = bnl_st_find(f, "fc.weight");
    if (!fw) return bnl_fail(BNL_ERR_FORMAT, "missing tensor 'fc.weight'");
    if (fw->ndim != 2 || fw->shape[0] <= 0 || fw->shape[0] > 1000000)
        return bnl_fail(BNL_ERR_SHAPE, "tensor 'fc.weight' must be 2-D [classes, features]");
    info->num_classes = (int)fw->shape[0];
    info->num_features = cin;
    int64_t fdims[2] = {info->num_classes, cin}, bdims[1] = {info->num_classes};
    if ((s = expect_shape(f, "fc.weight", 2, fdims, "(features = last stage width)")) != BNL_OK) return s;
    if ((s = expect_shape(f, "fc.bias", 1, bdims, NULL)) != BNL_OK) return s;
    m->fc_w = b.np;
    if (!add_seg(&b, b.np, (size_t)info->num_classes * (size_t)cin, 1)) goto oom;
    b.np += (size_t)info->num_classes * (size_t)cin;
    m->fc_b = b.np;
    if (!add_seg(&b, b.np, (size_t)info->num_classes, 0)) goto oom;
    b.np += (size_t)info->num_classes;

    info->num_bn = m->nbn;
    info->num_params = b.np;
    info->num_stats = b.ns;
    m->params = bnl_calloc(b.np, sizeof(float));
    m->grads = bnl_calloc(b.np, sizeof(float));
    m->mom = bnl_calloc(b.np, sizeof(float));
    m->stats = bnl_calloc(b.ns, sizeof(float));
    m->batch = bnl_calloc(b.nb, sizeof(float));
    if (!m->params || !m->grads || !m->mom || !m->stats || !m->batch) goto oom;
    return BNL_OK;
oom:
    return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout");
}

// Every tensor in the file must be one we expect: names the first unexpected one.
static bnl_status check_unexpected(const bnl_resnet *m, const bnl_st_file *f) {
    static const char *bn_parts[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
    char name[160];
    for (size_t i = 0; i < f->count; i++) {
        const char *n = f->tensors[i].name;
        // training checkpoints carry the optimizer's state under this reserved prefix
        int ok = !strcmp(n, "fc.weight") || !strcmp(n, "fc.bias") || !strncmp(n, "optimizer.", 10);
        for (int c = 0; !ok && c < m->nconv; c++) {
            snprintf(name, sizeof name, "%s.weight", m->convs[c].name);
            ok = !strcmp(n, name);
        }
        for (int b = 0; !ok && b < m->nbn; b++)
            for (int p = 0; !ok && p < 5; p++) {
                snprintf(name, sizeof name, "%s.%s", m->bns[b].name, bn_parts[p]);
                ok = !strcmp(n, name);
            }
        if (!ok)
            return bnl_fail(BNL_ERR_FORMAT, "unexpected tensor '%s': not part of the torchvision ResNet read from this file",
                            n);
    }
    return BNL_OK;
}

static bnl_status load_values(bnl_resnet *m, const bnl_st_file *f) {
    char name[160];
    bnl_status s;
    float *tmp = NULL;
    size_t tmp_n = 0;
    for (int c = 0; c < m->nconv; c++) {
        const conv_t *cv = &m->convs[c];
        snprintf(name, sizeof name, "%s.weight", cv->name);
        const bnl_st_tensor *t = bnl_st_find(f, name);
        if (t->nelem > tmp_n) {
            bnl_free(tmp);
            tmp_n = t->nelem;
            if (!(tmp = bnl_alloc(tmp_n * sizeof(float)))) return bnl_fail(BNL_ERR_NOMEM, "out of memory loading '%s'", name);
        }
        if ((s = bnl_st_to_f32(tmp, t)) != BNL_OK) {
            bnl_free(tmp);
            return s;
        }
        // torch OIHW -> bnlab OHWI
        float *w = m->params + cv->w;
        int K = cv->cout, C = cv->cin, R = cv->k;
        for (int o = 0; o < K; o++)
            for (int i = 0; i < C; i++)
                for (int r = 0; r < R; r++)
                    for (int q = 0; q < R; q++)
                        w[(((size_t)o * R + r) * R + q) * C + i] = tmp[(((size_t)o * C + i) * R + r) * R + q];
    }
    bnl_free(tmp);
    m->has_tracked = 0;
    for (int b = 0; b < m->nbn; b++) {
        bn_t *x = &m->bns[b];
        struct { const char *part; float *dst; } parts[] = {
            {"weight", m->params + x->gamma}, {"bias", m->params + x->beta},
            {"running_mean", m->stats + x->rm}, {"running_var", m->stats + x->rv}};
        for (int p = 0; p < 4; p++) {
            snprintf(name, sizeof name, "%s.%s", x->name, parts[p].part);
            const bnl_st_tensor *t = bnl_st_find(f, name);
            if (!t) {   // a GroupNorm file without running statistics (check_bn allowed it): BatchNorm's init
                for (int c = 0; c < x->C; c++) parts[p].dst[c] = p == 3 ? 1.0f : 0.0f;
                continue;
            }
            if ((s = bnl_st_to_f32(parts[p].dst, t)) != BNL_OK) return s;
        }
        for (int c = 0; c < x->C; c++)
            if (!(m->stats[x->rv + c] >= 0.0f) || !isfinite(m->stats[x->rv + c]))
                return bnl_fail(BNL_ERR_NUMERIC, "tensor '%s.running_var' has a negative or non-finite value at [%d]",
                                x->name, c);
        snprintf(name, sizeof name, "%s.num_batches_tracked", x->name);
        const bnl_st_tensor *t = bnl_st_find(f, name);
        x->tracked = 0;
        if (t) {
            if (t->nelem != 1)
                return bnl_fail(BNL_ERR_SHAPE, "tensor '%s' must hold one integer (shape [])", name);
            if ((s = bnl_st_to_i64(&x->tracked, t)) != BNL_OK) return s;
            m->has_tracked = 1;
        }
    }
    if ((s = bnl_st_to_f32(m->params + m->fc_w, bnl_st_find(f, "fc.weight"))) != BNL_OK) return s;
    if ((s = bnl_st_to_f32(m->params + m->fc_b, bnl_st_find(f, "fc.bias"))) != BNL_OK) return s;
    return BNL_OK;
}

static bnl_status copy_meta(bnl_resnet *m, const bnl_st_file *f) {
    if (!f->meta_count) return BNL_OK;
    m->meta_k = calloc(f->meta_count, sizeof(char *));
    m->meta_v = calloc(f->meta_count, sizeof(char *));
    if (!m->meta_k || !m->meta_v) return bnl_fail(BNL_ERR_NOMEM, "out of memory copying metadata");
    for (size_t i = 0; i < f->meta_count; i++) {
        m->meta_k[i] = strdup(f->meta_keys[i]);
        m->meta_v[i] = strdup(f->meta_values[i]);
        m->nmeta = i + 1;
        if (!m->meta_k[i] || !m->meta_v[i]) return bnl_fail(BNL_ERR_NOMEM, "out of memory copying metadata");
    }
    return BNL_OK;
}

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

// A renorm bound from the metadata (absent: the default); lo is its smallest legal value.
static bnl_status meta_bound(const bnl_st_file *f, const char *key, float lo, float dflt, float *out) {
    const char *v = bnl_st_meta(f, key);
    *out = dflt;
    if (!v) return BNL_OK;
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= lo && d <= 1e6))
        return bnl_fail(BNL_ERR_FORMAT, "metadata '%s' is '%.40s' (expected a number in [%g, 1e6])", key, v, (double)lo);
    *out = (float)d;
    return BNL_OK;
}

// "bnlab.norm" (and the renorm bounds) in the file's __metadata__: absent or "batch" is BatchNorm.
static bnl_status norm_from_file(bnl_resnet *m, const bnl_st_file *f) {
    const char *v = bnl_st_meta(f, NORM_META_KEY);
    bnl_status s = bnl_norm_parse(&m->ns, v ? v : "batch");
    if (s != BNL_OK)
        return bnl_fail(BNL_ERR_FORMAT, "metadata '%s' is '%.60s' (expected batch, none, group:G, renorm, ghost:V or "
                        "frozen)", NORM_META_KEY, v);
    if (m->ns.kind == BNL_NORM_RENORM) {
        TRY_RET(meta_bound(f, RMAX_META_KEY, 1.0f, BNL_RENORM_RMAX_DEFAULT, &m->ns.renorm_rmax));
        TRY_RET(meta_bound(f, DMAX_META_KEY, 0.0f, BNL_RENORM_DMAX_DEFAULT, &m->ns.renorm_dmax));
    }
    m->info.norm = m->ns.kind;
    return BNL_OK;
}

// GroupNorm's G must divide every layer's channels: names the first layer where it does not.
static bnl_status check_groups(const bnl_resnet *m, int G, int from_file) {
    for (int i = 0; i < m->nbn; i++)
        if (m->bns[i].C % G != 0)
            return bnl_fail(from_file ? BNL_ERR_FORMAT : BNL_ERR_ARG,
                            "%s'group:%d': %d groups do not divide the %d channels of layer '%s'",
                            from_file ? "metadata '" NORM_META_KEY "' is " : "norm ", G, G, m->bns[i].C, m->bns[i].name);
    return BNL_OK;
}

static bnl_status load_from(bnl_resnet **out, const bnl_st_file *f, int allow_extra) {
    bnl_resnet *m = calloc(1, sizeof *m);
    if (!m) return bnl_fail(BNL_ERR_NOMEM, "out of memory allocating the model");
    m->bn = bnl_bn_config_default();
    m->training = 0;
    bnl_status s = norm_from_file(m, f);   // first: a GroupNorm file may lack running statistics
    if (s == BNL_OK) s = build_layout(m, f);
    if (s == BNL_OK && m->ns.kind == BNL_NORM_GROUP) s = check_groups(m, m->ns.groups, 1);
    if (s == BNL_OK && !allow_extra) s = check_unexpected(m, f);
    if (s == BNL_OK) s = load_values(m, f);
    if (s == BNL_OK) s = copy_meta(m, f);
    if (s != BNL_OK) {
        bnl_resnet_free(m);
        return s;
    }
    *out = m;
    return BNL_OK;
}

bnl_status bnl_resnet_load(bnl_resnet **out, const uint8_t *buf, size_t len) {
    if (!out || !buf) return bnl_fail(BNL_ERR_ARG, "resnet load: NULL argument");
    *out = NULL;
    bnl_st_file f;
    bnl_status s = bnl_st_parse(&f, buf, len);
    if (s != BNL_OK) return s;
    s = load_from(out, &f, 0);
    bnl_st_free(&f);
    return s;
}

bnl_status bnl_resnet_load_parsed(bnl_resnet **out, const bnl_st_file *f, int allow_extra) {
    if (!out || !f) return bnl_fail(BNL_ERR_ARG, "resnet load: NULL argument");
    *out = NULL;
    return load_from(out, f, allow_extra);
}

bnl_status bnl_resnet_load_file(bnl_resnet **out, const char *path) {
    if (!out || !path) return bnl_fail(BNL_ERR_ARG, "resnet load: NULL argument");
    *out = NULL;
    bnl_st_file f;
    bnl_status s = bnl_st_read_file(&f, path);
    if (s != BNL_OK) return s;
    s = load_from(out, &f, 0);
    if (s != BNL_OK) {
        // prefix the path so command-line users know which file
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        bnl_fail(s, "%s: %s", path, msg);
    }
    bnl_st_free(&f);
    return s;
}

static void free_plan(bnl_resnet *m) {
    bnl_free(m->arena);
    bnl_free(m->argmax);
    m->arena = NULL, m->argmax = NULL;
    m->pN = 0;
}

static void free_packed(bnl_resnet *m) {
    if (m->pk)
        for (int c = 0; c < m->nconv; c++) bnl_conv_packed_free(m->pk[c]);
    free(m->pk), bnl_free(m->fold_bias), bnl_conv_packed_free(m->pk_fc);
    m->pk = NULL, m->fold_bias = NULL, m->pk_fc = NULL, m->pk_valid = 0;
}

void bnl_resnet_params_changed(bnl_resnet *m) {
    if (m) m->pk_valid = 0;
}

void bnl_resnet_free(bnl_resnet *m) {
    if (!m) return;
    free_plan(m);
    free_packed(m);
    free(m->convs), free(m->bns), free(m->blocks), free(m->segs);
    bnl_free(m->params), bnl_free(m->grads), bnl_free(m->mom), bnl_free(m->stats), bnl_free(m->batch);
    bnl_free(m->sync_buf);
    bnl_free(m->nbuf);
    for (size_t i = 0; i < m->nmeta; i++) free(m->meta_k[i]), free(m->meta_v[i]);
    free(m->meta_k), free(m->meta_v);
    free(m);
}

const bnl_resnet_info *bnl_resnet_get_info(const bnl_resnet *m) { return &m->info; }

const char *bnl_resnet_meta(const bnl_resnet *m, const char *key) {
    for (size_t i = 0; i < m->nmeta; i++)
        if (!strcmp(m->meta_k[i], key)) return m->meta_v[i];
    return NULL;
}

// Sets (value) or removes (NULL) one __metadata__ entry.
static bnl_status meta_set(bnl_resnet *m, const char *key, const char *value) {
    size_t i = 0;
    while (i < m->nmeta && strcmp(m->meta_k[i], key)) i++;
    if (!value) {
        if (i == m->nmeta) return BNL_OK;
        free(m->meta_k[i]), free(m->meta_v[i]);
        for (size_t j = i + 1; j < m->nmeta; j++) m->meta_k[j - 1] = m->meta_k[j], m->meta_v[j - 1] = m->meta_v[j];
        m->nmeta--;
        return BNL_OK;
    }
    char *v = strdup(value);
    if (!v) return bnl_fail(BNL_ERR_NOMEM, "out of memory setting metadata");
    if (i < m->nmeta) {
        free(m->meta_v[i]);
        m->meta_v[i] = v;
        return BNL_OK;
    }
    char *k = strdup(key);
    char **nk = k ? realloc(m->meta_k, (m->nmeta + 1) * sizeof *nk) : NULL;
    if (nk) m->meta_k = nk;
    char **nv = nk ? realloc(m->meta_v, (m->nmeta + 1) * sizeof *nv) : NULL;
    if (nv) m->meta_v = nv;
    if (!nv) {
        free(k), free(v);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory setting metadata");
    }
    m->meta_k[m->nmeta] = k, m->meta_v[m->nmeta] = v;
    m->nmeta++;
    return BNL_OK;
}

bnl_status bnl_resnet_set_norm_spec(bnl_resnet *m, const bnl_norm_spec *sp) {
    if (!m || !sp) return bnl_fail(BNL_ERR_ARG, "set_norm: NULL argument");
    bnl_norm_spec ns = *sp;
    switch (ns.kind) {
    case BNL_NORM_GROUP:
        if (ns.groups < 1) return bnl_fail(BNL_ERR_ARG, "norm group:G needs G >= 1 (got %d)", ns.groups);
        TRY_RET(check_groups(m, ns.groups, 0));
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
    TRY_RET(meta_set(m, NORM_META_KEY, ns.kind == BNL_NORM_BATCH ? NULL : v));
    TRY_RET(meta_set(m, RMAX_META_KEY, rn ? r : NULL));
    TRY_RET(meta_set(m, DMAX_META_KEY, rn ? d : NULL));
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

void bnl_resnet_zero_init_residual(bnl_resnet *m) {
    for (int b = 0; b < m->nblocks; b++) {
        const block_t *blk = &m->blocks[b];
        const bn_t *last = &m->bns[blk->bn3 >= 0 ? blk->bn3 : blk->bn2];
        memset(m->params + last->gamma, 0, (size_t)last->C * sizeof(float));
    }
    m->pk_valid = 0;
}

void bnl_resnet_set_training(bnl_resnet *m, int training) { m->training = training != 0; }
int bnl_resnet_training(const bnl_resnet *m) { return m->training; }

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

// Handing out a writable pointer to what the packed eval weights are made from makes them stale.
float *bnl_resnet_params(bnl_resnet *m, size_t *count) { if (count) *count = m->info.num_params; m->pk_valid = 0; return m->params; }
float *bnl_resnet_grads(bnl_resnet *m, size_t *count) { if (count) *count = m->info.num_params; return m->grads; }
float *bnl_resnet_momentum(bnl_resnet *m, size_t *count) { if (count) *count = m->info.num_params; return m->mom; }
float *bnl_resnet_stats(bnl_resnet *m, size_t *count) { if (count) *count = m->info.num_stats; m->pk_valid = 0; return m->stats; }

int bnl_resnet_bn_count(const bnl_resnet *m) { return m->nbn; }
const char *bnl_resnet_bn_name(const bnl_resnet *m, int i) { return i >= 0 && i < m->nbn ? m->bns[i].name : NULL; }
int bnl_resnet_bn_find(const bnl_resnet *m, const char *name) {
    for (int i = 0; i < m->nbn; i++)
        if (!strcmp(m->bns[i].name, name)) return i;
    return -1;
}

bnl_status bnl_resnet_norm_stats(const bnl_resnet *m, int i, bnl_norm_view *out) {
    if (!m || !out) return bnl_fail(BNL_ERR_ARG, "norm_stats: NULL argument");
    if (i < 0 || i >= m->nbn) return bnl_fail(BNL_ERR_ARG, "no normalization layer #%d (the model has %d)", i, m->nbn);
    int k = m->ns.kind;
    if (k != BNL_NORM_GROUP && k != BNL_NORM_RENORM && k != BNL_NORM_GHOST)
        return bnl_fail(BNL_ERR_ARG, "norm_stats: only group, renorm and ghost layers keep statistics of their own");
    if (!m->has_norm_stats || !m->nbuf)
        return bnl_fail(BNL_ERR_ARG, "norm_stats: no %sforward has run yet", k == BNL_NORM_GROUP ? "" : "train-mode ");
    const bn_t *x = &m->bns[i];
    const float *e = m->nbuf + x->xo;
    if (k == BNL_NORM_GROUP) out->rows = m->nbuf_N, out->cols = m->ns.groups;
    else if (k == BNL_NORM_RENORM) out->rows = 1, out->cols = x->C;
    else out->rows = m->nbuf_N / m->ns.virtual_batch, out->cols = x->C;
    out->a = e, out->b = e + (size_t)out->rows * out->cols;
    return BNL_OK;
}

bnl_status bnl_resnet_bn_stats(const bnl_resnet *m, int i, bnl_bn_view *out) {
    if (i < 0 || i >= m->nbn) return bnl_fail(BNL_ERR_ARG, "no BatchNorm layer #%d (the model has %d)", i, m->nbn);
    const bn_t *x = &m->bns[i];
    out->channels = x->C;
    out->batch_mean = m->batch + x->bm, out->batch_var = m->batch + x->bv;
    out->running_mean = m->stats + x->rm, out->running_var = m->stats + x->rv;
    out->num_batches_tracked = x->tracked;
    out->has_batch = m->has_batch;
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Activation plan

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

// keep = 1: every activation backward needs gets its own slice of one arena.
// keep = 0: three ping-pong buffers of the largest activation; BN runs in place.
static bnl_status plan(bnl_resnet *m, int N, int H, int W, int keep) {
    if (m->pN == N && m->pH == H && m->pW == W && m->pkeep == keep && m->arena) return BNL_OK;
    free_plan(m);
    int Hs = out_size(H, 7, 2, 3), Ws = out_size(W, 7, 2, 3);
    if (Hs < 1 || Ws < 1) return bnl_fail(BNL_ERR_SHAPE, "input %dx%d is too small for the 7x7/2 stem", H, W);
    int Hp = out_size(Hs, 3, 2, 1), Wp = out_size(Ws, 3, 2, 1);
    if (Hp < 1 || Wp < 1) return bnl_fail(BNL_ERR_SHAPE, "input %dx%d is too small for the stem max pool", H, W);
    m->Hs = Hs, m->Ws = Ws, m->Hp = Hp, m->Wp = Wp;
    // spatial sizes through the blocks
    int h = Hp, w = Wp;
    // Sizes are summed in 64 bits (size_t is 32 bits in wasm) and checked before any allocation.
    uint64_t maxact = (uint64_t)Hs * Ws * m->info.stem_width;
    uint64_t total = 2 * (uint64_t)Hs * Ws * m->info.stem_width + (uint64_t)Hp * Wp * m->info.stem_width;
    for (int b = 0; b < m->nblocks; b++) {
        block_t *blk = &m->blocks[b];
        blk->Hin = h, blk->Win = w;
        int ho = out_size(h, 3, blk->stride, 1), wo = out_size(w, 3, blk->stride, 1);
        blk->Hout = ho, blk->Wout = wo;
        int bns[4] = {blk->bn1, blk->bn2, blk->bn3, blk->dbn};
        for (int j = 0; j < 4; j++) {
            if (bns[j] < 0) continue;
            bn_t *x = &m->bns[bns[j]];
            // bottleneck bn1 runs at the input resolution, everything after conv2 at the output's;
            // basic: both at the output resolution
            int at_in = m->info.bottleneck && j == 0;
            x->H = at_in ? h : ho, x->W = at_in ? w : wo;
            uint64_t n = (uint64_t)x->H * x->W * x->C;
            if (n > maxact) maxact = n;
            total += 2 * n;
        }
        h = ho, w = wo;
    }
    // the scratch buffer also holds the head's gradients (N*(K+F)) during backward
    uint64_t head_need = (uint64_t)m->info.num_features + (uint64_t)m->info.num_classes;
    uint64_t per_image_max = maxact > head_need ? maxact : head_need;
    uint64_t nimg64 = (uint64_t)N;
    // keep: every slice + 4 gradient buffers + one scratch; lean: three ping-pong buffers
    uint64_t floats64 = nimg64 * (keep ? total + 5 * per_image_max : 3 * per_image_max);
    uint64_t head64 = nimg64 * ((uint64_t)m->info.num_features + 2 * (uint64_t)m->info.num_classes);
    uint64_t argmax64 = keep ? nimg64 * (uint64_t)Hp * Wp * m->info.stem_width : 0;
    double need_mb = ((double)floats64 + (double)head64 + (double)argmax64) * 4.0 / 1e6;
    if ((floats64 + head64 + argmax64) > (uint64_t)((SIZE_MAX - 64) / sizeof(float)))
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for activations: batch %d at %dx%d needs %.1f MB, more than this "
                        "build can address", N, H, W, need_mb);
    size_t nimg = (size_t)N, floats = (size_t)floats64, head = (size_t)head64;
    m->arena = bnl_alloc((floats + head) * sizeof(float));
    if (keep) m->argmax = bnl_alloc((size_t)argmax64 * sizeof(int32_t));
    if (!m->arena || (keep && !m->argmax)) {
        free_plan(m);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for activations: batch %d at %dx%d needs %.1f MB", N, H, W,
                        need_mb);
    }
    float *p = m->arena;
    size_t big = (size_t)per_image_max * nimg;
    bn_t *stem = &m->bns[0];
    stem->H = Hs, stem->W = Ws;
    if (keep) {
        stem->pre = p, p += nimg * (size_t)Hs * Ws * stem->C;
        stem->post = p, p += nimg * (size_t)Hs * Ws * stem->C;
        m->stem_pool = p, p += nimg * (size_t)Hp * Wp * stem->C;
        float *in = m->stem_pool;
        for (int b = 0; b < m->nblocks; b++) {
            block_t *blk = &m->blocks[b];
            blk->in = in;
            int bns[4] = {blk->bn1, blk->bn2, blk->bn3, blk->dbn};
            int last = m->info.bottleneck ? 2 : 1;   // the BN whose output feeds the residual add
            for (int j = 0; j < 4; j++) {
                if (bns[j] < 0) continue;
                bn_t *x = &m->bns[bns[j]];
                size_t n = nimg * (size_t)x->H * x->W * x->C;
                x->pre = p, p += n;
                x->post = p, p += n;
                if (j == 3) x->post = NULL;   // set to scratch below: only read by the add
                if (j == last) blk->out = x->post;   // out = relu(post + shortcut), in place
            }
            in = blk->out;
        }
        for (int i = 0; i < 4; i++) m->grad_buf[i] = p, p += big;
        m->scratch = p, p += big;
        for (int i = 0; i < 3; i++) m->pp[i] = m->grad_buf[i];   // free outside backward
        for (int b = 0; b < m->nblocks; b++)
            if (m->blocks[b].dbn >= 0) m->bns[m->blocks[b].dbn].post = m->scratch;
    } else {
        float *buf[3] = {p, p + big, p + 2 * big};
        p += 3 * big;
        for (int i = 0; i < 3; i++) m->pp[i] = buf[i];
        stem->pre = stem->post = buf[0];
        m->stem_pool = buf[1];
        int in = 1;
        for (int b = 0; b < m->nblocks; b++) {
            block_t *blk = &m->blocks[b];
            int a = (in + 1) % 3, c = (in + 2) % 3;
            blk->in = buf[in];
            m->bns[blk->bn1].pre = m->bns[blk->bn1].post = buf[a];
            m->bns[blk->bn2].pre = m->bns[blk->bn2].post = buf[c];
            if (blk->bn3 >= 0) m->bns[blk->bn3].pre = m->bns[blk->bn3].post = buf[a];
            if (blk->dbn >= 0) m->bns[blk->dbn].pre = m->bns[blk->dbn].post = buf[c];
            // the output lands where the last BN of the main path wrote
            blk->out = m->info.bottleneck ? buf[a] : buf[c];
            if (!m->info.bottleneck && blk->dbn >= 0) m->bns[blk->dbn].pre = m->bns[blk->dbn].post = buf[a];
            in = m->info.bottleneck ? a : c;
        }
        m->scratch = NULL;
    }
    m->feat = p, p += nimg * (size_t)m->info.num_features;
    m->probs = p, p += nimg * (size_t)m->info.num_classes;
    m->pN = N, m->pH = H, m->pW = W, m->pkeep = keep;
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static bnl_status conv_fwd(bnl_resnet *m, const conv_t *cv, float *y, const float *x, int N, int H, int W) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_forward(y, x, m->params + cv->w, &s);
}

static bnl_status conv_bwd(bnl_resnet *m, const conv_t *cv, float *dx, const float *dy, const float *x, int N, int H,
                           int W) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_backward(dx, m->grads + cv->w, dy, x, m->params + cv->w, &s);
}

// dx = gate > 0 ? conv backward + res : 0 in one pass (gate NULL: no ReLU)
static bnl_status conv_bwd_ex(bnl_resnet *m, const conv_t *cv, float *dx, const float *dy, const float *x, int N, int H,
                              int W, const float *res, const float *gate) {
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_backward_ex(dx, m->grads + cv->w, dy, x, m->params + cv->w, res, gate, &s);
}

// Synchronized BatchNorm forward in one collective: every replica's (count, mean, M2) per channel
// is gathered and merged with Chan's formula in replica order, so every replica computes the same
// bits (exact and stable: no sum of squares), then the usual normalization.
static bnl_status bn_fwd_sync(bnl_resnet *m, bn_t *x, size_t M, const bnl_bn_config *cfg) {
    const size_t C = (size_t)x->C, n = 2 * C + 1;
    double *mine = m->sync_buf, *all = mine + n;   // mine: [count, mean (C), M2 (C)]; all: replicas * n
    double *mean = mine + 1, *m2 = mine + 1 + C;
    TRY_RET(bnl_batchnorm_stats(mean, m2, x->pre, M, C));
    mine[0] = (double)M;
    TRY_RET(m->sync_fn(m->sync_ctx, mine, all, n));
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
    TRY_RET(bnl_batchnorm_update_running(m->stats + x->rm, m->stats + x->rv, &x->tracked, bm, m2, (size_t)Mt, C, cfg));
    return bnl_batchnorm_apply(x->post, x->pre, bm, bis, m->params + x->gamma, m->params + x->beta, M, C, cfg);
}

// Room for the kind-specific statistics of every layer at batch size N (see bnl_resnet's nbuf).
static bnl_status norm_plan(bnl_resnet *m, int N) {
    if (m->nbuf_N == N && m->nbuf) return BNL_OK;
    size_t total = 0;
    for (int i = 0; i < m->nbn; i++) {
        bn_t *x = &m->bns[i];
        size_t C = (size_t)x->C, n = 0;
        if (m->ns.kind == BNL_NORM_GROUP) n = 3 * (size_t)N * (size_t)m->ns.groups;
        else if (m->ns.kind == BNL_NORM_RENORM) n = 2 * C;
        else if (m->ns.kind == BNL_NORM_GHOST) n = 3 * (size_t)(N / m->ns.virtual_batch) * C;
        x->xo = total;
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

// GroupNorm, Renorm, Ghost and frozen BatchNorm (train: 1 for the train-mode forward).
static bnl_status bn_fwd_other(bnl_resnet *m, bn_t *x, int N, int train, const bnl_bn_config *cfg) {
    size_t C = (size_t)x->C, HW = (size_t)x->H * x->W, M = (size_t)N * HW;
    const float *g = m->params + x->gamma, *b = m->params + x->beta;
    float *rm = m->stats + x->rm, *rv = m->stats + x->rv, *e = m->nbuf + x->xo;
    switch (m->ns.kind) {
    case BNL_NORM_GROUP: {   // the same in both modes
        size_t NG = (size_t)N * m->ns.groups;
        return bnl_groupnorm_forward(x->post, e, e + 2 * NG, e + NG, x->pre, g, b, (size_t)N, HW, C,
                                     (size_t)m->ns.groups, cfg);
    }
    case BNL_NORM_RENORM:
        if (!train) break;
        return bnl_batchrenorm_forward_train(x->post, m->batch + x->bm, m->batch + x->bis, m->batch + x->bv, e, e + C,
                                             rm, rv, &x->tracked, x->pre, g, b, M, C, m->ns.renorm_rmax,
                                             m->ns.renorm_dmax, cfg);
    case BNL_NORM_GHOST: {
        if (!train) break;
        size_t V = (size_t)m->ns.virtual_batch, nvC = (size_t)N / V * C;
        TRY_RET(bnl_ghostbn_forward_train(x->post, e, e + 2 * nvC, e + nvC, rm, rv, &x->tracked, x->pre, g, b,
                                          (size_t)N, HW, C, V, cfg));
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
    return bnl_batchnorm_forward_eval(x->post, x->pre, g, b, rm, rv, M, C, cfg);
}

static bnl_status bn_bwd_other(bnl_resnet *m, bn_t *x, float *dx, const float *dy, int N, const bnl_bn_config *cfg) {
    size_t C = (size_t)x->C, HW = (size_t)x->H * x->W, M = (size_t)N * HW;
    const float *g = m->params + x->gamma, *b = m->params + x->beta, *e = m->nbuf + x->xo;
    float *dg = m->grads + x->gamma, *db = m->grads + x->beta;
    switch (m->ns.kind) {
    case BNL_NORM_GROUP: {
        size_t NG = (size_t)N * m->ns.groups;
        return bnl_groupnorm_backward(dx, dg, db, dy, x->pre, e, e + 2 * NG, g, b, (size_t)N, HW, C,
                                      (size_t)m->ns.groups, cfg);
    }
    case BNL_NORM_RENORM:
        return bnl_batchrenorm_backward_train(dx, dg, db, dy, x->pre, m->batch + x->bm, m->batch + x->bis, e, e + C, g,
                                              b, M, C, cfg);
    case BNL_NORM_GHOST: {
        size_t V = (size_t)m->ns.virtual_batch, nvC = (size_t)N / V * C;
        return bnl_ghostbn_backward_train(dx, dg, db, dy, x->pre, e, e + 2 * nvC, g, b, (size_t)N, HW, C, V, cfg);
    }
    default:   // frozen: the running statistics are constants
        return bnl_batchnorm_backward_eval(dx, dg, db, dy, x->pre, g, b, m->stats + x->rm, m->stats + x->rv, M, C, cfg);
    }
}

static bnl_status bn_fwd(bnl_resnet *m, bn_t *x, int N, int train) {
    bnl_bn_config cfg = m->bn;
    cfg.relu = x->relu;
    size_t M = (size_t)N * x->H * x->W;
    bnl_status s;
    if (m->info.norm != BNL_NORM_BATCH && m->info.norm != BNL_NORM_NONE) {
        s = bn_fwd_other(m, x, N, train, &cfg);
    } else if (m->info.norm == BNL_NORM_NONE) {   // no statistics at all: the same in train and eval mode
        return bnl_channel_affine_forward(x->post, x->pre, m->params + x->gamma, m->params + x->beta, M,
                                          (size_t)x->C, &cfg);
    } else if (train && m->sync_fn) {
        s = bn_fwd_sync(m, x, M, &cfg);
    } else if (train) {
        s = bnl_batchnorm_forward_train(x->post, m->batch + x->bm, m->batch + x->bis, m->batch + x->bv,
                                        m->stats + x->rm, m->stats + x->rv, &x->tracked, x->pre,
                                        m->params + x->gamma, m->params + x->beta, M, (size_t)x->C, &cfg);
    } else {
        s = bnl_batchnorm_forward_eval(x->post, x->pre, m->params + x->gamma, m->params + x->beta,
                                       m->stats + x->rm, m->stats + x->rv, M, (size_t)x->C, &cfg);
    }
    if (s != BNL_OK && s == BNL_ERR_BATCH) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        return bnl_fail(s, "%s: %s", x->name, msg);
    }
    return s;
}

static bnl_status bn_bwd(bnl_resnet *m, bn_t *x, float *dx, const float *dy, int N) {
    bnl_bn_config cfg = m->bn;
    cfg.relu = x->relu;
    size_t M = (size_t)N * x->H * x->W;
    if (m->info.norm != BNL_NORM_BATCH && m->info.norm != BNL_NORM_NONE) return bn_bwd_other(m, x, dx, dy, N, &cfg);
    if (m->info.norm == BNL_NORM_NONE)
        return bnl_channel_affine_backward(dx, m->grads + x->gamma, m->grads + x->beta, dy, x->pre,
                                           m->params + x->gamma, m->params + x->beta, M, (size_t)x->C, &cfg);
    if (m->sync_fn) {
        // local sums -> parameter gradients (replicas average those later); global sums -> dx.
        // One collective: every replica's [count, sum_g (C), sum_gxc (C)], added in replica order.
        const size_t C = (size_t)x->C, n = 2 * C + 1;
        double *mine = m->sync_buf, *all = mine + n;
        const float *mean = m->batch + x->bm, *is = m->batch + x->bis;
        TRY_RET(bnl_batchnorm_backward_reduce(mine + 1, mine + 1 + C, dy, x->pre, mean, is, m->params + x->gamma,
                                              m->params + x->beta, M, C, &cfg));
        float *dg = m->grads + x->gamma, *db = m->grads + x->beta;
        for (size_t c = 0; c < C; c++) dg[c] += (float)(is[c] * mine[1 + C + c]), db[c] += (float)mine[1 + c];
        mine[0] = (double)M;
        TRY_RET(m->sync_fn(m->sync_ctx, mine, all, n));
        memcpy(mine, all, n * sizeof(double));
        for (int r = 1; r < m->sync_replicas; r++)
            for (size_t i = 0; i < n; i++) mine[i] += all[(size_t)r * n + i];
        return bnl_batchnorm_backward_apply(dx, dy, x->pre, mean, is, m->params + x->gamma, m->params + x->beta,
                                            mine + 1, mine + 1 + C, M, (size_t)mine[0], C, &cfg);
    }
    return bnl_batchnorm_backward_train(dx, m->grads + x->gamma, m->grads + x->beta, dy, x->pre, m->batch + x->bm,
                                        m->batch + x->bis, m->params + x->gamma, m->params + x->beta, M,
                                        (size_t)x->C, &cfg);
}


// ---------------------------------------------------------------------------------------------
// Eval forward: BatchNorm folded into the convolutions, bias + residual + ReLU in the GEMM epilogue

// Conv c is followed by BatchNorm c (the layout is built that way): w' = w*s, bias = beta - mean*s
// with s = gamma/sqrt(running_var + eps), per output channel, in double.
static bnl_status fold_and_pack(bnl_resnet *m) {
    if (m->pk_valid && m->pk && bnl_conv_packed_current(m->pk[0])) return BNL_OK;
    if (!m->pk) {
        size_t nb = 0;
        for (int c = 0; c < m->nconv; c++) nb += (size_t)m->convs[c].cout;
        m->pk = calloc((size_t)m->nconv, sizeof *m->pk);
        m->fold_bias = bnl_alloc(nb * sizeof(float));
        if (!m->pk || !m->fold_bias) {
            free_packed(m);
            return bnl_fail(BNL_ERR_NOMEM, "out of memory for the packed eval weights");
        }
    }
    int maxc = 0;
    for (int c = 0; c < m->nconv; c++) maxc = m->convs[c].cout > maxc ? m->convs[c].cout : maxc;
    float *scale = bnl_alloc((size_t)maxc * sizeof(float));
    if (!scale) return bnl_fail(BNL_ERR_NOMEM, "out of memory for the packed eval weights");
    float *bias = m->fold_bias;
    bnl_status s = BNL_OK;
    for (int c = 0; c < m->nconv && s == BNL_OK; c++) {
        const conv_t *cv = &m->convs[c];
        const bn_t *x = &m->bns[c];
        const float *g = m->params + x->gamma, *b = m->params + x->beta, *rm = m->stats + x->rm, *rv = m->stats + x->rv;
        for (int k = 0; k < cv->cout; k++) {
            if (m->info.norm == BNL_NORM_NONE) {   // the affine layer: w' = w*gamma, bias = beta
                scale[k] = g[k], bias[k] = b[k];
                continue;
            }
            double sk = (double)g[k] / sqrt((double)rv[k] + (double)m->bn.eps);
            scale[k] = (float)sk;
            bias[k] = (float)((double)b[k] - (double)rm[k] * sk);
        }
        s = bnl_conv_pack_weights_for(&m->pk[c], m->params + cv->w, scale, cv->cout, cv->k, cv->k, cv->cin,
                                       cv->stride);
        bias += cv->cout;
    }
    bnl_free(scale);
    if (s == BNL_OK)   // fc.weight (classes, features) is a 1x1 conv's (K, 1, 1, C)
        s = bnl_conv_pack_weights(&m->pk_fc, m->params + m->fc_w, NULL, m->info.num_classes, 1, 1, m->info.num_features);
    if (s != BNL_OK) {
        free_packed(m);
        return s;
    }
    m->pk_valid = 1;
    return BNL_OK;
}

static const float *fold_bias_of(const bnl_resnet *m, int ci) {
    const float *b = m->fold_bias;
    for (int c = 0; c < ci; c++) b += m->convs[c].cout;
    return b;
}

// y = relu?(conv_ci(x) folded + res)
static bnl_status conv_fused(bnl_resnet *m, int ci, float *y, const float *x, int N, int H, int W, const float *res,
                             int relu) {
    const conv_t *cv = &m->convs[ci];
    bnl_conv_shape s;
    bnl_status st = bnl_conv_shape_init(&s, N, H, W, cv->cin, cv->cout, cv->k, cv->k, cv->stride, cv->pad);
    if (st != BNL_OK) return st;
    return bnl_conv2d_forward_fused(y, x, m->pk[ci], fold_bias_of(m, ci), res, relu, &s);
}

// Three ping-pong buffers, each as large as the largest activation. A block reads `in` and writes
// its output either to a free buffer or, when a downsample occupies one, back over `in`.
static bnl_status forward_eval(bnl_resnet *m, float *logits, const float *x, int N, int H, int W) {
    TRY(fold_and_pack(m));
    float **pp = m->pp;
    const bn_t *stem = &m->bns[0];
    TRY(conv_fused(m, 0, pp[0], x, N, H, W, NULL, 1));
    TRY(bnl_maxpool_forward(pp[1], NULL, pp[0], N, m->Hs, m->Ws, stem->C, 3, 2, 1, m->Hp, m->Wp));
    int cur = 1;
    for (int b = 0; b < m->nblocks; b++) {
        const block_t *blk = &m->blocks[b];
        float *in = pp[cur], *a = pp[(cur + 1) % 3], *c = pp[(cur + 2) % 3];
        if (m->info.bottleneck) {
            TRY(conv_fused(m, blk->conv1, a, in, N, blk->Hin, blk->Win, NULL, 1));
            TRY(conv_fused(m, blk->conv2, c, a, N, blk->Hin, blk->Win, NULL, 1));
            if (blk->dconv >= 0) {
                TRY(conv_fused(m, blk->dconv, a, in, N, blk->Hin, blk->Win, NULL, 0));
                TRY(conv_fused(m, blk->conv3, in, c, N, blk->Hout, blk->Wout, a, 1));
            } else {
                TRY(conv_fused(m, blk->conv3, a, c, N, blk->Hout, blk->Wout, in, 1));
                cur = (cur + 1) % 3;
            }
        } else {
            TRY(conv_fused(m, blk->conv1, a, in, N, blk->Hin, blk->Win, NULL, 1));
            if (blk->dconv >= 0) {
                TRY(conv_fused(m, blk->dconv, c, in, N, blk->Hin, blk->Win, NULL, 0));
                TRY(conv_fused(m, blk->conv2, in, a, N, blk->Hout, blk->Wout, c, 1));
            } else {
                TRY(conv_fused(m, blk->conv2, c, a, N, blk->Hout, blk->Wout, in, 1));
                cur = (cur + 2) % 3;
            }
        }
    }
    const block_t *lb = &m->blocks[m->nblocks - 1];
    TRY(bnl_avgpool_forward(m->feat, pp[cur], N, lb->Hout * lb->Wout, lb->cout));
    bnl_conv_shape fs;   // fc on the packed weights: logits (N,1,1,K) = feat (N,1,1,F) w^T + b
    TRY(bnl_conv_shape_init(&fs, N, 1, 1, m->info.num_features, m->info.num_classes, 1, 1, 1, 0));
    return bnl_conv2d_forward_fused(logits, m->feat, m->pk_fc, m->params + m->fc_b, NULL, 0, &fs);
}

// Elementwise passes of the residual blocks, fused (each is one read of its inputs, one write):
typedef struct {
    float *out;
    const float *a, *b, *y;
} ew_t;

static int ew_threads(size_t n) { return bnl_threads_for(n, (double)n, (double)(1u << 17)); }

static void add_relu_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    const float *a = e->a, *b = e->b;
    float *y = e->out;
    for (size_t i = i0; i < i1; i++) {
        float v = a[i] + b[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

// y = relu(a + b), ReLU keeping NaN like torch.relu.
static void add_relu(float *y, const float *a, const float *b, size_t n) {
    ew_t e = {y, a, b, NULL};
    bnl_parallel_for(n, ew_threads(n), add_relu_range, &e);
}

static void add_relu_backward_range(void *vc, size_t i0, size_t i1, int tid) {
    const ew_t *e = vc;
    const float *a = e->a, *b = e->b, *y = e->y;
    float *g = e->out;
    for (size_t i = i0; i < i1; i++) {
        float v = b ? a[i] + b[i] : a[i];   // both loads unconditional: the loop vectorizes
        g[i] = !y || y[i] > 0.0f ? v : 0.0f;
    }
}

// g = (a + b) where y > 0, else 0: the gradient sum at a block input, through the ReLU that made
// it (y is that ReLU's output). b == NULL: a alone; y == NULL: no ReLU.
static void add_relu_backward(float *g, const float *a, const float *b, const float *y, size_t n) {
    ew_t e = {g, a, b, y};
    bnl_parallel_for(n, ew_threads(n), add_relu_backward_range, &e);
}

// p[i0, i1) = 0
static void zero_range(void *p, size_t i0, size_t i1, int tid) {
    memset((float *)p + i0, 0, (i1 - i0) * sizeof(float));
}

// stop >= 0 (train mode): return right after BatchNorm layer `stop` (bns order, which is the order
// they run in), logits not computed. stop <= -2: return right before BatchNorm layer -2 - stop runs
// (its input, x->pre, is then the convolution's output).
static bnl_status forward_impl(bnl_resnet *m, float *logits, const float *x, int N, int H, int W, int train,
                               int stop) {
    // GroupNorm's statistics come from the batch in eval mode too: no folding into the convolutions
    if (!train && m->ns.kind != BNL_NORM_GROUP) return forward_eval(m, logits, x, N, H, W);
    if (train && m->ns.kind == BNL_NORM_GHOST && N % m->ns.virtual_batch != 0)
        return bnl_fail(BNL_ERR_BATCH, "ghost:%d: virtual batches of %d images do not divide the batch of %d images",
                        m->ns.virtual_batch, m->ns.virtual_batch, N);
    const int before = stop <= -2 ? -2 - stop : -1;
#define BN_FWD(b)                                                                                                      \
    do {                                                                                                               \
        if ((b) - m->bns == before) goto done;                                                                         \
        TRY(bn_fwd(m, (b), N, train));                                                                                 \
        if ((b) - m->bns == stop) goto done;                                                                           \
    } while (0)
    TRY(norm_plan(m, N));
    if (train) m->pk_valid = 0;   // running statistics move
    bn_t *stem = &m->bns[0];
    TRY(conv_fwd(m, &m->convs[0], stem->pre, x, N, H, W));
    BN_FWD(stem);
    TRY(bnl_maxpool_forward(m->stem_pool, m->pkeep ? m->argmax : NULL, stem->post, N, m->Hs, m->Ws, stem->C, 3, 2, 1,
                            m->Hp, m->Wp));
    for (int b = 0; b < m->nblocks; b++) {
        block_t *blk = &m->blocks[b];
        bn_t *b1 = &m->bns[blk->bn1], *b2 = &m->bns[blk->bn2];
        TRY(conv_fwd(m, &m->convs[blk->conv1], b1->pre, blk->in, N, blk->Hin, blk->Win));
        BN_FWD(b1);
        int h2 = m->info.bottleneck ? blk->Hin : blk->Hout, w2 = m->info.bottleneck ? blk->Win : blk->Wout;
        TRY(conv_fwd(m, &m->convs[blk->conv2], b2->pre, b1->post, N, h2, w2));
        BN_FWD(b2);
        bn_t *last = b2;
        if (blk->bn3 >= 0) {
            last = &m->bns[blk->bn3];
            TRY(conv_fwd(m, &m->convs[blk->conv3], last->pre, b2->post, N, blk->Hout, blk->Wout));
            BN_FWD(last);
        }
        const float *shortcut = blk->in;
        if (blk->dbn >= 0) {
            bn_t *db = &m->bns[blk->dbn];
            TRY(conv_fwd(m, &m->convs[blk->dconv], db->pre, blk->in, N, blk->Hin, blk->Win));
            BN_FWD(db);
            shortcut = db->post;
        }
        size_t n = (size_t)N * blk->Hout * blk->Wout * blk->cout;
        add_relu(blk->out, last->post, shortcut, n);
    }
    const block_t *lb = &m->blocks[m->nblocks - 1];
    TRY(bnl_avgpool_forward(m->feat, lb->out, N, lb->Hout * lb->Wout, lb->cout));
    TRY(bnl_linear_forward(logits, m->feat, m->params + m->fc_w, m->params + m->fc_b, N, m->info.num_features,
                           m->info.num_classes));
done:
#undef BN_FWD
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

bnl_status bnl_resnet_forward(bnl_resnet *m, float *logits, const float *x, int N, int H, int W) {
    if (!m || !logits) return bnl_fail(BNL_ERR_ARG, "forward: NULL argument");
    TRY(check_input(m, x, N, H, W, "forward"));
    // train-mode forward without backward keeps nothing: the lean plan serves both modes
    TRY(plan(m, N, H, W, m->pkeep && m->pN == N && m->pH == H && m->pW == W));
    return forward_impl(m, logits, x, N, H, W, m->training, -1);
}

bnl_status bnl_resnet_bn_input(bnl_resnet *m, const float *x, int N, int H, int W, int layer, int c, float *out,
                               size_t cap, size_t *n, float gbe[3]) {
    if (!m || !out || !n || !gbe) return bnl_fail(BNL_ERR_ARG, "bn_input: NULL argument");
    if (layer < 0 || layer >= m->nbn)
        return bnl_fail(BNL_ERR_ARG, "bn_input: no BatchNorm layer #%d (the model has %d)", layer, m->nbn);
    if (!m->training)
        return bnl_fail(BNL_ERR_ARG, "bn_input: the model is in eval mode (it reads running statistics; train() first)");
    const bn_t *b = &m->bns[layer];
    if (c < 0 || c >= b->C) return bnl_fail(BNL_ERR_ARG, "bn_input: no channel %d in %s (%d channels)", c, b->name, b->C);
    TRY(check_input(m, x, N, H, W, "bn_input"));
    TRY(plan(m, N, H, W, m->pkeep && m->pN == N && m->pH == H && m->pW == W));
    TRY(forward_impl(m, NULL, x, N, H, W, 1, -2 - layer));
    const size_t M = (size_t)N * b->H * b->W, C = (size_t)b->C;
    if (M > cap) return bnl_fail(BNL_ERR_ARG, "bn_input: %zu values do not fit in %zu", M, cap);
    for (size_t i = 0; i < M; i++) out[i] = b->pre[i * C + (size_t)c];
    *n = M;
    gbe[0] = m->params[b->gamma + (size_t)c], gbe[1] = m->params[b->beta + (size_t)c], gbe[2] = m->bn.eps;
    return BNL_OK;
}

bnl_status bnl_resnet_forward_to(bnl_resnet *m, const float *x, int N, int H, int W, int stop) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "forward_to: NULL model");
    if (stop < 0 || stop >= m->nbn)
        return bnl_fail(BNL_ERR_ARG, "forward_to: no BatchNorm layer #%d (the model has %d)", stop, m->nbn);
    if (!m->training)
        return bnl_fail(BNL_ERR_ARG, "forward_to: the model is in eval mode (it reads running statistics; train() first)");
    TRY(check_input(m, x, N, H, W, "forward_to"));
    TRY(plan(m, N, H, W, m->pkeep && m->pN == N && m->pH == H && m->pW == W));
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
    TRY(plan(m, N, H, W, 1));
    size_t K = (size_t)m->info.num_classes, F = (size_t)m->info.num_features;
    float *lg = m->probs;
    float *tmp_logits = bnl_alloc((size_t)N * K * sizeof(float));
    if (!tmp_logits) return bnl_fail(BNL_ERR_NOMEM, "out of memory for logits");
    bnl_status s = forward_impl(m, tmp_logits, x, N, H, W, 1, -1);
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
        bnl_parallel_for(n, bnl_threads_for(n, (double)n, (double)(1u << 20)), zero_range, m->grads);
    }
    float **G = m->grad_buf;
    // head: dlogits -> fc -> avgpool
    float *dlog = m->scratch;   // (N,K) fits: scratch is as large as the largest activation
    TRY(bnl_softmax_xent_backward(dlog, m->probs, labels, N, (int)K));
    float *dfeat = dlog + (size_t)N * K;
    TRY(bnl_linear_backward(dfeat, m->grads + m->fc_w, m->grads + m->fc_b, dlog, m->feat, m->params + m->fc_w, N,
                            (int)F, (int)K));
    if (m->grad_fn) m->grad_fn(m->grad_ctx, m->fc_w);
    const block_t *lb = &m->blocks[m->nblocks - 1];
    TRY(bnl_avgpool_backward(G[0], dfeat, N, lb->Hout * lb->Wout, lb->cout));
    int g0 = 0;   // index of the buffer holding the gradient of the current block's output
    for (int b = m->nblocks - 1; b >= 0; b--) {
        block_t *blk = &m->blocks[b];
        int i1 = (g0 + 1) % 4, i2 = (g0 + 2) % 4, i3 = (g0 + 3) % 4;
        size_t nout = (size_t)N * blk->Hout * blk->Wout * blk->cout;
        if (b == m->nblocks - 1) add_relu_backward(G[g0], G[g0], NULL, blk->out, nout);
        // (every other block output's ReLU is applied in the next block's conv1 backward epilogue)
        const float *mask = b > 0 ? m->blocks[b - 1].out : NULL;   // this block's input = previous output
        bn_t *b1 = &m->bns[blk->bn1], *b2 = &m->bns[blk->bn2];
        const float *gmid;
        if (blk->bn3 >= 0) {
            bn_t *b3 = &m->bns[blk->bn3];
            TRY(bn_bwd(m, b3, G[i1], G[g0], N));
            TRY(conv_bwd(m, &m->convs[blk->conv3], G[i2], G[i1], b2->post, N, blk->Hout, blk->Wout));
            gmid = G[i2];
        } else {
            gmid = G[g0];
        }
        TRY(bn_bwd(m, b2, G[i1], gmid, N));
        int h2 = m->info.bottleneck ? blk->Hin : blk->Hout, w2 = m->info.bottleneck ? blk->Win : blk->Wout;
        TRY(conv_bwd(m, &m->convs[blk->conv2], G[i2], G[i1], b1->post, N, h2, w2));
        TRY(bn_bwd(m, b1, G[i1], G[i2], N));
        // the shortcut first; then conv1's input gradient is finished in its GEMM epilogue: plus the
        // shortcut's gradient, through the ReLU that made the block input (the previous output)
        const float *gshort = G[g0];
        if (blk->dbn >= 0) {
            bn_t *db = &m->bns[blk->dbn];
            TRY(bn_bwd(m, db, G[i2], G[g0], N));
            TRY(conv_bwd(m, &m->convs[blk->dconv], G[i3], G[i2], blk->in, N, blk->Hin, blk->Win));
            gshort = G[i3];
        }
        TRY(conv_bwd_ex(m, &m->convs[blk->conv1], G[i2], G[i1], blk->in, N, blk->Hin, blk->Win, gshort, mask));
        g0 = i2;
        if (m->grad_fn) m->grad_fn(m->grad_ctx, m->convs[blk->conv1].w);   // parameters in block order
    }
    // stem: max pool, bn1 (+relu), conv1 (no input gradient)
    bn_t *stem = &m->bns[0];
    int i1 = (g0 + 1) % 4, i2 = (g0 + 2) % 4;
    TRY(bnl_maxpool_backward(G[i1], G[g0], m->argmax, N, m->Hs, m->Ws, stem->C, m->Hp, m->Wp));
    TRY(bn_bwd(m, stem, G[i2], G[i1], N));
    TRY(conv_bwd(m, &m->convs[0], NULL, G[i2], x, N, m->pH, m->pW));
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
    // PyTorch SGD: d = g + wd*p; buf = mom*buf + d (buf = d on the first step: the buffer starts
    // at zero, which is the same); p -= lr * (nesterov ? d + mom*buf : buf)
    for (int s = 0; s < m->nseg; s++) {
        const segment_t *sg = &m->segs[s];
        float wd = (sg->decay || !o->no_decay_bn_bias) ? o->weight_decay : 0.0f;
        sgd_t u = {m->params + sg->off, m->grads + sg->off, m->mom + sg->off, wd, o};
        // elementwise: any split, same bits
        bnl_parallel_for(sg->n, bnl_threads_for(sg->n, (double)sg->n, (double)(1u << 16)), sgd_range, &u);
    }
    m->pk_valid = 0;
    return BNL_OK;
}

bnl_status bnl_resnet_step(bnl_resnet *m, float *loss, const float *x, int N, int H, int W, const int64_t *labels,
                           const bnl_sgd *opt) {
    if (!m || !opt) return bnl_fail(BNL_ERR_ARG, "step: NULL argument");
    TRY(bnl_resnet_forward_backward(m, loss, NULL, x, N, H, W, labels));
    return bnl_resnet_sgd_update(m, opt);
}

// ---------------------------------------------------------------------------------------------
// Saving

static bnl_status add_tensors(const bnl_resnet *m, bnl_st_writer *w, float **conv_tmp);

static bnl_status build_writer(const bnl_resnet *m, bnl_st_writer **out, float **conv_tmp) {
    bnl_st_writer *w;
    TRY(bnl_st_writer_create(&w));
    bnl_status s = add_tensors(m, w, conv_tmp);
    if (s != BNL_OK) {
        bnl_st_writer_free(w);
        return s;
    }
    *out = w;
    return BNL_OK;
}

static bnl_status add_tensors(const bnl_resnet *m, bnl_st_writer *w, float **conv_tmp) {
    // conv weights back to torch's OIHW, in a temporary copy the writer reads at write time
    size_t nconvw = 0;
    for (int c = 0; c < m->nconv; c++)
        nconvw += (size_t)m->convs[c].cout * m->convs[c].k * m->convs[c].k * m->convs[c].cin;
    float *tmp = bnl_alloc(nconvw * sizeof(float));
    if (!tmp) return bnl_fail(BNL_ERR_NOMEM, "out of memory saving the model");
    char name[160];
    bnl_status s = BNL_OK;
    size_t off = 0;
    int next_bn = 0;
    // torchvision order: a conv, then its BN
    for (int c = 0; c < m->nconv && s == BNL_OK; c++) {
        const conv_t *cv = &m->convs[c];
        int K = cv->cout, C = cv->cin, R = cv->k;
        const float *src = m->params + cv->w;
        float *dst = tmp + off;
        for (int o = 0; o < K; o++)
            for (int i = 0; i < C; i++)
                for (int r = 0; r < R; r++)
                    for (int q = 0; q < R; q++)
                        dst[(((size_t)o * C + i) * R + r) * R + q] = src[(((size_t)o * R + r) * R + q) * C + i];
        off += (size_t)K * C * R * R;
        int64_t shape[4] = {K, C, R, R};
        snprintf(name, sizeof name, "%s.weight", cv->name);
        s = bnl_st_writer_add(w, name, BNL_DT_F32, 4, shape, dst);
        // every conv is followed by exactly one BN, in the same order
        const bn_t *x = &m->bns[next_bn++];
        int64_t cs[1] = {x->C};
        struct { const char *part; const float *src; } parts[] = {
            {"weight", m->params + x->gamma}, {"bias", m->params + x->beta},
            {"running_mean", m->stats + x->rm}, {"running_var", m->stats + x->rv}};
        // GroupNorm: weight and bias only, as nn.GroupNorm's state dict
        int nparts = m->ns.kind == BNL_NORM_GROUP ? 2 : 4;
        for (int p = 0; p < nparts && s == BNL_OK; p++) {
            snprintf(name, sizeof name, "%s.%s", x->name, parts[p].part);
            s = bnl_st_writer_add(w, name, BNL_DT_F32, 1, cs, parts[p].src);
        }
        if (s == BNL_OK && m->has_tracked && nparts == 4) {
            snprintf(name, sizeof name, "%s.num_batches_tracked", x->name);
            s = bnl_st_writer_add(w, name, BNL_DT_I64, 0, NULL, &x->tracked);
        }
    }
    int64_t fs[2] = {m->info.num_classes, m->info.num_features}, bs[1] = {m->info.num_classes};
    if (s == BNL_OK) s = bnl_st_writer_add(w, "fc.weight", BNL_DT_F32, 2, fs, m->params + m->fc_w);
    if (s == BNL_OK) s = bnl_st_writer_add(w, "fc.bias", BNL_DT_F32, 1, bs, m->params + m->fc_b);
    for (size_t i = 0; i < m->nmeta && s == BNL_OK; i++) s = bnl_st_writer_meta(w, m->meta_k[i], m->meta_v[i]);
    if (s != BNL_OK) {
        bnl_free(tmp);
        return s;
    }
    *conv_tmp = tmp;
    return BNL_OK;
}

bnl_status bnl_resnet_save(const bnl_resnet *m, uint8_t **buf, size_t *len) {
    if (!m || !buf || !len) return bnl_fail(BNL_ERR_ARG, "save: NULL argument");
    bnl_st_writer *w;
    float *tmp;
    TRY(build_writer(m, &w, &tmp));
    bnl_status s = bnl_st_writer_to_buffer(w, buf, len);
    bnl_st_writer_free(w);
    bnl_free(tmp);
    return s;
}

bnl_status bnl_resnet_save_file(const bnl_resnet *m, const char *path) {
    if (!m || !path) return bnl_fail(BNL_ERR_ARG, "save: NULL argument");
    bnl_st_writer *w;
    float *tmp;
    TRY(build_writer(m, &w, &tmp));
    bnl_status s = bnl_st_writer_to_file(w, path);
    bnl_st_writer_free(w);
    bnl_free(tmp);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Synchronized BatchNorm, creation, checkpoint helpers

bnl_status bnl_resnet_set_sync_bn(bnl_resnet *m, bnl_allgather_fn fn, void *ctx, int replicas) {
    if (!m) return bnl_fail(BNL_ERR_ARG, "set_sync_bn: NULL model");
    if (fn && replicas < 1) return bnl_fail(BNL_ERR_ARG, "set_sync_bn: %d replicas", replicas);
    bnl_free(m->sync_buf);
    m->sync_buf = NULL, m->sync_fn = NULL, m->sync_ctx = NULL, m->sync_replicas = 0;
    if (!fn) return BNL_OK;
    int maxc = 0;
    for (int i = 0; i < m->nbn; i++) maxc = m->bns[i].C > maxc ? m->bns[i].C : maxc;
    m->sync_buf = bnl_calloc(((size_t)replicas + 1) * (2 * (size_t)maxc + 1), sizeof(double));
    if (!m->sync_buf) return bnl_fail(BNL_ERR_NOMEM, "synchronized BatchNorm: out of memory for the gather buffer");
    m->sync_fn = fn, m->sync_ctx = ctx, m->sync_replicas = replicas;
    return BNL_OK;
}

void bnl_resnet_set_grad_hook(bnl_resnet *m, bnl_grad_ready_fn fn, void *ctx) {
    if (m) m->grad_fn = fn, m->grad_ctx = fn ? ctx : NULL;
}

bnl_status bnl_resnet_add_to_writer(const bnl_resnet *m, bnl_st_writer *w, void **keep) {
    if (!m || !w || !keep) return bnl_fail(BNL_ERR_ARG, "add_to_writer: NULL argument");
    return add_tensors(m, w, (float **)keep);
}

bnl_status bnl_resnet_spec_named(bnl_resnet_spec *sp, int depth, float width_mult, int num_classes) {
    static const struct { int depth, bottleneck, blocks[4]; } known[] = {
        {18, 0, {2, 2, 2, 2}}, {34, 0, {3, 4, 6, 3}}, {50, 1, {3, 4, 6, 3}}, {101, 1, {3, 4, 23, 3}}, {152, 1, {3, 8, 36, 3}}};
    if (!sp) return bnl_fail(BNL_ERR_ARG, "spec: NULL");
    if (!(width_mult > 0.0f && width_mult <= 16.0f) || num_classes < 1)
        return bnl_fail(BNL_ERR_ARG, "spec: width multiplier must be in (0, 16] and classes >= 1");
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (known[i].depth != depth) continue;
        memset(sp, 0, sizeof *sp);
        sp->num_stages = 4, sp->bottleneck = known[i].bottleneck, sp->in_channels = 3, sp->num_classes = num_classes;
        int stem = (int)lroundf(64.0f * width_mult);
        sp->stem_width = stem < 1 ? 1 : stem;
        for (int s = 0; s < 4; s++) {
            int wd = (int)lroundf((float)(64 << s) * width_mult);
            sp->blocks[s] = known[i].blocks[s], sp->widths[s] = wd < 1 ? 1 : wd;
        }
        return BNL_OK;
    }
    return bnl_fail(BNL_ERR_ARG, "spec: unknown ResNet depth %d (known: 18, 34, 50, 101, 152)", depth);
}

// Builds the initialized state dict as a safetensors buffer, then loads it: one path for layouts.
bnl_status bnl_resnet_create(bnl_resnet **out, const bnl_resnet_spec *sp, uint64_t seed) {
    if (!out || !sp) return bnl_fail(BNL_ERR_ARG, "create: NULL argument");
    *out = NULL;
    if (sp->num_stages < 1 || sp->num_stages > BNL_MAX_STAGES || sp->stem_width < 1 || sp->in_channels < 1 ||
        sp->num_classes < 1)
        return bnl_fail(BNL_ERR_ARG, "create: bad ResNet spec");
    // count floats
    size_t total = 0;
    int exp = sp->bottleneck ? 4 : 1, cin = sp->stem_width;
    total += (size_t)sp->stem_width * sp->in_channels * 49 + 4 * (size_t)sp->stem_width;
    for (int s = 0; s < sp->num_stages; s++) {
        if (sp->blocks[s] < 1 || sp->widths[s] < 1) return bnl_fail(BNL_ERR_ARG, "create: stage %d is empty", s + 1);
        int wd = sp->widths[s], co = wd * exp;
        for (int b = 0; b < sp->blocks[s]; b++) {
            if (sp->bottleneck)
                total += (size_t)wd * cin + 9 * (size_t)wd * wd + (size_t)co * wd + 4 * (size_t)(2 * wd + co);
            else
                total += 9 * (size_t)co * cin + 9 * (size_t)co * co + 8 * (size_t)co;
            if (b == 0 && (s > 0 || cin != co)) total += (size_t)co * cin + 4 * (size_t)co;
            cin = co;
        }
    }
    total += (size_t)sp->num_classes * cin + (size_t)sp->num_classes;
    float *vals = bnl_alloc(total * sizeof(float));
    int64_t *zeros = bnl_calloc(512, sizeof(int64_t));
    bnl_st_writer *w = NULL;
    bnl_status st = (vals && zeros) ? bnl_st_writer_create(&w) : bnl_fail(BNL_ERR_NOMEM, "create: out of memory");
    bnl_rng rng = bnl_rng_seed(seed);
    float *p = vals;
    char name[128];
#define ADD_CONV(nm, co_, ci_, k_)                                                                       \
    do {                                                                                                 \
        int64_t sh[4] = {(co_), (ci_), (k_), (k_)};                                                      \
        size_t n = (size_t)(co_) * (ci_) * (k_) * (k_);                                                  \
        double sd = sqrt(2.0 / ((double)(co_) * (k_) * (k_)));   /* kaiming_normal_, fan_out, relu */ \
        for (size_t i = 0; i < n; i++) p[i] = (float)(bnl_rng_normal(&rng) * sd);                        \
        if (st == BNL_OK) st = bnl_st_writer_add(w, nm, BNL_DT_F32, 4, sh, p);                           \
        p += n;                                                                                          \
    } while (0)
#define ADD_BN(prefix, c_)                                                                               \
    do {                                                                                                 \
        static const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};                 \
        static const float init[4] = {1.0f, 0.0f, 0.0f, 1.0f};                                           \
        int64_t sh[1] = {(c_)};                                                                          \
        for (int q = 0; q < 4; q++) {                                                                    \
            for (int i = 0; i < (c_); i++) p[i] = init[q];                                               \
            snprintf(name, sizeof name, "%s.%s", prefix, parts[q]);                                      \
            if (st == BNL_OK) st = bnl_st_writer_add(w, name, BNL_DT_F32, 1, sh, p);                     \
            p += (c_);                                                                                   \
        }                                                                                                \
        snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);                                   \
        if (st == BNL_OK) st = bnl_st_writer_add(w, name, BNL_DT_I64, 0, NULL, zeros);                   \
    } while (0)
    if (st == BNL_OK) {
        ADD_CONV("conv1.weight", sp->stem_width, sp->in_channels, 7);
        ADD_BN("bn1", sp->stem_width);
        cin = sp->stem_width;
        for (int s = 0; s < sp->num_stages; s++) {
            int wd = sp->widths[s], co = wd * exp;
            for (int b = 0; b < sp->blocks[s]; b++) {
                char pre[48], cn[96];
                snprintf(pre, sizeof pre, "layer%d.%d", s + 1, b);
                if (sp->bottleneck) {
                    snprintf(cn, sizeof cn, "%s.conv1.weight", pre); ADD_CONV(cn, wd, cin, 1);
                    snprintf(cn, sizeof cn, "%s.bn1", pre); ADD_BN(cn, wd);
                    snprintf(cn, sizeof cn, "%s.conv2.weight", pre); ADD_CONV(cn, wd, wd, 3);
                    snprintf(cn, sizeof cn, "%s.bn2", pre); ADD_BN(cn, wd);
                    snprintf(cn, sizeof cn, "%s.conv3.weight", pre); ADD_CONV(cn, co, wd, 1);
                    snprintf(cn, sizeof cn, "%s.bn3", pre); ADD_BN(cn, co);
                } else {
                    snprintf(cn, sizeof cn, "%s.conv1.weight", pre); ADD_CONV(cn, co, cin, 3);
                    snprintf(cn, sizeof cn, "%s.bn1", pre); ADD_BN(cn, co);
                    snprintf(cn, sizeof cn, "%s.conv2.weight", pre); ADD_CONV(cn, co, co, 3);
                    snprintf(cn, sizeof cn, "%s.bn2", pre); ADD_BN(cn, co);
                }
                if (b == 0 && (s > 0 || cin != co)) {
                    snprintf(cn, sizeof cn, "%s.downsample.0.weight", pre); ADD_CONV(cn, co, cin, 1);
                    snprintf(cn, sizeof cn, "%s.downsample.1", pre); ADD_BN(cn, co);
                }
                cin = co;
            }
        }
        // torch.nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
        double bound = 1.0 / sqrt((double)cin);
        int64_t fs[2] = {sp->num_classes, cin}, bs[1] = {sp->num_classes};
        for (size_t i = 0; i < (size_t)sp->num_classes * cin + (size_t)sp->num_classes; i++)
            p[i] = (float)((2.0 * bnl_rng_uniform(&rng) - 1.0) * bound);
        if (st == BNL_OK) st = bnl_st_writer_add(w, "fc.weight", BNL_DT_F32, 2, fs, p);
        if (st == BNL_OK) st = bnl_st_writer_add(w, "fc.bias", BNL_DT_F32, 1, bs, p + (size_t)sp->num_classes * cin);
    }
#undef ADD_CONV
#undef ADD_BN
    uint8_t *buf = NULL;
    size_t len = 0;
    if (st == BNL_OK) st = bnl_st_writer_to_buffer(w, &buf, &len);
    if (st == BNL_OK) st = bnl_resnet_load(out, buf, len);
    free(buf);
    bnl_st_writer_free(w);
    bnl_free(vals), bnl_free(zeros);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Running statistics and PreciseBN

static bnl_status need_running_stats(const bnl_resnet *m, const char *what) {
    int k = m->info.norm;
    if (k == BNL_NORM_NONE || k == BNL_NORM_GROUP)
        return bnl_fail(BNL_ERR_ARG, "%s: the model's normalization (%s) has no running statistics", what,
                        k == BNL_NORM_NONE ? "none" : "group");
    return BNL_OK;
}

bnl_status bnl_resnet_set_running_stats(bnl_resnet *m, int i, const float *mean, const float *var, int channels) {
    if (!m || !mean || !var) return bnl_fail(BNL_ERR_ARG, "set_running_stats: NULL argument");
    TRY(need_running_stats(m, "set_running_stats"));
    if (i < 0 || i >= m->nbn)
        return bnl_fail(BNL_ERR_ARG, "set_running_stats: no BatchNorm layer #%d (the model has %d)", i, m->nbn);
    const bn_t *x = &m->bns[i];
    if (channels != x->C)
        return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s has %d channels, not %d", x->name, x->C, channels);
    for (int c = 0; c < x->C; c++) {
        if (!isfinite(mean[c]))
            return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s mean[%d] is not finite", x->name, c);
        if (!isfinite(var[c]) || !(var[c] >= 0.0f))
            return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s variance[%d] = %g is not a finite value >= 0", x->name,
                            c, (double)var[c]);
    }
    memcpy(m->stats + x->rm, mean, (size_t)x->C * sizeof(float));
    memcpy(m->stats + x->rv, var, (size_t)x->C * sizeof(float));
    m->pk_valid = 0;   // the eval cache folds the running statistics into the conv weights
    return BNL_OK;
}

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
    TRY(need_running_stats(m, "precise_bn"));
    if (m->info.norm != BNL_NORM_BATCH)
        return bnl_fail(BNL_ERR_ARG, "precise_bn: needs plain BatchNorm (norm kind %d); set_norm(BATCH) first",
                        m->info.norm);
    bnl_precise_bn *p = calloc(1, sizeof *p);
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "precise_bn: out of memory");
    p->nbn = m->nbn;
    p->off = calloc((size_t)m->nbn + 1, sizeof(size_t));
    for (int i = 0; p->off && i < m->nbn; i++) p->off[i + 1] = p->off[i] + (size_t)m->bns[i].C;
    p->total = p->off ? p->off[m->nbn] : 0;
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
    if (m->nbn != p->nbn || m->info.norm != BNL_NORM_BATCH)
        return bnl_fail(BNL_ERR_ARG, "precise_bn_add: not the model (or norm) this accumulation began with");
    if (p->batches > 0 && (H != p->H || W != p->W))
        return bnl_fail(BNL_ERR_SHAPE, "precise_bn_add: batch is %dx%d, earlier batches %dx%d (one image size)", H, W,
                        p->H, p->W);
    size_t ns = m->info.num_stats;
    float *keep = bnl_alloc((ns + 1) * sizeof(float));
    int64_t *tracked = malloc(((size_t)m->nbn + 1) * sizeof(int64_t));
    if (!keep || !tracked) {
        bnl_free(keep), free(tracked);
        return bnl_fail(BNL_ERR_NOMEM, "precise_bn_add: out of memory");
    }
    memcpy(keep, m->stats, ns * sizeof(float));
    for (int i = 0; i < m->nbn; i++) tracked[i] = m->bns[i].tracked;
    int was_training = m->training, had_tracked = m->has_tracked;
    m->training = 1;
    bnl_status s = bnl_resnet_forward_to(m, x, N, H, W, m->nbn - 1);
    m->training = was_training;
    // the model's own running statistics do not move
    memcpy(m->stats, keep, ns * sizeof(float));
    for (int i = 0; i < m->nbn; i++) m->bns[i].tracked = tracked[i];
    m->has_tracked = had_tracked;
    m->pk_valid = 0;
    bnl_free(keep), free(tracked);
    if (s != BNL_OK) return s;
    // Chan's merge of (count, mean, M2); batch_var is biased, so its M2 is var * count. Every layer's
    // count is N times its H*W (the same in every batch): counts in images give the same result.
    double na = p->n, nb = N, n = na + nb;
    for (int i = 0; i < m->nbn; i++) {
        const bn_t *l = &m->bns[i];
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
    if (m->nbn != p->nbn || m->info.norm != BNL_NORM_BATCH)
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
    for (int i = 0; i < m->nbn && s == BNL_OK; i++)
        s = bnl_resnet_set_running_stats(m, i, mv + p->off[i], vv + p->off[i], m->bns[i].C);
    bnl_free(mv);
    return s;
}
