// torchvision ResNet state dicts <-> the model: the architecture from the names (the layout
// builder's calls, model/layout.c), shape checks naming the tensor, values in and out.
#include "io/statedict.h"

#include "core/common.h"
#include "model/resnet_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                              \
    do {                                       \
        bnl_status _s = (expr);                \
        if (_s != BNL_OK) return _s;           \
    } while (0)

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

static bnl_status check_conv(const bnl_st_file *f, const bnl_lconv *cv, const char *hint) {
    char name[BNL_NAME_LEN + 16];
    snprintf(name, sizeof name, "%s.weight", cv->name);
    int64_t dims[4] = {cv->cout, cv->cin, cv->k, cv->k};
    return expect_shape(f, name, 4, dims, hint);
}

// GroupNorm files may lack the running statistics (nn.GroupNorm has none): need_stats 0.
static bnl_status check_bn(const bnl_st_file *f, const bnl_lbn *x, int need_stats) {
    static const char *parts[] = {"weight", "bias", "running_mean", "running_var"};
    char name[BNL_NAME_LEN + 32];
    int64_t dims[1] = {x->C};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", x->name, parts[i]);
        if (i >= 2 && !need_stats && !bnl_st_find(f, name)) continue;
        TRY(expect_shape(f, name, 1, dims, NULL));
    }
    return BNL_OK;
}

static bnl_status check_conv_bn(const bnl_st_file *f, const bnl_layout *L, int ci, int bi, const char *hint,
                                int need_stats) {
    TRY(check_conv(f, &L->convs[ci], hint));
    return check_bn(f, &L->bns[bi], need_stats);
}

// The layout read from the names: the stem from conv1's shape, stages and blocks from the
// layerS.B.conv1 names, bottleneck from layer1.0.conv3, widths from conv1/conv3 shapes, classes
// from fc.weight. Every block is checked right after the builder added it.
static bnl_status layout_from_file(bnl_layout **out, const bnl_st_file *f, int need_stats) {
    *out = NULL;
    char name[160];
    int64_t d[4];
    if (!bnl_st_find(f, "conv1.weight"))
        return bnl_fail(BNL_ERR_FORMAT, "missing tensor 'conv1.weight': not a torchvision ResNet state dict");
    TRY(conv_dims(f, "conv1.weight", d));
    if (d[2] != 7 || d[3] != 7)
        return bnl_fail(BNL_ERR_SHAPE, "tensor 'conv1.weight' has a %lldx%lld kernel, expected the 7x7 ResNet stem",
                        (long long)d[2], (long long)d[3]);
    bnl_layout *L;
    TRY(bnl_layout_begin(&L));
    bnl_status s = bnl_layout_stem(L, (int)d[1], (int)d[0]);
    if (s == BNL_OK) s = check_bn(f, &L->bns[0], need_stats);
    int bottleneck = bnl_st_find(f, "layer1.0.conv3.weight") != NULL;
    for (int st = 0; st < BNL_MAX_STAGES && s == BNL_OK; st++) {
        if (!find_fmt(f, name, sizeof name, "layer%d.0.conv1.weight", st + 1)) break;
        int nb = 0;
        while (find_fmt(f, name, sizeof name, "layer%d.%d.conv1.weight", st + 1, nb)) nb++;
        for (int b = 0; b < nb && s == BNL_OK; b++) {
            char pre[BNL_NAME_LEN / 2], lname[BNL_NAME_LEN];
            snprintf(pre, sizeof pre, "layer%d.%d", st + 1, b);
            int stride = (st > 0 && b == 0) ? 2 : 1, cin = L->next_cin;
            snprintf(lname, sizeof lname, "%s.conv1.weight", pre);
            if ((s = conv_dims(f, lname, d)) != BNL_OK) break;
            int mid = (int)d[0], cout = mid;
            if (bottleneck) {
                snprintf(lname, sizeof lname, "%s.conv3.weight", pre);
                if (conv_dims(f, lname, d) != BNL_OK) {
                    s = bnl_fail(BNL_ERR_FORMAT,
                                 "missing tensor '%s': layer1.0 is a bottleneck block, so every block needs conv3", lname);
                    break;
                }
                cout = (int)d[0];
            }
            snprintf(lname, sizeof lname, "%s.downsample.0.weight", pre);
            int has_down = bnl_st_find(f, lname) != NULL, bi;
            if ((s = bnl_layout_block(L, st, b, bottleneck, mid, cout, has_down, &bi)) != BNL_OK) break;
            const bnl_lblock *blk = &L->blocks[bi];
            if (bottleneck) {
                if ((s = check_conv_bn(f, L, blk->conv1, blk->bn1, "(bottleneck 1x1)", need_stats)) != BNL_OK ||
                    (s = check_conv_bn(f, L, blk->conv2, blk->bn2, "(3x3; grouped convolutions are not supported)",
                                       need_stats)) != BNL_OK ||
                    (s = check_conv_bn(f, L, blk->conv3, blk->bn3, "(bottleneck 1x1)", need_stats)) != BNL_OK)
                    break;
            } else {
                if ((s = check_conv_bn(f, L, blk->conv1, blk->bn1, "(basic block 3x3)", need_stats)) != BNL_OK ||
                    (s = check_conv_bn(f, L, blk->conv2, blk->bn2, "(basic block 3x3)", need_stats)) != BNL_OK)
                    break;
            }
            if (!has_down && (stride != 1 || cin != cout)) {
                s = bnl_fail(BNL_ERR_FORMAT,
                             "missing tensor '%s': block %s changes %s (%d -> %d channels, stride %d) and needs a downsample",
                             lname, pre, stride != 1 ? "resolution" : "width", cin, cout, stride);
                break;
            }
            if (has_down) s = check_conv_bn(f, L, blk->dconv, blk->dbn, "(downsample 1x1)", need_stats);
        }
        if (s == BNL_OK) bnl_layout_end_stage(L, st, nb);
    }
    if (s == BNL_OK && L->info.num_stages == 0)
        s = bnl_fail(BNL_ERR_FORMAT, "missing tensor 'layer1.0.conv1.weight': a ResNet needs at least one stage");
    if (s == BNL_OK && find_fmt(f, name, sizeof name, "layer%d.0.conv1.weight", BNL_MAX_STAGES + 1))
        s = bnl_fail(BNL_ERR_SHAPE, "tensor '%s': more than %d stages are not supported", name, BNL_MAX_STAGES);
    const bnl_st_tensor *fw = s == BNL_OK ? bnl_st_find(f, "fc.weight") : NULL;
    if (s == BNL_OK && !fw) s = bnl_fail(BNL_ERR_FORMAT, "missing tensor 'fc.weight'");
    if (s == BNL_OK && (fw->ndim != 2 || fw->shape[0] <= 0 || fw->shape[0] > 1000000))
        s = bnl_fail(BNL_ERR_SHAPE, "tensor 'fc.weight' must be 2-D [classes, features]");
    if (s == BNL_OK) {
        int K = (int)fw->shape[0];
        int64_t fdims[2] = {K, L->next_cin}, bdims[1] = {K};
        if ((s = expect_shape(f, "fc.weight", 2, fdims, "(features = last stage width)")) == BNL_OK &&
            (s = expect_shape(f, "fc.bias", 1, bdims, NULL)) == BNL_OK)
            s = bnl_layout_head(L, K);
    }
    if (s != BNL_OK) {
        bnl_layout_free(L);
        return s;
    }
    *out = L;
    return BNL_OK;
}

// Every tensor in the file must be one we expect (or one a checkpoint owns): names the first
// unexpected one.
static bnl_status check_unexpected(const bnl_layout *L, const bnl_st_file *f) {
    static const char *bn_parts[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
    char name[160];
    for (size_t i = 0; i < f->count; i++) {
        const char *n = f->tensors[i].name;
        int ok = !strcmp(n, "fc.weight") || !strcmp(n, "fc.bias") || bnl_checkpoint_owns_tensor(n);
        for (int c = 0; !ok && c < L->nconv; c++) {
            snprintf(name, sizeof name, "%s.weight", L->convs[c].name);
            ok = !strcmp(n, name);
        }
        for (int b = 0; !ok && b < L->nbn; b++)
            for (int p = 0; !ok && p < 5; p++) {
                snprintf(name, sizeof name, "%s.%s", L->bns[b].name, bn_parts[p]);
                ok = !strcmp(n, name);
            }
        if (!ok)
            return bnl_fail(BNL_ERR_FORMAT, "unexpected tensor '%s': not part of the torchvision ResNet read from this file",
                            n);
    }
    return BNL_OK;
}

static bnl_status load_values(bnl_state *st, const bnl_st_file *f) {
    const bnl_layout *L = st->L;
    char name[160];
    bnl_status s;
    float *tmp = NULL;
    size_t tmp_n = 0;
    for (int c = 0; c < L->nconv; c++) {
        const bnl_lconv *cv = &L->convs[c];
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
        bnl_oihw_to_ohwi(st->params + cv->w, tmp, cv->cout, cv->cin, cv->k);   // torch OIHW -> bnlab OHWI
    }
    bnl_free(tmp);
    st->has_tracked = 0;
    for (int b = 0; b < L->nbn; b++) {
        const bnl_lbn *x = &L->bns[b];
        struct { const char *part; float *dst; } parts[] = {
            {"weight", st->params + x->gamma}, {"bias", st->params + x->beta},
            {"running_mean", st->stats + x->rm}, {"running_var", st->stats + x->rv}};
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
            if (!(st->stats[x->rv + c] >= 0.0f) || !isfinite(st->stats[x->rv + c]))
                return bnl_fail(BNL_ERR_NUMERIC, "tensor '%s.running_var' has a negative or non-finite value at [%d]",
                                x->name, c);
        snprintf(name, sizeof name, "%s.num_batches_tracked", x->name);
        const bnl_st_tensor *t = bnl_st_find(f, name);
        st->tracked[b] = 0;
        if (t) {
            if (t->nelem != 1)
                return bnl_fail(BNL_ERR_SHAPE, "tensor '%s' must hold one integer (shape [])", name);
            if ((s = bnl_st_to_i64(&st->tracked[b], t)) != BNL_OK) return s;
            st->has_tracked = 1;
        }
    }
    if ((s = bnl_st_to_f32(st->params + L->fc_w, bnl_st_find(f, "fc.weight"))) != BNL_OK) return s;
    if ((s = bnl_st_to_f32(st->params + L->fc_b, bnl_st_find(f, "fc.bias"))) != BNL_OK) return s;
    return BNL_OK;
}

static bnl_status copy_meta(bnl_state *st, const bnl_st_file *f) {
    if (!f->meta_count) return BNL_OK;
    st->meta_k = calloc(f->meta_count, sizeof(char *));
    st->meta_v = calloc(f->meta_count, sizeof(char *));
    if (!st->meta_k || !st->meta_v) return bnl_fail(BNL_ERR_NOMEM, "out of memory copying metadata");
    for (size_t i = 0; i < f->meta_count; i++) {
        st->meta_k[i] = strdup(f->meta_keys[i]);
        st->meta_v[i] = strdup(f->meta_values[i]);
        st->nmeta = i + 1;
        if (!st->meta_k[i] || !st->meta_v[i]) return bnl_fail(BNL_ERR_NOMEM, "out of memory copying metadata");
    }
    return BNL_OK;
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
static bnl_status norm_from_file(bnl_norm_spec *ns, const bnl_st_file *f) {
    const char *v = bnl_st_meta(f, BNL_NORM_META_KEY);
    bnl_status s = bnl_norm_parse(ns, v ? v : "batch");
    if (s != BNL_OK)
        return bnl_fail(BNL_ERR_FORMAT, "metadata '%s' is '%.60s' (expected batch, none, group:G, renorm, ghost:V or "
                        "frozen)", BNL_NORM_META_KEY, v);
    if (ns->kind == BNL_NORM_RENORM) {
        TRY(meta_bound(f, BNL_RMAX_META_KEY, 1.0f, BNL_RENORM_RMAX_DEFAULT, &ns->renorm_rmax));
        TRY(meta_bound(f, BNL_DMAX_META_KEY, 0.0f, BNL_RENORM_DMAX_DEFAULT, &ns->renorm_dmax));
    }
    return BNL_OK;
}

static bnl_status load_from(bnl_resnet **out, const bnl_st_file *f, int allow_extra) {
    bnl_norm_spec ns;
    bnl_layout *L = NULL;
    bnl_state *st = NULL;
    bnl_resnet *m = NULL;
    bnl_status s = norm_from_file(&ns, f);   // first: a GroupNorm file may lack running statistics
    if (s == BNL_OK) s = layout_from_file(&L, f, ns.kind != BNL_NORM_GROUP);
    if (s == BNL_OK) s = bnl_state_create(&st, L);   // owns L from here on
    if (s == BNL_OK) s = bnl_context_create(&m, st);
    if (s == BNL_OK) {
        m->ns = ns, m->info.norm = ns.kind;
        if (ns.kind == BNL_NORM_GROUP) s = bnl_context_check_groups(m, ns.groups, 1);
    }
    if (s == BNL_OK && !allow_extra) s = check_unexpected(st->L, f);
    if (s == BNL_OK) s = load_values(st, f);
    if (s == BNL_OK) s = copy_meta(st, f);
    bnl_state_release(st);   // the context holds its own reference
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

// ---------------------------------------------------------------------------------------------
// Saving

static bnl_status add_tensors(const bnl_resnet *m, bnl_st_writer *w, float **conv_tmp) {
    const bnl_layout *L = m->L;
    const bnl_state *st = m->st;
    // conv weights back to torch's OIHW, in a temporary copy the writer reads at write time
    size_t nconvw = 0;
    for (int c = 0; c < L->nconv; c++)
        nconvw += (size_t)L->convs[c].cout * L->convs[c].k * L->convs[c].k * L->convs[c].cin;
    float *tmp = bnl_alloc(nconvw * sizeof(float));
    if (!tmp) return bnl_fail(BNL_ERR_NOMEM, "out of memory saving the model");
    char name[160];
    bnl_status s = BNL_OK;
    size_t off = 0;
    // torchvision order: a conv, then its BN (conv c is followed by BatchNorm c)
    for (int c = 0; c < L->nconv && s == BNL_OK; c++) {
        const bnl_lconv *cv = &L->convs[c];
        int K = cv->cout, C = cv->cin, R = cv->k;
        float *dst = tmp + off;
        bnl_ohwi_to_oihw(dst, st->params + cv->w, K, C, R);
        off += (size_t)K * C * R * R;
        int64_t shape[4] = {K, C, R, R};
        snprintf(name, sizeof name, "%s.weight", cv->name);
        s = bnl_st_writer_add(w, name, BNL_DT_F32, 4, shape, dst);
        const bnl_lbn *x = &L->bns[c];
        int64_t cs[1] = {x->C};
        struct { const char *part; const float *src; } parts[] = {
            {"weight", st->params + x->gamma}, {"bias", st->params + x->beta},
            {"running_mean", st->stats + x->rm}, {"running_var", st->stats + x->rv}};
        // GroupNorm: weight and bias only, as nn.GroupNorm's state dict
        int nparts = m->ns.kind == BNL_NORM_GROUP ? 2 : 4;
        for (int p = 0; p < nparts && s == BNL_OK; p++) {
            snprintf(name, sizeof name, "%s.%s", x->name, parts[p].part);
            s = bnl_st_writer_add(w, name, BNL_DT_F32, 1, cs, parts[p].src);
        }
        if (s == BNL_OK && st->has_tracked && nparts == 4) {
            snprintf(name, sizeof name, "%s.num_batches_tracked", x->name);
            s = bnl_st_writer_add(w, name, BNL_DT_I64, 0, NULL, &st->tracked[c]);
        }
    }
    int64_t fs[2] = {m->info.num_classes, m->info.num_features}, bs[1] = {m->info.num_classes};
    if (s == BNL_OK) s = bnl_st_writer_add(w, "fc.weight", BNL_DT_F32, 2, fs, st->params + L->fc_w);
    if (s == BNL_OK) s = bnl_st_writer_add(w, "fc.bias", BNL_DT_F32, 1, bs, st->params + L->fc_b);
    for (size_t i = 0; i < st->nmeta && s == BNL_OK; i++) s = bnl_st_writer_meta(w, st->meta_k[i], st->meta_v[i]);
    if (s != BNL_OK) {
        bnl_free(tmp);
        return s;
    }
    *conv_tmp = tmp;
    return BNL_OK;
}

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

bnl_status bnl_resnet_add_to_writer(const bnl_resnet *m, bnl_st_writer *w, void **keep) {
    if (!m || !w || !keep) return bnl_fail(BNL_ERR_ARG, "add_to_writer: NULL argument");
    return add_tensors(m, w, (float **)keep);
}
