// The ResNet's three parts (src/model/resnet_internal.h): one layout walk for a spec and for a
// state dict's names (they agree, and a created model is bit-identical to the pre-split
// implementation's), a second context over one state (bnl_resnet_clone_context), the writable
// views marking the state changed, and the ISA as part of a context.
#include "io/safetensors.h"
#include "io/statedict.h"
#include "model/resnet.h"
#include "util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// First three values of some tensors of bnl_resnet_create(spec_named(depth, 0.125, 4), seed 5), as
// the implementation before the split (one file walk, a float count and an emission walk) made
// them: bnlab train --arch resnetD --width-mult 0.125 --classes 4 --seed 5 --lr 0 (lr 0: the
// saved weights are the initial ones), read back with Python.
typedef struct { int depth; const char *name; uint32_t bits[3]; } pin_t;
static const pin_t g_pins[] = {
    {18, "conv1.weight", {0x3d1a6ed1, 0xbc936553, 0xbd23c16a}},
    {18, "layer2.0.downsample.0.weight", {0xbe141088, 0x3e8742c4, 0x3eba4250}},
    {18, "layer4.1.conv2.weight", {0xbcda14fd, 0x3cf86b8e, 0x3c8633fc}},
    {18, "fc.weight", {0xbda7b063, 0x3d1a973c, 0xbdfb6033}},
    {18, "fc.bias", {0x3c85227a, 0x3c99d76e, 0xbb99aa7b}},
    {50, "conv1.weight", {0x3d1a6ed1, 0xbc936553, 0xbd23c16a}},
    {50, "layer2.0.downsample.0.weight", {0x3eb55f18, 0xbdabc530, 0xbe958968}},
    {50, "layer4.1.conv2.weight", {0xbcb3f979, 0x3cf8ce39, 0x3d477e7d}},
    {50, "fc.weight", {0x3c118c3a, 0x3d3a2f65, 0x3bfb0bc9}},
    {50, "fc.bias", {0xbcc64a6b, 0xbc8d6038, 0x3d4b32e8}},
};

enum { N = 4, H = 32, W = 32 };
static float g_x[N * H * W * 3];
static const int64_t g_labels[N] = {0, 1, 2, 3};

static bnl_resnet *make(int depth) {
    bnl_resnet_spec sp;
    bnl_resnet *m = NULL;
    CHECK(bnl_resnet_spec_named(&sp, depth, 0.125f, 4) == BNL_OK, "spec: %s", bnl_last_error());
    CHECK(bnl_resnet_create(&m, &sp, 5) == BNL_OK, "create: %s", bnl_last_error());
    return m;
}

static int bitwise(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

// A created model against the pins, and spec walk against name walk: save, load, same everything.
static void test_layout(int depth) {
    bnl_resnet *m = make(depth), *back = NULL;
    if (!m) return;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(bnl_resnet_save(m, &buf, &len) == BNL_OK, "save: %s", bnl_last_error());
    bnl_st_file f;
    CHECK(bnl_st_parse(&f, buf, len) == BNL_OK, "parse: %s", bnl_last_error());
    for (size_t i = 0; i < sizeof g_pins / sizeof g_pins[0]; i++) {
        if (g_pins[i].depth != depth) continue;
        const bnl_st_tensor *t = bnl_st_find(&f, g_pins[i].name);
        CHECK(t && t->dtype == BNL_DT_F32 && t->nelem >= 3, "resnet%d: no F32 tensor %s", depth, g_pins[i].name);
        if (!t) continue;
        uint32_t got[3];
        memcpy(got, t->data, sizeof got);
        for (int k = 0; k < 3; k++)
            CHECK(got[k] == g_pins[i].bits[k], "resnet%d %s[%d]: 0x%08x, the pre-split create made 0x%08x", depth,
                  g_pins[i].name, k, got[k], g_pins[i].bits[k]);
    }
    bnl_st_free(&f);
    CHECK(bnl_resnet_load(&back, buf, len) == BNL_OK, "load: %s", bnl_last_error());
    if (back) {
        const bnl_resnet_info *a = bnl_resnet_get_info(m), *b = bnl_resnet_get_info(back);
        CHECK(!memcmp(a, b, sizeof *a), "resnet%d: the info from the spec and from the names differ", depth);
        CHECK(bnl_resnet_bn_count(m) == bnl_resnet_bn_count(back), "BN counts differ");
        for (int i = 0; i < bnl_resnet_bn_count(m); i++)
            CHECK(!strcmp(bnl_resnet_bn_name(m, i), bnl_resnet_bn_name(back, i)), "BN %d: %s vs %s", i,
                  bnl_resnet_bn_name(m, i), bnl_resnet_bn_name(back, i));
        size_t np, ns;
        const float *p = bnl_resnet_params(m, &np), *s = bnl_resnet_stats(m, &ns);
        // every offset agrees: the flat buffers are the same bits
        CHECK(bitwise(p, bnl_resnet_params(back, NULL), np), "resnet%d: parameters differ after save/load", depth);
        CHECK(bitwise(s, bnl_resnet_stats(back, NULL), ns), "resnet%d: running statistics differ", depth);
        bnl_resnet_free(back);
    }
    free(buf);
    bnl_resnet_free(m);
}

// Every BN layer's running statistics and num_batches_tracked, copied.
static float *snapshot(const bnl_resnet *m, int64_t *tracked) {
    size_t ns;
    const float *s = bnl_resnet_stats(m, &ns);
    float *c = malloc(ns * sizeof(float));
    memcpy(c, s, ns * sizeof(float));
    for (int i = 0; i < bnl_resnet_bn_count(m); i++) {
        bnl_bn_view v;
        bnl_resnet_bn_stats(m, &v, i);
        tracked[i] = v.num_batches_tracked;
    }
    return c;
}

static void test_clone(int depth) {
    bnl_resnet *m = make(depth), *fresh = make(depth), *c = NULL;
    if (!m || !fresh) return;
    const int K = 4, nbn = bnl_resnet_bn_count(m);
    size_t np, ns;
    bnl_resnet_params(m, &np), bnl_resnet_stats(m, &ns);
    CHECK(bnl_resnet_clone_context(&c, m) == BNL_OK, "clone: %s", bnl_last_error());
    if (!c) return;
    CHECK(bnl_resnet_params(c, NULL) == bnl_resnet_params(m, NULL), "the clone's parameters are not the same memory");
    CHECK(bnl_resnet_stats(c, NULL) == bnl_resnet_stats(m, NULL), "the clone's statistics are not the same memory");
    CHECK(!bnl_resnet_training(c) && !bnl_resnet_update_running(c), "a clone starts in eval mode, update_running 0");
    int64_t *tr0 = malloc((size_t)nbn * sizeof(int64_t)), *tr1 = malloc((size_t)nbn * sizeof(int64_t));
    float *s0 = snapshot(m, tr0);
    float lc[N * 4], lf[N * 4], lm[N * 4];
    bnl_resnet_set_training(c, 1), bnl_resnet_set_training(fresh, 1);
    for (int r = 0; r < 3; r++) CHECK(bnl_resnet_forward(c, lc, g_x, N, H, W) == BNL_OK, "clone train: %s", bnl_last_error());
    CHECK(bnl_resnet_forward(fresh, lf, g_x, N, H, W) == BNL_OK, "fresh train: %s", bnl_last_error());
    float *s1 = snapshot(m, tr1);
    CHECK(bitwise(s0, s1, ns), "resnet%d: train forwards on the clone moved the shared running statistics", depth);
    CHECK(!memcmp(tr0, tr1, (size_t)nbn * sizeof(int64_t)), "train forwards on the clone moved num_batches_tracked");
    CHECK(bitwise(lc, lf, (size_t)N * K), "clone train logits differ from a fresh model's");
    for (int i = 0; i < nbn; i++) {
        bnl_bn_view a, b;
        bnl_resnet_bn_stats(c, &a, i), bnl_resnet_bn_stats(fresh, &b, i);
        CHECK(a.has_batch && bitwise(a.batch_mean, b.batch_mean, (size_t)a.channels) &&
              bitwise(a.batch_var, b.batch_var, (size_t)a.channels), "layer %d: clone batch statistics differ", i);
    }
    // the same context with update_running 1 does move them (the flag is what keeps them)
    CHECK(bnl_resnet_set_update_running(c, 1) == BNL_OK, "set_update_running");
    bnl_resnet_forward(c, lc, g_x, N, H, W);
    free(s1), s1 = snapshot(m, tr1);
    CHECK(!bitwise(s0, s1, ns) && tr1[0] == tr0[0] + 1, "update_running 1: the running statistics did not move");
    bnl_resnet_set_update_running(c, 0), bnl_resnet_set_training(c, 0);
    // a step through m is seen by the clone's eval forward (its packed weights are rebuilt)
    float le0[N * 4];
    bnl_resnet_forward(c, le0, g_x, N, H, W);
    bnl_sgd sgd = bnl_sgd_default();
    float loss;
    CHECK(bnl_resnet_step(m, &loss, g_x, N, H, W, g_labels, &sgd) == BNL_OK, "step: %s", bnl_last_error());
    bnl_resnet_set_training(m, 0);
    bnl_resnet_forward(m, lm, g_x, N, H, W), bnl_resnet_forward(c, lc, g_x, N, H, W);
    CHECK(bitwise(lm, lc, (size_t)N * K) && !bitwise(lc, le0, (size_t)N * K), "after a step on m the clone's eval "
          "logits are not m's (or did not change)");
    // a write through a *_mut view is seen too, without params_changed: the last class's fc weights
    // (packed in the eval cache) set to zero leave its logit = its bias
    const int F = bnl_resnet_get_info(m)->num_features;
    float *pm = bnl_resnet_params_mut(m, NULL);
    memset(pm + np - (size_t)K - (size_t)F, 0, (size_t)F * sizeof(float));   // fc.weight row K-1 (fc.bias follows)
    bnl_resnet_forward(c, lc, g_x, N, H, W);
    CHECK(lc[K - 1] == pm[np - 1] && lc[2 * K - 1] == pm[np - 1], "a write through params_mut is not seen: logit %g, "
          "bias %g", (double)lc[K - 1], (double)pm[np - 1]);
    // the state outlives the first handle
    bnl_resnet_free(m);
    CHECK(bnl_resnet_forward(c, lm, g_x, N, H, W) == BNL_OK && bitwise(lm, lc, (size_t)N * K),
          "the clone after its source was freed");
    free(s0), free(s1), free(tr0), free(tr1);
    bnl_resnet_free(c), bnl_resnet_free(fresh);
}

// The ISA is the context's: forcing another process-wide ISA later does not change what a
// context's packed weights are for; set_isa does, and both give the same logits within rounding.
static void test_isa(void) {
    bnl_resnet *m = make(18), *c = NULL;
    if (!m) return;
    bnl_isa best = bnl_resnet_isa(m);
    CHECK(best == bnl_isa_active(), "a new context takes the active ISA");
    bnl_resnet_clone_context(&c, m);
    CHECK(c && bnl_resnet_set_isa(c, BNL_ISA_SCALAR) == BNL_OK, "set_isa scalar: %s", bnl_last_error());
    CHECK(bnl_resnet_set_isa(c, BNL_ISA_COUNT) != BNL_OK, "set_isa accepted an unknown ISA");
    bnl_isa_force(BNL_ISA_SCALAR);
    CHECK(bnl_resnet_isa(m) == best, "bnl_isa_force changed a context's ISA");
    bnl_isa_reset();
    float a[N * 4], b[N * 4];
    bnl_resnet_forward(m, a, g_x, N, H, W), bnl_resnet_forward(c, b, g_x, N, H, W);
    check_close("eval logits, best ISA vs scalar context", b, a, N * 4, 1e-4, 1e-4);
    bnl_resnet_free(c), bnl_resnet_free(m);
}

int main(void) {
    for (size_t i = 0; i < sizeof g_x / sizeof g_x[0]; i++) g_x[i] = (float)((i * 7919) % 400) / 100.0f - 2.0f;
    test_layout(18), test_layout(50);
    test_clone(18), test_clone(50);
    test_isa();
    return test_summary("test_context");
}
