// `bnlab demo`: what BatchNorm does with the batch size, in numbers. Channels of a synthetic
// activation have known true means and variances; for each batch size we run train-mode forwards
// on fresh batches and print how far the batch statistics wander from the truth, against the
// running statistics they feed, and what eval mode then uses.
#include "bnlab.h"
#include "cli/cli.h"
#include "core/common.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_demo(int argc, char **argv) {
    cli_opt opts[] = {
        {"hw", "HW", "spatial size of each sample (H = W)", "4", 0},
        {"channels", "C", "channels", "8", 0},
        {"steps", "K", "train-mode batches per batch size", "50", 0},
        {"seed", "S", "random seed", "1", 0},
    };
    int nopts = sizeof opts / sizeof opts[0];
    int rc = cli_parse(argc, argv, "bnlab demo [options]",
                       "BatchNorm demonstration: batch vs running statistics for a few batch sizes.", opts, nopts,
                       NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    long hw = 0, C = 0, steps = 0, seed = 0;
    if (cli_get_long(opts, nopts, "hw", 1, 64, &hw) || cli_get_long(opts, nopts, "channels", 1, 1024, &C) ||
        cli_get_long(opts, nopts, "steps", 1, 100000, &steps) || cli_get_long(opts, nopts, "seed", 0, 1L << 40, &seed))
        return 2;
    static const long batch_sizes[] = {1, 2, 8, 32, 128};
    float *true_mean = calloc((size_t)C, sizeof(float)), *true_std = calloc((size_t)C, sizeof(float));
    float *gamma = calloc((size_t)C, sizeof(float)), *beta = calloc((size_t)C, sizeof(float));
    float *rm = calloc((size_t)C, sizeof(float)), *rv = calloc((size_t)C, sizeof(float));
    float *mean = calloc((size_t)C, sizeof(float)), *invstd = calloc((size_t)C, sizeof(float));
    float *var = calloc((size_t)C, sizeof(float));
    size_t maxM = (size_t)(128 * hw * hw);
    float *x = malloc(maxM * (size_t)C * sizeof(float)), *y = malloc(maxM * (size_t)C * sizeof(float));
    if (!true_mean || !true_std || !gamma || !beta || !rm || !rv || !mean || !invstd || !var || !x || !y)
        return cli_error("demo: out of memory");
    bnl_rng r = bnl_rng_seed((uint64_t)seed);
    for (long c = 0; c < C; c++) {
        true_mean[c] = (float)(bnl_rng_normal(&r) * 2.0);
        true_std[c] = (float)(0.5 + 2.0 * bnl_rng_uniform(&r));
        gamma[c] = 1.0f, beta[c] = 0.0f;
    }
    bnl_bn_config cfg = bnl_bn_config_default();
    printf("bnlab BatchNorm demo (native, isa=%s): %ld channels, %ldx%ld per sample, momentum %.2f, eps %g\n",
           bnl_isa_name(bnl_isa_active()), C, hw, hw, (double)cfg.momentum, (double)cfg.eps);
    printf("channel 0 truth: mean %.4f var %.4f\n", (double)true_mean[0], (double)(true_std[0] * true_std[0]));
    printf("%6s %10s %10s %12s %12s %12s %12s %14s\n", "batch", "last_mean", "last_var", "running_mean",
           "running_var", "sd(batchmean)", "sigma/sqrt(n)", "eval_out_mean");
    for (size_t b = 0; b < sizeof batch_sizes / sizeof batch_sizes[0]; b++) {
        long B = batch_sizes[b];
        size_t M = (size_t)(B * hw * hw);
        for (long c = 0; c < C; c++) rm[c] = 0.0f, rv[c] = 1.0f;   // fresh layer: the blog's init
        double s1 = 0, s2 = 0;
        bnl_status st = BNL_OK;
        for (long k = 0; k < steps; k++) {
            for (size_t i = 0; i < M; i++)
                for (long c = 0; c < C; c++)
                    x[i * (size_t)C + (size_t)c] = true_mean[c] + true_std[c] * (float)bnl_rng_normal(&r);
            st = bnl_batchnorm_forward_train(y, mean, invstd, var, rm, rv, NULL, x, gamma, beta, M, (size_t)C, &cfg);
            if (st != BNL_OK) break;
            s1 += mean[0], s2 += (double)mean[0] * mean[0];
        }
        if (st != BNL_OK) {
            printf("%6ld  train mode refused: %s\n", B, bnl_last_error());
            continue;
        }
        double m = s1 / (double)steps, sd = sqrt(fmax(s2 / (double)steps - m * m, 0.0));
        // eval mode on one more batch from the true distribution: output mean of channel 0
        for (size_t i = 0; i < M; i++)
            for (long c = 0; c < C; c++)
                x[i * (size_t)C + (size_t)c] = true_mean[c] + true_std[c] * (float)bnl_rng_normal(&r);
        bnl_batchnorm_forward_eval(y, x, gamma, beta, rm, rv, M, (size_t)C, &cfg);
        double om = 0;
        for (size_t i = 0; i < M; i++) om += y[i * (size_t)C];
        printf("%6ld %10.4f %10.4f %12.4f %12.4f %12.4f %12.4f %14.4f\n", B, (double)mean[0], (double)var[0],
               (double)rm[0], (double)rv[0], sd, (double)true_std[0] / sqrt((double)M), om / (double)M);
    }
    printf("Larger batches: batch statistics wander less (sd ~ sigma/sqrt(N*H*W)), so the running averages\n"
           "that eval mode uses sit closer to the truth.\n");
    free(true_mean), free(true_std), free(gamma), free(beta), free(rm), free(rv), free(mean), free(invstd);
    free(var), free(x), free(y);
    return 0;
}
