// The ResNet state: parameters, running statistics, num_batches_tracked, metadata, and (on first
// use) gradients and SGD momentum, in the layout's offsets. Contexts borrow it by reference count.
#include "model/resnet_internal.h"

#include "core/common.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bnl_status bnl_state_create(bnl_state **out, bnl_layout *L) {
    *out = NULL;
    bnl_state *st = calloc(1, sizeof *st);
    if (!st) {
        bnl_layout_free(L);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout");
    }
    st->L = L, st->refs = 1;
    st->params = bnl_calloc(L->np, sizeof(float));
    st->stats = bnl_calloc(L->ns, sizeof(float));
    st->tracked = calloc((size_t)L->nbn + 1, sizeof(int64_t));
    if (!st->params || !st->stats || !st->tracked) {
        bnl_state_release(st);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory building the ResNet layout");
    }
    *out = st;
    return BNL_OK;
}

void bnl_state_release(bnl_state *st) {
    if (!st || --st->refs > 0) return;
    bnl_free(st->params), bnl_free(st->stats), bnl_free(st->grads), bnl_free(st->mom);
    free(st->tracked);
    for (size_t i = 0; i < st->nmeta; i++) free(st->meta_k[i]), free(st->meta_v[i]);
    free(st->meta_k), free(st->meta_v);
    bnl_layout_free(st->L);
    free(st);
}

bnl_status bnl_state_need_grads(bnl_state *st) {
    if (st->grads && st->mom) return BNL_OK;
    if (!st->grads) st->grads = bnl_calloc(st->L->np, sizeof(float));
    if (!st->mom) st->mom = bnl_calloc(st->L->np, sizeof(float));
    if (!st->grads || !st->mom)
        return bnl_fail(BNL_ERR_NOMEM, "out of memory for the gradients (%zu parameters)", st->L->np);
    return BNL_OK;
}

const char *bnl_state_meta(const bnl_state *st, const char *key) {
    for (size_t i = 0; i < st->nmeta; i++)
        if (!strcmp(st->meta_k[i], key)) return st->meta_v[i];
    return NULL;
}

bnl_status bnl_state_meta_set(bnl_state *st, const char *key, const char *value) {
    size_t i = 0;
    while (i < st->nmeta && strcmp(st->meta_k[i], key)) i++;
    if (!value) {
        if (i == st->nmeta) return BNL_OK;
        free(st->meta_k[i]), free(st->meta_v[i]);
        for (size_t j = i + 1; j < st->nmeta; j++) st->meta_k[j - 1] = st->meta_k[j], st->meta_v[j - 1] = st->meta_v[j];
        st->nmeta--;
        return BNL_OK;
    }
    char *v = strdup(value);
    if (!v) return bnl_fail(BNL_ERR_NOMEM, "out of memory setting metadata");
    if (i < st->nmeta) {
        free(st->meta_v[i]);
        st->meta_v[i] = v;
        return BNL_OK;
    }
    char *k = strdup(key);
    char **nk = k ? realloc(st->meta_k, (st->nmeta + 1) * sizeof *nk) : NULL;
    if (nk) st->meta_k = nk;
    char **nv = nk ? realloc(st->meta_v, (st->nmeta + 1) * sizeof *nv) : NULL;
    if (nv) st->meta_v = nv;
    if (!nv) {
        free(k), free(v);
        return bnl_fail(BNL_ERR_NOMEM, "out of memory setting metadata");
    }
    st->meta_k[st->nmeta] = k, st->meta_v[st->nmeta] = v;
    st->nmeta++;
    return BNL_OK;
}

// torchvision's initialization, walking the layout: the RNG draws each conv weight in torch's
// OIHW order (conv order = the state dict's order), then the fc weight and bias.
static bnl_status init_torchvision(bnl_state *st, uint64_t seed) {
    const bnl_layout *L = st->L;
    size_t maxw = 0;
    for (int c = 0; c < L->nconv; c++) {
        size_t n = (size_t)L->convs[c].cout * L->convs[c].k * L->convs[c].k * L->convs[c].cin;
        maxw = n > maxw ? n : maxw;
    }
    float *tmp = bnl_alloc(maxw * sizeof(float));
    if (!tmp) return bnl_fail(BNL_ERR_NOMEM, "create: out of memory");
    bnl_rng rng = bnl_rng_seed(seed);
    for (int c = 0; c < L->nconv; c++) {
        const bnl_lconv *cv = &L->convs[c];
        int K = cv->cout, C = cv->cin, R = cv->k;
        size_t n = (size_t)K * C * R * R;
        double sd = sqrt(2.0 / ((double)K * R * R));   // kaiming_normal_, fan_out, relu
        for (size_t i = 0; i < n; i++) tmp[i] = (float)(bnl_rng_normal(&rng) * sd);
        bnl_oihw_to_ohwi(st->params + cv->w, tmp, K, C, R);
        const bnl_lbn *x = &L->bns[c];
        for (int i = 0; i < x->C; i++) {
            st->params[x->gamma + (size_t)i] = 1.0f, st->params[x->beta + (size_t)i] = 0.0f;
            st->stats[x->rm + (size_t)i] = 0.0f, st->stats[x->rv + (size_t)i] = 1.0f;
        }
    }
    bnl_free(tmp);
    // torch.nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    size_t K = (size_t)L->info.num_classes, F = (size_t)L->info.num_features;
    double bound = 1.0 / sqrt((double)F);
    float *p = st->params + L->fc_w;   // fc_b follows fc_w directly
    for (size_t i = 0; i < K * F + K; i++) p[i] = (float)((2.0 * bnl_rng_uniform(&rng) - 1.0) * bound);
    st->has_tracked = 1;   // num_batches_tracked 0 in every layer, saved as torchvision does
    return BNL_OK;
}

bnl_status bnl_resnet_create(bnl_resnet **out, const bnl_resnet_spec *sp, uint64_t seed) {
    if (!out || !sp) return bnl_fail(BNL_ERR_ARG, "create: NULL argument");
    *out = NULL;
    bnl_layout *L;
    bnl_state *st;
    bnl_status s = bnl_layout_from_spec(&L, sp);
    if (s == BNL_OK) s = bnl_state_create(&st, L);
    if (s != BNL_OK) return s;
    s = init_torchvision(st, seed);
    if (s == BNL_OK) s = bnl_context_create(out, st);
    bnl_state_release(st);   // the context holds its own reference
    return s;
}

void bnl_oihw_to_ohwi(float *dst, const float *src, int K, int C, int R) {
    for (int o = 0; o < K; o++)
        for (int i = 0; i < C; i++)
            for (int r = 0; r < R; r++)
                for (int q = 0; q < R; q++)
                    dst[(((size_t)o * R + r) * R + q) * C + i] = src[(((size_t)o * C + i) * R + r) * R + q];
}

void bnl_ohwi_to_oihw(float *dst, const float *src, int K, int C, int R) {
    for (int o = 0; o < K; o++)
        for (int i = 0; i < C; i++)
            for (int r = 0; r < R; r++)
                for (int q = 0; q < R; q++)
                    dst[(((size_t)o * C + i) * R + r) * R + q] = src[(((size_t)o * R + r) * R + q) * C + i];
}

// ---------------------------------------------------------------------------------------------
// Views and setters of the values

const float *bnl_resnet_params(const bnl_resnet *m, size_t *count) {
    if (count) *count = m->L->np;
    return m->st->params;
}
const float *bnl_resnet_stats(const bnl_resnet *m, size_t *count) {
    if (count) *count = m->L->ns;
    return m->st->stats;
}
float *bnl_resnet_params_mut(bnl_resnet *m, size_t *count) {
    bnl_state_params_changed(m->st);
    if (count) *count = m->L->np;
    return m->st->params;
}
float *bnl_resnet_stats_mut(bnl_resnet *m, size_t *count) {
    bnl_state_changed(m->st);
    if (count) *count = m->L->ns;
    return m->st->stats;
}
float *bnl_resnet_grads(bnl_resnet *m, size_t *count) {
    if (count) *count = m->L->np;
    return bnl_state_need_grads(m->st) == BNL_OK ? m->st->grads : NULL;
}
float *bnl_resnet_momentum(bnl_resnet *m, size_t *count) {
    if (count) *count = m->L->np;
    return bnl_state_need_grads(m->st) == BNL_OK ? m->st->mom : NULL;
}

void bnl_resnet_params_changed(bnl_resnet *m) {
    if (m) bnl_state_params_changed(m->st);
}

const char *bnl_resnet_meta(const bnl_resnet *m, const char *key) { return bnl_state_meta(m->st, key); }

void bnl_resnet_zero_init_residual(bnl_resnet *m) {
    const bnl_layout *L = m->L;
    for (int b = 0; b < L->nblocks; b++) {
        const bnl_lblock *blk = &L->blocks[b];
        const bnl_lbn *last = &L->bns[blk->bn3 >= 0 ? blk->bn3 : blk->bn2];
        memset(m->st->params + last->gamma, 0, (size_t)last->C * sizeof(float));
    }
    bnl_state_params_changed(m->st);
}

static bnl_status need_running_stats(const bnl_resnet *m, const char *what) {
    int k = m->info.norm;
    if (k == BNL_NORM_NONE || k == BNL_NORM_GROUP)
        return bnl_fail(BNL_ERR_ARG, "%s: the model's normalization (%s) has no running statistics", what,
                        k == BNL_NORM_NONE ? "none" : "group");
    return BNL_OK;
}
bnl_status bnl_resnet_need_running_stats(const bnl_resnet *m, const char *what) { return need_running_stats(m, what); }

bnl_status bnl_resnet_set_running_stats(bnl_resnet *m, int i, const float *mean, const float *var, int channels) {
    if (!m || !mean || !var) return bnl_fail(BNL_ERR_ARG, "set_running_stats: NULL argument");
    bnl_status s = need_running_stats(m, "set_running_stats");
    if (s != BNL_OK) return s;
    if (i < 0 || i >= m->L->nbn)
        return bnl_fail(BNL_ERR_ARG, "set_running_stats: no BatchNorm layer #%d (the model has %d)", i, m->L->nbn);
    const bnl_lbn *x = &m->L->bns[i];
    if (channels != x->C)
        return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s has %d channels, not %d", x->name, x->C, channels);
    for (int c = 0; c < x->C; c++) {
        if (!isfinite(mean[c]))
            return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s mean[%d] is not finite", x->name, c);
        if (!isfinite(var[c]) || !(var[c] >= 0.0f))
            return bnl_fail(BNL_ERR_ARG, "set_running_stats: %s variance[%d] = %g is not a finite value >= 0", x->name,
                            c, (double)var[c]);
    }
    memcpy(m->st->stats + x->rm, mean, (size_t)x->C * sizeof(float));
    memcpy(m->st->stats + x->rv, var, (size_t)x->C * sizeof(float));
    bnl_state_changed(m->st);   // the eval caches fold the running statistics into the conv weights
    return BNL_OK;
}
