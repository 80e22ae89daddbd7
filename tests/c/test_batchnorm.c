// BatchNorm against PyTorch and against itself.
//
// 1. PyTorch fixtures (tests/fixtures/bn, made by tests/gen_fixtures_bn.py): train/eval forward,
//    batch statistics, running statistics (biased and unbiased rule, cumulative average), train/eval
//    backward, fused ReLU -- for every ISA this CPU and build can run.
// 2. Every SIMD ISA against the scalar reference on random data: tile-edge channel counts (below,
//    at, above and multiples of 4/8/16/32/64 lanes), tile-edge row counts, multi-block and
//    multi-thread sizes, the non-temporal store path.
// 3. Accuracy when |mean| >> std, where the textbook float E[x^2]-E[x]^2 collapses.
// 4. Finite-difference gradients (double, central differences), ReLU off and on.
// 5. Error values: M == 1 in train mode, bad arguments; use_scale/use_bias off; determinism.
//
// Sizes: M = N*H*W rows, C channels; x, y, dy, dx: (M, C); per-channel vectors: (C).
#include "bnlab.h"
#include "core/common.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "util.h"

#include <dirent.h>
#include <stdint.h>

// Fixture tolerances: relative 1e-4 plus an absolute 1e-5 on the tensor's own scale.
#define RTOL 1e-4
#define ATOL 1e-5

static bnl_isa g_isas[BNL_ISA_COUNT];
static int g_nisa = 0;
static char g_ctx[512];   // "isa file config": prefixes every failure message

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

// check_close with the context prefixed and the absolute tolerance scaled by the tensor's magnitude.
static int close_to(const char *what, const float *got, const float *want, size_t n, double atol, double rtol) {
    char label[700];
    snprintf(label, sizeof label, "%s %s", g_ctx, what);
    double scale = max_abs(want, n);
    return check_close(label, got, want, n, atol * (scale > 1.0 ? scale : 1.0), rtol);
}

static float *fdup(const float *a, size_t n) {
    float *p = falloc(n);
    memcpy(p, a, n * sizeof(float));
    return p;
}

#define CHECK_OK(call)                                                                            \
    do {                                                                                          \
        bnl_status s_ = (call);                                                                   \
        CHECK(s_ == BNL_OK, "%s: %s returned %s: %s", g_ctx, #call, bnl_status_str(s_), bnl_last_error()); \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Fixtures

typedef struct {
    char path[1024];
    bnl_st_file f;
    size_t N, H, W, C, M;
    const char *kind;
} fixture;

// A tensor of the fixture as float32 (malloc'd), checked to hold `want` elements.
static float *fx_get(const fixture *fx, const char *name, size_t want) {
    const bnl_st_tensor *t = bnl_st_find(&fx->f, name);
    CHECK(t != NULL, "%s: tensor %s missing", fx->path, name);
    if (!t) return NULL;
    CHECK(t->nelem == want, "%s: %s has %zu elements, expected %zu", fx->path, name, t->nelem, want);
    if (t->nelem != want) return NULL;
    float *p = falloc(want);
    bnl_status s = bnl_st_to_f32(p, t);
    CHECK(s == BNL_OK, "%s: %s: %s", fx->path, name, bnl_last_error());
    return p;
}

static int64_t fx_get_i64(const fixture *fx, const char *name) {
    const bnl_st_tensor *t = bnl_st_find(&fx->f, name);
    CHECK(t != NULL && t->nelem == 1, "%s: scalar %s missing", fx->path, name);
    int64_t v = -1;
    if (t && t->nelem == 1) CHECK(bnl_st_to_i64(&v, t) == BNL_OK, "%s: %s: %s", fx->path, name, bnl_last_error());
    return v;
}

static int fx_open(fixture *fx, const char *dir, const char *name) {
    memset(fx, 0, sizeof *fx);
    snprintf(fx->path, sizeof fx->path, "%s/%s", dir, name);
    bnl_status s = bnl_st_read_file(&fx->f, fx->path);
    CHECK(s == BNL_OK, "cannot read fixture %s: %s", fx->path, bnl_last_error());
    if (s != BNL_OK) return 0;
    const char *shape = bnl_st_meta(&fx->f, "shape");
    fx->kind = bnl_st_meta(&fx->f, "kind");
    CHECK(shape && fx->kind, "%s: metadata 'shape' or 'kind' missing", fx->path);
    if (!shape || !fx->kind || sscanf(shape, "%zu,%zu,%zu,%zu", &fx->N, &fx->H, &fx->W, &fx->C) != 4) {
        CHECK(0, "%s: bad shape metadata", fx->path);
        bnl_st_free(&fx->f);
        return 0;
    }
    fx->M = fx->N * fx->H * fx->W;
    const char *eps = bnl_st_meta(&fx->f, "eps");
    CHECK(eps && fabs(atof(eps) - 1e-5) < 1e-12, "%s: fixtures assume eps 1e-5 (got %s)", fx->path, eps ? eps : "none");
    return 1;
}

// standard and relu fixtures: one train step (both running-variance rules), eval, both backwards.
static void run_standard_fixture(const fixture *fx, bnl_isa isa) {
    size_t M = fx->M, C = fx->C, n = M * C;
    int relu = strcmp(fx->kind, "relu") == 0;
    float *x = fx_get(fx, "x", n), *dy = fx_get(fx, "dy", n);
    float *gamma = fx_get(fx, "gamma", C), *beta = fx_get(fx, "beta", C);
    float *rm_in = fx_get(fx, "running_mean_in", C), *rv_in = fx_get(fx, "running_var_in", C);
    float *e_y = fx_get(fx, "train_y", n), *e_mean = fx_get(fx, "batch_mean", C);
    float *e_var = fx_get(fx, "batch_var", C), *e_rm = fx_get(fx, "running_mean_out", C);
    float *e_rv_unb = fx_get(fx, "running_var_unbiased_out", C);
    float *e_rv_b = fx_get(fx, "running_var_biased_out", C);
    float *e_dx = fx_get(fx, "train_dx", n), *e_dg = fx_get(fx, "train_dgamma", C);
    float *e_db = fx_get(fx, "train_dbeta", C), *e_ey = fx_get(fx, "eval_y", n);
    float *e_edx = fx_get(fx, "eval_dx", n), *e_edg = fx_get(fx, "eval_dgamma", C);
    float *e_edb = fx_get(fx, "eval_dbeta", C);
    if (!x || !dy || !gamma || !beta || !rm_in || !rv_in || !e_y || !e_mean || !e_var || !e_rm ||
        !e_rv_unb || !e_rv_b || !e_dx || !e_dg || !e_db || !e_ey || !e_edx || !e_edg || !e_edb)
        goto done;

    float *y = falloc(n), *dx = falloc(n), *mean = falloc(C), *invstd = falloc(C), *var = falloc(C);
    float *rm = falloc(C), *rv = falloc(C), *dg = falloc(C), *db = falloc(C);
    float *want_is = falloc(C);
    for (size_t c = 0; c < C; c++) want_is[c] = (float)(1.0 / sqrt((double)e_var[c] + 1e-5));

    for (int unbiased = 0; unbiased <= 1; unbiased++) {
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.relu = relu;
        cfg.unbiased = unbiased;
        snprintf(g_ctx, sizeof g_ctx, "[%s %s %s]", bnl_isa_name(isa), strrchr(fx->path, '/') + 1,
                 unbiased ? "unbiased" : "biased");
        memcpy(rm, rm_in, C * sizeof(float));
        memcpy(rv, rv_in, C * sizeof(float));
        int64_t tracked = 0;
        CHECK_OK(bnl_batchnorm_forward_train(y, mean, invstd, var, rm, rv, &tracked, x, gamma, beta, M, C, &cfg));
        close_to("train y", y, e_y, n, ATOL, RTOL);
        close_to("batch mean", mean, e_mean, C, ATOL, RTOL);
        close_to("batch var", var, e_var, C, ATOL, RTOL);
        close_to("invstd", invstd, want_is, C, ATOL, RTOL);
        close_to("running mean", rm, e_rm, C, ATOL, RTOL);
        close_to(unbiased ? "running var (unbiased)" : "running var (biased)", rv, unbiased ? e_rv_unb : e_rv_b, C,
                 ATOL, RTOL);
        CHECK(tracked == 1, "%s num_batches_tracked = %lld after one step", g_ctx, (long long)tracked);

        // backward adds into dgamma/dbeta: start them at 1 and expect 1 + torch's gradient
        for (size_t c = 0; c < C; c++) dg[c] = 1.0f, db[c] = 1.0f;
        CHECK_OK(bnl_batchnorm_backward_train(dx, dg, db, dy, x, mean, invstd, gamma, beta, M, C, &cfg));
        close_to("train dx", dx, e_dx, n, ATOL, RTOL);
        for (size_t c = 0; c < C; c++) dg[c] -= 1.0f, db[c] -= 1.0f;
        close_to("train dgamma", dg, e_dg, C, ATOL * 10, RTOL);   // 10: the "-1" above costs an ulp of 1
        close_to("train dbeta", db, e_db, C, ATOL * 10, RTOL);

        // eval never touches the running statistics: they stay bit-identical
        float *rm_keep = fdup(rm, C), *rv_keep = fdup(rv, C);
        CHECK_OK(bnl_batchnorm_forward_eval(y, x, gamma, beta, rm_in, rv_in, M, C, &cfg));
        close_to("eval y", y, e_ey, n, ATOL, RTOL);
        CHECK_OK(bnl_batchnorm_forward_eval(y, x, gamma, beta, rm, rv, M, C, &cfg));
        CHECK(memcmp(rm, rm_keep, C * sizeof(float)) == 0 && memcmp(rv, rv_keep, C * sizeof(float)) == 0,
              "%s eval forward changed the running statistics", g_ctx);
        memset(dg, 0, C * sizeof(float)), memset(db, 0, C * sizeof(float));
        CHECK_OK(bnl_batchnorm_backward_eval(dx, dg, db, dy, x, gamma, beta, rm_in, rv_in, M, C, &cfg));
        close_to("eval dx", dx, e_edx, n, ATOL, RTOL);
        close_to("eval dgamma", dg, e_edg, C, ATOL, RTOL);
        close_to("eval dbeta", db, e_edb, C, ATOL, RTOL);
        free(rm_keep), free(rv_keep);
    }

    // in place: y may alias x (forward), dx may alias dy (backward)
    {
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.relu = relu;
        snprintf(g_ctx, sizeof g_ctx, "[%s %s in-place]", bnl_isa_name(isa), strrchr(fx->path, '/') + 1);
        float *buf = fdup(x, n);
        CHECK_OK(bnl_batchnorm_forward_train(buf, mean, invstd, NULL, NULL, NULL, NULL, buf, gamma, beta, M, C, &cfg));
        close_to("train y (y == x)", buf, e_y, n, ATOL, RTOL);
        memcpy(buf, dy, n * sizeof(float));
        CHECK_OK(bnl_batchnorm_backward_train(buf, NULL, NULL, buf, x, mean, invstd, gamma, beta, M, C, &cfg));
        close_to("train dx (dx == dy)", buf, e_dx, n, ATOL, RTOL);
        memcpy(buf, x, n * sizeof(float));
        CHECK_OK(bnl_batchnorm_forward_eval(buf, buf, gamma, beta, rm_in, rv_in, M, C, &cfg));
        close_to("eval y (y == x)", buf, e_ey, n, ATOL, RTOL);
        free(buf);
    }
    free(y), free(dx), free(mean), free(invstd), free(var), free(rm), free(rv), free(dg), free(db), free(want_is);
done:
    free(x), free(dy), free(gamma), free(beta), free(rm_in), free(rv_in), free(e_y), free(e_mean), free(e_var);
    free(e_rm), free(e_rv_unb), free(e_rv_b), free(e_dx), free(e_dg), free(e_db), free(e_ey), free(e_edx);
    free(e_edg), free(e_edb);
}

// cumulative average (torch momentum=None): three batches, num_batches_tracked 0 -> 3.
static void run_cumulative_fixture(const fixture *fx, bnl_isa isa) {
    size_t M = fx->M, C = fx->C, n = M * C;
    const char *b = bnl_st_meta(&fx->f, "batches");
    int batches = b ? atoi(b) : 0;
    CHECK(batches >= 1 && batches <= 16, "%s: bad 'batches' metadata", fx->path);
    float *gamma = fx_get(fx, "gamma", C), *beta = fx_get(fx, "beta", C);
    float *rm_in = fx_get(fx, "running_mean_in", C), *rv_in = fx_get(fx, "running_var_in", C);
    int64_t t_in = fx_get_i64(fx, "num_batches_tracked_in"), t_out = fx_get_i64(fx, "num_batches_tracked_out");
    float *y = falloc(n), *mean = falloc(C), *invstd = falloc(C), *rm = falloc(C), *rv = falloc(C);
    for (int unbiased = 0; unbiased <= 1 && gamma && beta && rm_in && rv_in; unbiased++) {
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.cumulative = 1;
        cfg.unbiased = unbiased;
        memcpy(rm, rm_in, C * sizeof(float));
        memcpy(rv, rv_in, C * sizeof(float));
        int64_t tracked = t_in;
        for (int k = 0; k < batches && k < 16; k++) {
            char name[64];
            snprintf(g_ctx, sizeof g_ctx, "[%s %s %s batch %d]", bnl_isa_name(isa), strrchr(fx->path, '/') + 1,
                     unbiased ? "unbiased" : "biased", k);
            snprintf(name, sizeof name, "x_%d", k);
            float *x = fx_get(fx, name, n);
            snprintf(name, sizeof name, "train_y_%d", k);
            float *ey = fx_get(fx, name, n);
            snprintf(name, sizeof name, "running_mean_out_%d", k);
            float *erm = fx_get(fx, name, C);
            snprintf(name, sizeof name, unbiased ? "running_var_unbiased_out_%d" : "running_var_biased_out_%d", k);
            float *erv = fx_get(fx, name, C);
            if (x && ey && erm && erv) {
                CHECK_OK(bnl_batchnorm_forward_train(y, mean, invstd, NULL, rm, rv, &tracked, x, gamma, beta, M, C, &cfg));
                close_to("train y", y, ey, n, ATOL, RTOL);
                close_to("running mean", rm, erm, C, ATOL, RTOL);
                close_to("running var", rv, erv, C, ATOL, RTOL);
                CHECK(tracked == t_in + k + 1, "%s num_batches_tracked = %lld", g_ctx, (long long)tracked);
            }
            free(x), free(ey), free(erm), free(erv);
        }
        CHECK(tracked == t_out, "%s num_batches_tracked = %lld, torch says %lld", g_ctx, (long long)tracked,
              (long long)t_out);
    }
    free(gamma), free(beta), free(rm_in), free(rv_in), free(y), free(mean), free(invstd), free(rm), free(rv);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_fixtures(void) {
    const char *root = getenv("BNL_ROOT");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/bn", root && *root ? root : ".");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open fixture directory %s (run from the repo root or set BNL_ROOT)", dir);
    if (!d) return;
    char *names[256];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count < 256) {
        size_t L = strlen(e->d_name);
        if (L > 12 && strcmp(e->d_name + L - 12, ".safetensors") == 0) names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], cmp_str);

    int n_standard = 0, n_relu = 0, n_cumulative = 0, seen_c[300] = {0};
    for (size_t i = 0; i < count; i++) {
        fixture fx;
        if (!fx_open(&fx, dir, names[i])) continue;
        int known = 1;
        for (int k = 0; k < g_nisa; k++) {
            bnl_isa_force(g_isas[k]);
            if (!strcmp(fx.kind, "standard") || !strcmp(fx.kind, "relu"))
                run_standard_fixture(&fx, g_isas[k]);
            else if (!strcmp(fx.kind, "cumulative"))
                run_cumulative_fixture(&fx, g_isas[k]);
            else
                known = 0;
        }
        CHECK(known, "%s: unknown fixture kind '%s'", fx.path, fx.kind);
        n_standard += !strcmp(fx.kind, "standard");
        n_relu += !strcmp(fx.kind, "relu");
        n_cumulative += !strcmp(fx.kind, "cumulative");
        if (!strcmp(fx.kind, "standard") && fx.C < 300) seen_c[fx.C] = 1;
        bnl_st_free(&fx.f);
        free(names[i]);
    }
    bnl_isa_reset();
    // a missing fixture must fail, not shrink the test
    static const int want_c[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 256};
    for (size_t i = 0; i < sizeof want_c / sizeof want_c[0]; i++)
        CHECK(seen_c[want_c[i]], "no standard fixture with C = %d in %s", want_c[i], dir);
    CHECK(n_relu >= 1 && n_cumulative >= 1, "fixtures: %d relu, %d cumulative (want >= 1 each)", n_relu, n_cumulative);
    printf("fixtures: %d standard, %d relu, %d cumulative, each on %d ISA(s)\n", n_standard, n_relu, n_cumulative,
           g_nisa);
}

// ---------------------------------------------------------------------------------------------
// SIMD versus the scalar reference

static void fill_inputs(bnl_rng *r, float *x, float *dy, float *gamma, float *beta, float *rm, float *rv,
                        size_t M, size_t C) {
    for (size_t c = 0; c < C; c++) {
        gamma[c] = (float)(1.0 + 0.5 * bnl_rng_normal(r));
        beta[c] = (float)(0.5 * bnl_rng_normal(r));
        rm[c] = (float)(0.1 * bnl_rng_normal(r));
        rv[c] = (float)(0.5 + bnl_rng_uniform(r));
    }
    double *off = malloc(C * sizeof(double)), *scl = malloc(C * sizeof(double));
    for (size_t c = 0; c < C; c++) off[c] = 4 * bnl_rng_uniform(r) - 2, scl[c] = 0.5 + 1.5 * bnl_rng_uniform(r);
    for (size_t i = 0; i < M * C; i++) {
        x[i] = (float)(off[i % C] + scl[i % C] * bnl_rng_normal(r));
        dy[i] = (float)bnl_rng_normal(r);
    }
    free(off), free(scl);
}

// With the ReLU fused, a pre-activation within rounding of 0 may be masked by one ISA and not by
// another; zero dy there so that either choice gives the same gradients.
static void clear_dy_near_kink(float *dy, const float *x, const float *gamma, const float *beta,
                               const float *rm, const float *rv, size_t M, size_t C) {
    for (size_t c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        for (size_t r = 0; r < M; r++) s += x[r * C + c];
        double mu = s / M;
        for (size_t r = 0; r < M; r++) s2 += (x[r * C + c] - mu) * (x[r * C + c] - mu);
        double is = 1 / sqrt(s2 / M + 1e-5), ise = 1 / sqrt((double)rv[c] + 1e-5);
        for (size_t r = 0; r < M; r++) {
            double tt = (x[r * C + c] - mu) * is * gamma[c] + beta[c];
            double te = (x[r * C + c] - rm[c]) * ise * gamma[c] + beta[c];
            if (fabs(tt) < 1e-3 || fabs(te) < 1e-3) dy[r * C + c] = 0.0f;
        }
    }
}

typedef struct {
    float *y, *mean, *invstd, *var, *rm, *rv, *dx, *dg, *db, *ey, *edx, *edg, *edb;
    int64_t tracked;
} bn_out;

static bn_out out_alloc(size_t M, size_t C) {
    bn_out o;
    size_t n = M * C;
    o.y = bnl_alloc(n * sizeof(float)), o.dx = bnl_alloc(n * sizeof(float));
    o.ey = bnl_alloc(n * sizeof(float)), o.edx = bnl_alloc(n * sizeof(float));
    if (!o.y || !o.dx || !o.ey || !o.edx) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    o.mean = falloc(C), o.invstd = falloc(C), o.var = falloc(C), o.rm = falloc(C), o.rv = falloc(C);
    o.dg = falloc(C), o.db = falloc(C), o.edg = falloc(C), o.edb = falloc(C);
    o.tracked = 0;
    return o;
}

static void out_free(bn_out *o) {
    bnl_free(o->y), bnl_free(o->dx), bnl_free(o->ey), bnl_free(o->edx);
    free(o->mean), free(o->invstd), free(o->var), free(o->rm), free(o->rv), free(o->dg), free(o->db);
    free(o->edg), free(o->edb);
}

// Everything once: train forward, train backward, eval forward, eval backward.
static void run_all(bn_out *o, const float *x, const float *dy, const float *gamma, const float *beta,
                    const float *rm, const float *rv, size_t M, size_t C, const bnl_bn_config *cfg) {
    memcpy(o->rm, rm, C * sizeof(float));
    memcpy(o->rv, rv, C * sizeof(float));
    memset(o->dg, 0, C * sizeof(float)), memset(o->db, 0, C * sizeof(float));
    memset(o->edg, 0, C * sizeof(float)), memset(o->edb, 0, C * sizeof(float));
    o->tracked = 0;
    if (M > 1) {
        CHECK_OK(bnl_batchnorm_forward_train(o->y, o->mean, o->invstd, o->var, o->rm, o->rv, &o->tracked, x, gamma,
                                             beta, M, C, cfg));
        CHECK_OK(bnl_batchnorm_backward_train(o->dx, o->dg, o->db, dy, x, o->mean, o->invstd, gamma, beta, M, C, cfg));
    }
    CHECK_OK(bnl_batchnorm_forward_eval(o->ey, x, gamma, beta, rm, rv, M, C, cfg));
    CHECK_OK(bnl_batchnorm_backward_eval(o->edx, o->edg, o->edb, dy, x, gamma, beta, rm, rv, M, C, cfg));
}

static void compare_outputs(const bn_out *g, const bn_out *w, size_t M, size_t C, double atol, double rtol) {
    size_t n = M * C;
    if (M > 1) {
        close_to("train y", g->y, w->y, n, atol, rtol);
        close_to("mean", g->mean, w->mean, C, atol, rtol);
        close_to("var", g->var, w->var, C, atol, rtol);
        close_to("invstd", g->invstd, w->invstd, C, atol, rtol);
        close_to("running mean", g->rm, w->rm, C, atol, rtol);
        close_to("running var", g->rv, w->rv, C, atol, rtol);
        close_to("train dx", g->dx, w->dx, n, atol, rtol);
        close_to("train dgamma", g->dg, w->dg, C, atol, rtol);
        close_to("train dbeta", g->db, w->db, C, atol, rtol);
    }
    close_to("eval y", g->ey, w->ey, n, atol, rtol);
    close_to("eval dx", g->edx, w->edx, n, atol, rtol);
    close_to("eval dgamma", g->edg, w->edg, C, atol, rtol);
    close_to("eval dbeta", g->edb, w->edb, C, atol, rtol);
}

static void simd_vs_scalar_case(size_t M, size_t C, uint64_t seed, int threads) {
    size_t n = M * C;
    bnl_rng r = bnl_rng_seed(seed);
    // 64-byte aligned (bnl_alloc), so large outputs take the non-temporal store path
    float *x = bnl_alloc(n * sizeof(float)), *dy = bnl_alloc(n * sizeof(float));
    float *gamma = falloc(C), *beta = falloc(C), *rm = falloc(C), *rv = falloc(C);
    if (!x || !dy) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    fill_inputs(&r, x, dy, gamma, beta, rm, rv, M, C);
    bn_out want = out_alloc(M, C), got = out_alloc(M, C);
    bnl_set_threads(threads);
    for (int relu = 0; relu <= 1; relu++) {
        if (relu) clear_dy_near_kink(dy, x, gamma, beta, rm, rv, M, C);
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.relu = relu;
        cfg.unbiased = (int)(seed & 1);
        bnl_isa_force(BNL_ISA_SCALAR);
        snprintf(g_ctx, sizeof g_ctx, "[scalar M=%zu C=%zu relu=%d threads=%d]", M, C, relu, threads);
        run_all(&want, x, dy, gamma, beta, rm, rv, M, C, &cfg);
        for (int k = 0; k < g_nisa; k++) {
            if (g_isas[k] == BNL_ISA_SCALAR) continue;
            bnl_isa_force(g_isas[k]);
            snprintf(g_ctx, sizeof g_ctx, "[%s vs scalar M=%zu C=%zu relu=%d threads=%d]", bnl_isa_name(g_isas[k]),
                     M, C, relu, threads);
            run_all(&got, x, dy, gamma, beta, rm, rv, M, C, &cfg);
            compare_outputs(&got, &want, M, C, ATOL, RTOL);
        }
    }
    bnl_isa_reset();
    bnl_set_threads(0);
    out_free(&want), out_free(&got);
    bnl_free(x), bnl_free(dy), free(gamma), free(beta), free(rm), free(rv);
}

static void test_simd_vs_scalar(void) {
    // channel counts at, below and above 4/8/16/32/64 lanes and the 4-vector unroll (64 for AVX-512)
    static const size_t cs[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33,
                                48, 63, 64, 65, 96, 127, 128, 129, 192, 255, 256, 257};
    static const size_t ms[] = {1, 2, 3, 7, 15, 16, 17, 33, 64, 100};
    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        for (size_t j = 0; j < sizeof ms / sizeof ms[0]; j++) simd_vs_scalar_case(ms[j], cs[i], seed++, 0);
    // many rows: several statistics blocks (16384/C rows each, 16..4096), several threads, ragged
    // last block; M = 4096 and 4097 sit on and past one block for C <= 4
    static const size_t big_cs[] = {1, 3, 4, 8, 16, 17, 64, 65, 256};
    static const size_t big_ms[] = {4095, 4096, 4097, 5000};
    for (size_t i = 0; i < sizeof big_cs / sizeof big_cs[0]; i++)
        for (size_t j = 0; j < sizeof big_ms / sizeof big_ms[0]; j++) simd_vs_scalar_case(big_ms[j], big_cs[i], seed++, 0);
    // uneven thread splits of the blocks and rows
    simd_vs_scalar_case(5000, 16, seed++, 1);
    simd_vs_scalar_case(5000, 16, seed++, 3);
    simd_vs_scalar_case(5003, 33, seed++, 7);
    // outputs of 8 MB and more: the non-temporal store path (aligned, C a multiple of the width)
    simd_vs_scalar_case(32768, 64, seed++, 0);
    simd_vs_scalar_case(16384, 130, seed++, 0);   // large but C not a lane multiple: regular stores
}

// ---------------------------------------------------------------------------------------------
// Accuracy when |mean| >> std

static void accuracy_case(double center, double spread, size_t M, size_t C, double tol) {
    size_t n = M * C;
    bnl_rng r = bnl_rng_seed(777 + (uint64_t)center);
    float *x = falloc(n), *y = falloc(n), *yref = falloc(n), *mean = falloc(C), *invstd = falloc(C), *var = falloc(C);
    float *gamma = falloc(C), *beta = falloc(C);
    for (size_t c = 0; c < C; c++) gamma[c] = 1.0f, beta[c] = 0.0f;
    for (size_t i = 0; i < n; i++) x[i] = (float)(center + spread * (1.0 + 0.1 * (double)(i % C)) * bnl_rng_normal(&r));
    // truth: two-pass in double over the float32 data
    double *tvar = malloc(C * sizeof(double)), worst_naive = 0;
    for (size_t c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < M; i++) s += x[i * C + c];
        double mu = s / M;
        for (size_t i = 0; i < M; i++) s2 += (x[i * C + c] - mu) * (x[i * C + c] - mu);
        tvar[c] = s2 / M;
        // the textbook one-pass formula in float32: E[x^2] - E[x]^2 cancels catastrophically
        float fs = 0.0f, fs2 = 0.0f;
        for (size_t i = 0; i < M; i++) fs += x[i * C + c], fs2 += x[i * C + c] * x[i * C + c];
        float fm = fs / (float)M, naive = fs2 / (float)M - fm * fm;
        double rel = fabs((double)naive - tvar[c]) / tvar[c];
        if (c == 0)
            printf("accuracy x = %g + N(0, %g^2), M = %zu: true var %.6g, naive float32 E[x^2]-E[x]^2 = %.6g "
                   "(relative error %.3g)\n", center, spread, M, tvar[c], (double)naive, rel);
        worst_naive = rel > worst_naive ? rel : worst_naive;
        CHECK(rel > 0.5, "naive float32 variance should be wildly wrong here (channel %zu: rel err %.3g)", c, rel);
    }
    bnl_bn_config cfg = bnl_bn_config_default();
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s accuracy center=%g spread=%g M=%zu C=%zu]", bnl_isa_name(g_isas[k]), center,
                 spread, M, C);
        CHECK_OK(bnl_batchnorm_forward_train(y, mean, invstd, var, NULL, NULL, NULL, x, gamma, beta, M, C, &cfg));
        double worst = 0;
        for (size_t c = 0; c < C; c++) {
            double rel = fabs((double)var[c] - tvar[c]) / tvar[c];
            worst = rel > worst ? rel : worst;
            // the scalar reference accumulates in double: it must be near exact
            double lim = g_isas[k] == BNL_ISA_SCALAR ? 1e-6 : tol;
            CHECK(rel <= lim, "%s channel %zu: var %.9g, float64 truth %.9g (rel err %.3g > %.1g)", g_ctx, c,
                  (double)var[c], tvar[c], rel, lim);
        }
        printf("  %-8s batch var max rel err %.3g (naive float32: %.3g)\n", bnl_isa_name(g_isas[k]), worst, worst_naive);
        // the normalized output stays unit-scale and agrees with the scalar reference; y is limited
        // by float32 itself here (the mean's own rounding is ~3e-5 at 1000, 3e-3 std units)
        if (g_isas[k] == BNL_ISA_SCALAR)
            memcpy(yref, y, n * sizeof(float));
        else
            close_to("y vs scalar", y, yref, n, 1e-2, 1e-2);
    }
    bnl_isa_reset();
    free(x), free(y), free(yref), free(mean), free(invstd), free(var), free(gamma), free(beta), free(tvar);
}

// ---------------------------------------------------------------------------------------------
// Finite differences: loss = sum(y * rr) with y from a double-precision train forward.

static double loss64(const double *x, const double *gamma, const double *beta, const double *rr, size_t M, size_t C,
                     int relu, double eps) {
    double L = 0;
    for (size_t c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < M; i++) s += x[i * C + c];
        double mu = s / M;
        for (size_t i = 0; i < M; i++) s2 += (x[i * C + c] - mu) * (x[i * C + c] - mu);
        double is = 1 / sqrt(s2 / M + eps);
        for (size_t i = 0; i < M; i++) {
            double t = (x[i * C + c] - mu) * is * gamma[c] + beta[c];
            if (relu && t <= 0) t = 0;
            L += t * rr[i * C + c];
        }
    }
    return L;
}

static void test_finite_differences(void) {
    enum { M = 6, C = 3 };
    const double h = 1e-6, eps = 1e-5;
    float xf[M * C], rf[M * C], gf[C], bf[C];
    double x[M * C], rr[M * C], g[C], b[C];
    bnl_rng r = bnl_rng_seed(4242);
    for (int relu = 0; relu <= 1; relu++) {
        // ReLU on: keep every pre-activation away from the kink, so the loss is smooth within +-h
        for (int attempt = 0;; attempt++) {
            for (int c = 0; c < C; c++) gf[c] = (float)(1 + 0.5 * bnl_rng_normal(&r)), bf[c] = (float)(0.3 * bnl_rng_normal(&r));
            for (int i = 0; i < M * C; i++) xf[i] = (float)(bnl_rng_normal(&r) + 0.5 * (i % C)), rf[i] = (float)bnl_rng_normal(&r);
            double mind = 1e9;
            for (int c = 0; c < C; c++) {
                double s = 0, s2 = 0;
                for (int i = 0; i < M; i++) s += xf[i * C + c];
                double mu = s / M;
                for (int i = 0; i < M; i++) s2 += (xf[i * C + c] - mu) * (xf[i * C + c] - mu);
                for (int i = 0; i < M; i++) {
                    double t = (xf[i * C + c] - mu) / sqrt(s2 / M + eps) * gf[c] + bf[c];
                    mind = fabs(t) < mind ? fabs(t) : mind;
                }
            }
            if (!relu || mind > 0.05) break;
            CHECK(attempt < 1000, "finite differences: could not draw inputs away from the ReLU kink");
            if (attempt >= 1000) return;
        }
        for (int i = 0; i < M * C; i++) x[i] = xf[i], rr[i] = rf[i];
        for (int c = 0; c < C; c++) g[c] = gf[c], b[c] = bf[c];
        // central differences in double
        double num_dx[M * C], num_dg[C], num_db[C];
        for (int i = 0; i < M * C; i++) {
            double keep = x[i];
            x[i] = keep + h;
            double lp = loss64(x, g, b, rr, M, C, relu, eps);
            x[i] = keep - h;
            double lm = loss64(x, g, b, rr, M, C, relu, eps);
            x[i] = keep;
            num_dx[i] = (lp - lm) / (2 * h);
        }
        for (int c = 0; c < C; c++) {
            double keep = g[c];
            g[c] = keep + h;
            double lp = loss64(x, g, b, rr, M, C, relu, eps);
            g[c] = keep - h;
            double lm = loss64(x, g, b, rr, M, C, relu, eps);
            g[c] = keep;
            num_dg[c] = (lp - lm) / (2 * h);
            keep = b[c];
            b[c] = keep + h;
            lp = loss64(x, g, b, rr, M, C, relu, eps);
            b[c] = keep - h;
            lm = loss64(x, g, b, rr, M, C, relu, eps);
            b[c] = keep;
            num_db[c] = (lp - lm) / (2 * h);
        }
        float fdx[M * C], fdg[C], fdb[C];
        for (int i = 0; i < M * C; i++) fdx[i] = (float)num_dx[i];
        for (int c = 0; c < C; c++) fdg[c] = (float)num_dg[c], fdb[c] = (float)num_db[c];
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.relu = relu;
        for (int k = 0; k < g_nisa; k++) {
            bnl_isa_force(g_isas[k]);
            snprintf(g_ctx, sizeof g_ctx, "[%s finite differences M=%d C=%d relu=%d]", bnl_isa_name(g_isas[k]), M, C, relu);
            float y[M * C], dx[M * C], mean[C], invstd[C], dg[C] = {0}, db[C] = {0};
            CHECK_OK(bnl_batchnorm_forward_train(y, mean, invstd, NULL, NULL, NULL, NULL, xf, gf, bf, M, C, &cfg));
            CHECK_OK(bnl_batchnorm_backward_train(dx, dg, db, rf, xf, mean, invstd, gf, bf, M, C, &cfg));
            close_to("dx vs finite differences", dx, fdx, M * C, 1e-4, 1e-3);
            close_to("dgamma vs finite differences", dg, fdg, C, 1e-4, 1e-3);
            close_to("dbeta vs finite differences", db, fdb, C, 1e-4, 1e-3);
        }
        bnl_isa_reset();
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, options, determinism

static void test_errors(void) {
    enum { M = 4, C = 3 };
    float x[M * C], y[M * C], dy[M * C], dx[M * C], g[C] = {1, 1, 1}, b[C] = {0}, mean[C], is[C], rm[C] = {0};
    float rv[C] = {1, 1, 1};
    for (int i = 0; i < M * C; i++) x[i] = (float)i, dy[i] = 1.0f;
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s errors]", bnl_isa_name(g_isas[k]));
        bnl_bn_config cfg = bnl_bn_config_default();

        // (d) one value per channel cannot be normalized in train mode (PyTorch's ValueError)
        bnl_status s = bnl_batchnorm_forward_train(y, mean, is, NULL, rm, rv, NULL, x, g, b, 1, C, &cfg);
        CHECK(s == BNL_ERR_BATCH, "%s M == 1: got %s", g_ctx, bnl_status_str(s));
        CHECK(strstr(bnl_last_error(), "more than 1 value per channel") != NULL, "%s M == 1 message: '%s'", g_ctx,
              bnl_last_error());
        CHECK(rm[0] == 0.0f && rv[0] == 1.0f, "%s M == 1 failure touched the running stats", g_ctx);
        CHECK_OK(bnl_batchnorm_forward_eval(y, x, g, b, rm, rv, 1, C, &cfg));   // eval with M == 1 is fine

        // (f) bad arguments
#define EXPECT_ARG(call, what)                                                                      \
    do {                                                                                            \
        bnl_status s_ = (call);                                                                     \
        CHECK(s_ == BNL_ERR_ARG, "%s %s: got %s (%s)", g_ctx, what, bnl_status_str(s_), bnl_last_error()); \
        CHECK(bnl_last_error()[0] != '\0', "%s %s: empty error message", g_ctx, what);              \
    } while (0)
        bnl_bn_config bad = cfg;
        const float bad_eps[] = {0.0f, -1e-5f, NAN, INFINITY};
        for (int i = 0; i < 4; i++) {
            bad = cfg, bad.eps = bad_eps[i];
            EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, rm, rv, NULL, x, g, b, M, C, &bad), "eps bad (train)");
            EXPECT_ARG(bnl_batchnorm_forward_eval(y, x, g, b, rm, rv, M, C, &bad), "eps bad (eval)");
            EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, dy, x, mean, is, g, b, M, C, &bad), "eps bad (bwd)");
            EXPECT_ARG(bnl_batchnorm_backward_eval(dx, NULL, NULL, dy, x, g, b, rm, rv, M, C, &bad), "eps bad (bwd eval)");
        }
        const float bad_mom[] = {1.5f, -0.1f, NAN};
        for (int i = 0; i < 3; i++) {
            bad = cfg, bad.momentum = bad_mom[i];
            EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, rm, rv, NULL, x, g, b, M, C, &bad), "momentum bad");
        }
        CHECK(rm[0] == 0.0f && rv[0] == 1.0f, "%s a rejected call touched the running stats", g_ctx);
        bad = cfg, bad.momentum = 1.0f;   // the edges are valid: 1 keeps the running stats, 0 replaces them
        CHECK_OK(bnl_batchnorm_forward_train(y, mean, is, NULL, rm, rv, NULL, x, g, b, M, C, &bad));
        CHECK(rm[0] == 0.0f && rv[0] == 1.0f, "%s momentum 1 must keep the running stats", g_ctx);
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, b, M, C, NULL), "NULL cfg");
        EXPECT_ARG(bnl_batchnorm_forward_train(NULL, mean, is, NULL, NULL, NULL, NULL, x, g, b, M, C, &cfg), "NULL y");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, NULL, g, b, M, C, &cfg), "NULL x");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, NULL, is, NULL, NULL, NULL, NULL, x, g, b, M, C, &cfg), "NULL mean");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, NULL, NULL, NULL, NULL, NULL, x, g, b, M, C, &cfg), "NULL invstd");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, NULL, b, M, C, &cfg), "NULL gamma");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, NULL, M, C, &cfg), "NULL beta");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, b, 0, C, &cfg), "M == 0");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, b, M, 0, &cfg), "C == 0");
        EXPECT_ARG(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, b, SIZE_MAX / 2, 3, &cfg),
                   "M*C overflow");
        EXPECT_ARG(bnl_batchnorm_forward_eval(y, x, g, b, NULL, rv, M, C, &cfg), "eval NULL running mean");
        EXPECT_ARG(bnl_batchnorm_forward_eval(y, x, g, b, rm, NULL, M, C, &cfg), "eval NULL running var");
        EXPECT_ARG(bnl_batchnorm_forward_eval(NULL, x, g, b, rm, rv, M, C, &cfg), "eval NULL y");
        EXPECT_ARG(bnl_batchnorm_forward_eval(y, NULL, g, b, rm, rv, M, C, &cfg), "eval NULL x");
        CHECK_OK(bnl_batchnorm_forward_train(y, mean, is, NULL, NULL, NULL, NULL, x, g, b, M, C, &cfg));
        EXPECT_ARG(bnl_batchnorm_backward_train(NULL, NULL, NULL, dy, x, mean, is, g, b, M, C, &cfg), "bwd NULL dx");
        EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, NULL, x, mean, is, g, b, M, C, &cfg), "bwd NULL dy");
        EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, dy, NULL, mean, is, g, b, M, C, &cfg), "bwd NULL x");
        EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, dy, x, NULL, is, g, b, M, C, &cfg), "bwd NULL mean");
        EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, dy, x, mean, NULL, g, b, M, C, &cfg), "bwd NULL invstd");
        EXPECT_ARG(bnl_batchnorm_backward_train(dx, NULL, NULL, dy, x, mean, is, NULL, b, M, C, &cfg), "bwd NULL gamma");
        EXPECT_ARG(bnl_batchnorm_backward_eval(dx, NULL, NULL, dy, NULL, g, b, rm, rv, M, C, &cfg), "bwd eval NULL x");
        EXPECT_ARG(bnl_batchnorm_backward_eval(dx, NULL, NULL, dy, x, g, b, NULL, rv, M, C, &cfg), "bwd eval NULL rm");
        EXPECT_ARG(bnl_batchnorm_backward_eval(dx, NULL, NULL, dy, x, g, b, rm, NULL, M, C, &cfg), "bwd eval NULL rv");
        EXPECT_ARG(bnl_batchnorm_backward_eval(dx, NULL, NULL, NULL, x, g, b, rm, rv, M, C, &cfg), "bwd eval NULL dy");
#undef EXPECT_ARG
        CHECK(strcmp(bnl_status_str(BNL_ERR_ARG), bnl_status_str(BNL_ERR_BATCH)) != 0, "status strings differ");
    }
    bnl_isa_reset();
}

// (e) use_scale = 0 / use_bias = 0 with NULL gamma/beta equals gamma = 1 / beta = 0.
static void test_no_scale_no_bias(void) {
    const size_t M = 37, C = 19, n = M * C;
    bnl_rng r = bnl_rng_seed(99);
    float *x = falloc(n), *dy = falloc(n), *g = falloc(C), *b = falloc(C), *rm = falloc(C), *rv = falloc(C);
    fill_inputs(&r, x, dy, g, b, rm, rv, M, C);
    float *ones = falloc(C), *zeros = falloc(C);
    for (size_t c = 0; c < C; c++) ones[c] = 1.0f;
    bn_out want = out_alloc(M, C), got = out_alloc(M, C);
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        for (int mode = 0; mode < 3; mode++) {   // 0: neither, 1: no scale, 2: no bias
            for (int relu = 0; relu <= 1; relu++) {
                bnl_bn_config cfg = bnl_bn_config_default();
                cfg.relu = relu;
                cfg.use_scale = mode == 2;
                cfg.use_bias = mode == 1;
                snprintf(g_ctx, sizeof g_ctx, "[%s use_scale=%d use_bias=%d relu=%d]", bnl_isa_name(g_isas[k]),
                         cfg.use_scale, cfg.use_bias, relu);
                bnl_bn_config full = bnl_bn_config_default();
                full.relu = relu;
                run_all(&want, x, dy, cfg.use_scale ? g : ones, cfg.use_bias ? b : zeros, rm, rv, M, C, &full);
                run_all(&got, x, dy, cfg.use_scale ? g : NULL, cfg.use_bias ? b : NULL, rm, rv, M, C, &cfg);
                // gradients of absent parameters are not written
                bn_out cmp = got;
                float *zc = falloc(C);
                if (!cfg.use_scale) {
                    CHECK(memcmp(got.dg, zc, C * sizeof(float)) == 0 && memcmp(got.edg, zc, C * sizeof(float)) == 0,
                          "%s dgamma written without a scale", g_ctx);
                    cmp.dg = want.dg, cmp.edg = want.edg;
                }
                if (!cfg.use_bias) {
                    CHECK(memcmp(got.db, zc, C * sizeof(float)) == 0 && memcmp(got.edb, zc, C * sizeof(float)) == 0,
                          "%s dbeta written without a bias", g_ctx);
                    cmp.db = want.db, cmp.edb = want.edb;
                }
                compare_outputs(&cmp, &want, M, C, 1e-6, 1e-6);
                free(zc);
            }
        }
    }
    bnl_isa_reset();
    out_free(&want), out_free(&got);
    free(x), free(dy), free(g), free(b), free(rm), free(rv), free(ones), free(zeros);
}

// (g) the same call twice gives the same bits (fixed block and thread-merge order).
static void test_determinism(void) {
    static const size_t shapes[][2] = {{5000, 65}, {20000, 8}, {300, 256}, {17, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t M = shapes[s][0], C = shapes[s][1], n = M * C;
        bnl_rng r = bnl_rng_seed(31 + s);
        float *x = falloc(n), *dy = falloc(n), *g = falloc(C), *b = falloc(C), *rm = falloc(C), *rv = falloc(C);
        fill_inputs(&r, x, dy, g, b, rm, rv, M, C);
        bn_out o1 = out_alloc(M, C), o2 = out_alloc(M, C);
        for (int k = 0; k < g_nisa; k++) {
            bnl_isa_force(g_isas[k]);
            for (int relu = 0; relu <= 1; relu++) {
                bnl_bn_config cfg = bnl_bn_config_default();
                cfg.relu = relu;
                snprintf(g_ctx, sizeof g_ctx, "[%s determinism M=%zu C=%zu relu=%d]", bnl_isa_name(g_isas[k]), M, C, relu);
                run_all(&o1, x, dy, g, b, rm, rv, M, C, &cfg);
                run_all(&o2, x, dy, g, b, rm, rv, M, C, &cfg);
                int same = !memcmp(o1.y, o2.y, n * 4) && !memcmp(o1.mean, o2.mean, C * 4) &&
                           !memcmp(o1.invstd, o2.invstd, C * 4) && !memcmp(o1.var, o2.var, C * 4) &&
                           !memcmp(o1.rm, o2.rm, C * 4) && !memcmp(o1.rv, o2.rv, C * 4) &&
                           !memcmp(o1.dx, o2.dx, n * 4) && !memcmp(o1.dg, o2.dg, C * 4) &&
                           !memcmp(o1.db, o2.db, C * 4) && !memcmp(o1.ey, o2.ey, n * 4) &&
                           !memcmp(o1.edx, o2.edx, n * 4) && !memcmp(o1.edg, o2.edg, C * 4) &&
                           !memcmp(o1.edb, o2.edb, C * 4);
                CHECK(same, "%s two identical calls gave different bits", g_ctx);
            }
        }
        bnl_isa_reset();
        out_free(&o1), out_free(&o2);
        free(x), free(dy), free(g), free(b), free(rm), free(rv);
    }
}

// ---------------------------------------------------------------------------------------------
// The per-channel affine layer (a BatchNorm layer in a network without normalization): against
// direct double loops, every ISA, with and without the fused ReLU, odd C for the SIMD tails.
static void test_affine(void) {
    const size_t M = 37, C = 19;
    bnl_rng r = bnl_rng_seed(77);
    float *x = falloc(M * C), *dy = falloc(M * C), *g = falloc(C), *b = falloc(C), *rm = falloc(C), *rv = falloc(C);
    fill_inputs(&r, x, dy, g, b, rm, rv, M, C);
    float *y = falloc(M * C), *dx = falloc(M * C), *dg = falloc(C), *db = falloc(C);
    float *wy = falloc(M * C), *wdx = falloc(M * C), *wdg = falloc(C), *wdb = falloc(C);
    for (int relu = 0; relu < 2; relu++) {
        for (size_t c = 0; c < C; c++) {
            double sg = 0, sgx = 0;
            for (size_t i = 0; i < M; i++) {
                double t = (double)x[i * C + c] * g[c] + b[c], gr = dy[i * C + c];
                if (relu && !(t > 0)) t = 0, gr = 0;
                wy[i * C + c] = (float)t;
                wdx[i * C + c] = (float)(gr * g[c]);
                sg += gr, sgx += gr * x[i * C + c];
            }
            wdg[c] = (float)(0.5 + sgx), wdb[c] = (float)(-0.25 + sg);   // accumulated onto 0.5 / -0.25
        }
        bnl_bn_config cfg = bnl_bn_config_default();
        cfg.relu = relu;
        for (int k = 0; k < g_nisa; k++) {
            bnl_isa_force(g_isas[k]);
            snprintf(g_ctx, sizeof g_ctx, "affine %s relu %d", bnl_isa_name(g_isas[k]), relu);
            for (size_t c = 0; c < C; c++) dg[c] = 0.5f, db[c] = -0.25f;
            CHECK(bnl_channel_affine_forward(y, x, g, b, M, C, &cfg) == BNL_OK, "%s: %s", g_ctx, bnl_last_error());
            CHECK(bnl_channel_affine_backward(dx, dg, db, dy, x, g, b, M, C, &cfg) == BNL_OK, "%s: %s", g_ctx,
                  bnl_last_error());
            close_to("y", y, wy, M * C, 1e-6, 1e-6);
            close_to("dx", dx, wdx, M * C, 1e-6, 1e-6);
            close_to("dgamma", dg, wdg, C, 1e-5, 1e-5);
            close_to("dbeta", db, wdb, C, 1e-5, 1e-5);
        }
    }
    bnl_bn_config cfg = bnl_bn_config_default();
    CHECK(bnl_channel_affine_forward(y, x, g, b, 0, C, &cfg) == BNL_ERR_ARG, "affine: empty tensor accepted");
    CHECK(bnl_channel_affine_backward(dx, dg, db, dy, NULL, g, b, M, C, &cfg) == BNL_ERR_ARG, "affine: NULL x accepted");
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(rm), free(rv), free(y), free(dx), free(dg), free(db);
    free(wy), free(wdx), free(wdg), free(wdb);
}

int main(void) {
    for (int i = 0; i < BNL_ISA_COUNT; i++)
        if (bnl_isa_available((bnl_isa)i)) {
            CHECK(bnl_isa_force((bnl_isa)i) == BNL_OK, "cannot force available ISA %s", bnl_isa_name((bnl_isa)i));
            g_isas[g_nisa++] = (bnl_isa)i;
        }
    bnl_isa_reset();
    CHECK(g_nisa >= 1 && g_isas[0] == BNL_ISA_SCALAR, "the scalar reference must always be available");
    printf("ISAs:");
    for (int k = 0; k < g_nisa; k++) printf(" %s", bnl_isa_name(g_isas[k]));
    printf(" (active by default: %s)\n", bnl_isa_name(bnl_isa_active()));

    test_fixtures();
    test_simd_vs_scalar();
    // The issue asks for 1e-3. The tighter bounds are ~6x what the shifted two-pass achieves and
    // below what it gives without its M2 correction (s2 - s1^2/R), so they catch that too.
    accuracy_case(1000.0, 0.01, 100000, 8, 1e-4);
    accuracy_case(1e4, 1.0, 100000, 8, 2e-5);
    accuracy_case(1000.0, 3e-3, 100000, 64, 3e-4);   // C = 64: the unrolled vector path
    // |mean|/std = 1e6: the SIMD path's floor. Block means are handed over in float32, and their
    // rounding (ulp(mean)^2/12, here ~5e-4 of the variance) shows up as between-block variance.
    accuracy_case(1e5, 0.1, 100000, 8, 1e-3);
    test_finite_differences();
    test_errors();
    test_no_scale_no_bias();
    test_determinism();
    test_affine();
    bnl_isa_reset();
    return test_summary("test_batchnorm");
}
