// `bnlab bench SUBJECT`: timings as one `key=value` line per measurement, each against a peer
// measured in the same run (machines are noisy; ratios travel, absolute times do not).
#include "bnlab.h"
#include "cli/cli.h"
#include "core/common.h"
#include "core/rng.h"
#include "io/statedict.h"
#include "model/resnet.h"
#include "ops/ops.h"

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

static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Median CPU time (all threads) of the last time_median: on a shared machine, wall time includes
// waiting for a core, CPU time does not.
static double g_cpu_median;

// Median wall time of reps calls after warm-up calls.
typedef void (*bench_fn)(void *ctx);
static double time_median(bench_fn fn, void *ctx, int reps) {
    double t[BENCH_MAX_REPS], c[BENCH_MAX_REPS];
    if (reps > BENCH_MAX_REPS) reps = BENCH_MAX_REPS;
    fn(ctx), fn(ctx);
    for (int i = 0; i < reps; i++) {
        double t0 = now_ms(), c0 = cpu_ms();
        fn(ctx);
        t[i] = now_ms() - t0, c[i] = cpu_ms() - c0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    qsort(c, (size_t)reps, sizeof(double), cmp_double);
    g_cpu_median = c[reps / 2];
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

// ---------------------------------------------------------------------------------------------
// bench resnet50: the whole model, eval forward or a train step (forward, backward, SGD).

typedef struct {
    bnl_resnet *m;
    float *x, *logits;
    int64_t *labels;
    int N, S;
    bnl_sgd sgd;
    bnl_status st;
} model_ctx;

static void run_model_forward(void *p) {
    model_ctx *c = p;
    bnl_status s = bnl_resnet_forward(c->m, c->logits, c->x, c->N, c->S, c->S);
    if (s != BNL_OK) c->st = s;
}
static void run_model_step(void *p) {
    model_ctx *c = p;
    float loss = 0.0f;
    bnl_status s = bnl_resnet_step(c->m, &loss, c->x, c->N, c->S, c->S, c->labels, &c->sgd);
    if (s != BNL_OK) c->st = s;
}

static int bench_resnet50(const char *mode, long batch, long size, int reps, const char *weights, long depth) {
    int train = !strcmp(mode, "train");
    if (!train && strcmp(mode, "eval")) return cli_error("--mode: expected 'eval' or 'train', got '%s'", mode), 2;
    model_ctx c;
    memset(&c, 0, sizeof c);
    bnl_status s;
    if (weights) {
        s = bnl_resnet_load_file(&c.m, weights);
    } else {
        bnl_resnet_spec sp;
        s = bnl_resnet_spec_named(&sp, (int)depth, 1.0f, 1000);
        if (s == BNL_OK) s = bnl_resnet_create(&c.m, &sp, 0);
    }
    if (s != BNL_OK) return cli_error("%s", bnl_last_error());
    const bnl_resnet_info *info = bnl_resnet_get_info(c.m);
    c.N = (int)batch, c.S = (int)size;
    size_t nx = (size_t)batch * (size_t)size * (size_t)size * (size_t)info->in_channels;
    c.x = bnl_alloc(nx * sizeof(float));
    c.logits = bnl_alloc((size_t)batch * (size_t)info->num_classes * sizeof(float));
    c.labels = bnl_alloc((size_t)batch * sizeof(int64_t));
    if (!c.x || !c.logits || !c.labels) {
        bnl_resnet_free(c.m);
        return cli_error("bench resnet50: out of memory");
    }
    bnl_rng r = bnl_rng_seed(7);
    for (size_t i = 0; i < nx; i++) c.x[i] = (float)bnl_rng_normal(&r);
    for (long i = 0; i < batch; i++) c.labels[i] = (int64_t)(bnl_rng_uniform(&r) * info->num_classes) % info->num_classes;
    c.sgd = bnl_sgd_default();
    c.sgd.lr = 1e-3f, c.sgd.momentum = 0.9f, c.sgd.weight_decay = 1e-4f;
    bnl_resnet_set_training(c.m, train);
    int threads = bnl_threads_effective();
    double t = time_median(train ? run_model_step : run_model_forward, &c, reps);
    int rc = 0;
    if (c.st != BNL_OK) {
        rc = cli_error("bench resnet50: %s", bnl_last_error());
    } else if (train) {
        printf("bench=resnet%ld.train_step.native ms=%.1f images_per_s=%.2f batch=%ld size=%ldx%ld threads=%d isa=%s "
               "reps=%d cpu_ms=%.1f\n", depth, t, 1000.0 * (double)batch / t, batch, size, size, threads,
               bnl_isa_name(bnl_isa_active()), reps, g_cpu_median);
    } else {
        printf("bench=resnet%ld.forward.native ms=%.2f images_per_s=%.2f batch=%ld size=%ldx%ld threads=%d isa=%s "
               "reps=%d cpu_ms=%.2f\n", depth, t, 1000.0 * (double)batch / t, batch, size, size, threads,
               bnl_isa_name(bnl_isa_active()), reps, g_cpu_median);
    }
    bnl_free(c.x), bnl_free(c.logits), bnl_free(c.labels);
    bnl_resnet_free(c.m);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// bench gemm: C (M,N) = A (M,K) B (N,K)^T, the convolution forward's shape, GFLOP/s per ISA.

typedef struct {
    float *a, *b, *c;
    size_t M, N, K;
} gemm_ctx;

static void run_gemm(void *p) {
    gemm_ctx *g = p;
    bnl_gemm_nt(g->c, g->a, g->b, g->M, g->N, g->K, 0);
}

static int bench_gemm(long M, long N, long K, int reps) {
    gemm_ctx g = {NULL, NULL, NULL, (size_t)M, (size_t)N, (size_t)K};
    g.a = bnl_alloc(g.M * g.K * sizeof(float));
    g.b = bnl_alloc(g.N * g.K * sizeof(float));
    g.c = bnl_alloc(g.M * g.N * sizeof(float));
    if (!g.a || !g.b || !g.c) return cli_error("bench gemm: out of memory");
    bnl_rng r = bnl_rng_seed(3);
    for (size_t i = 0; i < g.M * g.K; i++) g.a[i] = (float)bnl_rng_normal(&r);
    for (size_t i = 0; i < g.N * g.K; i++) g.b[i] = (float)bnl_rng_normal(&r);
    double flop = 2.0 * (double)M * (double)N * (double)K;
    bnl_isa active = bnl_isa_active();
    for (int isa = 0; isa < BNL_ISA_COUNT; isa++) {
        if (!bnl_isa_available((bnl_isa)isa)) continue;
        bnl_isa_force((bnl_isa)isa);
        double t = time_median(run_gemm, &g, reps);
        printf("bench=gemm.nt.%s ms=%.3f gflops=%.1f M=%ld N=%ld K=%ld threads=%d cpu_ms=%.3f\n",
               bnl_isa_name((bnl_isa)isa), t, flop / t * 1e-6, M, N, K, bnl_threads_effective(), g_cpu_median);
    }
    bnl_isa_force(active);
    bnl_free(g.a), bnl_free(g.b), bnl_free(g.c);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    cli_opt opts[] = {
        {"n", "N", "bn: batch size", "32", 0},
        {"hw", "HW", "bn: height and width", "56", 0},
        {"c", "C", "bn: channels", "256", 0},
        {"mode", "MODE", "resnet50: eval (forward) or train (forward, backward, SGD step)", "eval", 0},
        {"batch", "N", "resnet50: batch size (default 1 for eval, 8 for train)", NULL, 0},
        {"size", "S", "resnet50: input height and width", "224", 0},
        {"depth", "D", "resnet50: torchvision depth (18, 34, 50, 101, 152)", "50", 0},
        {"weights", "FILE", "resnet50: a safetensors state dict (default: seeded torchvision init)", NULL, 0},
        {"mnk", "M,N,K", "gemm: sizes of C (M,N) = A (M,K) B (N,K)^T", "3136,64,576", 0},
        {"reps", "K", "timed repetitions, median reported (default 15; resnet50: 10 eval, 5 train)", NULL, 0},
        {"threads", "T", "threads (0 = all cores)", "0", 0},
        {"isa", "NAME", "force an instruction set: scalar, avx2, avx512 (default: best)", NULL, 0},
    };
    int nopts = sizeof opts / sizeof opts[0];
    const char *pos[1];
    int np = 0;
    int rc = cli_parse(argc, argv, "bnlab bench SUBJECT [options]",
                       "Benchmarks. SUBJECT: bn (BatchNorm train forward, eval forward, backward against memcpy),\n"
                       "resnet50 (the model: --mode eval|train --batch N --size S --reps K), gemm (--mnk M,N,K).\n"
                       "Prints one key=value line per measurement.",
                       opts, nopts, pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np < 1) return cli_error("bench: missing SUBJECT (bn, resnet50, gemm)"), 2;
    int is_model = !strcmp(pos[0], "resnet50");
    const char *mode = cli_get(opts, nopts, "mode");
    int train = !strcmp(mode, "train");
    long n = 0, hw = 0, c = 0, reps = is_model ? (train ? 5 : 10) : 15, threads = 0, size = 0, depth = 0;
    long batch = train ? 8 : 1;
    if (cli_get_long(opts, nopts, "n", 1, 4096, &n) || cli_get_long(opts, nopts, "hw", 1, 4096, &hw) ||
        cli_get_long(opts, nopts, "c", 1, 65536, &c) || cli_get_long(opts, nopts, "reps", 1, BENCH_MAX_REPS, &reps) ||
        cli_get_long(opts, nopts, "threads", 0, 1024, &threads) || cli_get_long(opts, nopts, "batch", 1, 4096, &batch) ||
        cli_get_long(opts, nopts, "size", 32, 4096, &size) || cli_get_long(opts, nopts, "depth", 18, 152, &depth))
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
    if (is_model) return bench_resnet50(mode, batch, size, (int)reps, cli_get(opts, nopts, "weights"), depth);
    if (!strcmp(pos[0], "gemm")) {
        long M = 0, N = 0, K = 0;
        if (sscanf(cli_get(opts, nopts, "mnk"), "%ld,%ld,%ld", &M, &N, &K) != 3 || M < 1 || N < 1 || K < 1 ||
            M > 1000000 || N > 100000 || K > 100000)
            return cli_error("--mnk: expected three positive integers M,N,K, got '%s'", cli_get(opts, nopts, "mnk")), 2;
        return bench_gemm(M, N, K, (int)reps);
    }
    return cli_error("bench: unknown subject '%s' (known: bn, resnet50, gemm)", pos[0]), 2;
}
