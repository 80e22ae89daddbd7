// IDX files (MNIST / Fashion-MNIST format), written here plain and gzip'd: contents, gray -> RGB,
// padding and resizing, the data's own mean/std, class names, the DIR/{train,t10k}-* naming, and
// one-line errors naming the file for truncated and corrupt files, wrong magic numbers and counts
// that disagree. The real Fashion-MNIST files are checked by test_fashion_mnist.
#include "io/dataset.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef BNL_HAVE_ZLIB
#include <zlib.h>
#endif

#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        bnl_status st_ = (expr);                                                              \
        CHECK(st_ == BNL_OK, "%s -> %s: %s", #expr, bnl_status_str(st_), bnl_last_error()); \
    } while (0)

// expr fails with status want, and bnl_last_error() is one line containing needle1 and needle2
#define CHECK_FAILS(expr, want, needle1, needle2)                                                           \
    do {                                                                                                    \
        bnl_status st_ = (expr);                                                                            \
        const char *m_ = bnl_last_error();                                                                  \
        CHECK(st_ == (want), "%s -> %s (want %s): %s", #expr, bnl_status_str(st_), bnl_status_str(want), m_); \
        CHECK(strstr(m_, (needle1)) && strstr(m_, (needle2)) && !strchr(m_, '\n'),                          \
              "message \"%s\" does not name \"%s\" and \"%s\" on one line", m_, (needle1), (needle2));      \
    } while (0)

static char g_tmp[256];

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "FATAL: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "FATAL: cannot read %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = (uint8_t)v; }

static uint8_t pixel(int i, int y, int x) { return (uint8_t)(i * 37 + y * 11 + x * 5 + 3); }

// An images file of n h x w images; *len its size.
static uint8_t *idx_images(int n, int h, int w, size_t *len) {
    *len = 16 + (size_t)n * h * w;
    uint8_t *b = malloc(*len);
    put32(b, 0x803), put32(b + 4, (uint32_t)n), put32(b + 8, (uint32_t)h), put32(b + 12, (uint32_t)w);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) b[16 + ((size_t)i * h + y) * w + x] = pixel(i, y, x);
    return b;
}

static uint8_t *idx_labels(int n, int classes, size_t *len) {
    *len = 8 + (size_t)n;
    uint8_t *b = malloc(*len);
    put32(b, 0x801), put32(b + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) b[8 + i] = (uint8_t)((i * 7 + 1) % classes);
    return b;
}

static void path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_tmp, name); }

#ifdef BNL_HAVE_ZLIB
static void write_gz(const char *p, const uint8_t *data, size_t n) {
    gzFile g = gzopen(p, "wb9");
    if (!g || gzwrite(g, data, (unsigned)n) != (int)n) {
        fprintf(stderr, "FATAL: cannot write %s\n", p);
        exit(1);
    }
    gzclose(g);
}
#endif

static bnl_dataset *open_buf(const uint8_t *im, size_t il, const uint8_t *lb, size_t ll, int size, int fashion) {
    bnl_idx_opts o = bnl_idx_opts_default();
    o.size = size, o.fashion_names = fashion;
    bnl_dataset *d = NULL;
    bnl_status st = bnl_dataset_idx_from_buffer(&d, im, il, lb, ll, "im", "lb", &o);
    if (st != BNL_OK) {
        fprintf(stderr, "FATAL: bnl_dataset_idx_from_buffer: %s\n", bnl_last_error());
        exit(1);
    }
    return d;
}

static void test_contents(void) {
    const int N = 7, H = 6, W = 5, K = 4;
    size_t il, ll;
    uint8_t *im = idx_images(N, H, W, &il), *lb = idx_labels(N, K, &ll);
    bnl_dataset *d = open_buf(im, il, lb, ll, 0, 0);
    CHECK(bnl_dataset_size(d) == (size_t)N, "size %zu", bnl_dataset_size(d));
    CHECK(bnl_dataset_num_classes(d) == K, "classes %d", bnl_dataset_num_classes(d));
    // H != W: the native size is the longer side, the shorter one zero-padded (centered)
    CHECK(bnl_dataset_height(d) == H && bnl_dataset_width(d) == H, "%dx%d", bnl_dataset_height(d), bnl_dataset_width(d));
    CHECK(!strcmp(bnl_dataset_class_name(d, 3), "3") && bnl_dataset_class_name(d, 4) == NULL, "class names");
    for (int i = 0; i < N; i++)
        CHECK(bnl_dataset_label(d, (size_t)i) == (i * 7 + 1) % K, "label %d: %lld", i, (long long)bnl_dataset_label(d, (size_t)i));
    uint8_t rgb[6 * 6 * 3];
    int bad = 0;
    for (int i = 0; i < N; i++) {
        CHECK_OK(bnl_dataset_get_image_u8(d, rgb, (size_t)i));
        for (int y = 0; y < H; y++)
            for (int x = 0; x < H; x++) {
                int sx = x - (H - W) / 2;   // left padding of 0 columns (6 - 5) / 2 = 0
                int want = sx >= 0 && sx < W ? pixel(i, y, sx) : 0;
                for (int c = 0; c < 3; c++) bad += rgb[(y * H + x) * 3 + c] != want;
            }
    }
    CHECK(bad == 0, "%d pixel values differ from the file (gray -> 3 equal channels, zero padding)", bad);

    // mean/std: of the file's pixels (not of the padded samples), the same for the 3 channels
    double s = 0, q = 0;
    for (size_t k = 16; k < il; k++) s += im[k] / 255.0, q += (im[k] / 255.0) * (im[k] / 255.0);
    double n = (double)(il - 16), mean = s / n, sd = sqrt(q / n - mean * mean);
    bnl_augment a = bnl_dataset_augment_default(d, 0), t = bnl_dataset_augment_default(d, 1);
    for (int c = 0; c < 3; c++)
        CHECK(fabs(a.mean[c] - mean) < 1e-6 && fabs(a.std[c] - sd) < 1e-6 && t.mean[c] == a.mean[c] && t.std[c] == a.std[c],
              "channel %d: mean %g std %g, want %g %g", c, a.mean[c], a.std[c], mean, sd);
    CHECK(a.pad_crop == 0 && a.flip == 0 && t.pad_crop == 1 && t.flip == 1, "augmentation: eval %d/%d train %d/%d",
          a.pad_crop, a.flip, t.pad_crop, t.flip);

    // a batch: x = (v/255 - mean)/std for the eval augmentation, labels from the file
    size_t idx[3] = {4, 0, 6};
    float x[3 * 6 * 6 * 3], want[3 * 6 * 6 * 3];
    int64_t labels[3];
    CHECK_OK(bnl_dataset_get_batch(d, x, labels, idx, 3, &a, 0));
    for (int k = 0; k < 3; k++) {
        CHECK(labels[k] == (int64_t)((idx[k] * 7 + 1) % K), "batch label %d: %lld", k, (long long)labels[k]);
        CHECK_OK(bnl_dataset_get_image_u8(d, rgb, idx[k]));
        for (int j = 0; j < 6 * 6 * 3; j++) want[k * 108 + j] = (float)((rgb[j] / 255.0 - a.mean[j % 3]) / a.std[j % 3]);
    }
    check_close("normalized batch", x, want, 3 * 108, 1e-5, 1e-5);

    // another normalization (a model's): applies to both augmentations
    const float m2[3] = {0.5f, 0.25f, 0.125f}, s2[3] = {0.5f, 1.0f, 2.0f}, bad_sd[3] = {0.5f, 0.0f, 1.0f};
    CHECK_OK(bnl_dataset_set_normalization(d, m2, s2));
    a = bnl_dataset_augment_default(d, 0), t = bnl_dataset_augment_default(d, 1);
    CHECK(a.mean[2] == 0.125f && a.std[2] == 2.0f && t.mean[1] == 0.25f && t.std[0] == 0.5f && t.pad_crop == 1,
          "set_normalization");
    CHECK_FAILS(bnl_dataset_set_normalization(d, m2, bad_sd), BNL_ERR_ARG, "channel 1", "std");
    bnl_dataset_free(d);

    // Fashion-MNIST names
    d = open_buf(im, il, lb, ll, 0, 1);
    CHECK(bnl_dataset_num_classes(d) == 10, "fashion: %d classes", bnl_dataset_num_classes(d));
    CHECK(!strcmp(bnl_dataset_class_name(d, 0), "T-shirt/top") && !strcmp(bnl_dataset_class_name(d, 9), "Ankle boot"),
          "fashion names: %s .. %s", bnl_dataset_class_name(d, 0), bnl_dataset_class_name(d, 9));
    bnl_dataset_free(d);
    free(im), free(lb);
}

static void test_sizes(void) {
    const int N = 3, S = 28;
    size_t il, ll;
    uint8_t *im = idx_images(N, S, S, &il), *lb = idx_labels(N, 10, &ll);
    // 32: zero-padded by 2 on each side
    bnl_dataset *d = open_buf(im, il, lb, ll, 32, 0);
    CHECK(bnl_dataset_height(d) == 32 && bnl_dataset_width(d) == 32, "padded %dx%d", bnl_dataset_height(d), bnl_dataset_width(d));
    uint8_t *rgb = malloc(64 * 64 * 3);
    int bad = 0;
    CHECK_OK(bnl_dataset_get_image_u8(d, rgb, 2));
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            int in = y >= 2 && y < 30 && x >= 2 && x < 30;
            bad += rgb[(y * 32 + x) * 3 + 1] != (in ? pixel(2, y - 2, x - 2) : 0);
        }
    CHECK(bad == 0, "padded to 32: %d pixels differ", bad);
    CHECK(bnl_dataset_augment_default(d, 1).pad_crop == 4, "pad-crop at 32: %d", bnl_dataset_augment_default(d, 1).pad_crop);
    bnl_dataset_free(d);
    free(im);

    // 56: resized; a constant image stays that constant, and the size is 56
    im = idx_images(N, S, S, &il);
    memset(im + 16, 200, il - 16);
    d = open_buf(im, il, lb, ll, 56, 0);
    CHECK(bnl_dataset_height(d) == 56 && bnl_dataset_width(d) == 56, "resized %dx%d", bnl_dataset_height(d), bnl_dataset_width(d));
    CHECK_OK(bnl_dataset_get_image_u8(d, rgb, 1));
    bad = 0;
    for (int k = 0; k < 56 * 56 * 3; k++) bad += rgb[k] != 200;
    CHECK(bad == 0, "resized constant image: %d values are not 200", bad);
    CHECK(bnl_dataset_augment_default(d, 1).pad_crop == 7, "pad-crop at 56");
    bnl_dataset_free(d);
    free(rgb), free(im), free(lb);
}

// Loads a pair of files by path; the dataset's first label and size
static bnl_status open_files(const char *im, const char *lb, bnl_dataset **d) {
    bnl_idx_opts o = bnl_idx_opts_default();
    return bnl_dataset_idx(d, im, lb, &o);
}

static void test_files_and_errors(void) {
    const int N = 9, S = 4;
    size_t il, ll;
    uint8_t *im = idx_images(N, S, S, &il), *lb = idx_labels(N, 3, &ll);
    char pi[300], pl[300], pbad[300];
    path(pi, sizeof pi, "a-images"), path(pl, sizeof pl, "a-labels");
    write_file(pi, im, il), write_file(pl, lb, ll);
    bnl_dataset *d = NULL, *g = NULL;
    CHECK_OK(open_files(pi, pl, &d));
    CHECK(d && bnl_dataset_size(d) == (size_t)N && bnl_dataset_num_classes(d) == 3, "plain files");

    // truncated: one byte short, and a header cut short
    path(pbad, sizeof pbad, "short-images");
    write_file(pbad, im, il - 1);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "truncated");
    write_file(pbad, im, 10);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "truncated");
    write_file(pbad, im, 0);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "truncated");
    // trailing bytes
    uint8_t *longer = calloc(il + 3, 1);
    memcpy(longer, im, il);
    write_file(pbad, longer, il + 3);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "3 bytes after");
    free(longer);
    // wrong magic: random bytes, a labels file given as images, a non-byte data type
    path(pbad, sizeof pbad, "magic-images");
    uint8_t *m = malloc(il);
    memcpy(m, im, il);
    m[0] = 0x12, m[3] = 0x34;
    write_file(pbad, m, il);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "wrong magic number");
    CHECK_FAILS(open_files(pl, pl, &g), BNL_ERR_FORMAT, pl, "dimensions");
    CHECK_FAILS(open_files(pi, pi, &g), BNL_ERR_FORMAT, pi, "dimensions");
    memcpy(m, im, il);
    m[2] = 0x0D;   // float data
    write_file(pbad, m, il);
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_FORMAT, pbad, "data type 0x0d");
    free(m);
    // counts that disagree: both files named
    size_t ll2;
    uint8_t *lb2 = idx_labels(N - 1, 3, &ll2);
    path(pbad, sizeof pbad, "fewer-labels");
    write_file(pbad, lb2, ll2);
    CHECK_FAILS(open_files(pi, pbad, &g), BNL_ERR_FORMAT, pi, pbad);
    CHECK(strstr(bnl_last_error(), "9 images") && strstr(bnl_last_error(), "8 labels"), "counts: %s", bnl_last_error());
    free(lb2);
    // a missing file
    path(pbad, sizeof pbad, "missing");
    CHECK_FAILS(open_files(pbad, pl, &g), BNL_ERR_IO, pbad, "cannot open");
    // Fashion-MNIST names with a label beyond 9
    uint8_t *lb3 = malloc(ll);
    memcpy(lb3, lb, ll);
    lb3[8 + 5] = 10;
    bnl_idx_opts fo = bnl_idx_opts_default();
    fo.fashion_names = 1;
    CHECK_FAILS(bnl_dataset_idx_from_buffer(&g, im, il, lb3, ll, "x-images", "x-labels", &fo), BNL_ERR_FORMAT,
                "x-labels", "label 10 at image 5");
    free(lb3);
    CHECK(g == NULL, "no dataset after a failure");

#ifdef BNL_HAVE_ZLIB
    // gzip'd: the same dataset, byte for byte
    char gi[300], gl[300];
    path(gi, sizeof gi, "a-images.gz"), path(gl, sizeof gl, "a-labels.gz");
    write_gz(gi, im, il), write_gz(gl, lb, ll);
    CHECK_OK(open_files(gi, gl, &g));
    CHECK(g && bnl_dataset_size(g) == (size_t)N, "gzip'd files");
    if (g && d) {
        float x1[9 * 48], x2[9 * 48];
        int64_t l1[9], l2[9];
        size_t idx[9] = {8, 7, 6, 5, 4, 3, 2, 1, 0};
        bnl_augment a1 = bnl_dataset_augment_default(d, 1), a2 = bnl_dataset_augment_default(g, 1);
        CHECK_OK(bnl_dataset_get_batch(d, x1, l1, idx, 9, &a1, 5));
        CHECK_OK(bnl_dataset_get_batch(g, x2, l2, idx, 9, &a2, 5));
        CHECK(!memcmp(x1, x2, sizeof x1) && !memcmp(l1, l2, sizeof l1), "gzip'd and plain files give different batches");
    }
    bnl_dataset_free(g), g = NULL;
    // a gzip'd labels file with a plain images file
    CHECK_OK(open_files(pi, gl, &g));
    bnl_dataset_free(g), g = NULL;
    // truncated gzip: the stream cut in the middle, and cut before its trailer
    size_t gn;
    uint8_t *gz = read_all(gi, &gn);
    path(pbad, sizeof pbad, "cut-images.gz");
    write_file(pbad, gz, gn / 2);
    CHECK_FAILS(open_files(pbad, gl, &g), BNL_ERR_FORMAT, pbad, "truncated gzip");
    write_file(pbad, gz, gn - 4);
    CHECK_FAILS(open_files(pbad, gl, &g), BNL_ERR_FORMAT, pbad, "truncated gzip");
    // corrupt gzip: deflate data flipped, and a wrong CRC
    uint8_t *c = malloc(gn);
    memcpy(c, gz, gn);
    for (size_t k = 12; k < gn - 8; k++) c[k] ^= 0x5a;
    path(pbad, sizeof pbad, "corrupt-images.gz");
    write_file(pbad, c, gn);
    CHECK_FAILS(open_files(pbad, gl, &g), BNL_ERR_FORMAT, pbad, "corrupt gzip");
    memcpy(c, gz, gn);
    c[gn - 6] ^= 1;   // CRC32
    write_file(pbad, c, gn);
    CHECK_FAILS(open_files(pbad, gl, &g), BNL_ERR_FORMAT, pbad, "corrupt gzip");
    // a gzip stream of a truncated IDX file: the IDX check still names the file
    path(pbad, sizeof pbad, "short-images.gz");
    write_gz(pbad, im, il - 5);
    CHECK_FAILS(open_files(pbad, gl, &g), BNL_ERR_FORMAT, pbad, "truncated: ");
    free(c), free(gz);

    // a directory in the MNIST naming: .gz files found, plain files as a fallback
    char dir[300], p[400];
    path(dir, sizeof dir, "mnistdir");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir), write_gz(p, im, il);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir), write_gz(p, lb, ll);
    size_t til, tll;
    uint8_t *tim = idx_images(2, S, S, &til), *tlb = idx_labels(2, 3, &tll);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir), write_file(p, tim, til);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir), write_file(p, tlb, tll);
    bnl_idx_opts o = bnl_idx_opts_default();
    CHECK_OK(bnl_dataset_mnist(&g, dir, 1, &o));
    CHECK(g && bnl_dataset_size(g) == (size_t)N, "mnist train split");
    bnl_dataset_free(g), g = NULL;
    CHECK_OK(bnl_dataset_mnist(&g, dir, 0, &o));
    CHECK(g && bnl_dataset_size(g) == 2, "mnist t10k split");
    bnl_dataset_free(g), g = NULL;
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir), unlink(p);
    CHECK_FAILS(bnl_dataset_mnist(&g, dir, 0, &o), BNL_ERR_IO, "t10k-labels-idx1-ubyte", "cannot open");
    CHECK_FAILS(bnl_dataset_mnist(&g, g_tmp, 1, &o), BNL_ERR_IO, "train-images-idx3-ubyte", "not found");
    free(tim), free(tlb);
#else
    printf("gzip: skipped (built without zlib)\n");
    size_t gn = 20;
    uint8_t gz[20] = {0x1f, 0x8b};
    CHECK_FAILS(bnl_dataset_idx_from_buffer(&g, gz, gn, lb, ll, "g-images", "g-labels", NULL), BNL_ERR_UNSUPPORTED,
                "g-images", "no zlib");
#endif
    bnl_dataset_free(d);
    free(im), free(lb);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/bnl_test_idx_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "FATAL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_contents();
    test_sizes();
    test_files_and_errors();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
    return test_summary("test_idx");
}
