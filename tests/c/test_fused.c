// The residual block's fused output pass (bnl_bn_add_relu_forward: BatchNorm apply + the shortcut's
// apply or identity + add + ReLU in one pass) against the three passes it replaces, bit for bit:
// 1. the op on every ISA this CPU and build can run: channel counts below, at and above the vector
//    widths, row tails, identity and downsample shortcuts, ReLU on either side, use_scale/use_bias
//    off, outputs aliasing an input, the streaming-store size, NaN, infinities and -0 (natively the
//    ReLU's `v < 0 ? 0 : v` keeps -0, apply's own ReLU does not; in wasm both give +0);
// 2. bnl_batchnorm_forward_train_defer + a later apply against bnl_batchnorm_forward_train;
// 3. whole models, fused (default) against unfused (the context's test switch `unfused`): train-mode
//    logits, every layer's batch and running statistics, forward_to at every layer, bn_input,
//    a training step's loss, logits, gradients and updated weights, for bottleneck and basic
//    blocks at odd widths, plain, synchronized (a two-replica gather in one process) and the other
//    norm kinds, on every ISA. Also compiled to wasm (tests/c/wasm_fused.sh: the wasmsimd kernels).
#include "bnlab.h"
#include "core/rng.h"
#include "model/resnet_internal.h"
#include "ops/ops.h"
#include "util.h"

#include <stdint.h>

static char g_ctx[256];

static void fill(float *p, size_t n, bnl_rng *r, double scale, double shift) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(bnl_rng_normal(r) * scale + shift);
}

// Bitwise, printing the first difference. Two NaNs count as equal whatever their bits: wasm leaves
// a NaN result's sign and payload to the engine (its "NaN nondeterminism").
static int same_bits(const char *what, const void *got, const void *want, size_t n) {
    const uint32_t *g = got, *w = want;
    for (size_t i = 0; i < n; i++)
        if (g[i] != w[i]) {
            float gf, wf;
            memcpy(&gf, &g[i], 4), memcpy(&wf, &w[i], 4);
            if (isnan(gf) && isnan(wf)) continue;
            CHECK(0, "%s %s: [%zu] got %.9g (0x%08x), want %.9g (0x%08x)", g_ctx, what, i, (double)gf, g[i],
                  (double)wf, w[i]);
            return 0;
        }
    g_checks++;
    return 1;
}

// ---------------------------------------------------------------------------------------------
// 1. The op

typedef struct {
    float *x, *mean, *invstd, *gamma, *beta;
    bnl_bn_config cfg;
} side_buf;

static void side_make(side_buf *s, size_t M, size_t C, bnl_rng *r, int relu) {
    s->x = falloc(M * C), s->mean = falloc(C), s->invstd = falloc(C), s->gamma = falloc(C), s->beta = falloc(C);
    fill(s->x, M * C, r, 2.0, 0.3);
    fill(s->mean, C, r, 0.5, 0.2);
    for (size_t c = 0; c < C; c++) s->invstd[c] = (float)(0.2 + 2.0 * bnl_rng_uniform(r));
    fill(s->gamma, C, r, 1.0, 0.0);   // negative gammas too
    fill(s->beta, C, r, 0.5, 0.0);
    s->cfg = bnl_bn_config_default();
    s->cfg.relu = relu;
    // channel 0 of row 0 gives exactly -0: x = mean, gamma < 0, beta = -0 ((+0)*(-s) + -0)
    s->x[0] = s->mean[0], s->gamma[0] = -fabsf(s->gamma[0]) - 0.5f, s->beta[0] = -0.0f;
}

static void side_free(side_buf *s) { free(s->x), free(s->mean), free(s->invstd), free(s->gamma), free(s->beta); }

static bnl_bn_side side_of(const side_buf *s, const float *x) {
    bnl_bn_side v = {x, s->mean, s->invstd, s->gamma, s->beta, &s->cfg};
    return v;
}

// down: the shortcut is a BatchNorm (else identity); alias: 0 none, 1 y = a's input, 2 y = the shortcut's.
static void one_case(size_t M, size_t C, int down, int relu_a, int relu_s, int alias, int scale_bias, uint64_t seed) {
    snprintf(g_ctx, sizeof g_ctx, "[%s M=%zu C=%zu %s relu=%d,%d alias=%d scale_bias=%d]",
             bnl_isa_name(bnl_isa_active()), M, C, down ? "downsample" : "identity", relu_a, relu_s, alias, scale_bias);
    bnl_rng r = bnl_rng_seed(seed);
    const size_t n = M * C;
    side_buf a, s;
    side_make(&a, M, C, &r, relu_a), side_make(&s, M, C, &r, relu_s);
    a.cfg.use_scale = a.cfg.use_bias = scale_bias;
    s.cfg.use_bias = scale_bias;
    if (!down) s.x[0] = -0.0f;   // identity: -0 + -0 at [0]
    if (n > 40) {                // non-finite values, main path and shortcut
        a.x[7] = NAN, a.x[n - 2] = INFINITY, s.x[11] = -INFINITY, s.x[n - 3] = NAN;
    }
    // reference: apply, apply, add + ReLU
    float *ta = falloc(n), *ts = falloc(n), *want = falloc(n), *y = falloc(n);
    bnl_status st = bnl_batchnorm_apply(ta, a.x, a.mean, a.invstd, a.gamma, a.beta, M, C, &a.cfg);
    if (down && st == BNL_OK) st = bnl_batchnorm_apply(ts, s.x, s.mean, s.invstd, s.gamma, s.beta, M, C, &s.cfg);
    CHECK(st == BNL_OK, "%s reference: %s", g_ctx, bnl_last_error());
    bnl_add_relu_forward(want, ta, down ? ts : s.x, n);
    // fused
    const float *ax = a.x, *sx = s.x;
    if (alias == 1) memcpy(y, a.x, n * sizeof(float)), ax = y;
    if (alias == 2) memcpy(y, s.x, n * sizeof(float)), sx = y;
    bnl_bn_side sa = side_of(&a, ax), ss = side_of(&s, sx);
    if (!down) ss.mean = NULL;
    st = bnl_bn_add_relu_forward(y, &sa, &ss, M, C);
    CHECK(st == BNL_OK, "%s fused: %s", g_ctx, bnl_last_error());
    same_bits("fused output", y, want, n);
    if (n > 40 && !alias && !relu_a && !relu_s && scale_bias) {   // the special values are in the output
        uint32_t b0;
        memcpy(&b0, &want[0], 4);
#ifdef __wasm__   // clang 14 builds act.c's ReLU as f32.max: -0 -> +0 (see batchnorm__wasmsimd.c)
        CHECK(b0 == 0, "%s: [0] should be +0 (0x%08x)", g_ctx, b0);
#else
        CHECK(b0 == 0x80000000u, "%s: [0] should be -0 (0x%08x)", g_ctx, b0);
#endif
        CHECK(isnan(want[7]) && isnan(want[n - 3]), "%s: NaN should survive the ReLU", g_ctx);
    }
    free(ta), free(ts), free(want), free(y);
    side_free(&a), side_free(&s);
}

static void test_op(void) {
    // C: below, at, above and multiples of 4/8/16 lanes; M: 1, tails, and more than one thread's rows
    static const size_t Cs[] = {1, 3, 4, 5, 8, 13, 16, 17, 24, 31, 32, 33, 64, 100};
    static const size_t Ms[] = {1, 7, 64, 129};
    uint64_t seed = 1;
    for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
        for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
            for (int down = 0; down < 2; down++) one_case(Ms[mi], Cs[ci], down, 0, 0, 0, 1, seed++);
    for (int down = 0; down < 2; down++)
        for (int alias = 0; alias < 3; alias++) {
            one_case(50, 37, down, 1, 1, alias, 1, seed++);
            one_case(33, 48, down, 0, 1, alias, 0, seed++);
        }
    // large enough for non-temporal stores (8 MB out, C a multiple of the width), on two threads
    int t0 = bnl_get_threads();
    bnl_set_threads(2);
    one_case(33000, 64, 1, 0, 0, 0, 1, seed++);
    one_case(33000, 64, 0, 0, 0, 0, 1, seed++);
    one_case(33000, 64, 1, 0, 0, 1, 1, seed++);
    bnl_set_threads(t0);
    // bad arguments: one error each, nothing crashes
    bnl_bn_config cfg = bnl_bn_config_default();
    float v[4] = {0}, one[2] = {1, 1};
    bnl_bn_side a = {v, v, one, one, one, &cfg}, s = {v, NULL, NULL, NULL, NULL, NULL}, none = {0};
    CHECK(bnl_bn_add_relu_forward(NULL, &a, &s, 2, 2) == BNL_ERR_ARG, "NULL y accepted");
    CHECK(bnl_bn_add_relu_forward(v, &s, &a, 2, 2) == BNL_ERR_ARG, "a first side without statistics accepted");
    CHECK(bnl_bn_add_relu_forward(v, &a, &none, 2, 2) == BNL_ERR_ARG, "a NULL shortcut accepted");
    CHECK(bnl_bn_add_relu_forward(v, &a, &s, 0, 2) == BNL_ERR_ARG, "M = 0 accepted");
    a.invstd = NULL;
    CHECK(bnl_bn_add_relu_forward(v, &a, &s, 2, 2) == BNL_ERR_ARG, "NULL invstd accepted");
}

// ---------------------------------------------------------------------------------------------
// 2. Train forward with the apply deferred

static void test_defer(void) {
    static const size_t sizes[][2] = {{2, 1}, {9, 5}, {100, 16}, {37, 33}, {1000, 24}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t M = sizes[k][0], C = sizes[k][1], n = M * C;
        snprintf(g_ctx, sizeof g_ctx, "[%s defer M=%zu C=%zu]", bnl_isa_name(bnl_isa_active()), M, C);
        bnl_rng r = bnl_rng_seed(100 + k);
        float *x = falloc(n), *g = falloc(C), *b = falloc(C), *y0 = falloc(n), *y1 = falloc(n);
        float *st0 = falloc(5 * C), *st1 = falloc(5 * C);   // mean, invstd, var, running mean, running var
        fill(x, n, &r, 3.0, 1.0), fill(g, C, &r, 1.0, 0.0), fill(b, C, &r, 1.0, 0.0);
        fill(st0 + 3 * C, 2 * C, &r, 0.1, 1.0);
        memcpy(st1, st0, 5 * C * sizeof(float));
        int64_t tr0 = 3, tr1 = 3;
        int applied = -1;
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.unbiased = 1;
        bnl_status s0 = bnl_batchnorm_forward_train(y0, st0, st0 + C, st0 + 2 * C, st0 + 3 * C, st0 + 4 * C, &tr0, x,
                                                    g, b, M, C, &cfg);
        bnl_status s1 = bnl_batchnorm_forward_train_defer(y1, &applied, st1, st1 + C, st1 + 2 * C, st1 + 3 * C,
                                                          st1 + 4 * C, &tr1, x, g, b, M, C, &cfg);
        CHECK(s0 == BNL_OK && s1 == BNL_OK, "%s: %s", g_ctx, bnl_last_error());
        CHECK(applied == (bnl_isa_active() == BNL_ISA_SCALAR), "%s: applied = %d", g_ctx, applied);
        same_bits("statistics and running statistics", st1, st0, 5 * C);
        CHECK(tr0 == tr1, "%s: num_batches_tracked %lld vs %lld", g_ctx, (long long)tr1, (long long)tr0);
        if (!applied) CHECK(bnl_batchnorm_apply(y1, x, st1, st1 + C, g, b, M, C, &cfg) == BNL_OK, "apply");
        same_bits("y", y1, y0, n);
        free(x), free(g), free(b), free(y0), free(y1), free(st0), free(st1);
    }
    CHECK(bnl_batchnorm_forward_train_defer(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 1,
                                            NULL) == BNL_ERR_ARG, "NULL arguments accepted");
}

// ---------------------------------------------------------------------------------------------
// 3. Whole models: fused against unfused

enum { NB = 3, HH = 29, WW = 27, K = 5 };

// One in-process "replica" pair: the gather returns this replica's values twice (a global batch
// of two equal halves), enough to run the synchronized path's merge and its deferred apply.
static bnl_status gather_twice(void *ctx, const double *mine, double *all, size_t n) {
    memcpy(all, mine, n * sizeof(double)), memcpy(all + n, mine, n * sizeof(double));
    return BNL_OK;
}

static bnl_resnet *make(const bnl_resnet_spec *sp, const char *norm, int sync, int unfused) {
    bnl_resnet *m = NULL;
    CHECK(bnl_resnet_create(&m, sp, 7) == BNL_OK, "create: %s", bnl_last_error());
    if (!m) return NULL;
    bnl_norm_spec ns;
    CHECK(bnl_norm_parse(&ns, norm) == BNL_OK && bnl_resnet_set_norm_spec(m, &ns) == BNL_OK, "norm %s: %s", norm,
          bnl_last_error());
    if (sync) bnl_resnet_set_sync_bn(m, gather_twice, NULL, 2);
    m->unfused = unfused;
    bnl_resnet_set_training(m, 1);
    return m;
}

static void same_model_state(const char *what, bnl_resnet *a, bnl_resnet *b) {
    char w[160];
    size_t np, ns;
    const float *pa = bnl_resnet_params(a, &np), *pb = bnl_resnet_params(b, NULL);
    snprintf(w, sizeof w, "%s: parameters", what), same_bits(w, pa, pb, np);
    const float *sa = bnl_resnet_stats(a, &ns), *sb = bnl_resnet_stats(b, NULL);
    snprintf(w, sizeof w, "%s: running statistics", what), same_bits(w, sa, sb, ns);
    CHECK(!memcmp(a->st->tracked, b->st->tracked, (size_t)a->L->nbn * sizeof(int64_t)), "%s %s: num_batches_tracked",
          g_ctx, what);
    snprintf(w, sizeof w, "%s: batch statistics", what), same_bits(w, a->batch, b->batch, a->L->nb);
}

static void test_model(const char *name, const bnl_resnet_spec *sp, const char *norm, int sync) {
    snprintf(g_ctx, sizeof g_ctx, "[%s %s norm=%s%s]", bnl_isa_name(bnl_isa_active()), name, norm, sync ? " sync" : "");
    bnl_resnet *u = make(sp, norm, sync, 1), *f = make(sp, norm, sync, 0);
    if (!u || !f) return;
    static float x[NB * HH * WW * 3];
    bnl_rng r = bnl_rng_seed(11);
    fill(x, sizeof x / sizeof x[0], &r, 1.0, -0.2);
    const int64_t labels[NB] = {0, 4, 2};
    float lu[NB * K], lf[NB * K], loss_u = 0, loss_f = 1;
    const int plain = !strcmp(norm, "batch");
    // train-mode forward (the lean plan), twice (running statistics move twice)
    for (int t = 0; t < 2; t++) {
        CHECK(bnl_resnet_forward(u, lu, x, NB, HH, WW) == BNL_OK && bnl_resnet_forward(f, lf, x, NB, HH, WW) == BNL_OK,
              "%s forward: %s", g_ctx, bnl_last_error());
        same_bits("train-mode logits", lf, lu, NB * K);
        same_model_state("train-mode forward", f, u);
    }
    if (plain) {
        // a view stops right after every layer (the fused pass's inputs included) or right before it
        for (int i = 0; i < u->L->nbn; i++) {
            CHECK(bnl_resnet_forward_to(u, x, NB, HH, WW, i) == BNL_OK && bnl_resnet_forward_to(f, x, NB, HH, WW, i) ==
                  BNL_OK, "%s forward_to %d: %s", g_ctx, i, bnl_last_error());
            char w[64];
            snprintf(w, sizeof w, "forward_to %d", i);
            same_model_state(w, f, u);
        }
        for (int i = 1; i < u->L->nbn; i += 3) {
            const size_t cap = (size_t)NB * HH * WW;
            float *bu = falloc(cap), *bf = falloc(cap), gu[3], gf[3];
            size_t nu = 0, nf = 1;
            CHECK(bnl_resnet_bn_input(u, bu, cap, &nu, gu, x, NB, HH, WW, i, 1) == BNL_OK &&
                  bnl_resnet_bn_input(f, bf, cap, &nf, gf, x, NB, HH, WW, i, 1) == BNL_OK, "%s bn_input %d: %s", g_ctx,
                  i, bnl_last_error());
            CHECK(nu == nf, "%s bn_input %d: %zu vs %zu values", g_ctx, i, nf, nu);
            same_bits("bn_input", bf, bu, nu < nf ? nu : nf);
            same_model_state("bn_input", f, u);
            free(bu), free(bf);
        }
    }
    // training steps (the keep plan): loss, logits, gradients, then the updated weights
    bnl_sgd sgd = bnl_sgd_default();
    sgd.momentum = 0.9f, sgd.weight_decay = 1e-4f;
    for (int t = 0; t < 2; t++) {
        CHECK(bnl_resnet_forward_backward(u, &loss_u, lu, x, NB, HH, WW, labels) == BNL_OK &&
              bnl_resnet_forward_backward(f, &loss_f, lf, x, NB, HH, WW, labels) == BNL_OK, "%s step: %s", g_ctx,
              bnl_last_error());
        same_bits("step loss", &loss_f, &loss_u, 1);
        same_bits("step logits", lf, lu, NB * K);
        size_t np;
        const float *gu = bnl_resnet_grads(u, &np), *gf = bnl_resnet_grads(f, NULL);
        same_bits("gradients", gf, gu, np);
        CHECK(bnl_resnet_sgd_update(u, &sgd) == BNL_OK && bnl_resnet_sgd_update(f, &sgd) == BNL_OK, "sgd");
        same_model_state("after a step", f, u);
    }
    // and a train-mode forward on the trained weights
    CHECK(bnl_resnet_forward(u, lu, x, NB, HH, WW) == BNL_OK && bnl_resnet_forward(f, lf, x, NB, HH, WW) == BNL_OK,
          "%s forward: %s", g_ctx, bnl_last_error());
    same_bits("train-mode logits after the steps", lf, lu, NB * K);
    bnl_resnet_free(u), bnl_resnet_free(f);
}

static void test_models(void) {
    // bottleneck and basic blocks at odd widths (channel tails in every kernel), downsamples in each
    bnl_resnet_spec bott = {4, {2, 1, 2, 1}, {3, 5, 6, 9}, 1, 7, 3, K};
    bnl_resnet_spec basic = {3, {1, 2, 1}, {5, 12, 17}, 0, 6, 3, K};
    static const char *norms[] = {"batch", "none", "group:1", "renorm", "ghost:3", "frozen"};
    for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) test_model("bottleneck", &bott, norms[k], 0);
    test_model("basic", &basic, "batch", 0);
    test_model("bottleneck", &bott, "batch", 1);
    test_model("basic", &basic, "batch", 1);
}

int main(void) {
    bnl_isa isas[BNL_ISA_COUNT];
    int nisa = 0;
    for (int i = 0; i < BNL_ISA_COUNT; i++)
        if (bnl_isa_available((bnl_isa)i)) isas[nisa++] = (bnl_isa)i;
    for (int k = 0; k < nisa; k++) {
        bnl_isa_force(isas[k]);
        printf("ISA %s\n", bnl_isa_name(isas[k]));
        test_op();
        test_defer();
        test_models();
    }
    bnl_isa_reset();
    (void)check_close;
    return test_summary("test_fused");
}
