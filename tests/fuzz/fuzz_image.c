// libFuzzer target: JPEG and PNG decoding through the ImageFolder loader (the decoders are
// internal to it; the format comes from the first bytes). The input becomes the one image of a
// one-class folder; the folder is opened with cache = 1 (decoded and resized at open) or cache = 0
// (decoded when a batch asks), chosen by the input's length, and then gives eval and train
// (random resized crop) batches. A corrupt image must be an error naming the file, and a PNG that
// libpng's high-level reader decodes to RGB must decode here too (a differential check: the
// loader once refused valid palette PNGs with transparency).
#include "bnlab.h"
#include "io/dataset.h"

#include "fuzz_util.h"

#include <math.h>
#include <sys/stat.h>
#ifdef BNL_HAVE_PNG
#include <png.h>
#endif

#ifdef BNL_HAVE_PNG
typedef struct ref_src {
    const uint8_t *p;
    size_t n, at;
} ref_src;
static void ref_read(png_structp png, png_bytep dst, size_t n) {
    ref_src *r = png_get_io_ptr(png);
    if (n > r->n - r->at) png_error(png, "truncated");
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}
static void ref_quiet(png_structp png, png_const_charp msg) { (void)png, (void)msg; }
static void ref_error(png_structp png, png_const_charp msg) {
    (void)msg;
    png_longjmp(png, 1);
}
#endif

// 1 if libpng's high-level reader (png_read_png: expand palette and tRNS, 16 -> 8 bits, strip
// alpha, gray -> RGB, then the chunks up to IEND) reads the file; images up to 4096x4096.
static int png_reference_decodes(const uint8_t *data, size_t size) {
#ifdef BNL_HAVE_PNG
    ref_src src = {data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, ref_error, ref_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return 0;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return 0;
    }
    png_set_user_limits(png, 4096, 4096);
    png_set_read_fn(png, &src, ref_read);
    png_read_png(png, info,
                 PNG_TRANSFORM_EXPAND | PNG_TRANSFORM_STRIP_16 | PNG_TRANSFORM_STRIP_ALPHA | PNG_TRANSFORM_GRAY_TO_RGB,
                 NULL);
    png_destroy_read_struct(&png, &info, NULL);
    return 1;
#else
    (void)data, (void)size;
    return 0;
#endif
}

static char img_path[512], root[512];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    if (!root[0]) {
        snprintf(root, sizeof root, "%s/root", fuzz_tmpdir("image"));
        mkdir(root, 0700);
        char cls[600];
        snprintf(cls, sizeof cls, "%s/c", root);
        mkdir(cls, 0700);
        snprintf(img_path, sizeof img_path, "%s/c/x.png", root);   // the extension only selects files
    }
    fuzz_write(img_path, data, size);
    bnl_imagefolder_opts o = bnl_imagefolder_opts_default();
    o.size = 8;
    o.resize = 8 + (int)(size / 2 % 8);
    o.cache = (int)(size & 1);
    bnl_dataset *d;
    bnl_status s = bnl_dataset_imagefolder(&d, root, &o);
    int is_png = size >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8);
    int reference_ok = is_png && png_reference_decodes(data, size);
    if (s != BNL_OK) {
        FUZZ_CHECK(o.cache && strstr(bnl_last_error(), img_path), "open failed without naming the image: %s",
                   bnl_last_error());
        FUZZ_CHECK(!reference_ok, "libpng decodes this PNG, the loader refuses it: %s", bnl_last_error());
        return 0;
    }
    FUZZ_CHECK(bnl_dataset_size(d) == 1 && bnl_dataset_num_classes(d) == 1, "one image, one class");
    float x[2 * 8 * 8 * 3];
    int64_t labels[2];
    size_t idx[2] = {0, 0};
    for (int train = 0; train < 2; train++) {
        bnl_augment a = bnl_dataset_augment_default(d, train);
        s = bnl_dataset_get_batch(d, x, labels, idx, 2, &a, (uint64_t)size);
        if (o.cache) FUZZ_CHECK(s == BNL_OK, "a cached image failed later: %s", bnl_last_error());
        FUZZ_CHECK(s == BNL_OK || !reference_ok, "libpng decodes this PNG, the loader refuses it: %s", bnl_last_error());
        if (s != BNL_OK) {
            FUZZ_CHECK(strstr(bnl_last_error(), img_path), "a batch failed without naming the image: %s",
                       bnl_last_error());
            break;
        }
        for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) FUZZ_CHECK(isfinite(x[i]), "non-finite sample value");
        FUZZ_CHECK(labels[0] == 0 && labels[1] == 0, "labels");
    }
    bnl_dataset_free(d);
    return 0;
}
