// `bnlab bench SUBJECT`: timings as one `key=value` line per measurement, each against a peer
// measured in the same run (machines are noisy; ratios travel, absolute times do not).
#include "bnlab.h"
#include "cli/cli.h"
#include "core/common.h"
#include "core/rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define BENCH_MAX_REPS 200

// Median wall time of reps calls after warm-up calls.
typedef void (*bench_fn)(void *ctx);
static double time_median(bench_fn fn, void *ctx, int reps) {
    double t[BENCH_MAX_REPS];
    if (reps > BENCH_MAX_REPS) reps = BENCH_MAX_REPS;
    fn(ctx), fn(ctx);
    for (int i = 0; i < reps; i++) {
        double t0 = now_ms();
        fn(ctx);
        t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    return t[reps / 2];
}

typedef struct {
    float *x, *y, *dy, *dx, *gamma, *beta, *rm, *rv, *mean, *invstd, *dg, *db;
    size_t M, C;
    int64_t nbt;
    bnl_bn_config cfg;
    int threads;
} bn_ctx;

// The peer: a copy of the same tensor split across the same threads as the kernels.
static void run_memcpy(void *p) {
    bn_ctx *c = p;
    size_t n = c->M * c->C;
#ifdef _OPENMP
#pragma omp parallel num_threads(c->threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t a = n * (size_t)t / (size_t)T, b = n * (size_t)(t + 1) / (size_t)T;
        memcpy(c->y + a, c->x + a, (b - a) * sizeof(float));
    }
#else
    memcpy(c->y, c->x, n * sizeof(float));
#endif
}
static void run_memcpy1(void *p) {
    bn_ctx *c = p;
    memcpy(c->y, c->x, c->M * c->C * sizeof(float));
}
static void run_train(void *p) {
    bn_ctx *c = p;
    bnl_batchnorm_forward_train(c->y, c->mean, c->invstd, NULL, c->rm, c->rv, &c->nbt, c->x, c->gamma, c->beta,
                                c->M, c->C, &c->cfg);
}
static void run_eval(void *p) {
    bn_ctx *c = p;
    bnl_batchnorm_forward_eval(c->y, c->x, c->gamma, c->beta, c->rm, c->rv, c->M, c->C, &c->cfg);
}
static void run_backward(void *p) {
    bn_ctx *c = p;
    bnl_batchnorm_backward_train(c->dx, c->dg, c->db, c->dy, c->x, c->mean, c->invstd, c->gamma, c->beta, c->M,
                                 c->C, &c->cfg);
}

static int bench_bn(long n, long h, long w, long ch, int reps) {
    bn_ctx c;
    memset(&c, 0, sizeof c);
    c.M = (size_t)(n * h * w), c.C = (size_t)ch;
    c.cfg = bnl_bn_config_default();
    c.threads = bnl_threads_effective();
    size_t count = c.M * c.C, bytes = count * sizeof(float);
    float **big[] = {&c.x, &c.y, &c.dy, &c.dx};
    for (size_t i = 0; i < 4; i++)
        if (!(*big[i] = bnl_alloc(bytes))) return cli_error("bench bn: cannot allocate 4 x %zu bytes", bytes);
    float **small[] = {&c.gamma, &c.beta, &c.rm, &c.rv, &c.mean, &c.invstd, &c.dg, &c.db};
    for (size_t i = 0; i < 8; i++)
        if (!(*small[i] = bnl_calloc(c.C, sizeof(float)))) return cli_error("bench bn: out of memory");
    bnl_rng r = bnl_rng_seed(1);
    for (size_t i = 0; i < count; i++) {
        c.x[i] = (float)(bnl_rng_normal(&r) * 2.0 + 0.5);
        c.dy[i] = (float)bnl_rng_normal(&r);
    }
    memset(c.y, 0, bytes), memset(c.dx, 0, bytes);
    for (size_t i = 0; i < c.C; i++) c.gamma[i] = 1.0f + 0.01f * (float)i, c.rv[i] = 1.0f;
    run_train(&c);   // mean/invstd for backward

    double mb = (double)bytes / 1e6;
    printf("# bench bn: N=%ld H=%ld W=%ld C=%ld (%.1f MB per tensor), isa=%s, threads=%d, median of %d\n", n, h, w,
           ch, mb, bnl_isa_name(bnl_isa_active()), c.threads, reps);
    double t_copy = time_median(run_memcpy, &c, reps);
    double t_copy1 = time_median(run_memcpy1, &c, reps);
    // traffic counted as the tensors a kernel must read and write at least once
    printf("bench=bn.memcpy ms=%.3f gbps=%.2f threads=%d\n", t_copy, 2 * mb / t_copy, c.threads);
    printf("bench=bn.memcpy_1thread ms=%.3f gbps=%.2f\n", t_copy1, 2 * mb / t_copy1);
    struct { const char *name; bench_fn fn; double tensors; double target; } cases[] = {
        {"bn.train_forward", run_train, 2, 2.0},
        {"bn.eval_forward", run_eval, 2, 1.3},
        {"bn.backward", run_backward, 3, 3.0},
    };
    int missed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double t = time_median(cases[i].fn, &c, reps);
        double ratio = t / t_copy;
        printf("bench=%s ms=%.3f gbps=%.2f vs_memcpy=%.2f target=%.1f %s\n", cases[i].name, t,
               cases[i].tensors * mb / t, ratio, cases[i].target, ratio <= cases[i].target ? "ok" : "MISSED");
        missed += ratio > cases[i].target;
    }
    for (size_t i = 0; i < 4; i++) bnl_free(*big[i]);
    for (size_t i = 0; i < 8; i++) bnl_free(*small[i]);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    cli_opt opts[] = {
        {"n", "N", "batch size", "32", 0},
        {"hw", "HW", "height and width", "56", 0},
        {"c", "C", "channels", "256", 0},
        {"reps", "K", "timed repetitions (median reported)", "15", 0},
        {"threads", "T", "threads (0 = all cores)", "0", 0},
        {"isa", "NAME", "force an instruction set: scalar, avx2, avx512 (default: best)", NULL, 0},
    };
    int nopts = sizeof opts / sizeof opts[0];
    const char *pos[1];
    int np = 0;
    int rc = cli_parse(argc, argv, "bnlab bench SUBJECT [options]",
                       "Benchmarks. SUBJECT: bn (BatchNorm train forward, eval forward, backward against memcpy).\n"
                       "Prints one key=value line per measurement.",
                       opts, nopts, pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np < 1) return cli_error("bench: missing SUBJECT (bn)"), 2;
    long n = 0, hw = 0, c = 0, reps = 0, threads = 0;
    if (cli_get_long(opts, nopts, "n", 1, 4096, &n) || cli_get_long(opts, nopts, "hw", 1, 4096, &hw) ||
        cli_get_long(opts, nopts, "c", 1, 65536, &c) || cli_get_long(opts, nopts, "reps", 1, BENCH_MAX_REPS, &reps) ||
        cli_get_long(opts, nopts, "threads", 0, 1024, &threads))
        return 2;
    bnl_set_threads((int)threads);
    const char *isa = cli_get(opts, nopts, "isa");
    if (isa) {
        int found = 0;
        for (int i = 0; i < BNL_ISA_COUNT; i++)
            if (!strcmp(isa, bnl_isa_name((bnl_isa)i))) {
                if (bnl_isa_force((bnl_isa)i) != BNL_OK) return cli_error("%s", bnl_last_error());
                found = 1;
            }
        if (!found) return cli_error("--isa: unknown instruction set '%s'", isa), 2;
    }
    if (!strcmp(pos[0], "bn")) return bench_bn(n, hw, hw, c, (int)reps);
    return cli_error("bench: unknown subject '%s' (known: bn)", pos[0]), 2;
}
