// libFuzzer target: IDX files (MNIST / Fashion-MNIST), plain or gzip'd (zlib), from bytes.
// Input: byte 0 = options (bit 0: Fashion-MNIST names; bits 1..6: the sample size S, 0 = the
// files' own), bytes 1..2 = the length L of the images file (little-endian), then L bytes of images
// file and the rest as the labels file. Whatever loads must give labels in range, names, finite
// batches (eval and train augmentation), an image, and out-of-range indices refused; whatever fails
// must leave no dataset and a one-line message naming one of the two files.
#include "bnlab.h"
#include "io/dataset.h"

#include "fuzz_util.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3 || size > 32768) return 0;
    int fashion = data[0] & 1, S = (data[0] >> 1) & 63;
    size_t L = (size_t)data[1] | (size_t)data[2] << 8, rest = size - 3;
    if (L > rest) L = rest;
    const uint8_t *im = data + 3, *lb = im + L;
    bnl_idx_opts o = bnl_idx_opts_default();
    o.size = S, o.fashion_names = fashion;
    bnl_dataset *d = NULL;
    bnl_status s = bnl_dataset_idx_from_buffer(&d, im, L, lb, rest - L, "fuzz-images", "fuzz-labels", &o);
    if (s != BNL_OK) {
        const char *m = bnl_last_error();
        FUZZ_CHECK(d == NULL && m[0] && !strchr(m, '\n'), "a failed open leaves a dataset or no one-line message");
        FUZZ_CHECK(strstr(m, "fuzz-images") || strstr(m, "fuzz-labels"), "message names no file: %s", m);
        return 0;
    }
    size_t n = bnl_dataset_size(d);
    int H = bnl_dataset_height(d), W = bnl_dataset_width(d), K = bnl_dataset_num_classes(d);
    FUZZ_CHECK(n > 0 && H > 0 && H == W && K >= 2 && (!fashion || K == 10), "sizes %zu %d %d %d", n, H, W, K);
    FUZZ_CHECK(!S || H == S, "size %d asked, %d given", S, H);
    for (int k = 0; k < K; k++) FUZZ_CHECK(bnl_dataset_class_name(d, k) != NULL, "class %d has no name", k);
    if ((size_t)H * W <= 256 * 256) {   // a 1 x 4096 image is a 4096 x 4096 sample: valid, but not here
        enum { B = 3 };
        float *x = malloc(sizeof(float) * B * (size_t)H * W * 3);
        uint8_t *rgb = malloc((size_t)H * W * 3);
        int64_t labels[B];
        size_t idx[B] = {0, n / 2, n - 1};
        for (int train = 0; train < 2; train++) {
            bnl_augment a = bnl_dataset_augment_default(d, train);
            FUZZ_CHECK(isfinite(a.mean[0]) && a.std[0] > 0, "normalization %g %g", a.mean[0], a.std[0]);
            FUZZ_CHECK(bnl_dataset_get_batch(d, x, labels, idx, B, &a, 7) == BNL_OK, "batch: %s", bnl_last_error());
            for (size_t i = 0; i < (size_t)B * H * W * 3; i++) FUZZ_CHECK(isfinite(x[i]), "non-finite sample value");
            for (int b = 0; b < B; b++) FUZZ_CHECK(labels[b] >= 0 && labels[b] < K, "label %lld", (long long)labels[b]);
        }
        FUZZ_CHECK(bnl_dataset_get_image_u8(d, rgb, n - 1) == BNL_OK, "image: %s", bnl_last_error());
        idx[1] = n;
        FUZZ_CHECK(bnl_dataset_get_batch(d, x, labels, idx, B, NULL, 0) == BNL_ERR_ARG, "index out of range accepted");
        free(x), free(rgb);
    }
    bnl_dataset_free(d);
    return 0;
}
