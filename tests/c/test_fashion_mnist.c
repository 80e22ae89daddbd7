// The real Fashion-MNIST files of Debian's dataset-fashion-mnist (tests/build.sh installs it):
// sizes, the first labels, balanced classes, names, the data's mean/std and a pixel checksum.
// Skipped (exit 77) with a message when the files are absent; BNL_FASHION_MNIST overrides the
// directory.
#include "io/dataset.h"
#include "util.h"

#include <stdint.h>

static void check_split(const char *dir, int train) {
    bnl_idx_opts o = bnl_idx_opts_default();
    o.fashion_names = 1;
    bnl_dataset *d = NULL;
    bnl_status st = bnl_dataset_mnist(&d, dir, train, &o);
    CHECK(st == BNL_OK, "%s split: %s", train ? "train" : "t10k", bnl_last_error());
    if (st != BNL_OK) return;
    size_t n = bnl_dataset_size(d), want = train ? 60000 : 10000;
    CHECK(n == want, "%zu images, want %zu", n, want);
    CHECK(bnl_dataset_height(d) == 28 && bnl_dataset_width(d) == 28, "%dx%d", bnl_dataset_height(d), bnl_dataset_width(d));
    CHECK(bnl_dataset_num_classes(d) == 10 && !strcmp(bnl_dataset_class_name(d, 9), "Ankle boot"), "classes");
    // the first labels as published (train: 9 0 0 3 0 2 7 2 5 5; t10k: 9 2 1 1 6 1 4 6 5 7)
    const int first_train[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, first_test[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    const int *first = train ? first_train : first_test;
    for (int i = 0; i < 10; i++)
        CHECK(bnl_dataset_label(d, (size_t)i) == first[i], "label %d: %lld, want %d", i, (long long)bnl_dataset_label(d, (size_t)i), first[i]);
    size_t count[10] = {0};
    for (size_t i = 0; i < n; i++) count[bnl_dataset_label(d, i)]++;
    for (int k = 0; k < 10; k++) CHECK(count[k] == n / 10, "class %d: %zu images, want %zu", k, count[k], n / 10);
    // the published statistics (train: 0.2860 / 0.3530), and a mean computed from the samples
    bnl_augment a = bnl_dataset_augment_default(d, 0);
    double wm = train ? 0.2860 : 0.2868, ws = train ? 0.3530 : 0.3524;
    CHECK(fabs(a.mean[0] - wm) < 5e-4 && fabs(a.std[0] - ws) < 5e-4 && a.mean[2] == a.mean[0], "mean %g std %g", a.mean[0], a.std[0]);
    uint8_t rgb[28 * 28 * 3];
    double s = 0;
    int gray = 1;
    for (size_t i = 0; i < n; i += 97) {
        bnl_dataset_get_image_u8(d, rgb, i);
        for (int k = 0; k < 28 * 28; k++) {
            s += rgb[3 * k];
            gray &= rgb[3 * k] == rgb[3 * k + 1] && rgb[3 * k] == rgb[3 * k + 2];
        }
    }
    double m = s / (((n + 96) / 97) * 28.0 * 28.0 * 255.0);
    CHECK(gray, "three equal channels");
    CHECK(fabs(m - a.mean[0]) < 0.01, "mean of every 97th image %g, of all %g", m, a.mean[0]);
    printf("%s: %zu images, mean %.4f, std %.4f\n", train ? "train" : "t10k", n, a.mean[0], a.std[0]);
    bnl_dataset_free(d);
}

int main(void) {
    const char *dir = getenv("BNL_FASHION_MNIST");
    if (!dir || !*dir) dir = BNL_FASHION_MNIST_DIR;
    char p[1200];
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    FILE *f = fopen(p, "rb");
    if (!f) {
        printf("test_fashion_mnist: SKIPPED: %s not found (apt-get install dataset-fashion-mnist)\n", p);
        return 77;
    }
    fclose(f);
    (void)check_close;
    check_split(dir, 0);
    check_split(dir, 1);
    return test_summary("test_fashion_mnist");
}
