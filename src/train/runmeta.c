// The run's metadata: the train.* keys every file carries (the configuration a resume must agree
// with, and the state: step, epoch, best so far), the class names, mean/std and input size for
// users of the files, metrics.csv (one row per epoch, rewritten atomically), and --dump-batches.
#include "train/train_internal.h"

#include "io/safetensors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void tr_kv_set(tr_run *r, const char *key, const char *fmt, ...) {
    size_t i = 0;
    while (i < r->nkv && strcmp(r->kv[2 * i], key)) i++;
    if (i == r->nkv) {
        if (r->nkv == TR_MAX_KV) return;
        r->nkv++;
        r->kv[2 * i] = key;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->kv_buf[i], TR_VAL_LEN, fmt, ap);
    va_end(ap);
    r->kv[2 * i + 1] = r->kv_buf[i];
}

const char *tr_kv_get(const tr_run *r, const char *key) {
    for (size_t i = 0; i < r->nkv; i++)
        if (!strcmp(r->kv[2 * i], key)) return r->kv[2 * i + 1];
    return NULL;
}

// The shortest decimal that reads back as the same float (0.9, not 0.899999976).
static const char *fstr(char *buf, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, 32, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

void tr_set_config_meta(tr_run *r) {
    char f0[32], f1[32], f2[32];
    const bnl_train_config *c = r->cfg;
    tr_kv_set(r, "train.data", "%s", c->data);
    tr_kv_set(r, "train.classes", "%d", r->C);
    tr_kv_set(r, "train.image-size", "%dx%d", r->H, r->W);
    tr_kv_set(r, "train.train-size", "%zu", r->n_train);
    tr_kv_set(r, "train.val-size", "%zu", r->n_val);
    tr_kv_set(r, "train.data-seed", "%llu", (unsigned long long)c->data_seed);
    tr_kv_set(r, "train.augment", "%d", c->augment);
    tr_kv_set(r, "train.arch", "%s", c->init ? "from --init" : r->arch);
    if (c->init) tr_kv_set(r, "train.width-mult", "from --init");
    else tr_kv_set(r, "train.width-mult", "%s", fstr(f0, c->width_mult));
    tr_kv_set(r, "train.init", "%s", c->init ? c->init : "");
    tr_kv_set(r, "train.batch-size", "%d", c->batch_size);
    tr_kv_set(r, "train.world-size", "%d", r->K);
    tr_kv_set(r, "train.lr", "%.9g", c->lr);
    tr_kv_set(r, "train.sgd-momentum", "%.9g", c->sgd_momentum);
    tr_kv_set(r, "train.weight-decay", "%.9g", c->weight_decay);
    tr_kv_set(r, "train.no-decay-bn-bias", "%d", c->no_decay_bn_bias);
    tr_kv_set(r, "train.schedule", "%s", c->schedule == BNL_SCHED_COSINE ? "cosine" : "step");
    if (c->schedule == BNL_SCHED_COSINE) {
        tr_kv_set(r, "train.step-epochs", "-");
        tr_kv_set(r, "train.step-gamma", "-");
    } else {
        if (c->step_every > 0) {
            tr_kv_set(r, "train.step-epochs", "%d", c->step_every);
        } else {
            char ms[TR_VAL_LEN] = "";
            size_t o = 0;
            for (int i = 0; i < c->n_milestones && o < sizeof ms - 16; i++)
                o += (size_t)snprintf(ms + o, sizeof ms - o, "%s%d", i ? "," : "", c->milestones[i]);
            tr_kv_set(r, "train.step-epochs", "%s,", ms);
        }
        tr_kv_set(r, "train.step-gamma", "%.9g", c->step_gamma);
    }
    tr_kv_set(r, "train.warmup-epochs", "%.9g", c->warmup_epochs);
    tr_kv_set(r, "train.bn-momentum", "%s", fstr(f0, c->bn_momentum));
    tr_kv_set(r, "train.running-var", "%s", c->unbiased ? "unbiased" : "biased");
    tr_kv_set(r, "train.sync-bn", "%d", c->sync_bn && r->K > 1);
    tr_kv_set(r, "train.seed", "%llu", (unsigned long long)c->seed);
    // a fresh model (and a resume, which must match) follows --norm; an --init model its file
    bnl_norm_spec ns = c->init ? bnl_resnet_norm_spec(r->m) : c->norm;
    char nstr[48];
    bnl_norm_format(&ns, nstr, sizeof nstr);
    tr_kv_set(r, "train.norm", "%s", nstr);
    tr_kv_set(r, "train.zero-init-residual", "%d", c->zero_init_residual);
    // informational
    tr_kv_set(r, "train.epochs", "%d", c->epochs);
    tr_kv_set(r, "train.threads", "%d", bnl_threads_effective());
    tr_kv_set(r, "train.steps-per-epoch", "%lld", (long long)r->spe);
    const bnl_resnet_info *in = bnl_resnet_get_info(r->m);
    char spec[TR_VAL_LEN];
    size_t o = (size_t)snprintf(spec, sizeof spec, "{\"block\":\"%s\",\"blocks\":[", in->bottleneck ? "bottleneck" : "basic");
    for (int s = 0; s < in->num_stages; s++) o += (size_t)snprintf(spec + o, sizeof spec - o, "%s%d", s ? "," : "", in->blocks[s]);
    o += (size_t)snprintf(spec + o, sizeof spec - o, "],\"widths\":[");
    for (int s = 0; s < in->num_stages; s++) o += (size_t)snprintf(spec + o, sizeof spec - o, "%s%d", s ? "," : "", in->widths[s]);
    snprintf(spec + o, sizeof spec - o, "],\"stem_width\":%d,\"in_channels\":%d,\"num_classes\":%d}", in->stem_width,
             in->in_channels, in->num_classes);
    tr_kv_set(r, "train.arch-spec", "%s", spec);
    // for users of the files: class names, normalization, input size
    if (r->labels_json) tr_kv_set(r, "labels", "%s", r->labels_json);
    tr_kv_set(r, "mean", "[%s,%s,%s]", fstr(f0, r->aug_train.mean[0]), fstr(f1, r->aug_train.mean[1]),
              fstr(f2, r->aug_train.mean[2]));
    tr_kv_set(r, "std", "[%s,%s,%s]", fstr(f0, r->aug_train.std[0]), fstr(f1, r->aug_train.std[1]),
              fstr(f2, r->aug_train.std[2]));
    tr_kv_set(r, "input_size", "[3,%d,%d]", r->H, r->W);
}

void tr_set_state_meta(tr_run *r, int64_t step) {
    tr_kv_set(r, "train.step", "%lld", (long long)step);
    tr_kv_set(r, "train.epoch", "%lld", (long long)(step / r->spe));
    tr_kv_set(r, "train.best-val-top1", "%.9g", r->best_top1);
    tr_kv_set(r, "train.best-epoch", "%d", r->best_epoch);
}

bnl_status tr_metrics_write(tr_run *r) {
    sbuf b = {0};
    sb_add(&b, "epoch,step,lr,train_loss,train_acc,val_loss,val_top1,val_top5,images_per_s,seconds,comm_ms\n");
    for (size_t i = 0; i < r->nrows; i++) sb_add(&b, "%s\n", r->rows[i]);
    if (b.oom) return free(b.s), bnl_fail(BNL_ERR_NOMEM, "out of memory");
    bnl_status s = bnl_write_file_atomic(r->metrics_path, (const uint8_t *)b.s, b.n);
    free(b.s);
    return s;
}

static bnl_status add_row(tr_run *r, const char *row) {
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

// One row of metrics.csv (the header in tr_metrics_write); no validation columns without an evaluation.
bnl_status tr_metrics_add(tr_run *r, const bnl_train_epoch *row) {
    char line[512];
    if (row->has_val)
        snprintf(line, sizeof line, "%d,%lld,%.6g,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f,%.3f,%.3f", row->epoch,
                 (long long)row->step, row->lr, row->train_loss, row->train_acc, row->val_loss, row->val_top1,
                 row->val_top5, row->images_per_s, row->seconds, row->comm_ms);
    else
        snprintf(line, sizeof line, "%d,%lld,%.6g,%.6f,%.6f,,,,%.1f,%.3f,%.3f", row->epoch, (long long)row->step,
                 row->lr, row->train_loss, row->train_acc, row->images_per_s, row->seconds, row->comm_ms);
    return add_row(r, line);
}

// The class names of the training split as a JSON array (a class without a name: its index).
bnl_status tr_labels_json(tr_run *r) {
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

// Keeps the rows of an earlier metrics.csv up to the resumed step.
bnl_status tr_metrics_load(tr_run *r, int64_t upto) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!tr_file_exists(r->metrics_path)) return BNL_OK;
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
bnl_status tr_dump_batch(const tr_run *r, int64_t step, const float *x, const int64_t *labels) {
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

