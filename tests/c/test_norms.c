// GroupNorm, Batch Renormalization, Ghost BatchNorm and frozen BatchNorm (src/ops/norms.c) against
// double-precision loops written here from the formulas, for every ISA this CPU and build can run.
//
// 1. Forward (outputs, saved statistics, running statistics) and backward (dx, dgamma, dbeta) on
//    random data: channel counts below/at/above the vector widths, groups 1..C, several virtual
//    batch sizes, ReLU off and on, rows spanning several statistic blocks, in place.
// 2. The double references' backward against central finite differences of their forward (so the
//    formulas the kernels are judged by are themselves right).
// 3. Thread-count independence (bitwise), and the error values: G not dividing C, V not dividing N,
//    bad r_max/d_max, one value per channel.
//
// Sizes: N images, HW rows per image, C channels, G groups, V images per virtual batch.
#include "bnlab.h"
#include "core/common.h"
#include "test_data.h"
#include "util.h"

#include <stdint.h>

static bnl_isa g_isas[BNL_ISA_COUNT];
static int g_nisa = 0;
static char g_ctx[256];

static double max_abs_d(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

// got (float) against want (double): |got - want| <= atol*max(1, max|want|) + rtol*|want|
static int close_d(const char *what, const float *got, const double *want, size_t n, double atol, double rtol) {
    float *w = fmalloc(n);
    for (size_t i = 0; i < n; i++) w[i] = (float)want[i];
    char label[400];
    snprintf(label, sizeof label, "%s %s", g_ctx, what);
    double sc = max_abs_d(want, n);
    int ok = check_close(label, got, w, n, atol * (sc > 1 ? sc : 1), rtol);
    free(w);
    return ok;
}

#define CHECK_OK(call)                                                                                       \
    do {                                                                                                     \
        bnl_status s_ = (call);                                                                              \
        CHECK(s_ == BNL_OK, "%s: %s returned %s: %s", g_ctx, #call, bnl_status_str(s_), bnl_last_error()); \
    } while (0)

static double *dmalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) exit(2);
    return p;
}

// ---------------------------------------------------------------------------------------------
// Double-precision references. A "set" is the values one mean/variance covers. Normalizing one set
// with saved mu/is: xhat = (x - mu)*is, y = a*xhat + b per element (a, b per channel, already
// including renorm's r and d), ReLU optional. Backward through a set whose statistics depend on x
// (train) with gh = a*g: dx = is*(gh - mean(gh) - xhat*mean(gh*xhat)); constant statistics: is*gh.

// GroupNorm forward in double. y, mu, var: (N*HW*C), (N*G), (N*G).
static void gn_ref(double *y, double *mu, double *var, const double *x, const double *g, const double *b, size_t N,
                   size_t HW, size_t C, size_t G, double eps, int relu) {
    size_t Cg = C / G;
    for (size_t n = 0; n < N; n++)
        for (size_t gr = 0; gr < G; gr++) {
            double s = 0, q = 0, cnt = (double)(HW * Cg);
            for (size_t r = 0; r < HW; r++)
                for (size_t j = 0; j < Cg; j++) s += x[(n * HW + r) * C + gr * Cg + j];
            double m = s / cnt;
            for (size_t r = 0; r < HW; r++)
                for (size_t j = 0; j < Cg; j++) q += pow(x[(n * HW + r) * C + gr * Cg + j] - m, 2);
            double v = q / cnt, is = 1 / sqrt(v + eps);
            mu[n * G + gr] = m, var[n * G + gr] = v;
            for (size_t r = 0; r < HW; r++)
                for (size_t j = 0; j < Cg; j++) {
                    size_t i = (n * HW + r) * C + gr * Cg + j, c = gr * Cg + j;
                    double t = (x[i] - m) * is * g[c] + b[c];
                    y[i] = relu && t <= 0 ? 0 : t;
                }
        }
}

static void gn_ref_bwd(double *dx, double *dg, double *db, const double *dy, const double *x, const double *g,
                       const double *b, size_t N, size_t HW, size_t C, size_t G, double eps, int relu) {
    size_t Cg = C / G, M = N * HW * C;
    double *y = dmalloc(M), *mu = dmalloc(N * G), *var = dmalloc(N * G);
    gn_ref(y, mu, var, x, g, b, N, HW, C, G, eps, relu);
    for (size_t c = 0; c < C; c++) dg[c] = 0, db[c] = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t gr = 0; gr < G; gr++) {
            double is = 1 / sqrt(var[n * G + gr] + eps), s1 = 0, s2 = 0, cnt = (double)(HW * Cg);
            for (size_t r = 0; r < HW; r++)
                for (size_t j = 0; j < Cg; j++) {
                    size_t i = (n * HW + r) * C + gr * Cg + j, c = gr * Cg + j;
                    double xh = (x[i] - mu[n * G + gr]) * is, gg = relu && y[i] <= 0 ? 0 : dy[i];
                    s1 += g[c] * gg, s2 += g[c] * gg * xh;
                    dg[c] += gg * xh, db[c] += gg;
                }
            for (size_t r = 0; r < HW; r++)
                for (size_t j = 0; j < Cg; j++) {
                    size_t i = (n * HW + r) * C + gr * Cg + j, c = gr * Cg + j;
                    double xh = (x[i] - mu[n * G + gr]) * is, gg = relu && y[i] <= 0 ? 0 : dy[i];
                    dx[i] = is * (g[c] * gg - s1 / cnt - xh * s2 / cnt);
                }
        }
    free(y), free(mu), free(var);
}

// BatchNorm over rows [r0, r0+rows) of x (rows, C): mean/var per channel, y = (xhat*r + d)*g + b.
// r, d NULL: plain BatchNorm. Ghost = this per virtual batch; Renorm = with r, d.
static void bn_ref(double *y, double *mu, double *var, const double *x, const double *g, const double *b,
                   const double *r, const double *d, size_t rows, size_t C, double eps, int relu) {
    for (size_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (size_t i = 0; i < rows; i++) s += x[i * C + c];
        double m = s / (double)rows;
        for (size_t i = 0; i < rows; i++) q += pow(x[i * C + c] - m, 2);
        double v = q / (double)rows, is = 1 / sqrt(v + eps);
        mu[c] = m, var[c] = v;
        for (size_t i = 0; i < rows; i++) {
            double xh = (x[i * C + c] - m) * is;
            double t = (r ? xh * r[c] + d[c] : xh) * g[c] + b[c];
            y[i * C + c] = relu && t <= 0 ? 0 : t;
        }
    }
}

// Its backward with r, d constant (accumulates dg, db).
static void bn_ref_bwd(double *dx, double *dg, double *db, const double *dy, const double *x, const double *g,
                       const double *b, const double *r, const double *d, size_t rows, size_t C, double eps,
                       int relu) {
    double *y = dmalloc(rows * C), *mu = dmalloc(C), *var = dmalloc(C);
    bn_ref(y, mu, var, x, g, b, r, d, rows, C, eps, relu);
    for (size_t c = 0; c < C; c++) {
        double is = 1 / sqrt(var[c] + eps), a = g[c] * (r ? r[c] : 1), s1 = 0, s2 = 0;
        for (size_t i = 0; i < rows; i++) {
            double xh = (x[i * C + c] - mu[c]) * is, gg = relu && y[i * C + c] <= 0 ? 0 : dy[i * C + c];
            s1 += gg, s2 += gg * xh;
        }
        dg[c] += r ? r[c] * s2 + d[c] * s1 : s2;
        db[c] += s1;
        for (size_t i = 0; i < rows; i++) {
            double xh = (x[i * C + c] - mu[c]) * is, gg = relu && y[i * C + c] <= 0 ? 0 : dy[i * C + c];
            dx[i * C + c] = a * is * (gg - s1 / (double)rows - xh * s2 / (double)rows);
        }
    }
    free(y), free(mu), free(var);
}

// renorm's r and d from batch (mu, var) and running statistics, in double
static void renorm_rd(double *r, double *d, const double *mu, const double *var, const float *rm, const float *rv,
                      size_t C, double eps, double rmax, double dmax) {
    for (size_t c = 0; c < C; c++) {
        double sr = sqrt((double)rv[c] + eps);
        r[c] = fmin(fmax(sqrt(var[c] + eps) / sr, 1 / rmax), rmax);
        d[c] = fmin(fmax((mu[c] - rm[c]) / sr, -dmax), dmax);
    }
}

static double *to_d(const float *a, size_t n) {
    double *p = dmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = a[i];
    return p;
}

// ---------------------------------------------------------------------------------------------
// 1. Kernels against the references

static void test_groupnorm(size_t N, size_t HW, size_t C, size_t G, int relu) {
    size_t M = N * HW * C;
    float *x = frand(M, -2.0, 3.0), *dy = frand(M, -1.0, 1.0), *g = frand(C, 0.5, 1.5), *b = frand(C, -0.5, 0.5);
    for (size_t i = 0; i < M; i++) x[i] += (float)(i % C) * 0.3f;   // channels of a group differ in mean
    double *xd = to_d(x, M), *dyd = to_d(dy, M), *gd = to_d(g, C), *bd = to_d(b, C);
    double *y_ref = dmalloc(M), *mu_ref = dmalloc(N * G), *var_ref = dmalloc(N * G), *is_ref = dmalloc(N * G);
    double *dx_ref = dmalloc(M), *dg_ref = dmalloc(C), *db_ref = dmalloc(C);
    gn_ref(y_ref, mu_ref, var_ref, xd, gd, bd, N, HW, C, G, 1e-5, relu);
    for (size_t i = 0; i < N * G; i++) is_ref[i] = 1 / sqrt(var_ref[i] + 1e-5);
    gn_ref_bwd(dx_ref, dg_ref, db_ref, dyd, xd, gd, bd, N, HW, C, G, 1e-5, relu);
    bnl_bn_config cfg = bnl_bn_config_default();
    cfg.relu = relu;
    float *y = fmalloc(M), *dx = fmalloc(M), *mean = fmalloc(N * G), *is = fmalloc(N * G), *var = fmalloc(N * G);
    float *dg = fmalloc(C), *db = fmalloc(C);
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s groupnorm N=%zu HW=%zu C=%zu G=%zu relu=%d]", bnl_isa_name(g_isas[k]), N, HW,
                 C, G, relu);
        CHECK_OK(bnl_groupnorm_forward(y, mean, is, var, x, g, b, N, HW, C, G, &cfg));
        close_d("y", y, y_ref, M, 1e-5, 1e-5);
        close_d("mean", mean, mu_ref, N * G, 1e-6, 1e-6);
        close_d("var", var, var_ref, N * G, 1e-6, 1e-5);
        close_d("invstd", is, is_ref, N * G, 1e-6, 1e-5);
        fill(dg, C, 0.25f), fill(db, C, -0.5f);   // backward adds
        CHECK_OK(bnl_groupnorm_backward(dx, dg, db, dy, x, mean, is, g, b, N, HW, C, G, &cfg));
        for (size_t c = 0; c < C; c++) dg[c] -= 0.25f, db[c] += 0.5f;
        close_d("dx", dx, dx_ref, M, 1e-5, 1e-4);
        close_d("dgamma", dg, dg_ref, C, 1e-5, 1e-4);
        close_d("dbeta", db, db_ref, C, 1e-5, 1e-4);
        // in place: y over x, dx over dy; the same numbers
        float *xi = fmalloc(M), *gi = fmalloc(M);
        memcpy(xi, x, M * sizeof(float)), memcpy(gi, dy, M * sizeof(float));
        CHECK_OK(bnl_groupnorm_forward(xi, mean, is, NULL, xi, g, b, N, HW, C, G, &cfg));
        CHECK(!memcmp(xi, y, M * sizeof(float)), "%s in-place forward differs", g_ctx);
        CHECK_OK(bnl_groupnorm_backward(gi, NULL, NULL, gi, x, mean, is, g, b, N, HW, C, G, &cfg));
        CHECK(!memcmp(gi, dx, M * sizeof(float)), "%s in-place backward differs", g_ctx);
        free(xi), free(gi);
    }
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(xd), free(dyd), free(gd), free(bd), free(y_ref), free(mu_ref);
    free(var_ref), free(is_ref), free(dx_ref), free(dg_ref), free(db_ref), free(y), free(dx), free(mean), free(is);
    free(var), free(dg), free(db);
}

static void test_renorm(size_t M, size_t C, int relu, double rmax, double dmax) {
    size_t n = M * C;
    float *x = frand(n, -1.0, 3.0), *dy = frand(n, -1.0, 1.0), *g = frand(C, 0.5, 1.5), *b = frand(C, -0.5, 0.5);
    // running statistics spread so that some r and d clip and some do not
    float *rm0 = frand(C, -1.0, 3.0), *rv0 = frand(C, 0.01, 20.0);
    double *xd = to_d(x, n), *dyd = to_d(dy, n), *gd = to_d(g, C), *bd = to_d(b, C);
    double *y_ref = dmalloc(n), *mu = dmalloc(C), *var = dmalloc(C), *r = dmalloc(C), *d = dmalloc(C);
    double *yb = dmalloc(n), *dx_ref = dmalloc(n), *dg_ref = dmalloc(C), *db_ref = dmalloc(C), *rm_ref = dmalloc(C);
    double *rv_ref = dmalloc(C);
    bn_ref(yb, mu, var, xd, gd, bd, NULL, NULL, M, C, 1e-5, 0);
    renorm_rd(r, d, mu, var, rm0, rv0, C, 1e-5, rmax, dmax);
    bn_ref(y_ref, mu, var, xd, gd, bd, r, d, M, C, 1e-5, relu);
    bn_ref_bwd(dx_ref, dg_ref, db_ref, dyd, xd, gd, bd, r, d, M, C, 1e-5, relu);
    int clipped = 0, free_ = 0;
    for (size_t c = 0; c < C; c++) {
        rm_ref[c] = 0.9 * rm0[c] + 0.1 * mu[c], rv_ref[c] = 0.9 * rv0[c] + 0.1 * var[c];
        int cl = fabs(r[c] - rmax) < 1e-12 || fabs(r[c] - 1 / rmax) < 1e-12 || fabs(fabs(d[c]) - dmax) < 1e-12;
        clipped += cl, free_ += !cl;
    }
    CHECK(C < 8 || rmax == 1.0 || (clipped > 0 && free_ > 0), "renorm test data: want clipped and unclipped channels (%d, %d)",
          clipped, free_);
    bnl_bn_config cfg = bnl_bn_config_default();
    cfg.relu = relu;
    float *y = fmalloc(n), *dx = fmalloc(n), *mean = fmalloc(C), *is = fmalloc(C), *vo = fmalloc(C);
    float *ro = fmalloc(C), *dO = fmalloc(C), *rm = fmalloc(C), *rv = fmalloc(C), *dg = fmalloc(C), *db = fmalloc(C);
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s renorm M=%zu C=%zu relu=%d rmax=%g dmax=%g]", bnl_isa_name(g_isas[k]), M, C,
                 relu, rmax, dmax);
        memcpy(rm, rm0, C * sizeof(float)), memcpy(rv, rv0, C * sizeof(float));
        int64_t tracked = 3;
        CHECK_OK(bnl_batchrenorm_forward_train(y, mean, is, vo, ro, dO, rm, rv, &tracked, x, g, b, M, C, (float)rmax,
                                               (float)dmax, &cfg));
        close_d("y", y, y_ref, n, 1e-5, 1e-5);
        close_d("r", ro, r, C, 1e-6, 1e-5);
        close_d("d", dO, d, C, 1e-6, 1e-5);
        close_d("var", vo, var, C, 1e-6, 1e-5);
        close_d("running_mean", rm, rm_ref, C, 1e-6, 1e-5);
        close_d("running_var", rv, rv_ref, C, 1e-6, 1e-5);
        CHECK(tracked == 4, "%s num_batches_tracked %lld", g_ctx, (long long)tracked);
        fill(dg, C, 0.0f), fill(db, C, 0.0f);
        CHECK_OK(bnl_batchrenorm_backward_train(dx, dg, db, dy, x, mean, is, ro, dO, g, b, M, C, &cfg));
        close_d("dx", dx, dx_ref, n, 1e-5, 1e-4);
        close_d("dgamma", dg, dg_ref, C, 1e-5, 1e-4);
        close_d("dbeta", db, db_ref, C, 1e-5, 1e-4);
    }
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(rm0), free(rv0), free(xd), free(dyd), free(gd), free(bd), free(y_ref);
    free(mu), free(var), free(r), free(d), free(yb), free(dx_ref), free(dg_ref), free(db_ref), free(rm_ref);
    free(rv_ref), free(y), free(dx), free(mean), free(is), free(vo), free(ro), free(dO), free(rm), free(rv), free(dg);
    free(db);
}

static void test_ghost(size_t N, size_t HW, size_t C, size_t V, int relu, int unbiased) {
    size_t n = N * HW * C, nv = N / V, rows = V * HW;
    float *x = frand(n, -1.0, 3.0), *dy = frand(n, -1.0, 1.0), *g = frand(C, 0.5, 1.5), *b = frand(C, -0.5, 0.5);
    for (size_t i = 0; i < n; i++) x[i] += (float)(i / (HW * C)) * 0.2f;   // images differ: virtual batches do
    float *rm0 = frand(C, -1.0, 1.0), *rv0 = frand(C, 0.5, 2.0);
    double *xd = to_d(x, n), *dyd = to_d(dy, n), *gd = to_d(g, C), *bd = to_d(b, C);
    double *y_ref = dmalloc(n), *mu = dmalloc(nv * C), *var = dmalloc(nv * C), *dx_ref = dmalloc(n);
    double *dg_ref = dmalloc(C), *db_ref = dmalloc(C), *rm_ref = dmalloc(C), *rv_ref = dmalloc(C);
    for (size_t v = 0; v < nv; v++) {
        bn_ref(y_ref + v * rows * C, mu + v * C, var + v * C, xd + v * rows * C, gd, bd, NULL, NULL, rows, C, 1e-5,
               relu);
        bn_ref_bwd(dx_ref + v * rows * C, dg_ref, db_ref, dyd + v * rows * C, xd + v * rows * C, gd, bd, NULL, NULL,
                   rows, C, 1e-5, relu);
    }
    for (size_t c = 0; c < C; c++) {
        double am = 0, av = 0;
        for (size_t v = 0; v < nv; v++) am += mu[v * C + c] / nv, av += var[v * C + c] / nv;
        if (unbiased) av *= (double)rows / (double)(rows - 1);
        rm_ref[c] = 0.9 * rm0[c] + 0.1 * am, rv_ref[c] = 0.9 * rv0[c] + 0.1 * av;
    }
    bnl_bn_config cfg = bnl_bn_config_default();
    cfg.relu = relu, cfg.unbiased = unbiased;
    float *y = fmalloc(n), *dx = fmalloc(n), *mean = fmalloc(nv * C), *is = fmalloc(nv * C), *vo = fmalloc(nv * C);
    float *rm = fmalloc(C), *rv = fmalloc(C), *dg = fmalloc(C), *db = fmalloc(C);
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s ghost N=%zu HW=%zu C=%zu V=%zu relu=%d unbiased=%d]", bnl_isa_name(g_isas[k]),
                 N, HW, C, V, relu, unbiased);
        memcpy(rm, rm0, C * sizeof(float)), memcpy(rv, rv0, C * sizeof(float));
        int64_t tracked = 0;
        CHECK_OK(bnl_ghostbn_forward_train(y, mean, is, vo, rm, rv, &tracked, x, g, b, N, HW, C, V, &cfg));
        close_d("y", y, y_ref, n, 1e-5, 1e-5);
        close_d("mean", mean, mu, nv * C, 1e-6, 1e-5);
        close_d("var", vo, var, nv * C, 1e-6, 1e-5);
        close_d("running_mean", rm, rm_ref, C, 1e-6, 1e-5);
        close_d("running_var", rv, rv_ref, C, 1e-6, 1e-5);
        CHECK(tracked == 1, "%s num_batches_tracked moved %lld times (once per forward)", g_ctx, (long long)tracked);
        fill(dg, C, 0.0f), fill(db, C, 0.0f);
        CHECK_OK(bnl_ghostbn_backward_train(dx, dg, db, dy, x, mean, is, g, b, N, HW, C, V, &cfg));
        close_d("dx", dx, dx_ref, n, 1e-5, 1e-4);
        close_d("dgamma", dg, dg_ref, C, 1e-5, 1e-4);
        close_d("dbeta", db, db_ref, C, 1e-5, 1e-4);
    }
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(rm0), free(rv0), free(xd), free(dyd), free(gd), free(bd), free(y_ref);
    free(mu), free(var), free(dx_ref), free(dg_ref), free(db_ref), free(rm_ref), free(rv_ref), free(y), free(dx);
    free(mean), free(is), free(vo), free(rm), free(rv), free(dg), free(db);
}

// Frozen BatchNorm in training is BatchNorm's eval pair: running statistics constant, never written.
static void test_frozen(void) {
    size_t M = 37, C = 19, n = M * C;
    float *x = frand(n, -1.0, 2.0), *dy = frand(n, -1.0, 1.0), *g = frand(C, 0.5, 1.5), *b = frand(C, -0.5, 0.5);
    float *rm = frand(C, -1.0, 1.0), *rv = frand(C, 0.5, 2.0), *rm0 = fmalloc(C), *rv0 = fmalloc(C);
    memcpy(rm0, rm, C * sizeof(float)), memcpy(rv0, rv, C * sizeof(float));
    double *y_ref = dmalloc(n), *dx_ref = dmalloc(n), *dg_ref = dmalloc(C), *db_ref = dmalloc(C);
    for (size_t c = 0; c < C; c++) {
        double is = 1 / sqrt((double)rv[c] + 1e-5);
        for (size_t i = 0; i < M; i++) {
            double xh = (x[i * C + c] - (double)rm[c]) * is;
            y_ref[i * C + c] = xh * g[c] + b[c];
            dx_ref[i * C + c] = dy[i * C + c] * g[c] * is;
            dg_ref[c] += dy[i * C + c] * xh, db_ref[c] += dy[i * C + c];
        }
    }
    bnl_bn_config cfg = bnl_bn_config_default();
    float *y = fmalloc(n), *dx = fmalloc(n), *dg = fmalloc(C), *db = fmalloc(C);
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s frozen]", bnl_isa_name(g_isas[k]));
        CHECK_OK(bnl_batchnorm_forward_eval(y, x, g, b, rm, rv, M, C, &cfg));
        fill(dg, C, 0.0f), fill(db, C, 0.0f);
        CHECK_OK(bnl_batchnorm_backward_eval(dx, dg, db, dy, x, g, b, rm, rv, M, C, &cfg));
        close_d("y", y, y_ref, n, 1e-5, 1e-5);
        close_d("dx", dx, dx_ref, n, 1e-5, 1e-4);
        close_d("dgamma", dg, dg_ref, C, 1e-5, 1e-4);
        close_d("dbeta", db, db_ref, C, 1e-5, 1e-4);
        CHECK(!memcmp(rm, rm0, C * sizeof(float)) && !memcmp(rv, rv0, C * sizeof(float)), "%s running stats moved",
              g_ctx);
    }
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(rm), free(rv), free(rm0), free(rv0), free(y_ref), free(dx_ref);
    free(dg_ref), free(db_ref), free(y), free(dx), free(dg), free(db);
}

// ---------------------------------------------------------------------------------------------
// 2. The references' backward against finite differences of their forward: loss = sum(y * w).

static double loss_gn(const double *x, const double *g, const double *b, const double *w, size_t N, size_t HW,
                      size_t C, size_t G) {
    size_t M = N * HW * C;
    double *y = dmalloc(M), *mu = dmalloc(N * G), *var = dmalloc(N * G), L = 0;
    gn_ref(y, mu, var, x, g, b, N, HW, C, G, 1e-5, 0);
    for (size_t i = 0; i < M; i++) L += y[i] * w[i];
    free(y), free(mu), free(var);
    return L;
}

static double loss_bn(const double *x, const double *g, const double *b, const double *r, const double *d,
                      const double *w, size_t rows, size_t C) {
    double *y = dmalloc(rows * C), *mu = dmalloc(C), *var = dmalloc(C), L = 0;
    bn_ref(y, mu, var, x, g, b, r, d, rows, C, 1e-5, 0);
    for (size_t i = 0; i < rows * C; i++) L += y[i] * w[i];
    free(y), free(mu), free(var);
    return L;
}

static void test_reference_gradients(void) {
    size_t N = 2, HW = 3, C = 4, G = 2, M = N * HW * C;
    double *x = dmalloc(M), *w = dmalloc(M), g[4], b[4], r[4] = {1.3, 0.7, 1.0, 2.0}, d[4] = {0.1, -0.5, 0, 0.3};
    for (size_t i = 0; i < M; i++) x[i] = bnl_rng_uniform(&g_rng) * 3 - 1, w[i] = bnl_rng_uniform(&g_rng) * 2 - 1;
    for (size_t c = 0; c < C; c++) g[c] = 0.5 + bnl_rng_uniform(&g_rng), b[c] = bnl_rng_uniform(&g_rng) - 0.5;
    double *dx = dmalloc(M), dg[4], db[4], h = 1e-6;
    snprintf(g_ctx, sizeof g_ctx, "[reference finite differences]");
    for (int kind = 0; kind < 2; kind++) {   // 0 groupnorm, 1 renorm (r, d constant)
        for (size_t c = 0; c < C; c++) dg[c] = 0, db[c] = 0;
        if (kind == 0) gn_ref_bwd(dx, dg, db, w, x, g, b, N, HW, C, G, 1e-5, 0);
        else bn_ref_bwd(dx, dg, db, w, x, g, b, r, d, N * HW, C, 1e-5, 0);
#define LOSS() (kind == 0 ? loss_gn(x, g, b, w, N, HW, C, G) : loss_bn(x, g, b, r, d, w, N * HW, C))
        double worst = 0;
        for (size_t i = 0; i < M + 2 * C; i++) {
            double *p = i < M ? &x[i] : i < M + C ? &g[i - M] : &b[i - M - C];
            double an = i < M ? dx[i] : i < M + C ? dg[i - M] : db[i - M - C], keep = *p;
            *p = keep + h;
            double lp = LOSS();
            *p = keep - h;
            double lm = LOSS();
            *p = keep;
            double e = fabs((lp - lm) / (2 * h) - an) / (1e-6 + fabs(an));
            worst = e > worst ? e : worst;
        }
#undef LOSS
        CHECK(worst < 1e-5, "%s %s: worst relative error %.3g", g_ctx, kind ? "renorm" : "groupnorm", worst);
    }
    free(x), free(w), free(dx);
}

// ---------------------------------------------------------------------------------------------
// 3. Threads and errors

static void test_threads(void) {
    size_t N = 5, HW = 300, C = 24, G = 6, M = N * HW * C;
    float *x = frand(M, -1, 2), *dy = frand(M, -1, 1), *g = frand(C, 0.5, 1.5), *b = frand(C, -0.5, 0.5);
    float *y1 = fmalloc(M), *y2 = fmalloc(M), *dx1 = fmalloc(M), *dx2 = fmalloc(M), mean[30], is[30];
    float dg1[24] = {0}, dg2[24] = {0}, db1[24] = {0}, db2[24] = {0};
    bnl_bn_config cfg = bnl_bn_config_default();
    for (int k = 0; k < g_nisa; k++) {
        bnl_isa_force(g_isas[k]);
        snprintf(g_ctx, sizeof g_ctx, "[%s groupnorm threads]", bnl_isa_name(g_isas[k]));
        bnl_set_threads(1);
        CHECK_OK(bnl_groupnorm_forward(y1, mean, is, NULL, x, g, b, N, HW, C, G, &cfg));
        CHECK_OK(bnl_groupnorm_backward(dx1, dg1, db1, dy, x, mean, is, g, b, N, HW, C, G, &cfg));
        bnl_set_threads(3);
        CHECK_OK(bnl_groupnorm_forward(y2, mean, is, NULL, x, g, b, N, HW, C, G, &cfg));
        CHECK_OK(bnl_groupnorm_backward(dx2, dg2, db2, dy, x, mean, is, g, b, N, HW, C, G, &cfg));
        CHECK(!memcmp(y1, y2, M * 4) && !memcmp(dx1, dx2, M * 4) && !memcmp(dg1, dg2, sizeof dg1) &&
                  !memcmp(db1, db2, sizeof db1),
              "%s results depend on the thread count", g_ctx);
    }
    bnl_set_threads(0);
    bnl_isa_reset();
    free(x), free(dy), free(g), free(b), free(y1), free(y2), free(dx1), free(dx2);
}

static void expect(bnl_status got, bnl_status want, const char *needle, const char *what) {
    CHECK(got == want, "%s: got %s, want %s (%s)", what, bnl_status_str(got), bnl_status_str(want), bnl_last_error());
    CHECK(strstr(bnl_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, bnl_last_error(), needle);
}

static void test_errors(void) {
    float x[48], y[48], g[4] = {1, 1, 1, 1}, b[4] = {0}, m[48], is[48], rm[4] = {0}, rv[4] = {1, 1, 1, 1};
    for (int i = 0; i < 48; i++) x[i] = (float)i;
    bnl_bn_config cfg = bnl_bn_config_default();
    snprintf(g_ctx, sizeof g_ctx, "[errors]");
    expect(bnl_groupnorm_forward(y, m, is, NULL, x, g, b, 3, 4, 4, 3, &cfg), BNL_ERR_ARG, "3 groups do not divide 4 channels",
           "groupnorm G=3 C=4");
    expect(bnl_groupnorm_forward(y, m, is, NULL, x, g, b, 3, 4, 4, 0, &cfg), BNL_ERR_ARG, "0 groups", "groupnorm G=0");
    expect(bnl_groupnorm_backward(y, NULL, NULL, x, x, m, is, g, b, 3, 4, 4, 8, &cfg), BNL_ERR_ARG,
           "8 groups do not divide 4", "groupnorm backward G=8");
    expect(bnl_ghostbn_forward_train(y, m, is, NULL, rm, rv, NULL, x, g, b, 3, 4, 4, 2, &cfg), BNL_ERR_BATCH,
           "virtual batch size 2 does not divide the batch of 3 images", "ghost V=2 N=3");
    expect(bnl_ghostbn_forward_train(y, m, is, NULL, rm, rv, NULL, x, g, b, 12, 1, 4, 1, &cfg), BNL_ERR_BATCH,
           "more than 1 value per channel", "ghost V*HW=1");
    CHECK(rm[0] == 0 && rv[0] == 1, "failed ghost call touched running stats");
    expect(bnl_batchrenorm_forward_train(y, m, is, NULL, NULL, NULL, rm, rv, NULL, x, g, b, 12, 4, 0.5f, 1.0f, &cfg),
           BNL_ERR_ARG, "r_max must be >= 1", "renorm r_max 0.5");
    expect(bnl_batchrenorm_forward_train(y, m, is, NULL, NULL, NULL, rm, rv, NULL, x, g, b, 12, 4, 2.0f, NAN, &cfg),
           BNL_ERR_ARG, "d_max", "renorm d_max NaN");
    expect(bnl_batchrenorm_forward_train(y, m, is, NULL, NULL, NULL, rm, rv, NULL, x, g, b, 1, 4, 2.0f, 1.0f, &cfg),
           BNL_ERR_BATCH, "more than 1 value per channel", "renorm M=1");
    CHECK(rm[0] == 0 && rv[0] == 1, "failed renorm call touched running stats");
    // GroupNorm with one value per group is allowed (variance 0, as torch)
    CHECK_OK(bnl_groupnorm_forward(y, m, is, NULL, x, g, b, 12, 1, 4, 4, &cfg));
}

int main(void) {
    g_rng = bnl_rng_seed(20260531);
    for (int i = 0; i < BNL_ISA_COUNT; i++)
        if (bnl_isa_available((bnl_isa)i)) g_isas[g_nisa++] = (bnl_isa)i;
    CHECK(g_nisa >= 1 && g_isas[0] == BNL_ISA_SCALAR, "the scalar reference must always be available");
    printf("ISAs:");
    for (int k = 0; k < g_nisa; k++) printf(" %s", bnl_isa_name(g_isas[k]));
    printf("\n");
    // channel counts below/at/above the 4/8/16-lane widths and the 4-vector tile; groups 1..C
    static const size_t gn_cases[][4] = {{2, 35, 6, 3},  {3, 20, 8, 1},   {2, 9, 16, 16}, {2, 11, 40, 8},
                                         {1, 7, 67, 67}, {2, 25, 96, 32}, {2, 5, 130, 2}, {2, 4100, 8, 2}};
    for (size_t i = 0; i < sizeof gn_cases / sizeof gn_cases[0]; i++)
        for (int relu = 0; relu < 2; relu++)
            test_groupnorm(gn_cases[i][0], gn_cases[i][1], gn_cases[i][2], gn_cases[i][3], relu);
    for (int relu = 0; relu < 2; relu++) {
        test_renorm(64, 33, relu, 3.0, 5.0);
        test_renorm(7, 16, relu, 2.5, 3.0);
        test_renorm(40, 64, relu, 1.0, 0.0);   // r_max 1, d_max 0: plain BatchNorm
        test_ghost(8, 6, 20, 2, relu, 0);
        test_ghost(6, 1, 33, 3, relu, 1);
        test_ghost(4, 30, 16, 4, relu, 0);   // one virtual batch: BatchNorm
        test_ghost(8, 25, 8, 1, relu, 0);
    }
    test_frozen();
    test_reference_gradients();
    test_threads();
    test_errors();
    return test_summary("test_norms");
}
