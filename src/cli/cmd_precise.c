// bnlab precise-bn: PreciseBN over K batches of a dataset (bnl_precise_bn_* in model/resnet.h).
#include "cli/cli.h"
#include "core/common.h"
#include "io/dataset.h"
#include "io/statedict.h"
#include "model/resnet.h"
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The training split of --data, as `bnlab train` reads it (procedural: its default train split,
// with the model's class count).
static bnl_status open_train_split(bnl_dataset **d, const char *spec, int size, int classes, uint64_t data_seed) {
    bnl_data_spec ds;
    bnl_status s = bnl_data_spec_parse(&ds, spec);
    if (s != BNL_OK) return s;
    bnl_data_opts o = {classes >= 2 && classes <= BNL_PROCEDURAL_MAX_CLASSES ? classes : 0, size, 0, data_seed};
    return bnl_data_open(d, &ds, 1, &o);
}

int cmd_precise_bn(int argc, char **argv) {
    cli_opt opts[] = {
        {"weights", "W", "safetensors state dict (BatchNorm)", NULL, 1},
        {"data", "SPEC", "procedural | cifar10:DIR | folder:DIR (DIR/train) | fashion-mnist[:DIR] | mnist:DIR: the "
                         "training split, as bnlab train reads it", "procedural", 0},
        {"image-size", "S", "as bnlab train's --image-size [default: the data's]", NULL, 0},
        {"data-seed", "SEED", "procedural: seed of the images (bnlab train's default is 1)", "1", 0},
        {"batches", "K", "number of batches", "16", 0},
        {"batch-size", "B", "images per batch", "64", 0},
        {"seed", "SEED", "which images: the first K*B of a permutation drawn from SEED", "0", 0},
        {"threads", "T", "threads (0 = all cores)", "0", 0},
        {"output", "W2", "safetensors to write the state with the new running statistics to (atomic)", NULL, 1},
    };
    int nopts = sizeof opts / sizeof opts[0];
    int rc = cli_parse(argc, argv, "bnlab precise-bn --weights W --output W2 [--data SPEC --batches K --batch-size B]",
                       "PreciseBN: replaces every BatchNorm layer's running mean and variance by the exact mean and\n"
                       "pooled (biased) variance of its activations over K train-mode batches of B training images\n"
                       "(eval normalization, no augmentation), merged in double. Nothing else in the state changes.\n"
                       "Prints a summary line (the largest change of a running mean, in old standard deviations), then\n"
                       "'wrote W2'. A model without running statistics (--norm none, group:G) is an error.",
                       opts, nopts, NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    long K, B, T, S = 0, ds, sd;
    if (cli_get_long(opts, nopts, "batches", 1, 1000000, &K) || cli_get_long(opts, nopts, "batch-size", 1, 65536, &B) ||
        cli_get_long(opts, nopts, "threads", 0, 4096, &T) || cli_get_long(opts, nopts, "data-seed", 0, 0x7fffffffL, &ds) ||
        cli_get_long(opts, nopts, "seed", 0, 0x7fffffffL, &sd))
        return 2;
    if (cli_get(opts, nopts, "image-size") && cli_get_long(opts, nopts, "image-size", 8, 4096, &S)) return 2;
    bnl_set_threads((int)T);
    bnl_resnet *m = NULL;
    bnl_dataset *d = NULL;
    bnl_precise_bn *p = NULL;
    float *x = NULL;
    size_t *perm = NULL;
    rc = 1;
    if (bnl_resnet_load_file(&m, cli_get(opts, nopts, "weights")) != BNL_OK) goto fail;
    if (bnl_precise_bn_begin(&p, m) != BNL_OK) goto fail;
    if (open_train_split(&d, cli_get(opts, nopts, "data"), (int)S, bnl_resnet_get_info(m)->num_classes,
                         (uint64_t)ds) != BNL_OK)
        goto fail;
    size_t n = bnl_dataset_size(d), need = (size_t)K * (size_t)B;
    if (need > n) {
        cli_error("--batches %ld x --batch-size %ld = %zu images, the training split has %zu", K, B, need, n);
        goto done;
    }
    int H = bnl_dataset_height(d), W = bnl_dataset_width(d);
    x = malloc((size_t)B * H * W * 3 * sizeof(float));
    perm = malloc(n * sizeof(size_t));
    if (!x || !perm) {
        cli_error("out of memory for a batch of %ld %dx%d images", B, H, W);
        goto done;
    }
    bnl_augment aug = bnl_dataset_augment_default(d, 0);
    if (bnl_dataset_permutation(perm, n, (uint64_t)sd, 0) != BNL_OK) goto fail;
    for (long k = 0; k < K; k++) {
        if (bnl_dataset_get_batch(d, x, NULL, perm + (size_t)k * B, (size_t)B, &aug, 0) != BNL_OK) goto fail;
        if (bnl_precise_bn_add(p, m, x, (int)B, H, W) != BNL_OK) goto fail;
    }
    // before/after for the report: the largest |change of mean| / sqrt(old var) over channels, per layer
    int nbn = bnl_resnet_bn_count(m);
    double *old = NULL;
    size_t ns;
    const float *st = bnl_resnet_stats(m, &ns);
    old = malloc(ns * sizeof(double));
    for (size_t i = 0; old && i < ns; i++) old[i] = st[i];
    if (bnl_precise_bn_end(p, m) != BNL_OK) {
        free(old);
        goto fail;
    }
    double worst = 0;
    int wl = 0;
    for (int i = 0; old && i < nbn; i++) {
        bnl_bn_view v;
        bnl_resnet_bn_stats(m, &v, i);
        for (int c = 0; c < v.channels; c++) {
            size_t rm = (size_t)(v.running_mean - st) + c, rv = (size_t)(v.running_var - st) + c;
            double z = fabs(v.running_mean[c] - old[rm]) / sqrt(old[rv] + 1e-5);
            if (z > worst) worst = z, wl = i;
        }
    }
    free(old);
    printf("precise-bn: %d layers from %ld batches of %ld %dx%d images; largest mean change %.4g sigma (%s)\n", nbn, K,
           B, H, W, worst, bnl_resnet_bn_name(m, wl));
    if (bnl_resnet_save_file(m, cli_get(opts, nopts, "output")) != BNL_OK) goto fail;
    printf("wrote %s\n", cli_get(opts, nopts, "output"));
    rc = 0;
    goto done;
fail:
    cli_error("%s", bnl_last_error());
done:
    bnl_precise_bn_free(p);
    bnl_dataset_free(d);
    bnl_resnet_free(m);
    free(x), free(perm);
    return rc;
}
