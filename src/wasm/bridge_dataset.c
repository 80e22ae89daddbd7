// The dataset functions web/bnlab.mjs calls, and nothing else. Like bridge.c: every function that
// can fail returns a bnl_status (0 = ok) and bnl_wasm_last_error() gives the message; pointers are
// wasm memory offsets; seeds are doubles (integers up to 2^53) so JS needs no BigInt.
#include "bnlab.h"
#include "core/common.h"
#include "io/dataset.h"

#include <emscripten.h>
#include <stdlib.h>

static uint64_t seed_from(double s) { return s <= 0 ? 0 : s >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)s; }

// A procedural dataset (identical images to the native build). classes/size 0 = defaults (10, 32).
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_procedural(double seed, int count, int classes, int size, bnl_dataset **out) {
    if (count <= 0) return bnl_fail(BNL_ERR_ARG, "dataset_procedural: count = %d, expected > 0", count);
    bnl_procedural_opts o = bnl_procedural_opts_default();
    o.seed = seed_from(seed), o.count = (size_t)count, o.classes = classes, o.size = size;
    return bnl_dataset_procedural(out, &o);
}

// CIFAR-10 records (one .bin file's bytes, copied).
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_cifar10(const uint8_t *buf, size_t len, bnl_dataset **out) {
    return bnl_dataset_cifar10_from_buffer(out, buf, len, "cifar10 bytes");
}

EMSCRIPTEN_KEEPALIVE void bnl_wasm_dataset_free(bnl_dataset *d) { bnl_dataset_free(d); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_size(const bnl_dataset *d) { return (int)bnl_dataset_size(d); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_num_classes(const bnl_dataset *d) { return bnl_dataset_num_classes(d); }
EMSCRIPTEN_KEEPALIVE const char *bnl_wasm_dataset_class_name(const bnl_dataset *d, int i) { return bnl_dataset_class_name(d, i); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_height(const bnl_dataset *d) { return bnl_dataset_height(d); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_width(const bnl_dataset *d) { return bnl_dataset_width(d); }
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_label(const bnl_dataset *d, int i) {
    return i < 0 ? -1 : (int)bnl_dataset_label(d, (size_t)i);
}

// x: (n,H,W,3) normalized floats, labels: (n) int64 (may be 0). Images start, start+1, ... (wrapping
// around the dataset). augment 1: the dataset's training augmentation drawn from (seed, index);
// 0: none. Both normalize with the dataset's mean/std.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_batch(const bnl_dataset *d, float *x, int64_t *labels, int start, int n,
                                                double seed, int augment) {
    size_t size = bnl_dataset_size(d);
    if (!d || size == 0) return bnl_fail(BNL_ERR_ARG, "dataset_batch: no dataset");
    if (n <= 0 || start < 0) return bnl_fail(BNL_ERR_ARG, "dataset_batch: start = %d, n = %d", start, n);
    size_t *idx = malloc((size_t)n * sizeof(size_t));
    if (!idx) return bnl_fail(BNL_ERR_NOMEM, "dataset_batch: out of memory");
    for (int k = 0; k < n; k++) idx[k] = ((size_t)start + (size_t)k) % size;
    bnl_augment a = bnl_dataset_augment_default(d, augment != 0);
    bnl_status s = bnl_dataset_get_batch(d, x, labels, idx, (size_t)n, &a, seed_from(seed));
    free(idx);
    return s;
}

// The same for explicit image indices: (n) int32.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_batch_indices(const bnl_dataset *d, float *x, int64_t *labels,
                                                        const int32_t *indices, int n, double seed, int augment) {
    if (!d) return bnl_fail(BNL_ERR_ARG, "dataset_batch: no dataset");
    if (n <= 0) return bnl_fail(BNL_ERR_ARG, "dataset_batch: n = %d", n);
    size_t *idx = malloc((size_t)n * sizeof(size_t));
    if (!idx) return bnl_fail(BNL_ERR_NOMEM, "dataset_batch: out of memory");
    for (int k = 0; k < n; k++) idx[k] = indices[k] < 0 ? (size_t)-1 : (size_t)indices[k];
    bnl_augment a = bnl_dataset_augment_default(d, augment != 0);
    bnl_status s = bnl_dataset_get_batch(d, x, labels, idx, (size_t)n, &a, seed_from(seed));
    free(idx);
    return s;
}

// Image i as (H,W,3) bytes, un-normalized and un-augmented (for drawing).
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_image(const bnl_dataset *d, uint8_t *rgb, int i) {
    if (i < 0) return bnl_fail(BNL_ERR_ARG, "dataset_image: index %d", i);
    return bnl_dataset_get_image_u8(d, rgb, (size_t)i);
}

// perm: (n) int32, a permutation of 0..n-1 drawn from (seed, epoch), the same as natively.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_permutation(int32_t *perm, int n, double seed, int epoch) {
    if (n < 0) return bnl_fail(BNL_ERR_ARG, "dataset_permutation: n = %d", n);
    size_t *p = malloc((size_t)(n ? n : 1) * sizeof(size_t));
    if (!p) return bnl_fail(BNL_ERR_NOMEM, "dataset_permutation: out of memory");
    bnl_status s = bnl_dataset_permutation(p, (size_t)n, seed_from(seed), (uint64_t)(epoch < 0 ? 0 : epoch));
    for (int k = 0; s == BNL_OK && k < n; k++) perm[k] = (int32_t)p[k];
    free(p);
    return s;
}

// IDX images + labels files (plain bytes: web/bnlab.mjs inflates gzip'd ones first, this build has
// no zlib), copied. size: 0 = the files' own; fashion: 1 = Fashion-MNIST's class names.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_idx(const uint8_t *images, size_t images_len, const uint8_t *labels,
                                              size_t labels_len, int size, int fashion, bnl_dataset **out) {
    bnl_idx_opts o = bnl_idx_opts_default();
    o.size = size, o.fashion_names = fashion;
    return bnl_dataset_idx_from_buffer(out, images, images_len, labels, labels_len, "IDX images", "IDX labels", &o);
}

// norm: (6) floats mean[3], std[3]. set = 1 replaces the dataset's normalization; 0 reads it.
EMSCRIPTEN_KEEPALIVE int bnl_wasm_dataset_norm(bnl_dataset *d, float *norm, int set) {
    if (!d || !norm) return bnl_fail(BNL_ERR_ARG, "dataset_norm: NULL argument");
    if (set) return bnl_dataset_set_normalization(d, norm, norm + 3);
    bnl_augment a = bnl_dataset_augment_default(d, 0);
    for (int k = 0; k < 3; k++) norm[k] = a.mean[k], norm[3 + k] = a.std[k];
    return BNL_OK;
}
