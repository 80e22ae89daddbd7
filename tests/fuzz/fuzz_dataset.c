// libFuzzer target: the byte-driven dataset loaders and the batch pipeline behind them.
// The first input byte picks the loader:
//   0: CIFAR-10 from a buffer (bnl_dataset_cifar10_from_buffer) on the rest of the input;
//   1: CIFAR-10 from a directory (bnl_dataset_cifar10): byte 1 = n, the next n bytes are
//      batches.meta.txt (n = 0: no such file), the rest is test_batch.bin (bit 7 of byte 0: the
//      train split, the same bytes as data_batch_1..5.bin);
//   2: procedural, options (seed, count, classes, size) from the bytes, invalid ones included.
// Whatever loads then hands out images, labels, class names and batches (eval, train and fuzzed
// augmentation, some indices out of range) and a permutation, which must be one.
#include "bnlab.h"
#include "io/dataset.h"

#include "fuzz_util.h"

#include <math.h>

static uint64_t take(const uint8_t **p, const uint8_t *end, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes && *p < end; i++) v |= (uint64_t)*(*p)++ << (8 * i);
    return v;
}

static void exercise(bnl_dataset *d, const uint8_t *p, const uint8_t *end) {
    size_t n = bnl_dataset_size(d);
    int H = bnl_dataset_height(d), W = bnl_dataset_width(d), K = bnl_dataset_num_classes(d);
    FUZZ_CHECK(n > 0 && H > 0 && W > 0 && K >= 2, "sizes %zu %d %d %d", n, H, W, K);
    for (int k = 0; k < K; k++) FUZZ_CHECK(bnl_dataset_class_name(d, k) != NULL, "class %d has no name", k);
    FUZZ_CHECK(bnl_dataset_class_name(d, K) == NULL && bnl_dataset_class_name(d, -1) == NULL, "name out of range");
    FUZZ_CHECK(bnl_dataset_label(d, n) == -1, "label out of range");
    enum { B = 3 };
    float *x = malloc(sizeof(float) * B * (size_t)H * (size_t)W * 3);
    uint8_t *rgb = malloc((size_t)H * (size_t)W * 3);
    int64_t labels[B];
    size_t idx[B];
    for (int b = 0; b < B; b++) idx[b] = (size_t)take(&p, end, 2) % n;
    for (int b = 0; b < B; b++) {
        int64_t l = bnl_dataset_label(d, idx[b]);
        FUZZ_CHECK(l >= 0 && l < K, "label %lld of %d classes", (long long)l, K);
    }
    FUZZ_CHECK(bnl_dataset_get_image_u8(d, rgb, idx[0]) == BNL_OK, "image: %s", bnl_last_error());
    FUZZ_CHECK(bnl_dataset_get_image_u8(d, rgb, n) != BNL_OK, "image index out of range accepted");
    uint64_t seed = take(&p, end, 8);
    for (int train = 0; train < 2; train++) {
        bnl_augment a = bnl_dataset_augment_default(d, train);
        FUZZ_CHECK(bnl_dataset_get_batch(d, x, labels, idx, B, &a, seed) == BNL_OK, "batch: %s", bnl_last_error());
        for (size_t i = 0; i < (size_t)B * H * W * 3; i++) FUZZ_CHECK(isfinite(x[i]), "non-finite sample value");
    }
    // augmentation options from the input, within their documented ranges
    uint64_t o = take(&p, end, 4);
    bnl_augment a = bnl_dataset_augment_default(d, 1);
    a.flip = (int)(o & 1);
    a.pad_crop = (int)((o >> 1) & 63);
    a.random_resized_crop = (int)((o >> 7) & 1);
    a.scale_min = (float)((o >> 8) & 255) / 255.0f;
    bnl_status s = bnl_dataset_get_batch(d, x, NULL, idx, B, &a, seed);
    FUZZ_CHECK(s == BNL_OK || s == BNL_ERR_ARG, "augmented batch: %s", bnl_last_error());
    idx[B - 1] = n + (size_t)(o >> 16);
    FUZZ_CHECK(bnl_dataset_get_batch(d, x, labels, idx, B, NULL, seed) == BNL_ERR_ARG, "index out of range accepted");
    size_t pn = n < 4096 ? n : 4096;
    size_t *perm = malloc(pn * sizeof *perm);
    unsigned char *seen = calloc(pn, 1);
    FUZZ_CHECK(bnl_dataset_permutation(perm, pn, seed, o) == BNL_OK, "permutation");
    for (size_t i = 0; i < pn; i++) {
        FUZZ_CHECK(perm[i] < pn && !seen[perm[i]], "not a permutation");
        seen[perm[i]] = 1;
    }
    free(perm), free(seen), free(x), free(rgb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 64 * 3073) return 0;
    const uint8_t *p = data + 1, *end = data + size;
    bnl_dataset *d = NULL;
    bnl_status s;
    switch (data[0] % 3) {
    case 0:
        s = bnl_dataset_cifar10_from_buffer(&d, p, (size_t)(end - p), "fuzz.bin");
        if (s == BNL_OK) FUZZ_CHECK(bnl_dataset_size(d) == (size_t)(end - p) / 3073, "record count");
        break;
    case 1: {
        const char *dir = fuzz_tmpdir("cifar");
        char path[512];
        size_t nm = p < end ? *p++ : 0;
        if (nm > (size_t)(end - p)) nm = (size_t)(end - p);
        snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
        if (nm) fuzz_write(path, p, nm);
        else unlink(path);
        p += nm;
        int train = data[0] >> 7;
        static const char *const files[6] = {"test_batch.bin", "data_batch_1.bin", "data_batch_2.bin",
                                             "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
        for (int k = 0; k < 6; k++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[k]);
            if (k == 0 || train) fuzz_write(path, p, (size_t)(end - p));
            else unlink(path);
        }
        s = bnl_dataset_cifar10(&d, dir, train);
        if (s == BNL_OK) FUZZ_CHECK(bnl_dataset_size(d) == (size_t)(end - p) / 3073 * (train ? 5 : 1), "record count");
        p = end;   // the bytes were the file
        break;
    }
    default: {
        bnl_procedural_opts o = bnl_procedural_opts_default();
        o.seed = take(&p, end, 8);
        o.count = (size_t)take(&p, end, 2);
        o.classes = (int)take(&p, end, 1) % 20;
        o.size = (int)take(&p, end, 1) % 40;   // 0 (the default, 32), invalid below 8, up to 39
        s = bnl_dataset_procedural(&d, &o);
        int valid = o.count > 0 && (o.classes == 0 || (o.classes >= 2 && o.classes <= 16)) &&
                    (o.size == 0 || o.size >= 8);
        FUZZ_CHECK((s == BNL_OK) == valid, "procedural options: status %d, valid %d", s, valid);
        break;
    }
    }
    if (s == BNL_OK) {
        exercise(d, p, end);
        bnl_dataset_free(d);
    } else {
        FUZZ_CHECK(d == NULL && bnl_last_error()[0], "a failed open leaves a dataset or no message");
    }
    return 0;
}
