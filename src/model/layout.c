// The ResNet layout: layer tables and buffer offsets, built by one set of builder calls whether
// the architecture comes from a spec (here) or from a state dict's names (io/statedict.c). The
// float counts of parameters, running statistics and batch statistics are whatever those calls
// added: nothing else counts them.
#include "model/resnet_internal.h"

#include "core/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Makes room for one more element in a growing array (*arr holds n of elem bytes, *cap capacity).
static int grow(void **arr, int *cap, int n, size_t elem) {
    if (n < *cap) return 1;
    int nc = *cap ? 2 * *cap : 64;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return 0;
    *arr = p, *cap = nc;
    return 1;
}

static int add_seg(bnl_layout *L, size_t off, size_t n, int decay) {
    if (!grow((void **)&L->segs, &L->cap_seg, L->nseg, sizeof *L->segs)) return 0;
    L->segs[L->nseg++] = (bnl_lseg){off, n, decay};
    return 1;
}

static int add_conv(bnl_layout *L, const char *name, int cin, int cout, int k, int stride) {
    if (!grow((void **)&L->convs, &L->cap_conv, L->nconv, sizeof *L->convs)) return -1;
    bnl_lconv *c = &L->convs[L->nconv];
    memset(c, 0, sizeof *c);
    snprintf(c->name, BNL_NAME_LEN, "%s", name);
    c->cin = cin, c->cout = cout, c->k = k, c->stride = stride, c->pad = k / 2;
    c->w = L->np;
    size_t n = (size_t)cout * (size_t)k * (size_t)k * (size_t)cin;
    if (!add_seg(L, L->np, n, 1)) return -1;
    L->np += n;
    return L->nconv++;
}

static int add_bn(bnl_layout *L, const char *name, int C, int relu) {
    if (!grow((void **)&L->bns, &L->cap_bn, L->nbn, sizeof *L->bns)) return -1;
    bnl_lbn *x = &L->bns[L->nbn];
    memset(x, 0, sizeof *x);
    snprintf(x->name, BNL_NAME_LEN, "%s", name);
    x->C = C, x->relu = relu;
    x->gamma = L->np, x->beta = L->np + (size_t)C;
    if (!add_seg(L, L->np, 2 * (size_t)C, 0)) return -1;
    L->np += 2 * (size_t)C;
    x->rm = L->ns, x->rv = L->ns + (size_t)C;
    L->ns += 2 * (size_t)C;
    x->bm = L->nb, x->bv = L->nb + (size_t)C, x->bis = L->nb + 2 * (size_t)C;
    L->nb += 3 * (size_t)C;
    return L->nbn++;
}

// A convolution "<pre>.<conv>" and the BatchNorm "<pre>.<bn>" after it.
static int add_conv_bn(bnl_layout *L, const char *pre, const char *conv, const char *bn, int cin, int cout, int k,
                       int stride, int relu, int *ci, int *bi) {
    char name[BNL_NAME_LEN];
    snprintf(name, sizeof name, "%s.%s", pre, conv);
    if ((*ci = add_conv(L, name, cin, cout, k, stride)) < 0) return 0;
    snprintf(name, sizeof name, "%s.%s", pre, bn);
    return (*bi = add_bn(L, name, cout, relu)) >= 0;
}

static bnl_status oom(void) { return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout"); }

bnl_status bnl_layout_begin(bnl_layout **out) {
    *out = calloc(1, sizeof **out);
    return *out ? BNL_OK : oom();
}

bnl_status bnl_layout_stem(bnl_layout *L, int in_channels, int stem_width) {
    L->info.stem_width = stem_width, L->info.in_channels = in_channels;
    if (add_conv(L, "conv1", in_channels, stem_width, 7, 2) < 0 || add_bn(L, "bn1", stem_width, 1) < 0) return oom();
    L->next_cin = stem_width;
    return BNL_OK;
}

bnl_status bnl_layout_block(bnl_layout *L, int stage, int index, int bottleneck, int mid, int cout, int has_down,
                            int *bi) {
    if (!grow((void **)&L->blocks, &L->cap_block, L->nblocks, sizeof *L->blocks)) return oom();
    bnl_lblock *blk = &L->blocks[L->nblocks];
    memset(blk, 0, sizeof *blk);
    char pre[BNL_NAME_LEN / 2];
    snprintf(pre, sizeof pre, "layer%d.%d", stage + 1, index);
    int cin = L->next_cin, stride = (stage > 0 && index == 0) ? 2 : 1;
    blk->cin = cin, blk->cout = cout, blk->stride = stride;
    blk->conv3 = blk->bn3 = blk->dconv = blk->dbn = -1;
    L->info.bottleneck = bottleneck;
    int ok;
    if (bottleneck)
        ok = add_conv_bn(L, pre, "conv1", "bn1", cin, mid, 1, 1, 1, &blk->conv1, &blk->bn1) &&
             add_conv_bn(L, pre, "conv2", "bn2", mid, mid, 3, stride, 1, &blk->conv2, &blk->bn2) &&
             add_conv_bn(L, pre, "conv3", "bn3", mid, cout, 1, 1, 0, &blk->conv3, &blk->bn3);
    else
        ok = add_conv_bn(L, pre, "conv1", "bn1", cin, cout, 3, stride, 1, &blk->conv1, &blk->bn1) &&
             add_conv_bn(L, pre, "conv2", "bn2", cout, cout, 3, 1, 0, &blk->conv2, &blk->bn2);
    if (ok && has_down) ok = add_conv_bn(L, pre, "downsample.0", "downsample.1", cin, cout, 1, stride, 0, &blk->dconv,
                                         &blk->dbn);
    if (!ok) return oom();
    L->next_cin = cout;
    *bi = L->nblocks++;
    return BNL_OK;
}

void bnl_layout_end_stage(bnl_layout *L, int stage, int nblocks) {
    L->info.blocks[stage] = nblocks;
    L->info.widths[stage] = L->next_cin;
    L->info.num_stages = stage + 1;
}

bnl_status bnl_layout_head(bnl_layout *L, int num_classes) {
    int F = L->next_cin;
    L->info.num_classes = num_classes;
    L->info.num_features = F;
    L->fc_w = L->np;
    if (!add_seg(L, L->np, (size_t)num_classes * (size_t)F, 1)) return oom();
    L->np += (size_t)num_classes * (size_t)F;
    L->fc_b = L->np;
    if (!add_seg(L, L->np, (size_t)num_classes, 0)) return oom();
    L->np += (size_t)num_classes;
    L->info.num_bn = L->nbn;
    L->info.num_params = L->np;
    L->info.num_stats = L->ns;
    return BNL_OK;
}

void bnl_layout_free(bnl_layout *L) {
    if (!L) return;
    free(L->convs), free(L->bns), free(L->blocks), free(L->segs);
    free(L);
}

bnl_status bnl_layout_from_spec(bnl_layout **out, const bnl_resnet_spec *sp) {
    *out = NULL;
    if (sp->num_stages < 1 || sp->num_stages > BNL_MAX_STAGES || sp->stem_width < 1 || sp->in_channels < 1 ||
        sp->num_classes < 1)
        return bnl_fail(BNL_ERR_ARG, "create: bad ResNet spec");
    for (int s = 0; s < sp->num_stages; s++)
        if (sp->blocks[s] < 1 || sp->inner_widths[s] < 1) return bnl_fail(BNL_ERR_ARG, "create: stage %d is empty", s + 1);
    bnl_layout *L;
    bnl_status st = bnl_layout_begin(&L);
    if (st != BNL_OK) return st;
    st = bnl_layout_stem(L, sp->in_channels, sp->stem_width);
    int exp = sp->bottleneck ? 4 : 1;
    for (int s = 0; s < sp->num_stages && st == BNL_OK; s++) {
        int wd = sp->inner_widths[s], co = wd * exp, bi;
        for (int b = 0; b < sp->blocks[s] && st == BNL_OK; b++)
            st = bnl_layout_block(L, s, b, sp->bottleneck, wd, co, b == 0 && (s > 0 || L->next_cin != co), &bi);
        bnl_layout_end_stage(L, s, sp->blocks[s]);
    }
    if (st == BNL_OK) st = bnl_layout_head(L, sp->num_classes);
    if (st != BNL_OK) {
        bnl_layout_free(L);
        return st;
    }
    *out = L;
    return BNL_OK;
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
            sp->blocks[s] = known[i].blocks[s], sp->inner_widths[s] = wd < 1 ? 1 : wd;
        }
        return BNL_OK;
    }
    return bnl_fail(BNL_ERR_ARG, "spec: unknown ResNet depth %d (known: 18, 34, 50, 101, 152)", depth);
}
