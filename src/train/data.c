// The datasets of a --data string, as `bnlab train` reads them (also `bnlab precise-bn`), and the
// run's splits: fixed random subsets (--train-size/--val-size) and one normalization for both.
#include "train/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_EXPECTED "procedural, cifar10:DIR, folder:DIR, fashion-mnist[:DIR] or mnist:DIR"

bnl_status bnl_data_spec_parse(bnl_data_spec *out, const char *spec) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "data_spec_parse: NULL argument");
    memset(out, 0, sizeof *out);
    if (!spec) return bnl_fail(BNL_ERR_ARG, "--data: expected " SPEC_EXPECTED ", got nothing");
    if (!strcmp(spec, "procedural")) {
        out->kind = BNL_DATA_PROCEDURAL;
    } else if (!strncmp(spec, "cifar10:", 8) && spec[8]) {
        out->kind = BNL_DATA_CIFAR10, out->dir = spec + 8;
    } else if (!strncmp(spec, "folder:", 7) && spec[7]) {
        out->kind = BNL_DATA_FOLDER, out->dir = spec + 7;
    } else if (!strcmp(spec, "fashion-mnist") || (!strncmp(spec, "fashion-mnist:", 14) && spec[14])) {
        out->kind = BNL_DATA_IDX, out->fashion = 1, out->dir = spec[13] ? spec + 14 : BNL_FASHION_MNIST_DIR;
    } else if (!strncmp(spec, "mnist:", 6) && spec[6]) {
        out->kind = BNL_DATA_IDX, out->dir = spec + 6;
    } else {
        return bnl_fail(BNL_ERR_ARG, "--data: expected " SPEC_EXPECTED ", got '%s'", spec);
    }
    return BNL_OK;
}

bnl_status bnl_data_open(bnl_dataset **out, const bnl_data_spec *d, int train, const bnl_data_opts *o) {
    if (!out || !d || !o) return bnl_fail(BNL_ERR_ARG, "data_open: NULL argument");
    *out = NULL;
    switch (d->kind) {
    case BNL_DATA_PROCEDURAL: {
        bnl_procedural_opts po = bnl_procedural_opts_default();
        // the validation split draws from another seed than the training split ("val")
        po.seed = train ? o->seed : tr_mix64(o->seed, 0x76616cull);
        po.count = o->count ? o->count : train ? 10000 : 2000;
        if (o->classes) po.classes = o->classes;
        if (o->image_size) po.size = o->image_size;
        return bnl_dataset_procedural(out, &po);
    }
    case BNL_DATA_CIFAR10:
        if (o->image_size && o->image_size != 32)
            return bnl_fail(BNL_ERR_ARG, "CIFAR-10 images are 32x32 (got image size %d)", o->image_size);
        return bnl_dataset_cifar10(out, d->dir, train);
    case BNL_DATA_FOLDER: {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", d->dir, train ? "train" : "val");
        if (!tr_file_exists(path))
            return bnl_fail(BNL_ERR_IO, train ? "%s: not found (folder:DIR expects DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg)"
                                              : "%s: not found (folder:DIR expects DIR/train and DIR/val)",
                            path);
        bnl_imagefolder_opts io = bnl_imagefolder_opts_default();
        if (o->image_size) {
            io.size = o->image_size;
            io.resize = o->image_size * 256 / 224;
        }
        return bnl_dataset_imagefolder(out, path, &io);
    }
    case BNL_DATA_IDX: {
        // IDX files: DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
        bnl_idx_opts io = bnl_idx_opts_default();
        io.size = o->image_size, io.fashion_names = d->fashion;
        return bnl_dataset_mnist(out, d->dir, train, &io);
    }
    }
    return bnl_fail(BNL_ERR_ARG, "data_open: unknown kind %d", (int)d->kind);
}

// A fixed random subset of `want` of `have` images (0 or all: none).
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

bnl_status tr_open_data(tr_run *r) {
    const bnl_train_config *c = r->cfg;
    const char *d = c->data;
    bnl_data_spec spec;
    bnl_status s = bnl_data_spec_parse(&spec, d);
    if (s != BNL_OK) return s;
    bnl_data_opts o = {c->classes, c->image_size, c->train_size, c->data_seed};
    if ((s = bnl_data_open(&r->train, &spec, 1, &o)) != BNL_OK) return s;
    o.count = c->val_size;
    if (!c->no_val && (s = bnl_data_open(&r->val, &spec, 0, &o)) != BNL_OK) return s;
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
    if (spec.kind != BNL_DATA_PROCEDURAL) {   // procedural splits are made at the size asked for
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
    return tr_labels_json(r);
}

void tr_batch_indices(size_t *dst, const size_t *src, size_t n, const size_t *map) {
    for (size_t i = 0; i < n; i++) dst[i] = map ? map[src[i]] : src[i];
}
