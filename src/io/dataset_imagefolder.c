// ImageFolder (torchvision layout): root/<class>/**/<image>.{jpg,jpeg,png}. The directory scan
// happens at open; images are decoded when a batch asks for them (or all at open with cache = 1).
// The format is taken from the file's first bytes, not its extension. Decoders never abort: libjpeg
// and libpng errors come back through setjmp/longjmp as BNL_ERR_FORMAT naming the file, and a
// truncated JPEG (libjpeg only warns) is an error too, as in PIL.
#include "io/dataset_internal.h"
#include "core/parallel.h"

#include <string.h>

bnl_imagefolder_opts bnl_imagefolder_opts_default(void) {
    bnl_imagefolder_opts o;
    memset(&o, 0, sizeof o);
    o.size = 224;
    return o;
}

#if defined(__EMSCRIPTEN__)
bnl_status bnl_dataset_imagefolder(bnl_dataset **out, const char *root, const bnl_imagefolder_opts *o) {
    if (out) *out = NULL;
    return bnl_fail(BNL_ERR_UNSUPPORTED, "imagefolder: this build has no file system and no JPEG/PNG decoders");
}
#else

#include <dirent.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#ifdef BNL_HAVE_JPEG
#include <jpeglib.h>
#include <jerror.h>
#endif
#ifdef BNL_HAVE_PNG
#include <png.h>
#endif

#define MAX_PIXELS (1u << 28)   // 268M pixels: a decoded image above this is refused

// ---- decoding -----------------------------------------------------------------------------------

// The decoded image goes into *pix (grown as needed), (h,w,3) RGB.
typedef struct decoded {
    uint8_t **pix;
    size_t *cap;
    int h, w;
} decoded;

#if defined(BNL_HAVE_JPEG) || defined(BNL_HAVE_PNG)
static bnl_status alloc_image(decoded *out, const char *path, size_t w, size_t h) {
    if (w == 0 || h == 0 || w * h > MAX_PIXELS)
        return bnl_fail(BNL_ERR_FORMAT, "%s: image size %zux%zu out of range", path, w, h);
    if (!bnl_ds_grow_u8(out->pix, out->cap, w * h * 3)) return BNL_ERR_NOMEM;
    out->w = (int)w, out->h = (int)h;
    return BNL_OK;
}
#endif

#ifdef BNL_HAVE_JPEG
typedef struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *row;   // CMYK scanline
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)((char *)c->err - offsetof(jpeg_ctx, mgr));
    (*c->err->format_message)(c, x->msg);
    longjmp(x->jb, 1);
}

// Warnings are tolerated (as PIL does), except the end of data: a truncated file.
static void jpeg_on_message(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(c);
}

// x lives in the caller's frame: nothing this function changes after setjmp is read after longjmp.
static bnl_status jpeg_decode(jpeg_ctx *x, const char *path, const uint8_t *buf, size_t len, int need_short,
                              decoded *out) {
    x->cinfo.err = jpeg_std_error(&x->mgr);
    x->mgr.error_exit = jpeg_on_error;
    x->mgr.emit_message = jpeg_on_message;
    x->row = NULL;
    if (setjmp(x->jb)) {
        jpeg_destroy_decompress(&x->cinfo);
        bnl_free(x->row);
        return bnl_fail(BNL_ERR_FORMAT, "%s: corrupt or truncated JPEG: %s", path, x->msg);
    }
    jpeg_create_decompress(&x->cinfo);
    jpeg_mem_src(&x->cinfo, buf, (unsigned long)len);
    jpeg_read_header(&x->cinfo, TRUE);
    int cmyk = x->cinfo.jpeg_color_space == JCS_CMYK || x->cinfo.jpeg_color_space == JCS_YCCK;
    x->cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    // DCT-domain downscaling (1/2, 1/4, 1/8) while the shorter side stays >= need_short
    unsigned short_side = x->cinfo.image_width < x->cinfo.image_height ? x->cinfo.image_width : x->cinfo.image_height;
    unsigned denom = 1;
    while (denom < 8 && need_short > 0 && (short_side + 2 * denom - 1) / (2 * denom) >= (unsigned)need_short) denom *= 2;
    x->cinfo.scale_num = 1, x->cinfo.scale_denom = denom;
    jpeg_start_decompress(&x->cinfo);
    size_t w = x->cinfo.output_width, h = x->cinfo.output_height;
    bnl_status st = alloc_image(out, path, w, h);
    if (st != BNL_OK) {
        jpeg_destroy_decompress(&x->cinfo);
        return st;
    }
    if (cmyk && !(x->row = bnl_alloc(w * 4))) {
        jpeg_destroy_decompress(&x->cinfo);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory", path);
    }
    while (x->cinfo.output_scanline < h) {
        size_t y = x->cinfo.output_scanline;
        uint8_t *dst = *out->pix + y * w * 3;
        JSAMPROW rp = cmyk ? x->row : dst;
        jpeg_read_scanlines(&x->cinfo, &rp, 1);
        if (cmyk) {
            // Adobe writes inverted CMYK; otherwise plain. RGB = (1 - C)(1 - K) in plain terms.
            int inv = x->cinfo.saw_Adobe_marker;
            for (size_t i = 0; i < w; i++) {
                int k = x->row[4 * i + 3];
                for (int c = 0; c < 3; c++) {
                    int v = x->row[4 * i + c];
                    dst[3 * i + c] = (uint8_t)(inv ? v * k / 255 : (255 - v) * (255 - k) / 255);
                }
            }
        }
    }
    jpeg_finish_decompress(&x->cinfo);
    jpeg_destroy_decompress(&x->cinfo);
    bnl_free(x->row);
    x->row = NULL;
    return BNL_OK;
}
#endif

#ifdef BNL_HAVE_PNG
typedef struct png_ctx {
    const uint8_t *buf;
    size_t len, pos;
    char msg[256];
    png_bytep *rows;
} png_ctx;

static void png_on_read(png_structp p, png_bytep dst, size_t n) {
    png_ctx *x = png_get_io_ptr(p);
    if (n > x->len - x->pos) png_error(p, "unexpected end of file (truncated)");
    memcpy(dst, x->buf + x->pos, n);
    x->pos += n;
}
static void png_on_error(png_structp p, png_const_charp msg) {
    png_ctx *x = png_get_error_ptr(p);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(p, 1);
}
static void png_on_warning(png_structp p, png_const_charp msg) { (void)p, (void)msg; }

static bnl_status png_decode(png_ctx *x, const char *path, const uint8_t *buf, size_t len, decoded *out) {
    x->buf = buf, x->len = len, x->pos = 0, x->rows = NULL, x->msg[0] = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, x, png_on_error, png_on_warning);
    if (!png) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory", path);
    }
    // png and info are not changed after setjmp (only what they point to)
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        bnl_free(x->rows);
        x->rows = NULL;
        return bnl_fail(BNL_ERR_FORMAT, "%s: corrupt or truncated PNG: %s", path, x->msg);
    }
    png_set_read_fn(png, x, png_on_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info), bd = png_get_bit_depth(png, info);
    // to 8-bit RGB: palette expanded, gray widened, 16 bits stripped, alpha dropped (PIL's
    // convert("RGB") drops it too, without compositing)
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && bd < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bd == 16) png_set_strip_16(png);
    // (png_set_palette_to_rgb also turns a palette's tRNS chunk into an alpha channel: strip that too)
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) png_error(png, "unexpected row size after conversion to RGB");
    bnl_status st = alloc_image(out, path, w, h);
    if (st != BNL_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return st;
    }
    if (!(x->rows = bnl_alloc((size_t)h * sizeof(png_bytep)))) png_error(png, "out of memory");
    for (size_t y = 0; y < h; y++) x->rows[y] = *out->pix + y * (size_t)w * 3;
    png_read_image(png, x->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    bnl_free(x->rows);
    x->rows = NULL;
    return BNL_OK;
}
#endif

static bnl_status decode(const char *path, const uint8_t *buf, size_t len, int need_short, decoded *out) {
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) {
#ifdef BNL_HAVE_JPEG
        jpeg_ctx x;
        return jpeg_decode(&x, path, buf, len, need_short, out);
#else
        return bnl_fail(BNL_ERR_UNSUPPORTED, "%s: JPEG, but this build has no libjpeg", path);
#endif
    }
    if (len >= 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8)) {
#ifdef BNL_HAVE_PNG
        png_ctx x;
        return png_decode(&x, path, buf, len, out);
#else
        return bnl_fail(BNL_ERR_UNSUPPORTED, "%s: PNG, but this build has no libpng", path);
#endif
    }
    return bnl_fail(BNL_ERR_FORMAT, "%s: not a JPEG or PNG file (%zu bytes)", path, len);
}

// ---- the dataset --------------------------------------------------------------------------------

typedef struct if_impl {
    char **paths;        // (count)
    uint8_t **cache;     // (count) images at shorter side = resize, or NULL
    int *ch, *cw;
    size_t count;
} if_impl;

static bnl_status if_load(const char *path, int need_short, decoded *out, bnl_ds_scratch *s) {
    uint8_t *file;
    size_t len;
    bnl_status st = bnl_ds_read_file(path, &file, &len);
    if (st != BNL_OK) return st;
    st = decode(path, file, len, need_short, out);
    bnl_free(file);
    return st;
}

static bnl_status if_source(const bnl_dataset *d, size_t i, int need_short, bnl_ds_image *img, bnl_ds_scratch *s) {
    const if_impl *f = d->impl;
    if (f->cache) {
        img->pix = f->cache[i], img->h = f->ch[i], img->w = f->cw[i];
        return BNL_OK;
    }
    decoded out = {&s->u8, &s->u8_cap, 0, 0};
    bnl_status st = if_load(f->paths[i], need_short, &out, s);
    if (st != BNL_OK) return st;
    img->pix = s->u8, img->h = out.h, img->w = out.w;
    return BNL_OK;
}

static void if_destroy(void *impl) {
    if_impl *f = impl;
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) {
        if (f->paths) bnl_free(f->paths[i]);
        if (f->cache) bnl_free(f->cache[i]);
    }
    bnl_free(f->paths);
    bnl_free(f->cache);
    bnl_free(f->ch);
    bnl_free(f->cw);
    bnl_free(f);
}

static const bnl_ds_ops k_if_ops = {if_source, NULL, if_destroy};

// ---- directory scan -----------------------------------------------------------------------------

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

static int strlist_push(strlist *l, char *s) {
    if (!s) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = bnl_alloc(cap * sizeof(char *));
        if (!v) {
            bnl_free(s);
            return 0;
        }
        if (l->n) memcpy(v, l->v, l->n * sizeof(char *));
        bnl_free(l->v);
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = s;
    return 1;
}
static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) bnl_free(l->v[i]);
    bnl_free(l->v);
    memset(l, 0, sizeof *l);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    char *p = bnl_alloc(n + m + 2);
    if (!p) return NULL;
    memcpy(p, a, n);
    if (n && a[n - 1] != '/') p[n++] = '/';
    memcpy(p + n, b, m + 1);
    return p;
}

// Sorted entry names of dir (hidden ones skipped).
static bnl_status list_dir(const char *dir, strlist *out) {
    DIR *dp = opendir(dir);
    if (!dp) return bnl_fail(BNL_ERR_IO, "%s: cannot open directory", dir);
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (!strlist_push(out, bnl_ds_strdup(e->d_name))) {
            closedir(dp);
            return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory listing the directory", dir);
        }
    }
    closedir(dp);
    if (out->n) qsort(out->v, out->n, sizeof(char *), cmp_str);
    return BNL_OK;
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    char ext[8];
    size_t n = strlen(dot + 1);
    if (n == 0 || n >= sizeof ext) return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = dot[1 + i];
        ext[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    return !strcmp(ext, "jpg") || !strcmp(ext, "jpeg") || !strcmp(ext, "png");
}

// Image files under dir: this folder's files sorted by name, then its subfolders in name order.
static bnl_status walk(const char *dir, int depth, strlist *files, size_t max) {
    if (depth > 32) return bnl_fail(BNL_ERR_FORMAT, "%s: folders nested too deeply (a symlink loop?)", dir);
    strlist names = {0}, subdirs = {0};
    bnl_status st = list_dir(dir, &names);
    for (size_t i = 0; st == BNL_OK && i < names.n && (!max || files->n < max); i++) {
        char *p = join(dir, names.v[i]);
        struct stat sb;
        if (!p) st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
        else if (stat(p, &sb) != 0) bnl_free(p);   // a dangling link: skipped
        else if (S_ISDIR(sb.st_mode)) {
            if (!strlist_push(&subdirs, p)) st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
        } else if (S_ISREG(sb.st_mode) && has_image_ext(names.v[i])) {
            if (!strlist_push(files, p)) st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
        } else
            bnl_free(p);
    }
    for (size_t i = 0; st == BNL_OK && i < subdirs.n && (!max || files->n < max); i++)
        st = walk(subdirs.v[i], depth + 1, files, max);
    strlist_free(&names);
    strlist_free(&subdirs);
    return st;
}

// Decoding every image at open: one item per image, each thread with its own scratch.
typedef struct {
    bnl_dataset *d;
    if_impl *f;
    bnl_ds_scratch *scratch;   // one per thread
    bnl_first_error err;       // the error of the first image in order
} cache_job_t;

static void cache_items(void *vc, size_t i0, size_t i1, int tid) {
    cache_job_t *j = vc;
    bnl_dataset *d = j->d;
    if_impl *f = j->f;
    bnl_ds_scratch *s = &j->scratch[tid];
    for (size_t i = i0; i < i1; i++) {
        decoded out = {&s->u8, &s->u8_cap, 0, 0};
        bnl_status st = if_load(f->paths[i], d->resize, &out, s);
        if (st == BNL_OK) {
            // torchvision Resize(resize): shorter side = resize, longer int(resize * long / short)
            int h = out.h, w = out.w, rh, rw;
            if (h <= w) rh = d->resize, rw = (int)((int64_t)d->resize * w / h);
            else rw = d->resize, rh = (int)((int64_t)d->resize * h / w);
            uint8_t *c = bnl_alloc((size_t)rh * rw * 3);
            bnl_ds_image src = {s->u8, h, w};
            if (!c) st = bnl_fail(BNL_ERR_NOMEM, "%s: out of memory caching the image", f->paths[i]);
            else st = bnl_ds_resize_u8(c, rh, rw, &src, s);
            f->cache[i] = c, f->ch[i] = rh, f->cw[i] = rw;
        }
        bnl_first_error_note(&j->err, i, st);
    }
}

static bnl_status build_cache(bnl_dataset *d, if_impl *f) {
    f->cache = bnl_calloc(f->count, sizeof(uint8_t *));
    f->ch = bnl_calloc(f->count, sizeof(int));
    f->cw = bnl_calloc(f->count, sizeof(int));
    if (!f->cache || !f->ch || !f->cw) return bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
    cache_job_t job = {d, f, NULL, {0}};
    int T = bnl_threads_for(f->count, (double)f->count, 2.0);
    job.scratch = bnl_calloc((size_t)T, sizeof(bnl_ds_scratch));
    if (!job.scratch) return bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
    bnl_first_error_init(&job.err);
    bnl_parallel_for_dynamic(f->count, T, cache_items, &job);
    for (int t = 0; t < T; t++) bnl_ds_scratch_free(&job.scratch[t]);
    bnl_free(job.scratch);
    return bnl_first_error_status(&job.err);
}

bnl_status bnl_dataset_imagefolder(bnl_dataset **out, const char *root, const bnl_imagefolder_opts *o) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "imagefolder: out is NULL");
    *out = NULL;
    if (!root) return bnl_fail(BNL_ERR_ARG, "imagefolder: root is NULL");
#if !defined(BNL_HAVE_JPEG) && !defined(BNL_HAVE_PNG)
    return bnl_fail(BNL_ERR_UNSUPPORTED, "imagefolder: this build has neither libjpeg nor libpng (%s)", root);
#endif
    bnl_imagefolder_opts opt = o ? *o : bnl_imagefolder_opts_default();
    if (opt.size == 0) opt.size = 224;
    if (opt.resize == 0) opt.resize = (int)((int64_t)opt.size * 256 / 224);
    if (opt.size < 1 || opt.size > 8192) return bnl_fail(BNL_ERR_ARG, "imagefolder: size = %d, expected 1..8192", opt.size);
    if (opt.resize < opt.size || opt.resize > 16384)
        return bnl_fail(BNL_ERR_ARG, "imagefolder: resize = %d, expected %d..16384 (>= size)", opt.resize, opt.size);

    strlist classes = {0}, entries = {0}, files = {0};
    size_t *per_class = NULL;
    bnl_dataset *d = NULL;
    bnl_status st = list_dir(root, &entries);
    for (size_t i = 0; st == BNL_OK && i < entries.n; i++) {
        char *p = join(root, entries.v[i]);
        struct stat sb;
        if (p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            bnl_free(p);
            if (!strlist_push(&classes, bnl_ds_strdup(entries.v[i])))
                st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
        } else {
            if (!p) st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
            bnl_free(p);
        }
    }
    if (st == BNL_OK && classes.n == 0)
        st = bnl_fail(BNL_ERR_FORMAT, "%s: no class folders (expected root/<class>/<image>.jpg)", root);
    if (st == BNL_OK && classes.n > 1000000) st = bnl_fail(BNL_ERR_FORMAT, "%s: too many class folders", root);
    if (st == BNL_OK && !(per_class = bnl_calloc(classes.n, sizeof(size_t))))
        st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
    for (size_t c = 0; st == BNL_OK && c < classes.n; c++) {
        char *dir = join(root, classes.v[c]);
        size_t before = files.n;
        if (!dir) {
            st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
            break;
        }
        st = walk(dir, 0, &files, opt.max_per_class ? before + opt.max_per_class : 0);
        per_class[c] = files.n - before;
        if (st == BNL_OK && per_class[c] == 0)
            st = bnl_fail(BNL_ERR_FORMAT, "%s: class folder has no .jpg/.jpeg/.png images", dir);
        bnl_free(dir);
    }
    if (st == BNL_OK && !(d = bnl_ds_new((int)classes.n))) st = BNL_ERR_NOMEM;
    if_impl *f = NULL;
    if (st == BNL_OK) {
        f = bnl_calloc(1, sizeof *f);
        d->labels = bnl_calloc(files.n, sizeof(int64_t));
        if (!f || !d->labels) {
            bnl_free(f);
            st = bnl_fail(BNL_ERR_NOMEM, "imagefolder: out of memory");
        }
    }
    if (st == BNL_OK) {
        d->ops = &k_if_ops, d->impl = f;
        f->paths = files.v, f->count = files.n;   // the dataset owns the paths now
        memset(&files, 0, sizeof files);
        size_t at = 0;
        for (size_t c = 0; c < classes.n; c++) {
            d->names[c] = classes.v[c], classes.v[c] = NULL;
            for (size_t k = 0; k < per_class[c]; k++) d->labels[at++] = (int64_t)c;
        }
        d->count = f->count, d->H = d->W = opt.size, d->resize = opt.resize;
        bnl_augment a = bnl_augment_none();   // ImageNet statistics
        d->eval_aug = a;
        a.random_resized_crop = 1, a.scale_min = 0.08f, a.flip = 1;
        d->train_aug = a;
        if (opt.cache) st = build_cache(d, f);
    }
    strlist_free(&classes);
    strlist_free(&entries);
    strlist_free(&files);
    bnl_free(per_class);
    if (st != BNL_OK) {
        bnl_dataset_free(d);
        return st;
    }
    *out = d;
    return BNL_OK;
}
#endif
