// `bnlab info`, `bnlab infer`, `bnlab step`: thin doors onto src/model/resnet.h.
#include "bnlab.h"
#include "cli/cli.h"
#include "io/safetensors.h"
#include "model/card.h"
#include "io/statedict.h"
#include "model/resnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load_model(bnl_resnet **m, const char *path) {
    if (bnl_resnet_load_file(m, path) != BNL_OK) return cli_error("%s", bnl_last_error());
    return 0;
}

// Reads tensor `name` of a safetensors file as float32 with the given rank; dims out.
static int read_f32(const char *path, const char *name, int ndim, int64_t *dims, float **out) {
    bnl_st_file f;
    if (bnl_st_read_file(&f, path) != BNL_OK) return cli_error("%s", bnl_last_error());
    const bnl_st_tensor *t = bnl_st_find(&f, name);
    int rc = 0;
    if (!t) {
        rc = cli_error("%s: no tensor named '%s'", path, name);
    } else if (t->ndim != ndim) {
        rc = cli_error("%s: tensor '%s' has %d dimensions, expected %d", path, name, t->ndim, ndim);
    } else if (!(*out = malloc(t->nelem * sizeof(float) + 1))) {
        rc = cli_error("%s: out of memory reading '%s'", path, name);
    } else if (bnl_st_to_f32(*out, t) != BNL_OK) {
        rc = cli_error("%s: tensor '%s': %s", path, name, bnl_last_error());
        free(*out);
    } else {
        for (int i = 0; i < ndim; i++) dims[i] = t->shape[i];
    }
    bnl_st_free(&f);
    return rc;
}

static int read_labels(const char *path, int64_t **out, int64_t *n) {
    bnl_st_file f;
    if (bnl_st_read_file(&f, path) != BNL_OK) return cli_error("%s", bnl_last_error());
    const bnl_st_tensor *t = bnl_st_find(&f, "labels");
    int rc = 0;
    if (!t) {
        rc = cli_error("%s: no tensor named 'labels'", path);
    } else if (t->ndim != 1 || (t->dtype != BNL_DT_I64 && t->dtype != BNL_DT_I32)) {
        rc = cli_error("%s: tensor 'labels' must be I64 or I32 with shape [N] (got %s, %d dimensions)", path,
                       bnl_dtype_name(t->dtype), t->ndim);
    } else if (!(*out = malloc(t->nelem * sizeof(int64_t) + 1))) {
        rc = cli_error("%s: out of memory", path);
    } else {
        bnl_st_to_i64(*out, t);
        *n = (int64_t)t->nelem;
    }
    bnl_st_free(&f);
    return rc;
}

// Shared BatchNorm options of infer and step.
static int apply_bn_options(bnl_resnet *m, const cli_opt *opts, int nopts) {
    bnl_bn_config cfg = bnl_resnet_bn_config(m);
    double mom = cfg.momentum, eps = cfg.eps;
    if (cli_get_double(opts, nopts, "bn-momentum", 0.0, 1.0, &mom) || cli_get_double(opts, nopts, "bn-eps", 1e-12, 1.0, &eps))
        return 1;
    cfg.momentum = (float)mom, cfg.eps = (float)eps;
    const char *rv = cli_get(opts, nopts, "running-var");
    if (!strcmp(rv, "biased")) cfg.unbiased = 0;
    else if (!strcmp(rv, "unbiased")) cfg.unbiased = 1;
    else return cli_error("--running-var: expected 'biased' or 'unbiased', got '%s'", rv);
    cfg.cumulative = cli_get(opts, nopts, "bn-cumulative") != NULL;
    long threads = 0;
    if (cli_get_long(opts, nopts, "threads", 0, 1024, &threads)) return 1;
    bnl_set_threads((int)threads);
    if (bnl_resnet_set_bn_config(m, &cfg) != BNL_OK) return cli_error("%s", bnl_last_error());
    return 0;
}

static int check_input_shape(const bnl_resnet *m, const char *path, const int64_t *d) {
    const bnl_resnet_info *info = bnl_resnet_get_info(m);
    if (d[3] != info->in_channels)
        return cli_error("%s: tensor 'input' has %lld channels, the model expects %d (NHWC [N,H,W,%d])", path,
                         (long long)d[3], info->in_channels, info->in_channels);
    if (d[0] < 1 || d[1] < 1 || d[2] < 1 || d[0] > 65536 || d[1] > 8192 || d[2] > 8192)
        return cli_error("%s: tensor 'input' has an unusable shape [%lld,%lld,%lld,%lld]", path, (long long)d[0],
                         (long long)d[1], (long long)d[2], (long long)d[3]);
    return 0;
}

// What the model expects and what its outputs mean (src/model/card.h): each line says whether the
// value was read from __metadata__ or assumed, and why; a malformed key adds a "warning:" line.
static void print_field(const char *what, const bnl_card_field *f) {
    printf(" (%s: %s)\n", f->from == BNL_FROM_FILE ? "from the file" : "assumed", f->why);
    if (f->problem[0]) printf("warning: %s: %s\n", what, f->problem);
}

static void print_card(const bnl_resnet *m, int classes) {
    bnl_model_card c;
    bnl_model_card_get(&c, m);
    printf("input size: %dx%d", c.input_h, c.input_w);
    print_field("input size", &c.input_size);
    printf("mean: %.6g %.6g %.6g", c.mean[0], c.mean[1], c.mean[2]);
    print_field("mean", &c.mean_src);
    printf("std: %.6g %.6g %.6g", c.std[0], c.std[1], c.std[2]);
    print_field("std", &c.std_src);
    if (c.labels_kind == BNL_LABELS_FILE) printf("labels: %d names", classes);
    else if (c.labels_kind == BNL_LABELS_IMAGENET) printf("labels: the %d ImageNet class names", classes);
    else printf("labels: none (class 0 .. class %d)", classes - 1);
    print_field("labels", &c.labels);
    printf("trained on: %s", c.train_data[0] ? c.train_data : "unknown");
    print_field("trained on", &c.train);
}

int cmd_info(int argc, char **argv) {
    const char *pos[1];
    int np = 0;
    int rc = cli_parse(argc, argv, "bnlab info WEIGHTS",
                       "Prints the ResNet architecture read from a safetensors state dict: blocks per stage, block\n"
                       "type, widths, classes, BatchNorm layer count and parameter count; then the input size, mean/std,\n"
                       "class names and training data, each read from __metadata__ or assumed (and why).",
                       NULL, 0, pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np != 1) return cli_error("info: expected one WEIGHTS file"), 2;
    bnl_resnet *m;
    if (load_model(&m, pos[0])) return 1;
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    int nblocks = 0;
    for (int s = 0; s < in->num_stages; s++) nblocks += in->blocks[s];
    printf("file: %s\n", pos[0]);
    printf("architecture: ResNet-%d (torchvision v1.5 layout)\n", nblocks * (in->bottleneck ? 3 : 2) + 2);
    printf("block: %s\n", in->bottleneck ? "bottleneck" : "basic");
    printf("blocks per stage:");
    for (int s = 0; s < in->num_stages; s++) printf(" %d", in->blocks[s]);
    printf("\nstem width: %d\nstage widths:", in->stem_width);
    for (int s = 0; s < in->num_stages; s++) printf(" %d", in->widths[s]);
    printf("\ninput channels: %d\nclasses: %d\nfeatures: %d\n", in->in_channels, in->num_classes, in->num_features);
    printf("batchnorm layers: %d\nparameters: %zu\nrunning statistics: %zu\n", in->num_bn, in->num_params,
           in->num_stats);
    {   // the bnlab.norm string first (what --norm takes), then what it means
        bnl_norm_spec ns = bnl_resnet_norm_spec(m);
        char kind[48];
        bnl_norm_format(&ns, kind, sizeof kind);
        static const char *what[] = {
            "BatchNorm", "none (BatchNorm layers are per-channel scale and shift; running statistics unused)",
            "GroupNorm (statistics per image and group of channels; the same in train and eval mode; no running statistics)",
            "Batch Renormalization", "Ghost BatchNorm (training statistics per virtual batch)",
            "frozen BatchNorm (running statistics in training too, never updated)"};
        if (ns.kind == BNL_NORM_BATCH) printf("normalization: batchnorm\n");
        else if (ns.kind == BNL_NORM_RENORM)
            printf("normalization: renorm: %s, r_max %g, d_max %g\n", what[ns.kind], (double)ns.renorm_rmax,
                   (double)ns.renorm_dmax);
        else if (ns.kind == BNL_NORM_NONE) printf("normalization: %s\n", what[ns.kind]);
        else printf("normalization: %s: %s\n", kind, what[ns.kind]);
    }
    print_card(m, in->num_classes);
    bnl_resnet_free(m);
    return 0;
}

#define BN_OPTS                                                                                               \
    {"bn-momentum", "M", "BatchNorm momentum, Flax convention: running = M*running + (1-M)*batch", "0.9", 0}, \
    {"bn-eps", "EPS", "BatchNorm epsilon", "1e-5", 0},                                                        \
    {"running-var", "RULE", "running variance rule: biased (blog, Flax) or unbiased (PyTorch)", "biased", 0}, \
    {"bn-cumulative", NULL, "running statistics as a cumulative average (PyTorch momentum=None)", NULL, 0},   \
    {"threads", "T", "threads (0 = all cores)", "0", 0}

int cmd_infer(int argc, char **argv) {
    cli_opt opts[] = {
        {"weights", "W", "safetensors state dict (torchvision ResNet names)", NULL, 1},
        {"input", "X", "safetensors with tensor 'input' F32 [N,H,W,3], normalized", NULL, 1},
        {"output", "Y", "safetensors to write with tensor 'logits' F32 [N,classes]", NULL, 1},
        {"mode", "MODE", "eval (running statistics) or train (batch statistics, updates running ones)", "eval", 0},
        {"state-out", "S", "train mode: write the whole updated state (same names as W)", NULL, 0},
        BN_OPTS,
    };
    int nopts = sizeof opts / sizeof opts[0];
    int rc = cli_parse(argc, argv, "bnlab infer --weights W --input X --output Y [options]",
                       "Forward pass of the batch in X; writes the logits to Y.", opts, nopts, NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    const char *mode = cli_get(opts, nopts, "mode");
    if (strcmp(mode, "eval") && strcmp(mode, "train"))
        return cli_error("--mode: expected 'eval' or 'train', got '%s'", mode), 2;
    const char *state_out = cli_get(opts, nopts, "state-out");
    if (state_out && strcmp(mode, "train"))
        return cli_error("--state-out needs --mode train (eval mode never changes the state)"), 2;
    bnl_resnet *m;
    if (load_model(&m, cli_get(opts, nopts, "weights"))) return 1;
    int64_t d[4];
    float *x = NULL, *logits = NULL;
    const char *in_path = cli_get(opts, nopts, "input");
    rc = 1;
    if (apply_bn_options(m, opts, nopts) || read_f32(in_path, "input", 4, d, &x)) goto done;
    if (check_input_shape(m, in_path, d)) goto done;
    int K = bnl_resnet_get_info(m)->num_classes;
    if (!(logits = malloc((size_t)d[0] * (size_t)K * sizeof(float)))) {
        cli_error("out of memory");
        goto done;
    }
    bnl_resnet_set_training(m, !strcmp(mode, "train"));
    if (bnl_resnet_forward(m, logits, x, (int)d[0], (int)d[1], (int)d[2]) != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    bnl_st_writer *w;
    int64_t shape[2] = {d[0], K};
    if (bnl_st_writer_create(&w) != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    bnl_status s = bnl_st_writer_add(w, "logits", BNL_DT_F32, 2, shape, logits);
    if (s == BNL_OK) s = bnl_st_writer_to_file(w, cli_get(opts, nopts, "output"));
    bnl_st_writer_free(w);
    if (s != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    if (state_out && bnl_resnet_save_file(m, state_out) != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    rc = 0;
done:
    free(x), free(logits);
    bnl_resnet_free(m);
    return rc;
}

int cmd_step(int argc, char **argv) {
    cli_opt opts[] = {
        {"weights", "W", "safetensors state dict to start from", NULL, 1},
        {"input", "X", "safetensors with tensor 'input' F32 [N,H,W,3]", NULL, 1},
        {"labels", "L", "safetensors with tensor 'labels' I64 or I32 [N]", NULL, 1},
        {"lr", "LR", "learning rate", NULL, 1},
        {"sgd-momentum", "M", "SGD momentum (PyTorch semantics)", "0", 0},
        {"weight-decay", "WD", "L2 weight decay added to the gradient", "0", 0},
        {"output", "W2", "safetensors to write the updated state to (same names as W)", NULL, 1},
        BN_OPTS,
    };
    int nopts = sizeof opts / sizeof opts[0];
    int rc = cli_parse(argc, argv, "bnlab step --weights W --input X --labels L --lr LR --output W2 [options]",
                       "One training step: train-mode forward, softmax cross-entropy (mean over the batch),\n"
                       "backward and an SGD update. Prints 'loss <value>'.",
                       opts, nopts, NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    bnl_sgd sgd = bnl_sgd_default();
    double lr = 0, mom = 0, wd = 0;
    if (cli_get_double(opts, nopts, "lr", 0.0, 1e6, &lr) || cli_get_double(opts, nopts, "sgd-momentum", 0.0, 1.0, &mom) ||
        cli_get_double(opts, nopts, "weight-decay", 0.0, 1e3, &wd))
        return 2;
    sgd.lr = (float)lr, sgd.momentum = (float)mom, sgd.weight_decay = (float)wd;
    bnl_resnet *m;
    if (load_model(&m, cli_get(opts, nopts, "weights"))) return 1;
    int64_t d[4], nl = 0, *labels = NULL;
    float *x = NULL, loss = 0;
    const char *in_path = cli_get(opts, nopts, "input");
    rc = 1;
    if (apply_bn_options(m, opts, nopts) || read_f32(in_path, "input", 4, d, &x)) goto done;
    if (check_input_shape(m, in_path, d)) goto done;
    if (read_labels(cli_get(opts, nopts, "labels"), &labels, &nl)) goto done;
    if (nl != d[0]) {
        cli_error("%s: %lld labels for a batch of %lld images", cli_get(opts, nopts, "labels"), (long long)nl,
                  (long long)d[0]);
        goto done;
    }
    if (bnl_resnet_step(m, &loss, x, (int)d[0], (int)d[1], (int)d[2], labels, &sgd) != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    if (bnl_resnet_save_file(m, cli_get(opts, nopts, "output")) != BNL_OK) {
        cli_error("%s", bnl_last_error());
        goto done;
    }
    printf("loss %.9g\n", (double)loss);
    rc = 0;
done:
    free(x), free(labels);
    bnl_resnet_free(m);
    return rc;
}
