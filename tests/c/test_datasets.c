// Datasets: procedural determinism and difficulty, batch assembly and augmentation, permutations,
// CIFAR-10 binary files (written here) and ImageFolder trees of PNG/JPEG files (written here with
// libpng/libjpeg), with corrupt and truncated files.
#include "io/dataset.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef BNL_HAVE_PNG
#include <png.h>
#endif
#ifdef BNL_HAVE_JPEG
#include <jpeglib.h>
#endif

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        bnl_status st_ = (expr);                                                              \
        CHECK(st_ == BNL_OK, "%s -> %s: %s", #expr, bnl_status_str(st_), bnl_last_error()); \
    } while (0)

// expr fails with status want and bnl_last_error() contains needle
#define CHECK_FAILS(expr, want, needle)                                                                     \
    do {                                                                                                    \
        bnl_status st_ = (expr);                                                                            \
        CHECK(st_ == (want), "%s -> %s (want %s): %s", #expr, bnl_status_str(st_), bnl_status_str(want),    \
              bnl_last_error());                                                                            \
        CHECK(strstr(bnl_last_error(), (needle)) != NULL, "message \"%s\" does not name \"%s\"",          \
              bnl_last_error(), (needle));                                                                  \
    } while (0)

static bnl_dataset *make_proc(uint64_t seed, size_t count, int classes, int size) {
    bnl_procedural_opts o = bnl_procedural_opts_default();
    o.seed = seed, o.count = count, o.classes = classes, o.size = size;
    bnl_dataset *d = NULL;
    bnl_status st = bnl_dataset_procedural(&d, &o);
    if (st != BNL_OK) {
        fprintf(stderr, "FATAL: bnl_dataset_procedural: %s\n", bnl_last_error());
        exit(1);
    }
    return d;
}

// ---- procedural ---------------------------------------------------------------------------------

static void test_procedural_basics(void) {
    bnl_dataset *a = make_proc(3, 2000, 10, 32), *b = make_proc(3, 50, 10, 32), *c = make_proc(4, 2000, 10, 32);
    CHECK(bnl_dataset_size(a) == 2000, "size %zu", bnl_dataset_size(a));
    CHECK(bnl_dataset_num_classes(a) == 10, "classes %d", bnl_dataset_num_classes(a));
    CHECK(bnl_dataset_height(a) == 32 && bnl_dataset_width(a) == 32, "%dx%d", bnl_dataset_height(a), bnl_dataset_width(a));
    CHECK(strcmp(bnl_dataset_class_name(a, 0), "circle") == 0, "class 0 is %s", bnl_dataset_class_name(a, 0));
    CHECK(bnl_dataset_class_name(a, 10) == NULL && bnl_dataset_class_name(a, -1) == NULL, "out-of-range class name");
    CHECK(bnl_dataset_label(a, 2000) == -1, "out-of-range label");

    uint8_t im1[32 * 32 * 3], im2[32 * 32 * 3];
    int same_other_count = 1, differs_next = 1, differs_seed = 0;
    for (size_t i = 0; i < 50; i++) {
        CHECK_OK(bnl_dataset_get_image_u8(a, im1, i));
        CHECK_OK(bnl_dataset_get_image_u8(b, im2, i));
        // image i depends on (seed, i) only, not on the dataset's size
        if (memcmp(im1, im2, sizeof im1) || bnl_dataset_label(a, i) != bnl_dataset_label(b, i)) same_other_count = 0;
        CHECK_OK(bnl_dataset_get_image_u8(a, im2, i + 1));
        if (!memcmp(im1, im2, sizeof im1)) differs_next = 0;
        CHECK_OK(bnl_dataset_get_image_u8(c, im2, i));
        if (memcmp(im1, im2, sizeof im1)) differs_seed++;
    }
    CHECK(same_other_count, "the same (seed, index) gives different images in datasets of different sizes");
    CHECK(differs_next, "two consecutive images are identical");
    CHECK(differs_seed == 50, "another seed gives the same image (%d of 50 differ)", differs_seed);
    // again, bytes identical on a second call (no hidden state)
    CHECK_OK(bnl_dataset_get_image_u8(a, im1, 7));
    CHECK_OK(bnl_dataset_get_image_u8(a, im2, 7));
    CHECK(!memcmp(im1, im2, sizeof im1), "image 7 changed between calls");

    // labels: in range, balanced, every class present
    int counts[10] = {0};
    for (size_t i = 0; i < 2000; i++) {
        int64_t l = bnl_dataset_label(a, i);
        CHECK(l >= 0 && l < 10, "label %lld of image %zu", (long long)l, i);
        if (l >= 0 && l < 10) counts[l]++;
    }
    for (int k = 0; k < 10; k++) CHECK(counts[k] == 200, "class %d has %d of 2000 images", k, counts[k]);

    // pixel statistics: not degenerate, reasonably centred, every image has content
    double sum[3] = {0}, sq[3] = {0};
    size_t flat = 0;
    for (size_t i = 0; i < 500; i++) {
        CHECK_OK(bnl_dataset_get_image_u8(a, im1, i));
        double s = 0, s2 = 0;
        for (int p = 0; p < 32 * 32; p++)
            for (int k = 0; k < 3; k++) {
                double v = im1[p * 3 + k];
                sum[k] += v, sq[k] += v * v, s += v, s2 += v * v;
            }
        double m = s / 3072, sd = sqrt(s2 / 3072 - m * m);
        if (sd < 8) flat++;
    }
    for (int k = 0; k < 3; k++) {
        double m = sum[k] / (500.0 * 1024), sd = sqrt(sq[k] / (500.0 * 1024) - m * m);
        printf("procedural channel %d: mean %.1f std %.1f\n", k, m, sd);
        CHECK(m > 80 && m < 175, "channel %d mean %.1f", k, m);
        CHECK(sd > 40 && sd < 100, "channel %d std %.1f", k, sd);
    }
    CHECK(flat <= 5, "%zu of 500 images are nearly flat", flat);

    // a golden hash: the generator is integer-only, so these bytes are the same in the wasm build
    // (tests/node can check the same value); a change here changes the dataset for everyone.
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < 16; i++) {
        CHECK_OK(bnl_dataset_get_image_u8(a, im1, i));
        h ^= fnv1a(im1, sizeof im1) + i;
    }
    CHECK(h == 0xa53b44538204fb4bull,
          "procedural golden hash (seed 3, images 0..15, 32x32) is 0x%016llx: the generator changed (or the build "
          "is not bit-exact); if on purpose, update this value and tell the web demo",
          (unsigned long long)h);

    bnl_dataset_free(a);
    bnl_dataset_free(b);
    bnl_dataset_free(c);
}

static void test_procedural_sizes_and_errors(void) {
    int sizes[] = {8, 13, 64, 100};
    for (int t = 0; t < 4; t++) {
        int S = sizes[t];
        bnl_dataset *d = make_proc(1, 40, 16, S);
        CHECK(bnl_dataset_height(d) == S && bnl_dataset_width(d) == S, "size %d", S);
        CHECK(strcmp(bnl_dataset_class_name(d, 15), "t-shape") == 0, "class 15 %s", bnl_dataset_class_name(d, 15));
        uint8_t *im = malloc((size_t)S * S * 3);
        int seen[16] = {0};
        for (size_t i = 0; i < 40; i++) {
            CHECK_OK(bnl_dataset_get_image_u8(d, im, i));
            seen[bnl_dataset_label(d, i)] = 1;
        }
        for (int k = 0; k < 16; k++) CHECK(seen[k], "size %d: class %d never appears", S, k);
        free(im);
        bnl_dataset_free(d);
    }
    bnl_dataset *d = NULL;
    bnl_procedural_opts o = bnl_procedural_opts_default();
    o.classes = 1;
    CHECK_FAILS(bnl_dataset_procedural(&d, &o), BNL_ERR_ARG, "classes");
    o.classes = BNL_PROCEDURAL_MAX_CLASSES + 1;
    CHECK_FAILS(bnl_dataset_procedural(&d, &o), BNL_ERR_ARG, "classes");
    o = bnl_procedural_opts_default();
    o.size = 7;
    CHECK_FAILS(bnl_dataset_procedural(&d, &o), BNL_ERR_ARG, "size");
    o = bnl_procedural_opts_default();
    o.count = 0;
    CHECK_FAILS(bnl_dataset_procedural(&d, &o), BNL_ERR_ARG, "count");
    CHECK(d == NULL, "failed create left a dataset");
    // NULL opts: the defaults
    CHECK_OK(bnl_dataset_procedural(&d, NULL));
    CHECK(d && bnl_dataset_size(d) == 10000 && bnl_dataset_num_classes(d) == 10 && bnl_dataset_height(d) == 32,
          "defaults");
    bnl_dataset_free(d);
    bnl_dataset_free(NULL);
}

// Shape features of a size x size RGB image, invariant to position, rotation, colour and contrast:
// a histogram of rotation-invariant uniform local binary patterns (10 bins), of gradient
// magnitudes relative to the image's largest (10), and of gradient orientations relative to the
// image's dominant orientation, weighted by magnitude (12).
enum { SHAPE_F = 32 };
static void shape_features(const uint8_t *im, int S, double *f) {
    double *g = malloc((size_t)S * S * sizeof(double));
    for (int i = 0; i < S * S; i++) g[i] = (im[3 * i] + im[3 * i + 1] + im[3 * i + 2]) / 3.0;
    memset(f, 0, SHAPE_F * sizeof(double));
    static const int dy[8] = {-1, -1, -1, 0, 1, 1, 1, 0}, dx[8] = {-1, 0, 1, 1, 1, 0, -1, -1};
    double jxx = 0, jyy = 0, jxy = 0, gmax = 1e-9, wsum = 1e-9, n = (double)(S - 2) * (S - 2);
    for (int y = 1; y < S - 1; y++)
        for (int x = 1; x < S - 1; x++) {
            int b[8], ones = 0, flips = 0;
            for (int k = 0; k < 8; k++) ones += b[k] = g[(y + dy[k]) * S + x + dx[k]] >= g[y * S + x];
            for (int k = 0; k < 8; k++) flips += b[k] != b[(k + 1) % 8];
            f[flips <= 2 ? ones : 9] += 1 / n;
            double gx = g[y * S + x + 1] - g[y * S + x - 1], gy = g[(y + 1) * S + x] - g[(y - 1) * S + x];
            jxx += gx * gx, jyy += gy * gy, jxy += gx * gy;
            gmax = fmax(gmax, sqrt(gx * gx + gy * gy));
        }
    const double pi = 3.14159265358979323846, th0 = 0.5 * atan2(2 * jxy, jxx - jyy);
    for (int y = 1; y < S - 1; y++)
        for (int x = 1; x < S - 1; x++) {
            double gx = g[y * S + x + 1] - g[y * S + x - 1], gy = g[(y + 1) * S + x] - g[(y - 1) * S + x];
            double mag = sqrt(gx * gx + gy * gy), th = fmod(atan2(gy, gx) - th0 + 4 * pi, pi);
            f[10 + (int)fmin(9, 10 * mag / gmax)] += 1 / n;
            f[20 + (int)fmin(11, 12 * th / pi)] += mag, wsum += mag;
        }
    for (int k = 20; k < 32; k++) f[k] /= wsum;
    free(g);
}

// Nearest class mean, features standardized with the training set's mean and deviation; train
// (ntr, F), test (nte, F). Returns the test accuracy.
static double nearest_class_mean(const double *tr, const int *ltr, size_t ntr, const double *te, const int *lte,
                                 size_t nte, int F, int C) {
    double *mu = calloc((size_t)F, sizeof(double)), *sd = calloc((size_t)F, sizeof(double));
    double *means = calloc((size_t)C * F, sizeof(double));
    int *cnt = calloc((size_t)C, sizeof(int));
    for (size_t i = 0; i < ntr; i++)
        for (int k = 0; k < F; k++) mu[k] += tr[i * F + k] / (double)ntr;
    for (size_t i = 0; i < ntr; i++)
        for (int k = 0; k < F; k++) sd[k] += (tr[i * F + k] - mu[k]) * (tr[i * F + k] - mu[k]) / (double)ntr;
    for (int k = 0; k < F; k++) sd[k] = sqrt(sd[k]) + 1e-12;
    for (size_t i = 0; i < ntr; i++) {
        cnt[ltr[i]]++;
        for (int k = 0; k < F; k++) means[(size_t)ltr[i] * F + k] += (tr[i * F + k] - mu[k]) / sd[k];
    }
    for (int c = 0; c < C; c++)
        for (int k = 0; k < F; k++) means[(size_t)c * F + k] /= cnt[c] ? cnt[c] : 1;
    size_t correct = 0;
    for (size_t i = 0; i < nte; i++) {
        int best = -1;
        double bd = 1e300;
        for (int c = 0; c < C; c++) {
            double dd = 0;
            for (int k = 0; k < F; k++) {
                double t = (te[i * F + k] - mu[k]) / sd[k] - means[(size_t)c * F + k];
                dd += t * t;
            }
            if (dd < bd) bd = dd, best = c;
        }
        correct += best == lte[i];
    }
    free(mu), free(sd), free(means), free(cnt);
    return (double)correct / (double)nte;
}

// The classes are told apart by shape, and only by shape. A nearest-class-mean classifier (train
// 5000, test 2000 from another seed) on raw pixels (colour and position) stays at chance, and on
// shape features (position/rotation/colour invariant) it beats the same classifier trained on
// shuffled labels by a wide margin: images whose content did not depend on the label (label-free
// noise, a label mix-up in the generator) fail the second check, too-easy classes the first.
static void test_procedural_difficulty(void) {
    enum { S = 32, C = 10, P = S * S * 3, NTR = 5000, NTE = 2000 };
    bnl_dataset *tr = make_proc(11, NTR, C, S), *te = make_proc(12, NTE, C, S);
    double *pix_tr = malloc((size_t)NTR * P * sizeof(double)), *pix_te = malloc((size_t)NTE * P * sizeof(double));
    double *sh_tr = malloc((size_t)NTR * SHAPE_F * sizeof(double)), *sh_te = malloc((size_t)NTE * SHAPE_F * sizeof(double));
    int *ltr = malloc(NTR * sizeof(int)), *lte = malloc(NTE * sizeof(int)), *shuffled = malloc(NTR * sizeof(int));
    size_t *perm = malloc(NTR * sizeof(size_t));
    uint8_t im[P];
    for (size_t i = 0; i < NTR + NTE; i++) {
        int train = i < NTR;
        size_t k = train ? i : i - NTR;
        bnl_dataset_get_image_u8(train ? tr : te, im, k);
        for (int p = 0; p < P; p++) (train ? pix_tr : pix_te)[k * P + p] = im[p];
        shape_features(im, S, (train ? sh_tr : sh_te) + k * SHAPE_F);
        (train ? ltr : lte)[k] = (int)bnl_dataset_label(train ? tr : te, k);
    }
    CHECK_OK(bnl_dataset_permutation(perm, NTR, 99, 0));
    for (size_t i = 0; i < NTR; i++) shuffled[i] = ltr[perm[i]];
    // raw pixels: a fair classifier on standardized pixels
    double acc_pix = nearest_class_mean(pix_tr, ltr, NTR, pix_te, lte, NTE, P, C);
    double acc_shape = nearest_class_mean(sh_tr, ltr, NTR, sh_te, lte, NTE, SHAPE_F, C);
    double acc_control = nearest_class_mean(sh_tr, shuffled, NTR, sh_te, lte, NTE, SHAPE_F, C);
    printf("procedural difficulty: nearest-class-mean accuracy on raw pixels %.1f%%, on shape features %.1f%%, "
           "on shape features with shuffled training labels %.1f%% (chance %.0f%%)\n",
           100 * acc_pix, 100 * acc_shape, 100 * acc_control, 100.0 / C);
    // chance is 10%; the binomial deviation of an accuracy over 2000 images is under 0.7 points
    CHECK(acc_pix < 0.2, "raw-pixel nearest-class-mean accuracy %.3f: colour or position gives the class away", acc_pix);
    CHECK(acc_control < 0.15, "shuffled-label control %.3f: the control is not at chance", acc_control);
    CHECK(acc_shape > acc_control + 0.12, "shape-feature accuracy %.3f is not clearly above the shuffled-label control %.3f: "
          "the images do not depend on their labels", acc_shape, acc_control);
    free(pix_tr), free(pix_te), free(sh_tr), free(sh_te), free(ltr), free(lte), free(shuffled), free(perm);
    bnl_dataset_free(tr);
    bnl_dataset_free(te);
}

// ---- batches ------------------------------------------------------------------------------------

static void test_batches(void) {
    const int S = 32;
    const size_t per = (size_t)S * S * 3, n = 64;
    bnl_dataset *d = make_proc(5, 1000, 10, S);
    size_t idx[64];
    for (size_t k = 0; k < n; k++) idx[k] = (k * 37 + 3) % 1000;
    float *x = malloc(n * per * sizeof(float)), *y = malloc(n * per * sizeof(float)), *ref = malloc(n * per * sizeof(float));
    int64_t lab[64];
    uint8_t im[32 * 32 * 3];

    // no augmentation: exactly (v/255 - mean)/std, labels as the dataset says
    bnl_augment none = bnl_augment_none();
    CHECK_OK(bnl_dataset_get_batch(d, x, lab, idx, n, NULL, 0));
    for (size_t k = 0; k < n; k++) {
        CHECK_OK(bnl_dataset_get_image_u8(d, im, idx[k]));
        for (size_t p = 0; p < per; p++) {
            int c = p % 3;
            ref[k * per + p] = (float)im[p] * (1.0f / (255.0f * none.std[c])) - none.mean[c] / none.std[c];
        }
        CHECK(lab[k] == bnl_dataset_label(d, idx[k]), "label of batch position %zu", k);
    }
    check_close("batch vs normalized image", x, ref, n * per, 1e-6, 1e-6);

    // flip only: every image is the plain one or its mirror; both happen
    bnl_augment fl = none;
    fl.flip = 1;
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, idx, n, &fl, 42));
    int flipped = 0, plain = 0, other = 0;
    for (size_t k = 0; k < n; k++) {
        int is_plain = 1, is_mirror = 1;
        for (int yy = 0; yy < S; yy++)
            for (int xx = 0; xx < S; xx++)
                for (int c = 0; c < 3; c++) {
                    float v = y[k * per + ((size_t)yy * S + xx) * 3 + c];
                    if (v != x[k * per + ((size_t)yy * S + xx) * 3 + c]) is_plain = 0;
                    if (v != x[k * per + ((size_t)yy * S + (S - 1 - xx)) * 3 + c]) is_mirror = 0;
                }
        flipped += is_mirror && !is_plain, plain += is_plain, other += !is_plain && !is_mirror;
    }
    CHECK(other == 0 && flipped > 10 && plain > 10, "flip: %d flipped, %d plain, %d neither", flipped, plain, other);

    // pad-crop only: shifted copies with the padding at normalized zero
    bnl_augment pc = none;
    pc.pad_crop = 4;
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, idx, n, &pc, 43));
    int shifted = 0, bad = 0;
    for (size_t k = 0; k < n; k++) {
        int found = 0;
        for (int dy = -4; dy <= 4 && !found; dy++)
            for (int dx = -4; dx <= 4 && !found; dx++) {
                int ok = 1;
                for (int yy = 0; yy < S && ok; yy++)
                    for (int xx = 0; xx < S && ok; xx++)
                        for (int c = 0; c < 3; c++) {
                            int sy = yy + dy, sx = xx + dx;
                            float want = (sy < 0 || sy >= S || sx < 0 || sx >= S)
                                             ? -none.mean[c] / none.std[c]
                                             : x[k * per + ((size_t)sy * S + sx) * 3 + c];
                            if (fabsf(y[k * per + ((size_t)yy * S + xx) * 3 + c] - want) > 1e-6f) ok = 0;
                        }
                if (ok) found = 1, shifted += dy != 0 || dx != 0;
            }
        bad += !found;
    }
    CHECK(bad == 0 && shifted > 40, "pad_crop: %d images are no shift of the original, %d shifted", bad, shifted);

    // full training augmentation: deterministic in (seed, index), independent of threads and order
    bnl_augment tr = bnl_dataset_augment_default(d, 1);
    CHECK(tr.flip && tr.pad_crop == 4, "default train augmentation flip %d pad %d", tr.flip, tr.pad_crop);
    bnl_set_threads(1);
    CHECK_OK(bnl_dataset_get_batch(d, x, NULL, idx, n, &tr, 7));
    bnl_set_threads(4);
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, idx, n, &tr, 7));
    bnl_set_threads(0);
    check_close("augmented batch, 1 vs 4 threads", y, x, n * per, 0, 0);
    size_t rev[64];
    for (size_t k = 0; k < n; k++) rev[k] = idx[n - 1 - k];
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, rev, n, &tr, 7));
    int order_ok = 1;
    for (size_t k = 0; k < n; k++)
        if (memcmp(y + (n - 1 - k) * per, x + k * per, per * sizeof(float))) order_ok = 0;
    CHECK(order_ok, "an image's augmentation depends on its batch position");
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, idx, n, &tr, 8));
    int differ = 0;
    for (size_t k = 0; k < n; k++) differ += memcmp(y + k * per, x + k * per, per * sizeof(float)) != 0;
    CHECK(differ > (int)n / 2, "another seed changes only %d of %zu augmentations", differ, n);

    // random resized crop on a procedural image: finite, within the normalized range
    bnl_augment rrc = none;
    rrc.random_resized_crop = 1, rrc.scale_min = 0.3f, rrc.flip = 1;
    CHECK_OK(bnl_dataset_get_batch(d, y, NULL, idx, n, &rrc, 9));
    float lo = 1e9f, hi = -1e9f;
    for (size_t p = 0; p < n * per; p++) lo = y[p] < lo ? y[p] : lo, hi = y[p] > hi ? y[p] : hi;
    CHECK(lo >= -2.2f && hi <= 2.7f && hi > lo, "random resized crop range [%g, %g]", lo, hi);

    // errors
    size_t badidx[2] = {0, 1000};
    CHECK_FAILS(bnl_dataset_get_batch(d, x, lab, badidx, 2, NULL, 0), BNL_ERR_ARG, "1000");
    CHECK_FAILS(bnl_dataset_get_image_u8(d, im, 1000), BNL_ERR_ARG, "1000");
    free(x), free(y), free(ref);
    bnl_dataset_free(d);
}

static void test_permutation(void) {
    size_t n = 1000, *p = malloc(n * sizeof(size_t)), *q = malloc(n * sizeof(size_t));
    char *seen = calloc(n, 1);
    CHECK_OK(bnl_dataset_permutation(p, n, 1, 0));
    int dup = 0, fixed = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= n || seen[p[i]]) dup++;
        else seen[p[i]] = 1;
        fixed += p[i] == i;
    }
    CHECK(dup == 0, "not a permutation: %d repeated or out of range", dup);
    CHECK(fixed < 10, "%d fixed points: hardly shuffled", fixed);
    CHECK_OK(bnl_dataset_permutation(q, n, 1, 0));
    CHECK(!memcmp(p, q, n * sizeof(size_t)), "same (seed, epoch) gives another permutation");
    CHECK_OK(bnl_dataset_permutation(q, n, 1, 1));
    CHECK(memcmp(p, q, n * sizeof(size_t)), "epoch 1 repeats epoch 0");
    CHECK_OK(bnl_dataset_permutation(q, n, 2, 0));
    CHECK(memcmp(p, q, n * sizeof(size_t)), "seed 2 repeats seed 1");
    CHECK_OK(bnl_dataset_permutation(q, 1, 5, 5));
    CHECK(q[0] == 0, "n = 1");
    CHECK_OK(bnl_dataset_permutation(NULL, 0, 5, 5));
    free(p), free(q), free(seen);
}

// ---- CIFAR-10 -----------------------------------------------------------------------------------

static char g_tmp[256];

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "FATAL: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t cifar_pixel(int rec, int c, int y, int x) { return (uint8_t)(rec * 29 + c * 85 + y * 7 + x * 3); }

// n records starting at record number first, labels (first + r) % 10
static uint8_t *cifar_records(int first, int n) {
    uint8_t *b = malloc((size_t)n * 3073);
    for (int r = 0; r < n; r++) {
        uint8_t *rec = b + (size_t)r * 3073;
        rec[0] = (uint8_t)((first + r) % 10);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) rec[1 + c * 1024 + y * 32 + x] = cifar_pixel(first + r, c, y, x);
    }
    return b;
}

static void test_cifar(void) {
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/cifar", g_tmp);
    mkdir(dir, 0755);
    for (int k = 1; k <= 5; k++) {
        uint8_t *b = cifar_records((k - 1) * 4, 4);
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, k);
        write_file(path, b, 4 * 3073);
        free(b);
    }
    uint8_t *tb = cifar_records(100, 7);
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_file(path, tb, 7 * 3073);

    bnl_dataset *d = NULL;
    CHECK_OK(bnl_dataset_cifar10(&d, dir, 1));
    if (d) {
        CHECK(bnl_dataset_size(d) == 20 && bnl_dataset_height(d) == 32 && bnl_dataset_num_classes(d) == 10,
              "train: %zu images", bnl_dataset_size(d));
        CHECK(strcmp(bnl_dataset_class_name(d, 0), "airplane") == 0 && strcmp(bnl_dataset_class_name(d, 9), "truck") == 0,
              "default class names");
        uint8_t im[3072];
        int pix_ok = 1;
        for (int r = 0; r < 20; r++) {
            CHECK(bnl_dataset_label(d, r) == r % 10, "record %d label %lld", r, (long long)bnl_dataset_label(d, r));
            CHECK_OK(bnl_dataset_get_image_u8(d, im, r));
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    for (int c = 0; c < 3; c++)
                        if (im[(y * 32 + x) * 3 + c] != cifar_pixel(r, c, y, x)) pix_ok = 0;
        }
        CHECK(pix_ok, "CIFAR planes -> NHWC conversion");
        // normalized batch with the CIFAR statistics
        bnl_augment ev = bnl_dataset_augment_default(d, 0);
        CHECK(fabsf(ev.mean[0] - 0.4914f) < 1e-6f && !ev.flip && !ev.pad_crop, "CIFAR eval augmentation");
        size_t idx[3] = {19, 0, 5};
        float x[3 * 3072], want[3 * 3072];
        int64_t lab[3];
        CHECK_OK(bnl_dataset_get_batch(d, x, lab, idx, 3, &ev, 0));
        for (int k = 0; k < 3; k++)
            for (int p = 0; p < 1024; p++)
                for (int c = 0; c < 3; c++)
                    want[k * 3072 + p * 3 + c] =
                        ((float)cifar_pixel((int)idx[k], c, p / 32, p % 32) / 255.0f - ev.mean[c]) / ev.std[c];
        check_close("CIFAR batch", x, want, 3 * 3072, 1e-5, 1e-5);
        CHECK(lab[0] == 9 && lab[1] == 0 && lab[2] == 5, "CIFAR batch labels %lld %lld %lld", (long long)lab[0],
              (long long)lab[1], (long long)lab[2]);
        bnl_dataset_free(d);
    }

    // the test split, with class names from batches.meta.txt
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    const char *meta = "a0\nb1\nc2\nd3\ne4\nf5\ng6\nh7\ni8\nj9\n\n";
    write_file(path, meta, strlen(meta));
    d = NULL;
    CHECK_OK(bnl_dataset_cifar10(&d, dir, 0));
    if (d) {
        CHECK(bnl_dataset_size(d) == 7, "test: %zu images", bnl_dataset_size(d));
        CHECK(strcmp(bnl_dataset_class_name(d, 9), "j9") == 0, "meta class name %s", bnl_dataset_class_name(d, 9));
        CHECK(bnl_dataset_label(d, 0) == 0 && bnl_dataset_label(d, 6) == 6, "test labels");
        bnl_dataset_free(d);
    }
    // from a buffer
    CHECK_OK(bnl_dataset_cifar10_from_buffer(&d, tb, 7 * 3073, "test_batch.bin"));
    if (d) {
        uint8_t im[3072];
        CHECK_OK(bnl_dataset_get_image_u8(d, im, 3));
        CHECK(im[(5 * 32 + 6) * 3 + 2] == cifar_pixel(103, 2, 5, 6), "buffer pixel");
        bnl_dataset_free(d);
    }

    // errors name the file: truncated, bad label, missing file, bad meta
    d = NULL;
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_file(path, tb, 7 * 3073 - 100);
    CHECK_FAILS(bnl_dataset_cifar10(&d, dir, 0), BNL_ERR_FORMAT, "test_batch.bin");
    CHECK(strstr(bnl_last_error(), "3073") != NULL, "truncation message: %s", bnl_last_error());
    tb[3 * 3073] = 10;
    write_file(path, tb, 7 * 3073);
    CHECK_FAILS(bnl_dataset_cifar10(&d, dir, 0), BNL_ERR_FORMAT, "test_batch.bin");
    CHECK(strstr(bnl_last_error(), "label 10") != NULL, "bad label message: %s", bnl_last_error());
    CHECK_FAILS(bnl_dataset_cifar10_from_buffer(&d, tb, 7 * 3073, "mem.bin"), BNL_ERR_FORMAT, "mem.bin");
    write_file(path, tb, 0);
    CHECK_FAILS(bnl_dataset_cifar10(&d, dir, 0), BNL_ERR_FORMAT, "test_batch.bin");
    snprintf(path, sizeof path, "%s/data_batch_3.bin", dir);
    unlink(path);
    CHECK_FAILS(bnl_dataset_cifar10(&d, dir, 1), BNL_ERR_IO, "data_batch_3.bin");
    CHECK(d == NULL, "a failed open left a dataset");
    free(tb);
}

// ---- ImageFolder --------------------------------------------------------------------------------

#if defined(BNL_HAVE_PNG) && defined(BNL_HAVE_JPEG)
static void mkdirs(const char *a, const char *b) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", a, b);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "FATAL: mkdir %s: %s\n", p, strerror(errno));
        exit(1);
    }
}

// fmt: PNG_FORMAT_RGB, _GRAY, _RGBA; pix holds w*h*channels bytes
static void write_png(const char *dir, const char *name, const uint8_t *pix, int w, int h, int fmt) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w, img.height = (png_uint_32)h, img.format = (png_uint_32)fmt;
    if (!png_image_write_to_file(&img, p, 0, pix, 0, NULL)) {
        fprintf(stderr, "FATAL: writing %s: %s\n", p, img.message);
        exit(1);
    }
}

static void write_jpeg(const char *dir, const char *name, const uint8_t *pix, int w, int h, int gray, int quality) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        fprintf(stderr, "FATAL: cannot write %s\n", p);
        exit(1);
    }
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = gray ? 1 : 3, c.in_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (size_t)c.next_scanline * w * (gray ? 1 : 3));
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

static uint8_t *solid(int w, int h, int ch, const int *v) {
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < ch; c++) p[(size_t)i * ch + c] = (uint8_t)v[c];
    return p;
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

// the decoded, resized (shorter side 16) and center-cropped 16x16 sample, raw 0..255
static void sample_u8(bnl_dataset *d, size_t i, uint8_t *im) { CHECK_OK(bnl_dataset_get_image_u8(d, im, i)); }

static int all_near(const uint8_t *im, int n, const int *rgb, int tol, int *worst) {
    int ok = 1;
    *worst = 0;
    for (int p = 0; p < n; p++)
        for (int c = 0; c < 3; c++) {
            int e = abs((int)im[p * 3 + c] - rgb[c]);
            if (e > *worst) *worst = e;
            if (e > tol) ok = 0;
        }
    return ok;
}

static void test_imagefolder(void) {
    char root[300], dir[400];
    snprintf(root, sizeof root, "%s/if", g_tmp);
    mkdir(root, 0755);
    mkdirs(root, "cat"), mkdirs(root, "cat/sub"), mkdirs(root, "dog"), mkdirs(root, ".hidden");
    const int red[3] = {200, 30, 40}, green[3] = {30, 180, 60}, gray[1] = {128}, blue4[4] = {10, 20, 250, 100};
    uint8_t *p;
    snprintf(dir, sizeof dir, "%s/cat", root);
    write_png(dir, "a.png", p = solid(40, 30, 3, red), 40, 30, PNG_FORMAT_RGB), free(p);
    write_jpeg(dir, "b.jpg", p = solid(32, 48, 3, green), 32, 48, 0, 95), free(p);
    snprintf(dir, sizeof dir, "%s/cat/sub", root);
    write_png(dir, "c.png", p = solid(20, 20, 1, gray), 20, 20, PNG_FORMAT_GRAY), free(p);
    snprintf(dir, sizeof dir, "%s/dog", root);
    uint8_t grad[64 * 64 * 3];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) grad[(y * 64 + x) * 3] = (uint8_t)(x * 4), grad[(y * 64 + x) * 3 + 1] = 100, grad[(y * 64 + x) * 3 + 2] = 200;
    write_jpeg(dir, "x.jpeg", grad, 64, 64, 0, 98);
    write_png(dir, "y.PNG", p = solid(16, 24, 4, blue4), 16, 24, PNG_FORMAT_RGBA), free(p);
    write_file(strcat(dir, "/notes.txt"), "not an image", 12);
    snprintf(dir, sizeof dir, "%s/.hidden", root);
    write_png(dir, "z.png", p = solid(8, 8, 3, red), 8, 8, PNG_FORMAT_RGB), free(p);
    snprintf(dir, sizeof dir, "%s/README.txt", root);
    write_file(dir, "x", 1);

    bnl_imagefolder_opts o = bnl_imagefolder_opts_default();
    CHECK(o.size == 224 && o.resize == 0 && o.cache == 0, "imagefolder defaults");
    o.size = 16, o.resize = 16;
    bnl_dataset *d = NULL;
    CHECK_OK(bnl_dataset_imagefolder(&d, root, &o));
    if (!d) return;
    CHECK(bnl_dataset_size(d) == 5, "imagefolder found %zu images, want 5", bnl_dataset_size(d));
    CHECK(bnl_dataset_num_classes(d) == 2 && !strcmp(bnl_dataset_class_name(d, 0), "cat") &&
              !strcmp(bnl_dataset_class_name(d, 1), "dog"),
          "class names");
    CHECK(bnl_dataset_height(d) == 16 && bnl_dataset_width(d) == 16, "sample size");
    int64_t want_lab[5] = {0, 0, 0, 1, 1};
    for (size_t i = 0; i < 5 && i < bnl_dataset_size(d); i++)
        CHECK(bnl_dataset_label(d, i) == want_lab[i], "label %zu = %lld", i, (long long)bnl_dataset_label(d, i));
    uint8_t im[16 * 16 * 3];
    int worst;
    const int gray3[3] = {128, 128, 128}, blue3[3] = {10, 20, 250};
    sample_u8(d, 0, im);
    CHECK(all_near(im, 256, red, 0, &worst), "a.png (RGB PNG) off by %d", worst);
    sample_u8(d, 1, im);
    CHECK(all_near(im, 256, green, 4, &worst), "b.jpg (JPEG) off by %d", worst);
    sample_u8(d, 2, im);
    CHECK(all_near(im, 256, gray3, 0, &worst), "sub/c.png (gray PNG) off by %d", worst);
    sample_u8(d, 4, im);
    CHECK(all_near(im, 256, blue3, 0, &worst), "y.PNG (RGBA PNG, alpha dropped) off by %d", worst);
    // the gradient: 64 -> 16 is a 4x downscale; output column x sees source center 4x + 1.5,
    // so red = 4 * (4x + 1.5) = 16x + 6 (JPEG error aside); green and blue constant
    sample_u8(d, 3, im);
    int gerr = 0;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            int e0 = abs(im[(y * 16 + x) * 3] - (16 * x + 6)), e1 = abs(im[(y * 16 + x) * 3 + 1] - 100),
                e2 = abs(im[(y * 16 + x) * 3 + 2] - 200);
            if (x == 0 || x == 15) e0 = 0;   // the edge columns see the clamped border
            int e = e0 > e1 ? e0 : e1;
            e = e > e2 ? e : e2;
            if (e > gerr) gerr = e;
        }
    CHECK(gerr <= 5, "x.jpeg gradient after resize off by %d", gerr);

    // normalized batch agrees with the bytes; the cache gives the same samples (within rounding)
    size_t idx[5] = {4, 3, 2, 1, 0};
    float x[5 * 768], xc[5 * 768], want[5 * 768];
    int64_t lab[5];
    bnl_augment ev = bnl_dataset_augment_default(d, 0);
    CHECK_OK(bnl_dataset_get_batch(d, x, lab, idx, 5, &ev, 0));
    for (int k = 0; k < 5; k++) {
        sample_u8(d, idx[k], im);
        for (int q = 0; q < 768; q++) want[k * 768 + q] = (im[q] / 255.0f - ev.mean[q % 3]) / ev.std[q % 3];
        CHECK(lab[k] == want_lab[idx[k]], "batch label %d", k);
    }
    check_close("imagefolder batch vs bytes", x, want, 5 * 768, 0.5 / 255 / 0.224 + 1e-5, 0);
    bnl_imagefolder_opts oc = o;
    oc.cache = 1;
    bnl_dataset *dc = NULL;
    CHECK_OK(bnl_dataset_imagefolder(&dc, root, &oc));
    if (dc) {
        CHECK_OK(bnl_dataset_get_batch(dc, xc, NULL, idx, 5, &ev, 0));
        check_close("imagefolder cached vs decoded", xc, x, 5 * 768, 1.01 / 255 / 0.224, 0);
        bnl_dataset_free(dc);
    }
    // a larger crop: shorter side 24, center 16x16 of a.png (40x30 -> 32x24, left offset 8)
    bnl_imagefolder_opts o2 = o;
    o2.resize = 24;
    CHECK_OK(bnl_dataset_imagefolder(&dc, root, &o2));
    if (dc) {
        sample_u8(dc, 0, im);
        CHECK(all_near(im, 256, red, 0, &worst), "a.png resized to 24 off by %d", worst);
        bnl_dataset_free(dc);
    }
    // max_per_class
    bnl_imagefolder_opts o3 = o;
    o3.max_per_class = 1;
    CHECK_OK(bnl_dataset_imagefolder(&dc, root, &o3));
    if (dc) {
        CHECK(bnl_dataset_size(dc) == 2 && bnl_dataset_label(dc, 1) == 1, "max_per_class 1: %zu images", bnl_dataset_size(dc));
        bnl_dataset_free(dc);
    }

    // training augmentation (random resized crop + flip): deterministic, thread-independent
    bnl_augment tr = bnl_dataset_augment_default(d, 1);
    CHECK(tr.random_resized_crop && tr.flip, "imagefolder train augmentation");
    bnl_set_threads(1);
    CHECK_OK(bnl_dataset_get_batch(d, x, NULL, idx, 5, &tr, 3));
    bnl_set_threads(3);
    CHECK_OK(bnl_dataset_get_batch(d, xc, NULL, idx, 5, &tr, 3));
    bnl_set_threads(0);
    check_close("imagefolder augmented, 1 vs 3 threads", xc, x, 5 * 768, 0, 0);
    bnl_dataset_free(d);

    // errors: bad options, missing root, no classes, empty class
    o.resize = 8;
    CHECK_FAILS(bnl_dataset_imagefolder(&d, root, &o), BNL_ERR_ARG, "resize");
    o.resize = 16;
    snprintf(dir, sizeof dir, "%s/nonexistent", g_tmp);
    CHECK_FAILS(bnl_dataset_imagefolder(&d, dir, &o), BNL_ERR_IO, "nonexistent");
    snprintf(dir, sizeof dir, "%s/cat/sub", root);
    CHECK_FAILS(bnl_dataset_imagefolder(&d, dir, &o), BNL_ERR_FORMAT, "no class folders");
    mkdirs(root, "emu");
    CHECK_FAILS(bnl_dataset_imagefolder(&d, root, &o), BNL_ERR_FORMAT, "emu");
    CHECK(d == NULL, "a failed open left a dataset");

    // corrupt files: each decodes to an error naming the file; with cache = 1, open fails
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad", g_tmp);
    mkdir(bad, 0755);
    mkdirs(bad, "a"), mkdirs(bad, "b");
    snprintf(dir, sizeof dir, "%s/a", bad);
    write_png(dir, "0ok.png", p = solid(12, 12, 3, red), 12, 12, PNG_FORMAT_RGB), free(p);
    uint8_t noisy[48 * 48 * 3];
    for (int i = 0; i < 48 * 48 * 3; i++) noisy[i] = (uint8_t)((i * 7919u) ^ (i >> 3));
    write_jpeg(dir, "full.jpg", noisy, 48, 48, 0, 90);
    char path[500];
    size_t n;
    snprintf(path, sizeof path, "%s/full.jpg", dir);
    uint8_t *jb = read_bytes(path, &n);
    snprintf(path, sizeof path, "%s/trunc.jpg", dir);
    write_file(path, jb, n * 6 / 10);
    free(jb);
    snprintf(path, sizeof path, "%s/full.jpg", dir);
    unlink(path);
    snprintf(dir, sizeof dir, "%s/b", bad);
    write_png(dir, "full.png", noisy, 48, 48, PNG_FORMAT_RGB);
    snprintf(path, sizeof path, "%s/full.png", dir);
    uint8_t *pb = read_bytes(path, &n);
    unlink(path);
    // corrupt.png: a flipped byte in the middle (IDAT data: CRC or zlib error)
    pb[n / 2] ^= 0x55;
    snprintf(path, sizeof path, "%s/corrupt.png", dir);
    write_file(path, pb, n);
    pb[n / 2] ^= 0x55;
    snprintf(path, sizeof path, "%s/gtrunc.png", dir);
    write_file(path, pb, n / 2);
    free(pb);
    snprintf(path, sizeof path, "%s/hgarbage.png", dir);
    write_file(path, "GIF89a not really", 17);
    CHECK_OK(bnl_dataset_imagefolder(&d, bad, &o));
    if (d) {
        const char *names[5] = {"0ok.png", "trunc.jpg", "corrupt.png", "gtrunc.png", "hgarbage.png"};
        CHECK(bnl_dataset_size(d) == 5, "bad tree: %zu images", bnl_dataset_size(d));
        CHECK_OK(bnl_dataset_get_image_u8(d, im, 0));
        for (size_t i = 1; i < 5 && i < bnl_dataset_size(d); i++) {
            CHECK_FAILS(bnl_dataset_get_image_u8(d, im, i), BNL_ERR_FORMAT, names[i]);
            printf("  expected error: %s\n", bnl_last_error());
            size_t two[2] = {0, i};
            float xb[2 * 768];
            CHECK_FAILS(bnl_dataset_get_batch(d, xb, NULL, two, 2, NULL, 0), BNL_ERR_FORMAT, names[i]);
        }
        bnl_dataset_free(d);
    }
    d = NULL;
    o.cache = 1;
    CHECK_FAILS(bnl_dataset_imagefolder(&d, bad, &o), BNL_ERR_FORMAT, "trunc.jpg");
    CHECK(d == NULL, "a failed cached open left a dataset");
}
#endif

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/bnl_test_datasets_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "FATAL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_procedural_basics();
    test_procedural_sizes_and_errors();
    test_procedural_difficulty();
    test_batches();
    test_permutation();
    test_cifar();
#if defined(BNL_HAVE_PNG) && defined(BNL_HAVE_JPEG)
    test_imagefolder();
#else
    printf("imagefolder: skipped (built without libpng/libjpeg)\n");
    bnl_dataset *d = NULL;
    CHECK(bnl_dataset_imagefolder(&d, "/tmp", NULL) != BNL_OK, "imagefolder without decoders");
#endif
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
    return test_summary("test_datasets");
}
