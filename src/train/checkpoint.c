// Training checkpoints: the model (bnl_resnet_add_to_writer), the SGD momentum as one flat F32
// tensor `optimizer.momentum`, and train.* metadata; written atomically (a temporary file renamed
// over the old one: bnl_st_writer_to_file). Resume: DIR/last.safetensors, checked against the
// configuration. The one file of the trainer that knows the optimizer's tensor names.
#include "train/train_internal.h"

#include "io/safetensors.h"
#include "io/statedict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPT_PREFIX "optimizer."
#define OPT_MOMENTUM OPT_PREFIX "momentum"

int bnl_checkpoint_owns_tensor(const char *name) { return !strncmp(name, OPT_PREFIX, sizeof OPT_PREFIX - 1); }

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
        s = bnl_st_writer_add(w, OPT_MOMENTUM, BNL_DT_F32, 1, shape, mom);
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
    const bnl_st_tensor *t = bnl_st_find(&f, OPT_MOMENTUM);
    if (!mom) {
        s = bnl_fail(BNL_ERR_NOMEM, "%s: out of memory for the momentum", path);
    } else if (!t) {
        s = bnl_fail(BNL_ERR_FORMAT, "%s: not a bnlab training checkpoint (no tensor '" OPT_MOMENTUM "')", path);
    } else if (t->dtype != BNL_DT_F32 || t->ndim != 1 || t->nelem != np) {
        s = bnl_fail(BNL_ERR_FORMAT, "%s: tensor '" OPT_MOMENTUM "' must be F32 [%zu] (the model's parameter count), got %s with %zu values",
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

// The hyperparameters a resume must agree with, named after the command-line options.
static const char *const k_fixed_keys[] = {
    "data", "classes", "image-size", "train-size", "val-size", "data-seed", "augment", "arch", "width-mult",
    "init", "batch-size", "world-size", "lr", "sgd-momentum", "weight-decay", "no-decay-bn-bias", "schedule",
    "step-epochs", "step-gamma", "warmup-epochs", "bn-momentum", "running-var", "sync-bn", "seed", "norm",
    "zero-init-residual", NULL};
// Keys added after the first checkpoints were written: what a checkpoint without them was trained with.
static const char *const k_key_defaults[] = {"norm", "batch", "zero-init-residual", "0", NULL};

bnl_status tr_load_resume(tr_run *r, int64_t *step) {
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

bnl_status tr_verify_resume(const tr_run *r) {
    for (int i = 0; k_fixed_keys[i]; i++) {
        char key[64];
        snprintf(key, sizeof key, "train.%s", k_fixed_keys[i]);
        const char *was = bnl_resnet_meta(r->m, key), *now = tr_kv_get(r, key);
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

bnl_status tr_save_last(tr_run *r, int64_t step) {
    tr_set_state_meta(r, step);
    return bnl_checkpoint_save(r->m, r->last_path, 1, r->kv, r->nkv);
}

bnl_status tr_save_model(tr_run *r, const char *path, int64_t step) {
    tr_set_state_meta(r, step);
    return bnl_checkpoint_save(r->m, path, 0, r->kv, r->nkv);
}
