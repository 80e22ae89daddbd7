// The native training loop: configuration, model, evaluation, and the loop itself (train_step,
// end_epoch). Data parallel through bnl_dist (train/dist.c). The schedule, the checkpoints and the
// run's metadata live beside it (train_internal.h lists the files). The library never prints:
// progress goes through hooks, errors through bnl_last_error().
// Sizes: B images per rank and step, K ranks, GB = K*B global batch, H,W image size, C classes.
#include "train/train_internal.h"

#include "core/rng.h"
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

double tr_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t tr_mix64(uint64_t a, uint64_t b) {
    bnl_rng r = bnl_rng_seed(a ^ (b * 0xD1B54A32D192ED03ull));
    return bnl_rng_u64(&r);
}

bnl_status tr_mkdir_p(const char *dir) {
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

int tr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int tr_all_finite(const float *p, size_t n) {
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

void tr_note(tr_run *r, const char *fmt, ...) {
    if (r->rank != 0 || !r->hooks || !r->hooks->on_note) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->hooks->on_note(r->hooks->ctx, line);
}

static const char *nonfinite_name(double v) { return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

// ---------------------------------------------------------------------------------------------
// Model

// --init weights; a file with another class count gets a fresh fc (torch.nn.Linear's init, from seed).
static bnl_status load_init(tr_run *r) {
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
        tr_note(r, "%s has %lld classes, the data %d: training a new fc layer", path, (long long)fw->shape[0], r->C);
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
            bnl_rng rng = bnl_rng_seed(tr_mix64(r->cfg->seed, 0x666380ull));
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

static bnl_status build_model(tr_run *r, int64_t *start_step) {
    const bnl_train_config *c = r->cfg;
    bnl_status s;
    *start_step = 0;
    snprintf(r->arch, sizeof r->arch, "resnet%d", c->depth);
    r->best_top1 = -1.0, r->best_epoch = 0;
    if (c->resume) {
        if (!tr_file_exists(r->last_path))
            return bnl_fail(BNL_ERR_IO, "--resume: %s not found (nothing to resume in '%s')", r->last_path, c->out_dir);
        if ((s = tr_load_resume(r, start_step)) != BNL_OK) return s;
    } else if (c->init) {
        if ((s = load_init(r)) != BNL_OK) return s;
        size_t np = 0, ns = 0;
        const float *p = bnl_resnet_params(r->m, &np), *st = bnl_resnet_stats(r->m, &ns);
        if (!tr_all_finite(p, np) || !tr_all_finite(st, ns))
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

// Every rank learns whether an operation succeeded everywhere; the lowest failing rank reports.
static bnl_status agree(tr_run *r, bnl_status s, int *report) {
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
static bnl_status evaluate(tr_run *r, float *x, int64_t *labels, float *logits, size_t *idx, size_t *seq,
                           double out[4]) {
    size_t B = (size_t)r->cfg->batch_size, nb = (r->n_val + B - 1) / B;
    memset(out, 0, 4 * sizeof(double));
    bnl_resnet_set_training(r->m, 0);
    bnl_status s = BNL_OK;
    for (size_t b = (size_t)r->rank; b < nb && s == BNL_OK; b += (size_t)r->K) {
        size_t n = r->n_val - b * B < B ? r->n_val - b * B : B;
        for (size_t i = 0; i < n; i++) seq[i] = b * B + i;
        tr_batch_indices(idx, seq, n, r->val_map);
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

static void free_run(tr_run *r) {
    bnl_dataset_free(r->train);
    bnl_dataset_free(r->val);
    free(r->train_map), free(r->val_map), free(r->labels_json);
    bnl_resnet_free(r->m);
    for (size_t i = 0; i < r->nrows; i++) free(r->rows[i]);
    free(r->rows);
}

// ---------------------------------------------------------------------------------------------
// The run

// What every step uses: this rank's batch buffers and the model's flat arrays.
typedef struct {
    float *x, *logits;            // x: (B,H,W,3), logits: (B,C)
    int64_t *labels;              // (B)
    size_t *perm, *idx, *seq;     // perm: (n_train) this epoch's order; idx, seq: (B)
    size_t img;                   // H*W*3
    const float *params;
    float *grads, *stats;
    size_t np, nstats;
    bnl_sgd sgd;
    double t_run;                 // when the first step of this process started
    int64_t run_steps;            // steps done by this process (for the ETA)
} loop_t;

// One epoch so far.
typedef struct {
    int64_t e, j;                 // epoch (0-based), steps done in it
    uint64_t aug_seed;
    double t0, comm0;             // start time, communication seconds at the start
    double loss_sum, correct, seen;
    int64_t steps;                // steps this process ran in it (fewer than j after a resume)
    double lr;                    // the last step's
} epoch_t;

// Data, model, buffers, output directory, the checkpoint before the first step. Every rank; the
// ranks agree on each stage before any collective.
static bnl_status prepare(tr_run *r, loop_t *L, int64_t *start) {
    const bnl_train_config *cfg = r->cfg;
    const int B = cfg->batch_size, K = r->K;
    const size_t GB = (size_t)B * (size_t)K;
    bnl_status s = tr_open_data(r);
    if (s == BNL_OK && r->n_train < GB)
        s = bnl_fail(BNL_ERR_ARG, "the training set has %zu images, fewer than one global batch (%d x %d ranks)",
                     r->n_train, B, K);
    *start = 0;
    if (s == BNL_OK) {
        r->spe = (int64_t)(r->n_train / GB);   // the last partial batch of an epoch is dropped
        r->total = (int64_t)cfg->epochs * r->spe;
        r->limit = cfg->max_steps > 0 && cfg->max_steps < r->total ? cfg->max_steps : r->total;
        if (!cfg->resume && tr_file_exists(r->last_path))
            s = bnl_fail(BNL_ERR_ARG, "'%s' already holds a run (%s): pass --resume to continue it, or another --out",
                         cfg->out_dir, r->last_path);
    }
    if (s == BNL_OK) s = build_model(r, start);
    r->ckpt_step = *start;
    if (s == BNL_OK) {
        tr_set_config_meta(r);
        if (cfg->resume) s = tr_verify_resume(r);
    }
    if (s == BNL_OK && cfg->resume && *start > r->total)
        s = bnl_fail(BNL_ERR_ARG, "--resume: %s is at step %lld, beyond --epochs %d (%lld steps)", r->last_path,
                     (long long)*start, cfg->epochs, (long long)r->total);
    L->img = (size_t)r->H * (size_t)r->W * 3;
    if (s == BNL_OK) {
        L->x = bnl_alloc((size_t)B * L->img * sizeof(float));
        L->logits = bnl_alloc((size_t)B * (size_t)r->C * sizeof(float));
        L->labels = malloc((size_t)B * sizeof *L->labels);
        L->perm = malloc(r->n_train * sizeof *L->perm);
        L->idx = malloc((size_t)B * sizeof *L->idx);
        L->seq = malloc((size_t)B * sizeof *L->seq);
        if (!L->x || !L->logits || !L->labels || !L->perm || !L->idx || !L->seq)
            s = bnl_fail(BNL_ERR_NOMEM, "out of memory for batches");
        // gradients and momentum are allocated on first use: here, where a failure is agreed on
        if (s == BNL_OK && !bnl_resnet_grads(r->m, NULL))
            s = bnl_fail(BNL_ERR_NOMEM, "out of memory for the gradients and momentum");
    }
    if ((s = agree(r, s, &r->report)) != BNL_OK) return s;
    s = bnl_dist_attach(r->dist, r->m, cfg->sync_bn);
    if ((s = agree(r, s, &r->report)) != BNL_OK) return s;
    tr_schedule_init(r);
    if (r->rank == 0) {
        s = tr_mkdir_p(cfg->out_dir);
        if (s == BNL_OK && cfg->resume) s = tr_metrics_load(r, *start);
        if (s == BNL_OK && !cfg->resume) s = tr_save_last(r, 0);
    }
    if ((s = agree(r, s, &r->report)) != BNL_OK) return s;
    L->params = bnl_resnet_params(r->m, &L->np), L->grads = bnl_resnet_grads(r->m, NULL);
    L->stats = bnl_resnet_stats_mut(r->m, &L->nstats);
    L->sgd = bnl_sgd_default();
    L->sgd.momentum = (float)cfg->sgd_momentum;
    L->sgd.weight_decay = (float)cfg->weight_decay;
    L->sgd.no_decay_bn_bias = cfg->no_decay_bn_bias;
    return BNL_OK;
}

static void announce(tr_run *r, int64_t start) {
    const bnl_train_config *cfg = r->cfg;
    if (cfg->resume) {
        if (start == r->total)
            tr_note(r, "%s is already at step %lld of %lld: nothing left to train", r->last_path, (long long)start,
                    (long long)r->total);
        else
            tr_note(r, "resuming %s at epoch %lld, step %lld", r->last_path, (long long)(start / r->spe + 1),
                    (long long)start);
        const char *ep = bnl_resnet_meta(r->m, "train.epochs");
        if (ep && atoi(ep) != cfg->epochs && cfg->schedule == BNL_SCHED_COSINE)
            tr_note(r, "the checkpoint was made for %s epochs, this run has %d: the cosine schedule now spans %d epochs",
                    ep, cfg->epochs, cfg->epochs);
    }
    if (r->rank == 0 && r->hooks && r->hooks->on_start) {
        bnl_train_info info = {cfg->init ? cfg->init : r->arch, bnl_resnet_get_info(r->m)->num_params, r->C, r->H,
                               r->W, r->K, cfg->batch_size, r->n_train, r->n_val, r->spe, r->total, start, cfg->epochs,
                               bnl_threads_effective()};
        r->hooks->on_start(r->hooks->ctx, &info);
    }
}

// The epoch that global step g belongs to: its data order and augmentation seed. Every rank.
static bnl_status begin_epoch(tr_run *r, loop_t *L, epoch_t *E, int64_t g) {
    const bnl_train_config *cfg = r->cfg;
    memset(E, 0, sizeof *E);
    E->e = g / r->spe, E->j = g % r->spe;
    E->aug_seed = tr_mix64(cfg->seed, 0x61756700ull + (uint64_t)E->e);
    E->t0 = tr_now_s(), E->comm0 = bnl_dist_comm_seconds(r->dist);
    E->lr = bnl_schedule_lr(&r->sched, g);
    bnl_status s = bnl_dataset_permutation(L->perm, r->n_train, cfg->seed, (uint64_t)E->e);
    return agree(r, s, &r->report);
}

// This rank's slice of the global batch of step g into L->x, L->labels. On a rank that could not
// read it (and with other ranks waiting), forward_backward still runs, on zeros, so that the other
// ranks are not left waiting in its collectives; the step then fails everywhere.
static bnl_status forward_backward(tr_run *r, loop_t *L, const epoch_t *E, int64_t g, float *loss) {
    const bnl_train_config *cfg = r->cfg;
    const int B = cfg->batch_size;
    const size_t GB = (size_t)B * (size_t)r->K;
    tr_batch_indices(L->idx, L->perm + (size_t)E->j * GB + (size_t)r->rank * (size_t)B, (size_t)B, r->train_map);
    bnl_status s = bnl_dataset_get_batch(r->train, L->x, L->labels, L->idx, (size_t)B, &r->aug_train, E->aug_seed);
    if (s == BNL_OK && cfg->nudge_input)
        for (size_t i = 0; i < (size_t)B * L->img; i++) L->x[i] = nextafterf(L->x[i], INFINITY);
    if (s == BNL_OK && cfg->dump_batches) s = tr_dump_batch(r, g + 1, L->x, L->labels);
    *loss = NAN;
    bnl_dist_step_begin(r->dist);
    if (s == BNL_OK) return bnl_resnet_forward_backward(r->m, loss, L->logits, L->x, B, r->H, r->W, L->labels);
    if (r->K > 1) {
        memset(L->x, 0, (size_t)B * L->img * sizeof(float));
        memset(L->labels, 0, (size_t)B * sizeof *L->labels);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        (void)bnl_resnet_forward_backward(r->m, loss, L->logits, L->x, B, r->H, r->W, L->labels);
        bnl_fail(s, "%s", msg);
    }
    return s;
}

// The error of a step that failed on rank `first` (before any update: the weights in memory and on
// disk are good).
static bnl_status step_failed(tr_run *r, const epoch_t *E, int64_t g, int first, bnl_status s, float loss) {
    if (first != r->rank) return bnl_fail(BNL_ERR_NUMERIC, "rank %d failed at step %lld", first, (long long)g + 1);
    r->report = 1;
    if (s == BNL_ERR_NUMERIC && !isfinite(loss))
        return bnl_fail(BNL_ERR_NUMERIC,
                        "training diverged: loss is %s at epoch %lld step %lld (lr %g); the last checkpoint %s (step "
                        "%lld) is intact",
                        nonfinite_name(loss), (long long)E->e + 1, (long long)g + 1, E->lr, r->last_path,
                        (long long)r->ckpt_step);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", bnl_last_error());
    return bnl_fail(s != BNL_OK ? s : BNL_ERR_NUMERIC, "epoch %lld step %lld: %s", (long long)E->e + 1,
                    (long long)g + 1, msg);
}

// Global step g: forward and backward of this rank's slice, the gradients and the step's loss and
// hits summed over ranks in one collective, the divergence checks, the SGD update.
static bnl_status train_step(tr_run *r, loop_t *L, epoch_t *E, int64_t g) {
    const int B = r->cfg->batch_size, K = r->K;
    E->lr = bnl_schedule_lr(&r->sched, g);
    float loss;
    bnl_status s = forward_backward(r, L, E, g, &loss);
    double red[2] = {(double)loss, 0};   // this rank's loss and hits; after step_end, the sums over ranks
    for (int i = 0; i < B && s == BNL_OK; i++) {
        const float *z = L->logits + (size_t)i * (size_t)r->C;
        int best = 0;
        for (int k = 1; k < r->C; k++)
            if (z[k] > z[best]) best = k;
        red[1] += best == L->labels[i];
    }
    int first = bnl_dist_step_end(r->dist, s == BNL_OK, red);
    if (first == BNL_DIST_STUCK) {
        // failed in the middle of the step: the other ranks cannot be released, only ended
        r->report = 1, r->abort_ranks = 1;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        return bnl_fail(s != BNL_OK ? s : BNL_ERR_IO, "epoch %lld step %lld: %s (ending all %d ranks)",
                        (long long)E->e + 1, (long long)g + 1, msg, K);
    }
    if (first >= 0) return step_failed(r, E, g, first, s, loss);
    if (K > 1)   // the gradients hold the sums over ranks: their mean
        for (size_t i = 0; i < L->np; i++) L->grads[i] *= 1.0f / (float)K;
    // identical on every rank from here on, so every rank decides the same
    if (!tr_all_finite(L->grads, L->np)) {
        r->report = r->rank == 0;
        return bnl_fail(BNL_ERR_NUMERIC,
                        "training diverged: loss is %g with a non-finite gradient at epoch %lld step %lld (lr %g); "
                        "the last checkpoint %s (step %lld) is intact",
                        red[0] / K, (long long)E->e + 1, (long long)g + 1, E->lr, r->last_path, (long long)r->ckpt_step);
    }
    L->sgd.lr = (float)E->lr;
    if ((s = bnl_resnet_sgd_update(r->m, &L->sgd)) != BNL_OK) {
        r->report = r->rank == 0;   // symmetric on every rank
        return s;
    }
    // weights that overflow here give a non-finite loss at the next step (caught above) or are
    // caught before the checkpoint at the epoch's end
    E->loss_sum += red[0] / K, E->correct += red[1], E->seen += (double)B * K;
    E->steps++, E->j++, L->run_steps++;
    if (r->rank == 0 && r->hooks && r->hooks->on_step) {
        double el = tr_now_s() - E->t0;
        bnl_train_progress p = {(int)E->e + 1, r->cfg->epochs, E->j, r->spe, g + 1, r->total, E->lr,
                                E->loss_sum / (double)E->steps, E->correct / E->seen, el > 0 ? E->seen / el : 0, 0,
                                K > 1 ? 1e3 * (bnl_dist_comm_seconds(r->dist) - E->comm0) / (double)E->steps : 0};
        p.eta_s = (tr_now_s() - L->t_run) / (double)L->run_steps * (double)(r->limit - (g + 1));
        r->hooks->on_step(r->hooks->ctx, &p);
    }
    return BNL_OK;
}

// The weights must be finite and (several ranks) the same everywhere; replicas without synchronized
// BatchNorm take rank 0's running statistics (PyTorch DDP broadcasts buffers from rank 0), so that
// eval, files and a resume agree everywhere.
static bnl_status check_weights(tr_run *r, loop_t *L, const epoch_t *E, int64_t g) {
    if (!tr_all_finite(L->params, L->np) || !tr_all_finite(L->stats, L->nstats) ||
        !tr_all_finite(bnl_resnet_momentum(r->m, NULL), L->np)) {
        r->report = r->rank == 0;
        return bnl_fail(BNL_ERR_NUMERIC,
                        "training diverged: the weights are not finite after epoch %lld step %lld (lr %g); the last "
                        "checkpoint %s (step %lld) is intact",
                        (long long)E->e + 1, (long long)g, E->lr, r->last_path, (long long)r->ckpt_step);
    }
    if (r->K == 1) return BNL_OK;
    bnl_status s = bnl_dist_bcast_f32(r->dist, L->stats, L->nstats, 0);
    if (s != BNL_OK) {
        r->report = r->rank == 0;
        return s;
    }
    uint64_t h = fnv1a(0xCBF29CE484222325ull, L->params, L->np * sizeof(float));
    h = fnv1a(h, bnl_resnet_momentum(r->m, NULL), L->np * sizeof(float));
    if (!bnl_dist_same_u64(r->dist, h)) {
        r->report = r->rank == 0;
        return bnl_fail(BNL_ERR_NUMERIC, "after epoch %lld the ranks hold different weights (the gradient all-reduce "
                        "did not give every rank the same sums)", (long long)E->e + 1);
    }
    return BNL_OK;
}

// After the last step of an epoch (or of the run, g global steps done): checks, evaluation, files
// (best, then metrics.csv, then last: its metadata names the best), the epoch hook.
static bnl_status end_epoch(tr_run *r, loop_t *L, const epoch_t *E, int64_t g, bnl_train_result *out) {
    const bnl_train_config *cfg = r->cfg;
    const int K = r->K;
    double t_train = tr_now_s() - E->t0;
    double comm_ms = K > 1 && E->steps ? 1e3 * (bnl_dist_comm_seconds(r->dist) - E->comm0) / (double)E->steps : 0;
    int complete = E->j == r->spe;
    bnl_status s = check_weights(r, L, E, g);
    if (s != BNL_OK) return s;
    bnl_train_epoch row = {(int)E->e + 1, complete, g, E->lr, E->steps ? E->loss_sum / (double)E->steps : NAN,
                           E->seen > 0 ? E->correct / E->seen : NAN, 0, 0, NAN, NAN, NAN,
                           t_train > 0 ? E->seen / t_train : 0, 0, comm_ms};
    int last_epoch = g >= r->limit;
    if (r->val && r->n_val > 0 && (last_epoch || (complete && cfg->eval_every > 0 && (E->e + 1) % cfg->eval_every == 0))) {
        double ev[4];
        if ((s = evaluate(r, L->x, L->labels, L->logits, L->idx, L->seq, ev)) != BNL_OK) {
            r->report = r->rank == 0;
            return s;
        }
        row.has_val = 1;
        row.val_loss = ev[0] / ev[3], row.val_top1 = ev[1] / ev[3], row.val_top5 = ev[2] / ev[3];
        if (row.val_top1 > r->best_top1) {
            r->best_top1 = row.val_top1, r->best_epoch = (int)E->e + 1;
            row.best = 1;
        }
    }
    row.seconds = tr_now_s() - E->t0;
    // metrics.csv goes before the checkpoint: a kill between the two leaves a row past the
    // checkpoint, which a resume drops and writes again, never a checkpoint past the last row (a
    // row lost for good)
    if (r->rank == 0) {
        if (row.best) s = tr_save_model(r, r->best_path, g);
        if (s == BNL_OK) s = tr_metrics_add(r, &row);
        if (s == BNL_OK) s = tr_metrics_write(r);
        if (s == BNL_OK) s = tr_save_last(r, g);
    }
    if ((s = agree(r, s, &r->report)) != BNL_OK) return s;
    r->ckpt_step = g;
    out->last_train_loss = row.train_loss;
    if (r->rank == 0 && r->hooks && r->hooks->on_epoch) r->hooks->on_epoch(r->hooks->ctx, &row);
    return BNL_OK;
}

bnl_status bnl_train_run(const bnl_train_config *cfg, bnl_dist *dist, const bnl_train_hooks *hooks,
                         bnl_train_result *out) {
    bnl_train_result dummy;
    if (!out) out = &dummy;
    memset(out, 0, sizeof *out);
    if (!cfg) return out->report_error = 1, bnl_fail(BNL_ERR_ARG, "train: NULL configuration");
    bnl_status s = check_config(cfg);
    if (s != BNL_OK) return out->report_error = 1, s;
    tr_run R;
    memset(&R, 0, sizeof R);
    tr_run *r = &R;
    r->cfg = cfg, r->dist = dist, r->hooks = hooks;
    r->rank = bnl_dist_rank(dist), r->K = bnl_dist_size(dist);
    snprintf(r->last_path, sizeof r->last_path, "%s/last.safetensors", cfg->out_dir);
    snprintf(r->best_path, sizeof r->best_path, "%s/best.safetensors", cfg->out_dir);
    snprintf(r->model_path, sizeof r->model_path, "%s/model.safetensors", cfg->out_dir);
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.csv", cfg->out_dir);
    loop_t L;
    memset(&L, 0, sizeof L);
    int64_t g = 0;
    if ((s = prepare(r, &L, &g)) != BNL_OK) goto done;
    announce(r, g);
    L.t_run = tr_now_s();
    while (g < r->limit) {
        epoch_t E;
        if ((s = begin_epoch(r, &L, &E, g)) != BNL_OK) goto done;
        for (; E.j < r->spe && g < r->limit; g++)
            if ((s = train_step(r, &L, &E, g)) != BNL_OK) goto done;
        if ((s = end_epoch(r, &L, &E, g, out)) != BNL_OK) goto done;
    }
    out->steps_done = g;
    out->best_epoch = r->best_epoch;
    out->best_val_top1 = r->best_top1;
    // the final model (with the class names); rank 0
    s = r->rank == 0 ? tr_save_model(r, r->model_path, g) : BNL_OK;
    s = agree(r, s, &r->report);
done:
    out->report_error = r->report;
    out->abort_ranks = r->abort_ranks;
    bnl_free(L.x), bnl_free(L.logits);
    free(L.labels), free(L.perm), free(L.idx), free(L.seq);
    free_run(r);
    return s;
}
