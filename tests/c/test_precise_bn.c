// PreciseBN and the running-statistics setter. Batches of 3, 5 and 4 images (means shifted apart so
// the between-batch term matters): the first layer's new statistics must equal those of one
// train-mode forward over the concatenated 12 images (its input does not depend on normalization),
// and every layer's must equal a direct double computation from the per-batch statistics (weighted
// mean of the batch means; weighted mean of (within-batch variance + squared deviation of the batch
// mean)). The model's running statistics, num_batches_tracked, parameters and mode do not move
// during add. Bad calls: one error, nothing changes.
#include "bnlab.h"
#include "core/rng.h"
#include "model/resnet.h"
#include "util.h"

enum { H = 20, W = 20, NB = 3, NT = 12, K = 5 };
static const int g_n[NB] = {3, 5, 4};
static float g_x[NT * H * W * 3];

int main(void) {
    bnl_rng rng = bnl_rng_seed(11);
    size_t img = (size_t)H * W * 3;
    for (int b = 0, i0 = 0; b < NB; i0 += g_n[b], b++)
        for (size_t i = (size_t)i0 * img; i < (size_t)(i0 + g_n[b]) * img; i++)
            g_x[i] = (float)(bnl_rng_normal(&rng) + 0.7 * b);
    bnl_resnet_spec sp;
    CHECK(bnl_resnet_spec_named(&sp, 18, 0.125f, K) == BNL_OK, "spec: %s", bnl_last_error());
    bnl_resnet *m, *ref;
    CHECK(bnl_resnet_create(&m, &sp, 5) == BNL_OK && bnl_resnet_create(&ref, &sp, 5) == BNL_OK, "create");
    int nbn = bnl_resnet_bn_count(m);
    // give the model running statistics of its own (not 0/1) to see that add does not move them
    size_t ns, np;
    float *st = bnl_resnet_stats_mut(m, &ns);
    for (size_t i = 0; i < ns; i++) st[i] = 0.5f + 0.001f * (float)(i % 97);
    float *stats0 = malloc(ns * sizeof(float)), *params = bnl_resnet_params_mut(m, &np);
    float *params0 = malloc(np * sizeof(float));
    memcpy(stats0, st, ns * sizeof(float)), memcpy(params0, params, np * sizeof(float));

    // direct reference in double from each batch's own statistics (the ref model, train mode)
    size_t total = 0;
    for (int i = 0; i < nbn; i++) {
        bnl_bn_view v;
        bnl_resnet_bn_stats(ref, &v, i);
        total += (size_t)v.channels;
    }
    double *bmean = calloc(total * NB, sizeof(double)), *bvar = calloc(total * NB, sizeof(double));
    bnl_resnet_set_training(ref, 1);
    for (int b = 0, i0 = 0; b < NB; i0 += g_n[b], b++) {
        CHECK(bnl_resnet_forward_to(ref, g_x + (size_t)i0 * img, g_n[b], H, W, nbn - 1) == BNL_OK, "ref fwd");
        size_t off = 0;
        for (int i = 0; i < nbn; i++) {
            bnl_bn_view v;
            bnl_resnet_bn_stats(ref, &v, i);
            for (int c = 0; c < v.channels; c++)
                bmean[(size_t)b * total + off + c] = v.batch_mean[c], bvar[(size_t)b * total + off + c] = v.batch_var[c];
            off += (size_t)v.channels;
        }
    }
    float *want_m = malloc(total * sizeof(float)), *want_v = malloc(total * sizeof(float));
    for (size_t c = 0; c < total; c++) {
        double mu = 0, v = 0;
        for (int b = 0; b < NB; b++) mu += g_n[b] * bmean[(size_t)b * total + c] / NT;
        for (int b = 0; b < NB; b++) {
            double d = bmean[(size_t)b * total + c] - mu;
            v += g_n[b] * (bvar[(size_t)b * total + c] + d * d) / NT;
        }
        want_m[c] = (float)mu, want_v[c] = (float)v;
    }
    // layer 0 over the concatenated batch
    CHECK(bnl_resnet_forward_to(ref, g_x, NT, H, W, 0) == BNL_OK, "ref concat");
    bnl_bn_view v0;
    bnl_resnet_bn_stats(ref, &v0, 0);

    // PreciseBN
    bnl_precise_bn *p;
    CHECK(bnl_precise_bn_begin(&p, m) == BNL_OK, "begin: %s", bnl_last_error());
    CHECK(bnl_precise_bn_end(p, m) == BNL_ERR_ARG, "end with no batches must fail");
    for (int b = 0, i0 = 0; b < NB; i0 += g_n[b], b++)
        CHECK(bnl_precise_bn_add(p, m, g_x + (size_t)i0 * img, g_n[b], H, W) == BNL_OK, "add: %s", bnl_last_error());
    CHECK(bnl_precise_bn_add(p, m, g_x, 2, H - 4, W) == BNL_ERR_SHAPE, "another image size must fail");
    st = bnl_resnet_stats_mut(m, NULL);
    CHECK(memcmp(st, stats0, ns * sizeof(float)) == 0, "add moved the running statistics");
    CHECK(memcmp(params, params0, np * sizeof(float)) == 0, "add moved the parameters");
    CHECK(!bnl_resnet_training(m), "add left the model in train mode");
    bnl_bn_view t;
    bnl_resnet_bn_stats(m, &t, 3);
    CHECK(t.num_batches_tracked == 0, "num_batches_tracked moved: %lld", (long long)t.num_batches_tracked);
    CHECK(bnl_precise_bn_end(p, m) == BNL_OK, "end: %s", bnl_last_error());
    bnl_precise_bn_free(p);

    float *got_m = malloc(total * sizeof(float)), *got_v = malloc(total * sizeof(float));
    for (int i = 0, off = 0; i < nbn; i++) {
        bnl_bn_view v;
        bnl_resnet_bn_stats(m, &v, i);
        memcpy(got_m + off, v.running_mean, (size_t)v.channels * sizeof(float));
        memcpy(got_v + off, v.running_var, (size_t)v.channels * sizeof(float));
        if (i == 0) {
            check_close("layer 0 mean vs concatenated batch", v.running_mean, v0.batch_mean, (size_t)v.channels, 1e-5,
                        1e-4);
            check_close("layer 0 var vs concatenated batch", v.running_var, v0.batch_var, (size_t)v.channels, 1e-5,
                        1e-4);
        }
        off += v.channels;
    }
    check_close("mean, every layer", got_m, want_m, total, 1e-6, 1e-5);
    check_close("var, every layer", got_v, want_v, total, 1e-6, 1e-5);
    // the eval forward sees the new statistics (the packed cache was invalidated)
    float lg[NT * K], lg2[NT * K];
    bnl_resnet_set_training(m, 0), bnl_resnet_set_training(ref, 0);
    bnl_resnet_forward(m, lg, g_x, NT, H, W);
    {
        float *rs = bnl_resnet_stats_mut(ref, NULL);
        memcpy(rs, bnl_resnet_stats(m, NULL), ns * sizeof(float));
        bnl_resnet_params_changed(ref);
    }
    bnl_resnet_forward(ref, lg2, g_x, NT, H, W);
    check_close("eval logits with the new statistics", lg, lg2, NT * K, 1e-5, 1e-4);

    // setter: bad calls change nothing; a good one is read back and reaches the eval forward
    bnl_bn_view v;
    bnl_resnet_bn_stats(m, &v, 2);
    int C = v.channels;
    float *mu = malloc(C * sizeof(float)), *va = malloc(C * sizeof(float));
    for (int c = 0; c < C; c++) mu[c] = 0.1f * c, va[c] = 1.0f + c;
    memcpy(stats0, bnl_resnet_stats(m, NULL), ns * sizeof(float));
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C + 1) == BNL_ERR_ARG, "wrong channel count");
    CHECK(strstr(bnl_last_error(), "channels") != NULL, "message: %s", bnl_last_error());
    CHECK(bnl_resnet_set_running_stats(m, nbn, mu, va, C) == BNL_ERR_ARG, "layer out of range");
    va[1] = -1.0f;
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C) == BNL_ERR_ARG, "negative variance");
    va[1] = 2.0f, mu[3] = NAN;
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C) == BNL_ERR_ARG, "NaN mean");
    va[2] = INFINITY, mu[3] = 0;
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C) == BNL_ERR_ARG, "infinite variance");
    CHECK(memcmp(bnl_resnet_stats(m, NULL), stats0, ns * sizeof(float)) == 0, "a refused call changed the statistics");
    va[2] = 3.0f;
    bnl_resnet_forward(m, lg, g_x, NT, H, W);   // builds the eval cache
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C) == BNL_OK, "set: %s", bnl_last_error());
    bnl_resnet_bn_stats(m, &v, 2);
    CHECK(memcmp(v.running_mean, mu, C * sizeof(float)) == 0 && memcmp(v.running_var, va, C * sizeof(float)) == 0,
          "read back");
    bnl_resnet_forward(m, lg2, g_x, NT, H, W);
    CHECK(memcmp(lg, lg2, sizeof lg) != 0, "the eval forward did not see the new statistics (stale cache)");

    // norm kinds without running statistics
    bnl_resnet_set_norm(m, BNL_NORM_NONE);
    CHECK(bnl_resnet_set_running_stats(m, 2, mu, va, C) == BNL_ERR_ARG, "norm none: set must fail");
    CHECK(bnl_precise_bn_begin(&p, m) == BNL_ERR_ARG && strstr(bnl_last_error(), "no running statistics"),
          "norm none: begin must fail: %s", bnl_last_error());
    bnl_norm_spec gs = bnl_resnet_norm_spec(m);
    gs.kind = BNL_NORM_GROUP, gs.groups = 2;
    CHECK(bnl_resnet_set_norm_spec(m, &gs) == BNL_OK, "group: %s", bnl_last_error());
    CHECK(bnl_precise_bn_begin(&p, m) == BNL_ERR_ARG && strstr(bnl_last_error(), "group"), "norm group: begin must fail");
    bnl_resnet_free(m), bnl_resnet_free(ref);
    free(stats0), free(params0), free(bmean), free(bvar), free(want_m), free(want_v), free(got_m), free(got_v);
    free(mu), free(va);
    return test_summary("test_precise_bn");
}
