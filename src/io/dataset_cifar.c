// CIFAR-10, binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32, row
// major). Kept in memory as uint8 NHWC so a sample is a plain pointer.
#include "io/dataset_internal.h"

#include <stdio.h>
#include <string.h>

#define CIFAR_REC 3073
#define CIFAR_PIX 3072

static const char *const k_cifar_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                              "dog", "frog", "horse", "ship", "truck"};

typedef struct cifar_impl {
    uint8_t *pix;   // (count, 32, 32, 3)
} cifar_impl;

static bnl_status cifar_source(const bnl_dataset *d, size_t i, int need_short, bnl_ds_image *img, bnl_ds_scratch *s) {
    const cifar_impl *c = d->impl;
    img->pix = c->pix + i * CIFAR_PIX, img->h = 32, img->w = 32;
    return BNL_OK;
}

static void cifar_destroy(void *impl) {
    cifar_impl *c = impl;
    if (c) bnl_free(c->pix);
    bnl_free(c);
}

static const bnl_ds_ops k_cifar_ops = {cifar_source, NULL, cifar_destroy};

// Checks buf (records of one file) and appends them to pix/labels at record `at`.
static bnl_status cifar_check(const uint8_t *buf, size_t len, const char *name) {
    if (len == 0) return bnl_fail(BNL_ERR_FORMAT, "%s: empty file (expected records of 3073 bytes)", name);
    if (len % CIFAR_REC)
        return bnl_fail(BNL_ERR_FORMAT, "%s: size %zu is not a multiple of 3073 (truncated or not CIFAR-10 binary?)",
                        name, len);
    for (size_t r = 0; r < len / CIFAR_REC; r++)
        if (buf[r * CIFAR_REC] > 9)
            return bnl_fail(BNL_ERR_FORMAT, "%s: record %zu has label %d, expected 0..9", name, r, buf[r * CIFAR_REC]);
    return BNL_OK;
}

static void cifar_convert(uint8_t *pix, int64_t *labels, const uint8_t *buf, size_t nrec) {
    for (size_t r = 0; r < nrec; r++) {
        const uint8_t *rec = buf + r * CIFAR_REC;
        uint8_t *o = pix + r * CIFAR_PIX;
        labels[r] = rec[0];
        for (int p = 0; p < 1024; p++)
            for (int c = 0; c < 3; c++) o[p * 3 + c] = rec[1 + c * 1024 + p];
    }
}

static bnl_status cifar_new(bnl_dataset **out, size_t count) {
    bnl_dataset *d = bnl_ds_new(10);
    if (!d) return BNL_ERR_NOMEM;
    cifar_impl *c = bnl_calloc(1, sizeof *c);
    d->impl = c, d->ops = &k_cifar_ops;
    if (c) c->pix = bnl_alloc(count * CIFAR_PIX);
    d->labels = bnl_calloc(count, sizeof(int64_t));
    if (!c || !c->pix || !d->labels) {
        bnl_dataset_free(d);
        return bnl_fail(BNL_ERR_NOMEM, "cifar10: cannot allocate %zu images", count);
    }
    for (int k = 0; k < 10; k++) {
        d->names[k] = bnl_ds_strdup(k_cifar_names[k]);
        if (!d->names[k]) {
            bnl_dataset_free(d);
            return bnl_fail(BNL_ERR_NOMEM, "cifar10: out of memory");
        }
    }
    d->count = count, d->H = d->W = d->resize = 32;
    // the usual CIFAR-10 statistics; train: RandomCrop(32, padding=4) + RandomHorizontalFlip
    bnl_augment a = bnl_augment_none();
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2470f, 0.2435f, 0.2616f};
    for (int k = 0; k < 3; k++) a.mean[k] = mean[k], a.std[k] = sd[k];
    d->eval_aug = a;
    a.pad_crop = 4, a.flip = 1;
    d->train_aug = a;
    *out = d;
    return BNL_OK;
}

bnl_status bnl_dataset_cifar10_from_buffer(bnl_dataset **out, const uint8_t *buf, size_t len, const char *name) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "cifar10: out is NULL");
    *out = NULL;
    if (!name) name = "cifar10 buffer";
    if (!buf && len) return bnl_fail(BNL_ERR_ARG, "cifar10: buffer is NULL");
    bnl_status st = cifar_check(buf, len, name);
    if (st != BNL_OK) return st;
    bnl_dataset *d;
    if ((st = cifar_new(&d, len / CIFAR_REC)) != BNL_OK) return st;
    cifar_convert(((cifar_impl *)d->impl)->pix, d->labels, buf, len / CIFAR_REC);
    *out = d;
    return BNL_OK;
}

#ifdef __EMSCRIPTEN__
bnl_status bnl_dataset_cifar10(bnl_dataset **out, const char *dir, int train) {
    if (out) *out = NULL;
    return bnl_fail(BNL_ERR_UNSUPPORTED, "cifar10: no file system in this build; use bnl_dataset_cifar10_from_buffer");
}
#else

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = bnl_alloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (a && dir[a - 1] != '/') p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

// batches.meta.txt: one class name per line (blank lines ignored), 10 names.
static bnl_status read_meta(bnl_dataset *d, const char *dir) {
    char *path = join(dir, "batches.meta.txt");
    if (!path) return bnl_fail(BNL_ERR_NOMEM, "cifar10: out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        bnl_free(path);
        return BNL_OK;   // optional
    }
    char line[256], *names[10];
    int n = 0;
    bnl_status st = BNL_OK;
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = 0;
        if (!l) continue;
        if (n == 10) {
            st = bnl_fail(BNL_ERR_FORMAT, "%s: more than 10 class names", path);
            break;
        }
        if (!(names[n++] = bnl_ds_strdup(line))) {
            st = bnl_fail(BNL_ERR_NOMEM, "cifar10: out of memory");
            break;
        }
    }
    fclose(f);
    if (st == BNL_OK && n != 10) st = bnl_fail(BNL_ERR_FORMAT, "%s: %d class names, expected 10", path, n);
    if (st == BNL_OK)
        for (int k = 0; k < 10; k++) bnl_free(d->names[k]), d->names[k] = names[k];
    else
        for (int k = 0; k < n; k++) bnl_free(names[k]);
    bnl_free(path);
    return st;
}

bnl_status bnl_dataset_cifar10(bnl_dataset **out, const char *dir, int train) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "cifar10: out is NULL");
    *out = NULL;
    if (!dir) return bnl_fail(BNL_ERR_ARG, "cifar10: directory is NULL");
    const char *train_files[5] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                  "data_batch_5.bin"};
    const char *test_files[1] = {"test_batch.bin"};
    const char **files = train ? train_files : test_files;
    int nf = train ? 5 : 1;
    uint8_t *bufs[5] = {0};
    size_t lens[5] = {0}, total = 0;
    bnl_status st = BNL_OK;
    for (int k = 0; k < nf && st == BNL_OK; k++) {
        char *path = join(dir, files[k]);
        if (!path) {
            st = bnl_fail(BNL_ERR_NOMEM, "cifar10: out of memory");
            break;
        }
        st = bnl_ds_read_file(path, &bufs[k], &lens[k]);
        if (st == BNL_OK) st = cifar_check(bufs[k], lens[k], path);
        total += lens[k] / CIFAR_REC;
        bnl_free(path);
    }
    bnl_dataset *d = NULL;
    if (st == BNL_OK) st = cifar_new(&d, total);
    if (st == BNL_OK) {
        size_t at = 0;
        for (int k = 0; k < nf; k++) {
            cifar_convert(((cifar_impl *)d->impl)->pix + at * CIFAR_PIX, d->labels + at, bufs[k], lens[k] / CIFAR_REC);
            at += lens[k] / CIFAR_REC;
        }
        st = read_meta(d, dir);
    }
    for (int k = 0; k < nf; k++) bnl_free(bufs[k]);
    if (st != BNL_OK) {
        bnl_dataset_free(d);
        return st;
    }
    *out = d;
    return BNL_OK;
}
#endif
