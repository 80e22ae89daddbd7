// The native training loop: schedule, checkpoints (model + momentum + train.* metadata), resume,
// evaluation and metrics. Data parallel through bnl_dist (train/dist.c). The library never prints:
// progress goes through hooks, errors through bnl_last_error().
// Sizes: B images per rank and step, K ranks, GB = K*B global batch, H,W image size, C classes.
#include "train/train.h"

#include "core/common.h"
#include "core/rng.h"
#include "io/dataset.h"
#include "io/safetensors.h"
#include "io/statedict.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

// ---------------------------------------------------------------------------------------------
// Schedule

double bnl_schedule_lr(const bnl_schedule *s, int64_t t) {
    if (!s) return 0.0;
    if (t < 0) t = 0;
    double lr = s->base_lr;
    if (s->kind == BNL_SCHED_COSINE) {
        if (t >= s->warmup_steps && s->total_steps > s->warmup_steps) {
            double p = (double)(t - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
            if (p > 1.0) p = 1.0;
            lr = s->base_lr * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
        }
    } else {
        int64_t spe = s->steps_per_epoch > 0 ? s->steps_per_epoch : 1;
        int64_t epoch = t / spe, drops = 0;
        if (s->step_every > 0) {
            drops = epoch / s->step_every;
        } else {
            for (int i = 0; i < s->n_milestones; i++)
                if (epoch >= s->milestones[i]) drops++;
        }
        lr = s->base_lr * pow(s->gamma, (double)drops);
    }
    if (t < s->warmup_steps) lr *= (double)(t + 1) / (double)s->warmup_steps;
    return lr;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

// The tensors a checkpoint adds beside the model (io/statedict.c skips them when loading a model).
int bnl_checkpoint_owns_tensor(const char *name) { return !strncmp(name, "optimizer.", 10); }

bnl_status bnl_checkpoint_save(bnl_resnet *m, const char *path, int with_momentum, const char *const *kv,
                               size_t nkv) {
    if (!m || !path || (nkv && !kv)) return bnl_fail(BNL_ERR_ARG, "checkpoint save: NULL argument");
    bnl_st_writer *w;
    bnl_status s = bnl_st_writer_create(&w);
    if (s != BNL_OK) return s;
    void *keep = NULL;
    s = bnl_resnet_add_to_writer(m, w, &keep);
    size_t np = 0;
    float *mom = bnl_resnet_momentum(m, &np);
    if (s == BNL_OK && with_momentum && !mom) s = bnl_fail(BNL_ERR_NOMEM, "checkpoint save: out of memory for the momentum");
    if (s == BNL_OK && with_momentum) {
        int64_t shape[1] = {(int64_t)np};
        s = bnl_st_writer_add(w, "optimizer.momentum", BNL_DT_F32, 1, shape, mom);
    }
    for (size_t i = 0; i < nkv && s == BNL_OK; i++) s = bnl_st_writer_meta(w, kv[2 * i], kv[2 * i + 1]);
    if (s == BNL_OK) s = bnl_st_writer_to_file(w, path);
    bnl_st_writer_free(w);
    bnl_free(keep);
    return s;
}

bnl_status bnl_checkpoint_load(bnl_resnet **out, const char *path) {
    if (!out || !path) return bnl_fail(BNL_ERR_ARG, "checkpoint load: NULL argument");
    *out = NULL;
    bnl_st_file f;
    bnl_status s = bnl_st_read_file(&f, path);
    if (s != BNL_OK) return s;
    bnl_resnet *m = NULL;
    s = bnl_resnet_load_parsed(&m, &f, 1);
    if (s != BNL_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        bnl_st_free(&f);
        return bnl_fail(s, "%s: %s", path, msg);
    }
    size_t np = 0;
    float *mom = bnl_resnet_momentum(m, &np);
    const bnl_st_tensor *t = bnl_st_find(&f, "optimizer.momentum");
    if (!mom) {
        s = bnl_fail(BNL_ERR_NOMEM, "%s: out of memory for the momentum", path);
    } else if (!t) {
        s = bnl_fail(BNL_ERR_FORMAT, "%s: not a bnlab training checkpoint (no tensor 'optimizer.momentum')", path);
    } else if (t->dtype != BNL_DT_F32 || t->ndim != 1 || t->nelem != np) {
        s = bnl_fail(BNL_ERR_FORMAT, "%s: tensor 'optimizer.momentum' must be F32 [%zu] (the model's parameter count), got %s with %zu values",
                     path, np, bnl_dtype_name(t->dtype), t->nelem);
    } else {
        s = bnl_st_to_f32(mom, t);
    }
    bnl_st_free(&f);
    if (s != BNL_OK) {
        bnl_resnet_free(m);
        return s;
    }
    *out = m;
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Configuration

bnl_train_config bnl_train_config_default(void) {
    bnl_train_config c;
    memset(&c, 0, sizeof c);
    c.data = "procedural";
    c.data_seed = 1;
    c.augment = 1;
    c.depth = 18;
    c.width_mult = 1.0f;
    c.epochs = 10;
    c.batch_size = 128;
    c.lr = 0.1, c.sgd_momentum = 0.9, c.weight_decay = 5e-4;
    c.schedule = BNL_SCHED_COSINE;
    c.step_every = 30, c.step_gamma = 0.1;
    c.bn_momentum = 0.9f;
    c.eval_every = 1;
    return c;
}

static bnl_status check_config(const bnl_train_config *c) {
    if (!c->data || !c->out_dir) return bnl_fail(BNL_ERR_ARG, "train: data and out_dir are required");
    if (c->epochs < 1) return bnl_fail(BNL_ERR_ARG, "train: epochs must be >= 1 (got %d)", c->epochs);
    if (c->batch_size < 1) return bnl_fail(BNL_ERR_ARG, "train: batch size must be >= 1 (got %d)", c->batch_size);
    if (!(c->lr >= 0 && isfinite(c->lr)) || !(c->sgd_momentum >= 0 && c->sgd_momentum <= 1) ||
        !(c->weight_decay >= 0 && isfinite(c->weight_decay)))
        return bnl_fail(BNL_ERR_ARG, "train: lr, momentum and weight decay must be finite and >= 0");
    if (!(c->bn_momentum >= 0 && c->bn_momentum <= 1))
        return bnl_fail(BNL_ERR_ARG, "train: BatchNorm momentum must be in [0, 1]");
    if (!(c->warmup_epochs >= 0 && c->warmup_epochs <= 1e6))
        return bnl_fail(BNL_ERR_ARG, "train: warmup epochs must be >= 0");
    if (c->schedule == BNL_SCHED_STEP && c->step_every <= 0 && c->n_milestones <= 0)
        return bnl_fail(BNL_ERR_ARG, "train: the step schedule needs step epochs");
    if (c->eval_every < 0 || c->max_steps < 0) return bnl_fail(BNL_ERR_ARG, "train: eval_every and max_steps must be >= 0");
    if (!c->init && c->norm.kind == BNL_NORM_GHOST && c->batch_size % c->norm.virtual_batch != 0)
        return bnl_fail(BNL_ERR_ARG, "train: norm ghost:%d: %d images per virtual batch do not divide the batch size %d",
                        c->norm.virtual_batch, c->norm.virtual_batch, c->batch_size);
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix64(uint64_t a, uint64_t b) {
    bnl_rng r = bnl_rng_seed(a ^ (b * 0xD1B54A32D192ED03ull));
    return bnl_rng_u64(&r);
}

static bnl_status mkdir_p(const char *dir) {
    char buf[1024];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) return bnl_fail(BNL_ERR_ARG, "output directory '%s' is empty or too long", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return bnl_fail(BNL_ERR_IO, "cannot create directory '%s': %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return bnl_fail(BNL_ERR_IO, "'%s' is not a directory", dir);
    return BNL_OK;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// A growable string.
typedef struct { char *s; size_t n, cap; int oom; } sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) BNL_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap ? 2 * b->cap : 256) + (size_t)k;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p, b->cap = nc;
    }
}

static void sb_json_str(sbuf *b, const char *s) {
    sb_add(b, "\"");
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_add(b, "\\%c", c);
        else if (c < 0x20) sb_add(b, "\\u%04x", c);
        else sb_add(b, "%c", c);
    }
    sb_add(b, "\"");
}

static int params_finite(const float *p, size_t n) {
    // a sum over the buffer is non-finite iff some element is (or it overflows: then also bad)
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) acc += p[i] * 0.0f;
    return acc == 0.0f;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

// ---------------------------------------------------------------------------------------------
// The run's state

#define MAX_KV 48
#define VAL_LEN 512

typedef struct {
    const bnl_train_config *cfg;
    bnl_dist *dist;
    const bnl_train_hooks *hooks;
    int rank, K;
    // data
    bnl_dataset *train, *val;
    size_t *train_map, *val_map;   // subsets (NULL: identity)
    size_t n_train, n_val;
    int H, W, C;
    bnl_augment aug_train, aug_val;
    char *labels_json;
    // model
    bnl_resnet *m;
    char arch[64];
    bnl_schedule sched;
    int64_t spe, total, limit;
    // metrics
    char **rows;
    size_t nrows, caprows;
    double best_top1;
    int best_epoch;
    int64_t ckpt_step;   // the step of the last checkpoint on disk
    // paths
    char last_path[1100], best_path[1100], model_path[1100], metrics_path[1100];
    // metadata
    const char *kv[2 * MAX_KV];
    char kv_buf[MAX_KV][VAL_LEN];
    size_t nkv;
} run_t;

static void note(run_t *r, const char *fmt, ...) BNL_PRINTF(2, 3);
static void note(run_t *r, const char *fmt, ...) {
    if (r->rank != 0 || !r->hooks || !r->hooks->on_note) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->hooks->on_note(r->hooks->ctx, line);
}

static void kv_set(run_t *r, const char *key, const char *fmt, ...) BNL_PRINTF(3, 4);
static void kv_set(run_t *r, const char *key, const char *fmt, ...) {
    size_t i = 0;
    while (i < r->nkv && strcmp(r->kv[2 * i], key)) i++;
    if (i == r->nkv) {
        if (r->nkv == MAX_KV) return;
        r->nkv++;
        r->kv[2 * i] = key;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->kv_buf[i], VAL_LEN, fmt, ap);
    va_end(ap);
    r->kv[2 * i + 1] = r->kv_buf[i];
}

static const char *kv_get(const run_t *r, const char *key) {
    for (size_t i = 0; i < r->nkv; i++)
        if (!strcmp(r->kv[2 * i], key)) return r->kv[2 * i + 1];
    return NULL;
}

// The hyperparameters a resume must agree with, named after the command-line options.
static const char *const k_fixed_keys[] = {
    "data", "classes", "image-size", "train-size", "val-size", "data-seed", "augment", "arch", "width-mult",
    "init", "batch-size", "world-size", "lr", "sgd-momentum", "weight-decay", "no-decay-bn-bias", "schedule",
    "step-epochs", "step-gamma", "warmup-epochs", "bn-momentum", "running-var", "sync-bn", "seed", "norm",
    "zero-init-residual", NULL};
// Keys added after the first checkpoints were written: what a checkpoint without them was trained with.
static const char *const k_key_defaults[] = {"norm", "batch", "zero-init-residual", "0", NULL};

// The shortest decimal that reads back as the same float (0.9, not 0.899999976).
static const char *fstr(char *buf, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, 32, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

static void set_config_meta(run_t *r) {
    char f0[32], f1[32], f2[32];
    const bnl_train_config *c = r->cfg;
    kv_set(r, "train.data", "%s", c->data);
    kv_set(r, "train.classes", "%d", r->C);
    kv_set(r, "train.image-size", "%dx%d", r->H, r->W);
    kv_set(r, "train.train-size", "%zu", r->n_train);
    kv_set(r, "train.val-size", "%zu", r->n_val);
    kv_set(r, "train.data-seed", "%llu", (unsigned long long)c->data_seed);
    kv_set(r, "train.augment", "%d", c->augment);
    kv_set(r, "train.arch", "%s", c->init ? "from --init" : r->arch);
    if (c->init) kv_set(r, "train.width-mult", "from --init");
    else kv_set(r, "train.width-mult", "%s", fstr(f0, c->width_mult));
    kv_set(r, "train.init", "%s", c->init ? c->init : "");
    kv_set(r, "train.batch-size", "%d", c->batch_size);
    kv_set(r, "train.world-size", "%d", r->K);
    kv_set(r, "train.lr", "%.9g", c->lr);
    kv_set(r, "train.sgd-momentum", "%.9g", c->sgd_momentum);
    kv_set(r, "train.weight-decay", "%.9g", c->weight_decay);
    kv_set(r, "train.no-decay-bn-bias", "%d", c->no_decay_bn_bias);
    kv_set(r, "train.schedule", "%s", c->schedule == BNL_SCHED_COSINE ? "cosine" : "step");
    if (c->schedule == BNL_SCHED_COSINE) {
        kv_set(r, "train.step-epochs", "-");
        kv_set(r, "train.step-gamma", "-");
    } else {
        if (c->step_every > 0) {
            kv_set(r, "train.step-epochs", "%d", c->step_every);
        } else {
            char ms[VAL_LEN] = "";
            size_t o = 0;
            for (int i = 0; i < c->n_milestones && o < sizeof ms - 16; i++)
                o += (size_t)snprintf(ms + o, sizeof ms - o, "%s%d", i ? "," : "", c->milestones[i]);
            kv_set(r, "train.step-epochs", "%s,", ms);
        }
        kv_set(r, "train.step-gamma", "%.9g", c->step_gamma);
    }
    kv_set(r, "train.warmup-epochs", "%.9g", c->warmup_epochs);
    kv_set(r, "train.bn-momentum", "%s", fstr(f0, c->bn_momentum));
    kv_set(r, "train.running-var", "%s", c->unbiased ? "unbiased" : "biased");
    kv_set(r, "train.sync-bn", "%d", c->sync_bn && r->K > 1);
    kv_set(r, "train.seed", "%llu", (unsigned long long)c->seed);
    // a fresh model (and a resume, which must match) follows --norm; an --init model its file
    bnl_norm_spec ns = c->init ? bnl_resnet_norm_spec(r->m) : c->norm;
    char nstr[48];
    bnl_norm_format(&ns, nstr, sizeof nstr);
    kv_set(r, "train.norm", "%s", nstr);
    kv_set(r, "train.zero-init-residual", "%d", c->zero_init_residual);
    // informational
    kv_set(r, "train.epochs", "%d", c->epochs);
    kv_set(r, "train.threads", "%d", bnl_threads_effective());
    kv_set(r, "train.steps-per-epoch", "%lld", (long long)r->spe);
    const bnl_resnet_info *in = bnl_resnet_get_info(r->m);
    char spec[VAL_LEN];
    size_t o = (size_t)snprintf(spec, sizeof spec, "{\"block\":\"%s\",\"blocks\":[", in->bottleneck ? "bottleneck" : "basic");
    for (int s = 0; s < in->num_stages; s++) o += (size_t)snprintf(spec + o, sizeof spec - o, "%s%d", s ? "," : "", in->blocks[s]);
    o += (size_t)snprintf(spec + o, sizeof spec - o, "],\"widths\":[");
    for (int s = 0; s < in->num_stages; s++) o += (size_t)snprintf(spec + o, sizeof spec - o, "%s%d", s ? "," : "", in->widths[s]);
    snprintf(spec + o, sizeof spec - o, "],\"stem_width\":%d,\"in_channels\":%d,\"num_classes\":%d}", in->stem_width,
             in->in_channels, in->num_classes);
    kv_set(r, "train.arch-spec", "%s", spec);
    // for users of the files: class names, normalization, input size
    if (r->labels_json) kv_set(r, "labels", "%s", r->labels_json);
    kv_set(r, "mean", "[%s,%s,%s]", fstr(f0, r->aug_train.mean[0]), fstr(f1, r->aug_train.mean[1]),
           fstr(f2, r->aug_train.mean[2]));
    kv_set(r, "std", "[%s,%s,%s]", fstr(f0, r->aug_train.std[0]), fstr(f1, r->aug_train.std[1]),
           fstr(f2, r->aug_train.std[2]));
    kv_set(r, "input_size", "[3,%d,%d]", r->H, r->W);
}

static void set_state_meta(run_t *r, int64_t step) {
    kv_set(r, "train.step", "%lld", (long long)step);
    kv_set(r, "train.epoch", "%lld", (long long)(step / r->spe));
    kv_set(r, "train.best-val-top1", "%.9g", r->best_top1);
    kv_set(r, "train.best-epoch", "%d", r->best_epoch);
}

// ---------------------------------------------------------------------------------------------
// Data

static bnl_status subset(size_t **map, size_t *n, size_t want, size_t have, uint64_t seed, uint64_t which,
                         const char *what) {
    *map = NULL;
    *n = have;
    if (want == 0 || want == have) return BNL_OK;
    if (want > have)
        return bnl_fail(BNL_ERR_ARG, "%s: asked for %zu images, the split has %zu", what, want, have);
    size_t *p = malloc(have * sizeof *p);
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "out of memory");
    bnl_status s = bnl_dataset_permutation(p, have, seed, which);
    if (s != BNL_OK) return free(p), s;
    *map = p, *n = want;
    return BNL_OK;
}

static bnl_status open_data(run_t *r) {
    const bnl_train_config *c = r->cfg;
    bnl_status s;
    const char *d = c->data;
    int file_based = 0;
    if (!strcmp(d, "procedural")) {
        bnl_procedural_opts po = bnl_procedural_opts_default();
        po.seed = c->data_seed;
        po.count = c->train_size ? c->train_size : 10000;
        if (c->classes) po.classes = c->classes;
        if (c->image_size) po.size = c->image_size;
        if ((s = bnl_dataset_procedural(&r->train, &po)) != BNL_OK) return s;
        if (!c->no_val) {
            po.seed = mix64(c->data_seed, 0x76616cull);   // "val": a different seed than the train split
            po.count = c->val_size ? c->val_size : 2000;
            if ((s = bnl_dataset_procedural(&r->val, &po)) != BNL_OK) return s;
        }
    } else if (!strncmp(d, "cifar10:", 8)) {
        file_based = 1;
        if (c->image_size && c->image_size != 32)
            return bnl_fail(BNL_ERR_ARG, "CIFAR-10 images are 32x32 (got image size %d)", c->image_size);
        if ((s = bnl_dataset_cifar10(&r->train, d + 8, 1)) != BNL_OK) return s;
        if (!c->no_val && (s = bnl_dataset_cifar10(&r->val, d + 8, 0)) != BNL_OK) return s;
    } else if (!strncmp(d, "folder:", 7)) {
        file_based = 1;
        char tr[1100], va[1100];
        snprintf(tr, sizeof tr, "%s/train", d + 7);
        snprintf(va, sizeof va, "%s/val", d + 7);
        if (!file_exists(tr))
            return bnl_fail(BNL_ERR_IO, "%s: not found (folder:DIR expects DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg)", tr);
        bnl_imagefolder_opts io = bnl_imagefolder_opts_default();
        if (c->image_size) {
            io.size = c->image_size;
            io.resize = c->image_size * 256 / 224;
        }
        if ((s = bnl_dataset_imagefolder(&r->train, tr, &io)) != BNL_OK) return s;
        if (!c->no_val) {
            if (!file_exists(va))
                return bnl_fail(BNL_ERR_IO, "%s: not found (folder:DIR expects DIR/train and DIR/val)", va);
            if ((s = bnl_dataset_imagefolder(&r->val, va, &io)) != BNL_OK) return s;
        }
    } else if (!strcmp(d, "fashion-mnist") || !strncmp(d, "fashion-mnist:", 14) || !strncmp(d, "mnist:", 6)) {
        // IDX files: DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
        file_based = 1;
        int fashion = d[0] == 'f';
        const char *dir = fashion ? (d[13] ? d + 14 : BNL_FASHION_MNIST_DIR) : d + 6;
        if (!*dir) return bnl_fail(BNL_ERR_ARG, "--data %s: empty directory", d);
        bnl_idx_opts io = bnl_idx_opts_default();
        io.size = c->image_size, io.fashion_names = fashion;
        if ((s = bnl_dataset_mnist(&r->train, dir, 1, &io)) != BNL_OK) return s;
        if (!c->no_val && (s = bnl_dataset_mnist(&r->val, dir, 0, &io)) != BNL_OK) return s;
    } else {
        return bnl_fail(BNL_ERR_ARG, "unknown data '%s' (expected procedural, cifar10:DIR, folder:DIR, fashion-mnist[:DIR] or mnist:DIR)", d);
    }
    r->H = bnl_dataset_height(r->train), r->W = bnl_dataset_width(r->train);
    r->C = bnl_dataset_num_classes(r->train);
    if (r->val) {
        if (bnl_dataset_num_classes(r->val) != r->C)
            return bnl_fail(BNL_ERR_FORMAT, "%s: the validation split has %d classes, the training split %d", d,
                            bnl_dataset_num_classes(r->val), r->C);
        for (int k = 0; k < r->C; k++) {
            const char *a = bnl_dataset_class_name(r->train, k), *b = bnl_dataset_class_name(r->val, k);
            if (a && b && strcmp(a, b))
                return bnl_fail(BNL_ERR_FORMAT, "%s: class %d is '%s' in the training split but '%s' in the validation split",
                                d, k, a, b);
        }
        if (bnl_dataset_height(r->val) != r->H || bnl_dataset_width(r->val) != r->W)
            return bnl_fail(BNL_ERR_FORMAT, "%s: validation images are %dx%d, training images %dx%d", d,
                            bnl_dataset_height(r->val), bnl_dataset_width(r->val), r->H, r->W);
    }
    r->n_train = bnl_dataset_size(r->train);
    r->n_val = r->val ? bnl_dataset_size(r->val) : 0;
    if (file_based) {
        if ((s = subset(&r->train_map, &r->n_train, c->train_size, r->n_train, c->data_seed, 1, "train-size")) != BNL_OK)
            return s;
        if (r->val && (s = subset(&r->val_map, &r->n_val, c->val_size, r->n_val, c->data_seed, 2, "val-size")) != BNL_OK)
            return s;
    }
    r->aug_train = bnl_dataset_augment_default(r->train, c->augment);
    bnl_augment plain = bnl_dataset_augment_default(r->val ? r->val : r->train, 0);
    memcpy(plain.mean, r->aug_train.mean, sizeof plain.mean);   // one normalization for both splits
    memcpy(plain.std, r->aug_train.std, sizeof plain.std);
    r->aug_val = plain;
    sbuf b = {0};
    sb_add(&b, "[");
    for (int k = 0; k < r->C; k++) {
        const char *nm = bnl_dataset_class_name(r->train, k);
        char fallback[24];
        if (!nm) snprintf(fallback, sizeof fallback, "%d", k), nm = fallback;
        if (k) sb_add(&b, ",");
        sb_json_str(&b, nm);
    }
    sb_add(&b, "]");
    if (b.oom) return free(b.s), bnl_fail(BNL_ERR_NOMEM, "out of memory");
    r->labels_json = b.s;
    return BNL_OK;
}

static void batch_indices(size_t *dst, const size_t *src, size_t n, const size_t *map) {
    for (size_t i = 0; i < n; i++) dst[i] = map ? map[src[i]] : src[i];
}

// ---------------------------------------------------------------------------------------------
// Model

// --init weights; a file with another class count gets a fresh fc (torch.nn.Linear's init, from seed).
static bnl_status load_init(run_t *r) {
    const char *path = r->cfg->init;
    bnl_st_file f;
    bnl_status s = bnl_st_read_file(&f, path);
    if (s != BNL_OK) return s;
    const bnl_st_tensor *fw = bnl_st_find(&f, "fc.weight");
    if (!fw || fw->ndim != 2 || fw->shape[0] == r->C) {
        s = bnl_resnet_load_parsed(&r->m, &f, 1);
    } else {
        // rebuild the state dict with a new head, then load it
        int64_t F = fw->shape[1];
        note(r, "%s has %lld classes, the data %d: training a new fc layer", path, (long long)fw->shape[0], r->C);
        float *head = malloc(((size_t)r->C * (size_t)F + (size_t)r->C) * sizeof(float));
        bnl_st_writer *w = NULL;
        s = head ? bnl_st_writer_create(&w) : bnl_fail(BNL_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < f.count && s == BNL_OK; i++) {
            const bnl_st_tensor *t = &f.tensors[i];
            if (!strcmp(t->name, "fc.weight") || !strcmp(t->name, "fc.bias") || bnl_checkpoint_owns_tensor(t->name))
                continue;
            s = bnl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        if (s == BNL_OK) {
            bnl_rng rng = bnl_rng_seed(mix64(r->cfg->seed, 0x666380ull));
            double bound = 1.0 / sqrt((double)F);
            for (size_t i = 0; i < (size_t)r->C * (size_t)F + (size_t)r->C; i++)
                head[i] = (float)((2.0 * bnl_rng_uniform(&rng) - 1.0) * bound);
            int64_t ws[2] = {r->C, F}, bs[1] = {r->C};
            s = bnl_st_writer_add(w, "fc.weight", BNL_DT_F32, 2, ws, head);
            if (s == BNL_OK) s = bnl_st_writer_add(w, "fc.bias", BNL_DT_F32, 1, bs, head + (size_t)r->C * (size_t)F);
        }
        for (size_t i = 0; i < f.meta_count && s == BNL_OK; i++)
            if (strcmp(f.meta_keys[i], "labels")) s = bnl_st_writer_meta(w, f.meta_keys[i], f.meta_values[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        if (s == BNL_OK) s = bnl_st_writer_to_buffer(w, &buf, &len);
        if (s == BNL_OK) s = bnl_resnet_load(&r->m, buf, len);
        free(buf);
        free(head);
        bnl_st_writer_free(w);
    }
    if (s != BNL_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        bnl_st_free(&f);
        return bnl_fail(s, "--init %s: %s", path, msg);
    }
    bnl_st_free(&f);
    return BNL_OK;
}

// Loads DIR/last.safetensors and checks that it belongs to this configuration.
static bnl_status load_resume(run_t *r, int64_t *step) {
    bnl_status s = bnl_checkpoint_load(&r->m, r->last_path);
    if (s != BNL_OK) return s;
    const char *st = bnl_resnet_meta(r->m, "train.step");
    char *end = NULL;
    long long v = st ? strtoll(st, &end, 10) : -1;
    if (!st || *end || v < 0)
        return bnl_fail(BNL_ERR_FORMAT, "%s: no valid 'train.step' in its metadata (not written by bnlab train?)",
                        r->last_path);
    *step = v;
    const char *bt = bnl_resnet_meta(r->m, "train.best-val-top1"), *be = bnl_resnet_meta(r->m, "train.best-epoch");
    r->best_top1 = bt ? atof(bt) : -1.0;
    r->best_epoch = be ? atoi(be) : 0;
    return BNL_OK;
}

static bnl_status verify_resume(run_t *r) {
    for (int i = 0; k_fixed_keys[i]; i++) {
        char key[64];
        snprintf(key, sizeof key, "train.%s", k_fixed_keys[i]);
        const char *was = bnl_resnet_meta(r->m, key), *now = kv_get(r, key);
        for (int j = 0; !was && k_key_defaults[j]; j += 2)
            if (!strcmp(k_key_defaults[j], k_fixed_keys[i])) was = k_key_defaults[j + 1];
        if (!was)
            return bnl_fail(BNL_ERR_FORMAT, "--resume: %s has no '%s' in its metadata (not written by bnlab train?)",
                            r->last_path, key);
        if (now && strcmp(was, now))
            return bnl_fail(BNL_ERR_ARG,
                            "--resume: %s was trained with %s%s '%s', this run has '%s' (resume with the same settings)",
                            r->last_path, !strcmp(k_fixed_keys[i], "world-size") ? "" : "--",
                            !strcmp(k_fixed_keys[i], "world-size") ? "MPI ranks" : k_fixed_keys[i], was, now);
    }
    return BNL_OK;
}

static bnl_status build_model(run_t *r, int64_t *start_step) {
    const bnl_train_config *c = r->cfg;
    bnl_status s;
    *start_step = 0;
    snprintf(r->arch, sizeof r->arch, "resnet%d", c->depth);
    r->best_top1 = -1.0, r->best_epoch = 0;
    if (c->resume) {
        if (!file_exists(r->last_path))
            return bnl_fail(BNL_ERR_IO, "--resume: %s not found (nothing to resume in '%s')", r->last_path, c->out_dir);
        if ((s = load_resume(r, start_step)) != BNL_OK) return s;
    } else if (c->init) {
        if ((s = load_init(r)) != BNL_OK) return s;
        size_t np = 0, ns = 0;
        const float *p = bnl_resnet_params(r->m, &np), *st = bnl_resnet_stats(r->m, &ns);
        if (!params_finite(p, np) || !params_finite(st, ns))
            return bnl_fail(BNL_ERR_NUMERIC, "--init %s: the weights hold non-finite values", c->init);
    } else {
        bnl_resnet_spec sp;
        if ((s = bnl_resnet_spec_named(&sp, c->depth, c->width_mult, r->C)) != BNL_OK) return s;
        if ((s = bnl_resnet_create(&r->m, &sp, c->seed)) != BNL_OK) return s;
        if (c->zero_init_residual) bnl_resnet_zero_init_residual(r->m);
        if ((s = bnl_resnet_set_norm_spec(r->m, &c->norm)) != BNL_OK) return s;
    }
    const bnl_resnet_info *in = bnl_resnet_get_info(r->m);
    if (in->num_classes != r->C)
        return bnl_fail(BNL_ERR_SHAPE, "the model has %d classes, the data %d", in->num_classes, r->C);
    if (in->in_channels != 3)
        return bnl_fail(BNL_ERR_SHAPE, "the model takes %d input channels, the images have 3", in->in_channels);
    bnl_bn_config bn = bnl_resnet_bn_config(r->m);
    bn.momentum = c->bn_momentum;
    bn.unbiased = c->unbiased;
    bn.cumulative = 0;
    if ((s = bnl_resnet_set_bn_config(r->m, &bn)) != BNL_OK) return s;
    bnl_resnet_set_training(r->m, 1);
    return BNL_OK;
}

// ---------------------------------------------------------------------------------------------
// Files (rank 0)

static bnl_status write_metrics(run_t *r) {
    sbuf b = {0};
    sb_add(&b, "epoch,step,lr,train_loss,train_acc,val_loss,val_top1,val_top5,images_per_s,seconds,comm_ms\n");
    for (size_t i = 0; i < r->nrows; i++) sb_add(&b, "%s\n", r->rows[i]);
    if (b.oom) return free(b.s), bnl_fail(BNL_ERR_NOMEM, "out of memory");
    bnl_status s = bnl_write_file_atomic(r->metrics_path, (const uint8_t *)b.s, b.n);
    free(b.s);
    return s;
}

static bnl_status add_row(run_t *r, const char *row) {
    if (r->nrows == r->caprows) {
        size_t nc = r->caprows ? 2 * r->caprows : 16;
        char **p = realloc(r->rows, nc * sizeof *p);
        if (!p) return bnl_fail(BNL_ERR_NOMEM, "out of memory");
        r->rows = p, r->caprows = nc;
    }
    if (!(r->rows[r->nrows] = strdup(row))) return bnl_fail(BNL_ERR_NOMEM, "out of memory");
    r->nrows++;
    return BNL_OK;
}

// Keeps the rows of an earlier metrics.csv up to the resumed step.
static bnl_status load_metrics(run_t *r, int64_t upto) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!file_exists(r->metrics_path)) return BNL_OK;
    bnl_status s = bnl_read_file(r->metrics_path, &buf, &len);
    if (s != BNL_OK) return s;
    char *text = malloc(len + 1);
    if (!text) return free(buf), bnl_fail(BNL_ERR_NOMEM, "out of memory");
    memcpy(text, buf, len);
    text[len] = 0;
    free(buf);
    char *save = NULL;
    int first = 1;
    for (char *line = strtok_r(text, "\n", &save); line && s == BNL_OK; line = strtok_r(NULL, "\n", &save)) {
        if (first) {   // the header
            first = 0;
            continue;
        }
        long long ep = 0, st = -1;
        if (sscanf(line, "%lld,%lld", &ep, &st) == 2 && st <= upto) s = add_row(r, line);
    }
    free(text);
    return s;
}

// Testing (--dump-batches): DIR/step-<global step, 1-based>.rank<r>.safetensors with `input` and
// `labels`, the format of `bnlab infer` and `bnlab step`.
static bnl_status dump_batch(const run_t *r, int64_t step, const float *x, const int64_t *labels) {
    char path[1200];
    snprintf(path, sizeof path, "%s/step-%06lld.rank%d.safetensors", r->cfg->dump_batches, (long long)step, r->rank);
    bnl_st_writer *w = NULL;
    bnl_status s = bnl_st_writer_create(&w);
    int64_t xs[4] = {r->cfg->batch_size, r->H, r->W, 3}, ls[1] = {r->cfg->batch_size};
    if (s == BNL_OK) s = bnl_st_writer_add(w, "input", BNL_DT_F32, 4, xs, x);
    if (s == BNL_OK) s = bnl_st_writer_add(w, "labels", BNL_DT_I64, 1, ls, labels);
    if (s == BNL_OK) s = bnl_st_writer_to_file(w, path);
    bnl_st_writer_free(w);
    return s;
}

static bnl_status save_last(run_t *r, int64_t step) {
    set_state_meta(r, step);
    return bnl_checkpoint_save(r->m, r->last_path, 1, r->kv, r->nkv);
}

static bnl_status save_model(run_t *r, const char *path, int64_t step) {
    set_state_meta(r, step);
    return bnl_checkpoint_save(r->m, path, 0, r->kv, r->nkv);
}

// Every rank learns whether an operation succeeded everywhere; the lowest failing rank reports.
static bnl_status agree(run_t *r, bnl_status s, int *report) {
    int first = bnl_dist_first_failure(r->dist, s == BNL_OK);
    if (first < 0) return BNL_OK;
    if (first == r->rank) {
        *report = 1;
        if (s != BNL_OK) return s;
    }
    if (s == BNL_OK) bnl_fail(BNL_ERR_IO, "rank %d failed", first);
    return s != BNL_OK ? s : BNL_ERR_IO;
}

// ---------------------------------------------------------------------------------------------
// Evaluation: eval mode; ranks take every K-th batch; sums over ranks.
// out: [loss sum, top-1 hits, top-5 hits, images]
static bnl_status evaluate(run_t *r, float *x, int64_t *labels, float *logits, size_t *idx, size_t *seq,
                           double out[4]) {
    size_t B = (size_t)r->cfg->batch_size, nb = (r->n_val + B - 1) / B;
    memset(out, 0, 4 * sizeof(double));
    bnl_resnet_set_training(r->m, 0);
    bnl_status s = BNL_OK;
    for (size_t b = (size_t)r->rank; b < nb && s == BNL_OK; b += (size_t)r->K) {
        size_t n = r->n_val - b * B < B ? r->n_val - b * B : B;
        for (size_t i = 0; i < n; i++) seq[i] = b * B + i;
        batch_indices(idx, seq, n, r->val_map);
        s = bnl_dataset_get_batch(r->val, x, labels, idx, n, &r->aug_val, 0);
        if (s == BNL_OK) s = bnl_resnet_forward(r->m, logits, x, (int)n, r->H, r->W);
        for (size_t i = 0; i < n && s == BNL_OK; i++) {
            const float *z = logits + i * (size_t)r->C;
            float zl = z[labels[i]];
            double mx = z[0], se = 0;
            int above = 0;
            for (int k = 0; k < r->C; k++) {
                if (z[k] > mx) mx = z[k];
                if (z[k] > zl) above++;
            }
            for (int k = 0; k < r->C; k++) se += exp((double)z[k] - mx);
            out[0] += log(se) + mx - (double)zl;
            out[1] += above < 1;
            out[2] += above < 5;
            out[3] += 1;
        }
    }
    bnl_resnet_set_training(r->m, 1);
    int report = 0;
    if ((s = agree(r, s, &report)) != BNL_OK) return s;
    return bnl_dist_sum_f64(r->dist, out, 4);
}

// ---------------------------------------------------------------------------------------------
// The run

static void free_run(run_t *r) {
    bnl_dataset_free(r->train);
    bnl_dataset_free(r->val);
    free(r->train_map), free(r->val_map), free(r->labels_json);
    bnl_resnet_free(r->m);
    for (size_t i = 0; i < r->nrows; i++) free(r->rows[i]);
    free(r->rows);
}

static const char *nonfinite_name(double v) { return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

bnl_status bnl_train_run(const bnl_train_config *cfg, bnl_dist *dist, const bnl_train_hooks *hooks,
                         bnl_train_result *out) {
    bnl_train_result dummy;
    if (!out) out = &dummy;
    memset(out, 0, sizeof *out);
    if (!cfg) return out->report_error = 1, bnl_fail(BNL_ERR_ARG, "train: NULL configuration");
    bnl_status s = check_config(cfg);
    if (s != BNL_OK) return out->report_error = 1, s;
    run_t R;
    memset(&R, 0, sizeof R);
    run_t *r = &R;
    r->cfg = cfg, r->dist = dist, r->hooks = hooks;
    r->rank = bnl_dist_rank(dist), r->K = bnl_dist_size(dist);
    snprintf(r->last_path, sizeof r->last_path, "%s/last.safetensors", cfg->out_dir);
    snprintf(r->best_path, sizeof r->best_path, "%s/best.safetensors", cfg->out_dir);
    snprintf(r->model_path, sizeof r->model_path, "%s/model.safetensors", cfg->out_dir);
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.csv", cfg->out_dir);
    int report = 0;
    float *x = NULL, *logits = NULL;
    int64_t *labels = NULL;
    size_t *perm = NULL, *idx = NULL, *seq = NULL;
    const int B = cfg->batch_size, K = r->K;
    const size_t GB = (size_t)B * (size_t)K;

    // data, model, buffers: every rank; then agree
    s = open_data(r);
    if (s == BNL_OK && r->n_train < GB)
        s = bnl_fail(BNL_ERR_ARG, "the training set has %zu images, fewer than one global batch (%d x %d ranks)",
                     r->n_train, B, K);
    int64_t start = 0;
    if (s == BNL_OK) {
        r->spe = (int64_t)(r->n_train / GB);   // the last partial batch of an epoch is dropped
        r->total = (int64_t)cfg->epochs * r->spe;
        r->limit = cfg->max_steps > 0 && cfg->max_steps < r->total ? cfg->max_steps : r->total;
        if (!cfg->resume && file_exists(r->last_path))
            s = bnl_fail(BNL_ERR_ARG, "'%s' already holds a run (%s): pass --resume to continue it, or another --out",
                         cfg->out_dir, r->last_path);
    }
    if (s == BNL_OK) s = build_model(r, &start);
    r->ckpt_step = start;
    if (s == BNL_OK) {
        set_config_meta(r);
        if (cfg->resume) s = verify_resume(r);
    }
    if (s == BNL_OK && cfg->resume && start > r->total)
        s = bnl_fail(BNL_ERR_ARG, "--resume: %s is at step %lld, beyond --epochs %d (%lld steps)", r->last_path,
                     (long long)start, cfg->epochs, (long long)r->total);
    size_t img = (size_t)r->H * (size_t)r->W * 3;
    if (s == BNL_OK) {
        x = bnl_alloc((size_t)B * img * sizeof(float));
        logits = bnl_alloc((size_t)B * (size_t)r->C * sizeof(float));
        labels = malloc((size_t)B * sizeof *labels);
        perm = malloc(r->n_train * sizeof *perm);
        idx = malloc((size_t)B * sizeof *idx);
        seq = malloc((size_t)B * sizeof *seq);
        if (!x || !logits || !labels || !perm || !idx || !seq) s = bnl_fail(BNL_ERR_NOMEM, "out of memory for batches");
        // gradients and momentum are allocated on first use: here, where a failure is agreed on
        if (s == BNL_OK && !bnl_resnet_grads(r->m, NULL))
            s = bnl_fail(BNL_ERR_NOMEM, "out of memory for the gradients and momentum");
    }
    if ((s = agree(r, s, &report)) != BNL_OK) goto done;
    s = bnl_dist_attach(dist, r->m, cfg->sync_bn);
    if ((s = agree(r, s, &report)) != BNL_OK) goto done;

    // schedule
    r->sched.kind = cfg->schedule;
    r->sched.base_lr = cfg->lr;
    r->sched.steps_per_epoch = r->spe;
    r->sched.total_steps = r->total;
    r->sched.warmup_steps = (int64_t)llround(cfg->warmup_epochs * (double)r->spe);
    r->sched.step_every = cfg->step_every;
    r->sched.n_milestones = cfg->n_milestones;
    memcpy(r->sched.milestones, cfg->milestones, sizeof r->sched.milestones);
    r->sched.gamma = cfg->step_gamma;

    // output directory, metrics so far, the checkpoint before the first step
    if (r->rank == 0) {
        s = mkdir_p(cfg->out_dir);
        if (s == BNL_OK && cfg->resume) s = load_metrics(r, start);
        if (s == BNL_OK && !cfg->resume) s = save_last(r, 0);
    }
    if ((s = agree(r, s, &report)) != BNL_OK) goto done;
    if (cfg->resume) {
        if (start == r->total) note(r, "%s is already at step %lld of %lld: nothing left to train", r->last_path,
                                    (long long)start, (long long)r->total);
        else note(r, "resuming %s at epoch %lld, step %lld", r->last_path, (long long)(start / r->spe + 1),
                  (long long)start);
        const char *ep = bnl_resnet_meta(r->m, "train.epochs");
        if (ep && atoi(ep) != cfg->epochs && cfg->schedule == BNL_SCHED_COSINE)
            note(r, "the checkpoint was made for %s epochs, this run has %d: the cosine schedule now spans %d epochs",
                 ep, cfg->epochs, cfg->epochs);
    }
    if (r->rank == 0 && hooks && hooks->on_start) {
        bnl_train_info info = {cfg->init ? cfg->init : r->arch, bnl_resnet_get_info(r->m)->num_params, r->C, r->H,
                               r->W, K, B, r->n_train, r->n_val, r->spe, r->total, start, cfg->epochs,
                               bnl_threads_effective()};
        hooks->on_start(hooks->ctx, &info);
    }

    size_t np = 0;
    const float *params = bnl_resnet_params(r->m, &np);
    float *grads = bnl_resnet_grads(r->m, NULL);   // allocated above
    size_t nstats = 0;
    float *stats = bnl_resnet_stats_mut(r->m, &nstats);
    bnl_sgd sgd = bnl_sgd_default();
    sgd.momentum = (float)cfg->sgd_momentum;
    sgd.weight_decay = (float)cfg->weight_decay;
    sgd.no_decay_bn_bias = cfg->no_decay_bn_bias;
    const float inv_k = 1.0f / (float)K;
    double t_run = now_s();
    int64_t run_steps = 0;
    int64_t g = start;
    double lr = bnl_schedule_lr(&r->sched, g);

    while (g < r->limit) {
        const int64_t e = g / r->spe;
        int64_t j = g % r->spe;
        const uint64_t aug_seed = mix64(cfg->seed, 0x61756700ull + (uint64_t)e);
        s = bnl_dataset_permutation(perm, r->n_train, cfg->seed, (uint64_t)e);
        if ((s = agree(r, s, &report)) != BNL_OK) goto done;
        double t0 = now_s(), loss_sum = 0, correct = 0, seen = 0, comm0 = bnl_dist_comm_seconds(dist);
        int64_t steps = 0;
        for (; j < r->spe && g < r->limit; j++, g++) {
            lr = bnl_schedule_lr(&r->sched, g);
            // this rank's slice of the global batch
            batch_indices(idx, perm + (size_t)j * GB + (size_t)r->rank * (size_t)B, (size_t)B, r->train_map);
            s = bnl_dataset_get_batch(r->train, x, labels, idx, (size_t)B, &r->aug_train, aug_seed);
            if (s == BNL_OK && cfg->nudge_input)
                for (size_t i = 0; i < (size_t)B * img; i++) x[i] = nextafterf(x[i], INFINITY);
            if (s == BNL_OK && cfg->dump_batches) s = dump_batch(r, g + 1, x, labels);
            float loss = NAN;
            bnl_dist_step_begin(dist);
            if (s == BNL_OK) {
                s = bnl_resnet_forward_backward(r->m, &loss, logits, x, B, r->H, r->W, labels);
            } else if (K > 1) {
                // the batch could not be read here: run the step on zeros all the same, so that the
                // other ranks are not left waiting in its collectives; the step then fails everywhere
                memset(x, 0, (size_t)B * img * sizeof(float));
                memset(labels, 0, (size_t)B * sizeof *labels);
                char msg[512];
                snprintf(msg, sizeof msg, "%s", bnl_last_error());
                (void)bnl_resnet_forward_backward(r->m, &loss, logits, x, B, r->H, r->W, labels);
                bnl_fail(s, "%s", msg);
            }
            // this rank's loss and hits; the step's outcome and their sums over ranks come back in
            // one collective, with the gradients summed over ranks
            double red[2] = {(double)loss, 0};
            for (int i = 0; i < B && s == BNL_OK; i++) {
                const float *z = logits + (size_t)i * (size_t)r->C;
                int best = 0;
                for (int k = 1; k < r->C; k++)
                    if (z[k] > z[best]) best = k;
                red[1] += best == labels[i];
            }
            int first = bnl_dist_step_end(dist, s == BNL_OK, red);
            if (first == BNL_DIST_STUCK) {
                // failed in the middle of the step: the other ranks cannot be released, only ended
                report = 1;
                out->abort_ranks = 1;
                char msg[512];
                snprintf(msg, sizeof msg, "%s", bnl_last_error());
                s = bnl_fail(s != BNL_OK ? s : BNL_ERR_IO, "epoch %lld step %lld: %s (ending all %d ranks)",
                             (long long)e + 1, (long long)g + 1, msg, K);
                goto done;
            }
            if (first >= 0) {
                // the loss is checked before any update: the weights in memory and on disk are good
                if (first == r->rank) {
                    report = 1;
                    if (s == BNL_ERR_NUMERIC && !isfinite(loss)) {
                        s = bnl_fail(BNL_ERR_NUMERIC,
                                     "training diverged: loss is %s at epoch %lld step %lld (lr %g); the last checkpoint "
                                     "%s (step %lld) is intact",
                                     nonfinite_name(loss), (long long)e + 1, (long long)g + 1, lr, r->last_path,
                                     (long long)r->ckpt_step);
                    } else {
                        char msg[512];
                        snprintf(msg, sizeof msg, "%s", bnl_last_error());
                        s = bnl_fail(s != BNL_OK ? s : BNL_ERR_NUMERIC, "epoch %lld step %lld: %s", (long long)e + 1,
                                     (long long)g + 1, msg);
                    }
                } else {
                    s = bnl_fail(BNL_ERR_NUMERIC, "rank %d failed at step %lld", first, (long long)g + 1);
                }
                goto done;
            }
            if (K > 1)   // the gradients hold the sums over ranks: their mean
                for (size_t i = 0; i < np; i++) grads[i] *= inv_k;
            // identical on every rank from here on, so every rank decides the same
            if (!params_finite(grads, np)) {
                report = r->rank == 0;
                s = bnl_fail(BNL_ERR_NUMERIC,
                             "training diverged: loss is %g with a non-finite gradient at epoch %lld step %lld (lr %g); "
                             "the last checkpoint %s (step %lld) is intact",
                             red[0] / K, (long long)e + 1, (long long)g + 1, lr, r->last_path, (long long)r->ckpt_step);
                goto done;
            }
            sgd.lr = (float)lr;
            if ((s = bnl_resnet_sgd_update(r->m, &sgd)) != BNL_OK) goto fail_all;
            // weights that overflow here give a non-finite loss at the next step (caught above) or are
            // caught before the checkpoint below
            loss_sum += red[0] / K, correct += red[1], seen += (double)GB;
            steps++, run_steps++;
            if (r->rank == 0 && hooks && hooks->on_step) {
                double el = now_s() - t0;
                bnl_train_progress p = {(int)e + 1, cfg->epochs, j + 1, r->spe, g + 1, r->total, lr,
                                        loss_sum / (double)steps, correct / seen, el > 0 ? seen / el : 0, 0,
                                        K > 1 ? 1e3 * (bnl_dist_comm_seconds(dist) - comm0) / (double)steps : 0};
                double per_step = (now_s() - t_run) / (double)run_steps;
                p.eta_s = per_step * (double)(r->limit - (g + 1));
                hooks->on_step(hooks->ctx, &p);
            }
        }
        double t_train = now_s() - t0;
        double comm_ms = K > 1 && steps ? 1e3 * (bnl_dist_comm_seconds(dist) - comm0) / (double)steps : 0;
        int complete = j == r->spe;
        if (!params_finite(params, np) || !params_finite(stats, nstats) ||
            !params_finite(bnl_resnet_momentum(r->m, NULL), np)) {
            report = r->rank == 0;
            s = bnl_fail(BNL_ERR_NUMERIC,
                         "training diverged: the weights are not finite after epoch %lld step %lld (lr %g); the last "
                         "checkpoint %s (step %lld) is intact",
                         (long long)e + 1, (long long)g, lr, r->last_path, (long long)r->ckpt_step);
            goto done;
        }
        // replicas without synchronized BatchNorm have their own running statistics: take rank 0's
        // (PyTorch DDP broadcasts buffers from rank 0) so eval, files and a resume agree everywhere
        if (K > 1 && (s = bnl_dist_bcast_f32(dist, stats, nstats, 0)) != BNL_OK) goto fail_all;
        if (K > 1) {
            uint64_t h = fnv1a(0xCBF29CE484222325ull, params, np * sizeof(float));
            h = fnv1a(h, bnl_resnet_momentum(r->m, NULL), np * sizeof(float));
            if (!bnl_dist_same_u64(dist, h)) {
                report = r->rank == 0;
                s = bnl_fail(BNL_ERR_NUMERIC, "after epoch %lld the ranks hold different weights (the gradient all-reduce "
                             "did not give every rank the same sums)", (long long)e + 1);
                goto done;
            }
        }
        bnl_train_epoch row = {(int)e + 1, complete, g, lr, steps ? loss_sum / (double)steps : NAN,
                               seen > 0 ? correct / seen : NAN, 0, 0, NAN, NAN, NAN,
                               t_train > 0 ? seen / t_train : 0, 0, comm_ms};
        int last_epoch = g >= r->limit;
        int do_eval = r->val && r->n_val > 0 &&
                      (last_epoch || (complete && cfg->eval_every > 0 && (e + 1) % cfg->eval_every == 0));
        if (do_eval) {
            double ev[4];
            if ((s = evaluate(r, x, labels, logits, idx, seq, ev)) != BNL_OK) goto fail_all;
            row.has_val = 1;
            row.val_loss = ev[0] / ev[3], row.val_top1 = ev[1] / ev[3], row.val_top5 = ev[2] / ev[3];
            if (row.val_top1 > r->best_top1) {
                r->best_top1 = row.val_top1, r->best_epoch = (int)e + 1;
                row.best = 1;
            }
        }
        row.seconds = now_s() - t0;
        // files: best, then the metrics, then last (its metadata names the best). metrics.csv goes
        // before the checkpoint: a kill between the two leaves a row past the checkpoint, which a
        // resume drops and writes again, never a checkpoint past the last row (a row lost for good)
        s = BNL_OK;
        if (r->rank == 0) {
            if (row.best) s = save_model(r, r->best_path, g);
            char line[512];
            if (row.has_val)
                snprintf(line, sizeof line, "%d,%lld,%.6g,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f,%.3f,%.3f", row.epoch,
                         (long long)g, row.lr, row.train_loss, row.train_acc, row.val_loss, row.val_top1, row.val_top5,
                         row.images_per_s, row.seconds, row.comm_ms);
            else
                snprintf(line, sizeof line, "%d,%lld,%.6g,%.6f,%.6f,,,,%.1f,%.3f,%.3f", row.epoch, (long long)g,
                         row.lr, row.train_loss, row.train_acc, row.images_per_s, row.seconds, row.comm_ms);
            if (s == BNL_OK) s = add_row(r, line);
            if (s == BNL_OK) s = write_metrics(r);
            if (s == BNL_OK) s = save_last(r, g);
        }
        if ((s = agree(r, s, &report)) != BNL_OK) goto done;
        r->ckpt_step = g;
        out->last_train_loss = row.train_loss;
        if (r->rank == 0 && hooks && hooks->on_epoch) hooks->on_epoch(hooks->ctx, &row);
    }
    out->steps_done = g;
    out->best_epoch = r->best_epoch;
    out->best_val_top1 = r->best_top1;
    // the final model (with the class names); rank 0
    s = r->rank == 0 ? save_model(r, r->model_path, g) : BNL_OK;
    s = agree(r, s, &report);
    goto done;

fail_all:
    // a collective or an update failed: symmetric on every rank
    report = r->rank == 0;
done:
    out->report_error = report;
    bnl_free(x), bnl_free(logits);
    free(labels), free(perm), free(idx), free(seq);
    free_run(r);
    return s;
}
