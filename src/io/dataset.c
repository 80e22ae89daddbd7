// Datasets, the common part: accessors, the per-sample pipeline (source image -> resize/crop ->
// pad-crop -> flip -> normalize), batch assembly in parallel, and epoch permutations.
#include "io/dataset_internal.h"
#include "core/parallel.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// ---- small helpers ------------------------------------------------------------------------------

uint8_t *bnl_ds_grow_u8(uint8_t **buf, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        bnl_free(*buf);
        *buf = bnl_alloc(bytes);
        *cap = *buf ? bytes : 0;
        if (!*buf) {
            bnl_fail(BNL_ERR_NOMEM, "dataset: cannot allocate %zu bytes of image scratch", bytes);
            return NULL;
        }
    }
    return *buf;
}

float *bnl_ds_scratch_f32(float **buf, size_t *cap, size_t count) {
    if (count > *cap) {
        bnl_free(*buf);
        *buf = bnl_calloc(count, sizeof(float));
        *cap = *buf ? count : 0;
        if (!*buf) {
            bnl_fail(BNL_ERR_NOMEM, "dataset: cannot allocate %zu floats of image scratch", count);
            return NULL;
        }
    }
    return *buf;
}

void bnl_ds_scratch_free(bnl_ds_scratch *s) {
    bnl_free(s->u8);
    bnl_free(s->aux);
    bnl_free(s->f32);
    bnl_free(s->tmp);
    bnl_free(s->img);
    memset(s, 0, sizeof *s);
}

#ifndef __EMSCRIPTEN__
bnl_status bnl_ds_read_file(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL, *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return bnl_fail(BNL_ERR_IO, "%s: cannot open (missing file?)", path);
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = bnl_alloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        uint8_t *nb = bnl_alloc(cap * 2);
        if (nb) memcpy(nb, b, n);
        bnl_free(b);
        b = nb, cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory reading the file", path);
    if (err) {
        bnl_free(b);
        return bnl_fail(BNL_ERR_IO, "%s: read error", path);
    }
    *buf = b, *len = n;
    return BNL_OK;
}

#endif

char *bnl_ds_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = bnl_alloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

bnl_dataset *bnl_ds_new(int classes) {
    bnl_dataset *d = bnl_calloc(1, sizeof *d);
    if (!d) {
        bnl_fail(BNL_ERR_NOMEM, "dataset: out of memory");
        return NULL;
    }
    d->classes = classes;
    d->names = bnl_calloc(classes > 0 ? (size_t)classes : 1, sizeof(char *));
    if (!d->names) {
        bnl_free(d);
        bnl_fail(BNL_ERR_NOMEM, "dataset: out of memory");
        return NULL;
    }
    d->eval_aug = d->train_aug = bnl_augment_none();
    return d;
}

void bnl_dataset_free(bnl_dataset *d) {
    if (!d) return;
    if (d->ops && d->ops->destroy) d->ops->destroy(d->impl);
    if (d->names)
        for (int i = 0; i < d->classes; i++) bnl_free(d->names[i]);
    bnl_free(d->names);
    bnl_free(d->labels);
    bnl_free(d);
}

size_t bnl_dataset_size(const bnl_dataset *d) { return d ? d->count : 0; }
int bnl_dataset_num_classes(const bnl_dataset *d) { return d ? d->classes : 0; }
int bnl_dataset_height(const bnl_dataset *d) { return d ? d->H : 0; }
int bnl_dataset_width(const bnl_dataset *d) { return d ? d->W : 0; }

const char *bnl_dataset_class_name(const bnl_dataset *d, int i) {
    if (!d || i < 0 || i >= d->classes) return NULL;
    return d->names[i];
}

int64_t bnl_dataset_label(const bnl_dataset *d, size_t i) {
    if (!d || i >= d->count) return -1;
    return d->ops->label ? d->ops->label(d, i) : d->labels[i];
}

bnl_augment bnl_augment_none(void) {
    bnl_augment a;
    memset(&a, 0, sizeof a);
    a.mean[0] = 0.485f, a.mean[1] = 0.456f, a.mean[2] = 0.406f;
    a.std[0] = 0.229f, a.std[1] = 0.224f, a.std[2] = 0.225f;
    a.scale_min = 0.08f;
    return a;
}

bnl_augment bnl_dataset_augment_default(const bnl_dataset *d, int train) {
    if (!d) return bnl_augment_none();
    return train ? d->train_aug : d->eval_aug;
}

bnl_status bnl_dataset_permutation(size_t *perm, size_t n, uint64_t seed, uint64_t epoch) {
    if (!perm && n) return bnl_fail(BNL_ERR_ARG, "dataset_permutation: perm is NULL");
    for (size_t i = 0; i < n; i++) perm[i] = i;
    bnl_rng r = bnl_rng_seed(bnl_ds_key(seed ^ 0x5045524D55544531ull, epoch));
    for (size_t i = n; i > 1; i--) {
        // Fisher-Yates: j uniform in [0, i)
        uint64_t u = bnl_rng_u64(&r);
        size_t j = i <= 0xFFFFFFFFu ? (size_t)(((u >> 32) * (uint64_t)i) >> 32) : (size_t)(u % i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    return BNL_OK;
}

// ---- resampling ---------------------------------------------------------------------------------

// Antialiased bilinear (a triangle filter widened by the downscale factor, as PIL does) of the
// region [x0, x0+rw) x [y0, y0+rh) of src (h,w,3) onto dst (oh,ow,3), values in 0..255.
// Upscaling reduces to plain bilinear with edge clamping.
typedef struct axis_coef {
    int *start, *len;   // (out) first source index and tap count per output
    float *w;           // (out, taps)
    int taps;
} axis_coef;

static void axis_weights(int *start, int *len, float *wt, int taps, int out, int in, double off, double scale) {
    double support = scale > 1.0 ? scale : 1.0;
    for (int o = 0; o < out; o++) {
        double center = off + (o + 0.5) * scale;
        int lo = (int)floor(center - support - 0.5), hi = (int)ceil(center + support - 0.5);
        if (lo < 0) lo = 0;
        if (hi > in - 1) hi = in - 1;
        if (hi - lo + 1 > taps) hi = lo + taps - 1;
        double sum = 0;
        float *w = wt + (size_t)o * taps;
        int n = 0;
        for (int j = lo; j <= hi; j++, n++) {
            double t = 1.0 - fabs(j + 0.5 - center) / support;
            w[n] = (float)(t > 0 ? t : 0);
            sum += w[n];
        }
        if (n <= 0 || sum <= 0) {
            // the region lies beyond the image (upscaling at the edge): nearest pixel
            int j = (int)floor(center);
            lo = j < 0 ? 0 : j >= in ? in - 1 : j;
            n = 1;
            w[0] = 1.0f;
            sum = 1.0;
        }
        for (int k = 0; k < n; k++) w[k] = (float)(w[k] / sum);
        start[o] = lo;
        len[o] = n;
    }
}

static bnl_status resample(float *dst, int oh, int ow, const bnl_ds_image *src, double x0, double y0, double rw,
                           double rh, bnl_ds_scratch *s) {
    int h = src->h, w = src->w;
    if (x0 == 0 && y0 == 0 && rw == w && rh == h && ow == w && oh == h) {
        size_t n = (size_t)h * w * 3;
        for (size_t k = 0; k < n; k++) dst[k] = src->pix[k];
        return BNL_OK;
    }
    double sx = rw / ow, sy = rh / oh;
    int tx = 2 * (int)ceil(sx > 1 ? sx : 1) + 2, ty = 2 * (int)ceil(sy > 1 ? sy : 1) + 2;
    // coefficient tables, then the horizontal pass into rows [ylo, yhi] of tmp, then vertical
    size_t ncoef = (size_t)ow * (tx + 2) + (size_t)oh * (ty + 2);
    float *f = bnl_ds_scratch_f32(&s->f32, &s->f32_cap, ncoef);
    if (!f) return BNL_ERR_NOMEM;
    float *wx = f, *wy = wx + (size_t)ow * tx;
    int *ix = (int *)(wy + (size_t)oh * ty);   // float and int have the same size
    int *nx = ix + ow, *iy = nx + ow, *ny = iy + oh;
    axis_weights(ix, nx, wx, tx, ow, w, x0, sx);
    axis_weights(iy, ny, wy, ty, oh, h, y0, sy);
    int ylo = h, yhi = -1;
    for (int o = 0; o < oh; o++) {
        if (iy[o] < ylo) ylo = iy[o];
        if (iy[o] + ny[o] - 1 > yhi) yhi = iy[o] + ny[o] - 1;
    }
    size_t rows = (size_t)(yhi - ylo + 1);
    float *tmp = bnl_ds_scratch_f32(&s->tmp, &s->tmp_cap, rows * (size_t)ow * 3);
    if (!tmp) return BNL_ERR_NOMEM;
    for (int y = ylo; y <= yhi; y++) {
        const uint8_t *row = src->pix + (size_t)y * w * 3;
        float *t = tmp + (size_t)(y - ylo) * ow * 3;
        for (int o = 0; o < ow; o++) {
            const float *wk = wx + (size_t)o * tx;
            const uint8_t *p = row + (size_t)ix[o] * 3;
            float r = 0, g = 0, b = 0;
            for (int k = 0; k < nx[o]; k++) {
                r += wk[k] * p[3 * k], g += wk[k] * p[3 * k + 1], b += wk[k] * p[3 * k + 2];
            }
            t[3 * o] = r, t[3 * o + 1] = g, t[3 * o + 2] = b;
        }
    }
    for (int o = 0; o < oh; o++) {
        const float *wk = wy + (size_t)o * ty;
        float *out = dst + (size_t)o * ow * 3;
        for (int c = 0; c < ow * 3; c++) out[c] = 0;
        for (int k = 0; k < ny[o]; k++) {
            const float *t = tmp + (size_t)(iy[o] + k - ylo) * ow * 3;
            float wv = wk[k];
            for (int c = 0; c < ow * 3; c++) out[c] += wv * t[c];
        }
    }
    return BNL_OK;
}

bnl_status bnl_ds_resize_u8(uint8_t *dst, int oh, int ow, const bnl_ds_image *src, bnl_ds_scratch *s) {
    size_t n = (size_t)oh * ow * 3;
    float *f = bnl_alloc(n * sizeof(float));
    if (!f) return bnl_fail(BNL_ERR_NOMEM, "dataset: cannot allocate a %dx%d resize buffer", oh, ow);
    bnl_status st = resample(f, oh, ow, src, 0, 0, src->w, src->h, s);
    if (st == BNL_OK)
        for (size_t k = 0; k < n; k++) {
            float v = f[k] + 0.5f;
            dst[k] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
        }
    bnl_free(f);
    return st;
}

// torchvision's RandomResizedCrop.get_params: 10 tries at a random area and log-uniform aspect
// ratio, then a center crop at the clamped ratio. Integer box (top, left, ch, cw).
static void random_resized_box(bnl_rng *r, int h, int w, float scale_min, int *top, int *left, int *ch, int *cw) {
    double area = (double)h * w, smin = scale_min > 0 && scale_min <= 1 ? scale_min : 0.08;
    double lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
    for (int t = 0; t < 10; t++) {
        double target = area * (smin + (1.0 - smin) * bnl_rng_uniform(r));
        double ratio = exp(lr0 + (lr1 - lr0) * bnl_rng_uniform(r));
        int cwi = (int)floor(sqrt(target * ratio) + 0.5), chi = (int)floor(sqrt(target / ratio) + 0.5);
        if (cwi > 0 && cwi <= w && chi > 0 && chi <= h) {
            *top = (int)bnl_rng_below(r, (uint32_t)(h - chi + 1));
            *left = (int)bnl_rng_below(r, (uint32_t)(w - cwi + 1));
            *ch = chi, *cw = cwi;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int cwi = w, chi = h;
    if (in_ratio < 3.0 / 4.0) chi = (int)floor(w / (3.0 / 4.0) + 0.5);
    else if (in_ratio > 4.0 / 3.0) cwi = (int)floor(h * (4.0 / 3.0) + 0.5);
    if (chi > h) chi = h;
    if (cwi > w) cwi = w;
    *top = (h - chi) / 2, *left = (w - cwi) / 2, *ch = chi, *cw = cwi;
}

// round(v / 2) with Python's ties-to-even, as torchvision's center_crop computes its offsets
static int half_even(int v) {
    int k = v / 2;
    return (v % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

// One sample: out: (H,W,3), normalized with aug (or raw 0..255 when aug is NULL).
static bnl_status produce(const bnl_dataset *d, size_t idx, const bnl_augment *aug, int augment, uint64_t seed,
                          float *out, bnl_ds_scratch *s) {
    int H = d->H, W = d->W;
    bnl_rng r = bnl_rng_seed(bnl_ds_key(seed, idx));
    int rrc = augment && aug && aug->random_resized_crop;
    int need = d->resize;
    if (rrc) {
        double smin = aug->scale_min > 0 && aug->scale_min <= 1 ? aug->scale_min : 0.08;
        need = (int)ceil((H > W ? H : W) / sqrt(smin));
    }
    bnl_ds_image img;
    bnl_status st = d->ops->source(d, idx, need, &img, s);
    if (st != BNL_OK) return st;
    float *base = bnl_ds_scratch_f32(&s->img, &s->img_cap, (size_t)H * W * 3);
    if (!base) return BNL_ERR_NOMEM;
    if (rrc) {
        int top, left, ch, cw;
        random_resized_box(&r, img.h, img.w, aug->scale_min, &top, &left, &ch, &cw);
        st = resample(base, H, W, &img, left, top, cw, ch, s);
    } else {
        // torchvision Resize(resize) + CenterCrop: shorter side -> resize, the longer one
        // int(resize * long / short); crop offsets rounded on the resized grid.
        int h = img.h, w = img.w, rh, rw;
        if (h <= w) rh = d->resize, rw = (int)((int64_t)d->resize * w / h);
        else rw = d->resize, rh = (int)((int64_t)d->resize * h / w);
        if (rh < H || rw < W)
            return bnl_fail(BNL_ERR_ARG, "dataset: resize %d is smaller than the %dx%d crop", d->resize, H, W);
        int top = half_even(rh - H), left = half_even(rw - W);
        double fy = (double)h / rh, fx = (double)w / rw;
        if (rh == h && rw == w) st = resample(base, H, W, &img, left, top, W, H, s);
        else st = resample(base, H, W, &img, left * fx, top * fy, W * fx, H * fy, s);
    }
    if (st != BNL_OK) return st;

    int dy = 0, dx = 0, flip = 0;
    if (augment && aug && aug->pad_crop > 0) {
        uint32_t p = (uint32_t)aug->pad_crop;
        dy = (int)bnl_rng_below(&r, 2 * p + 1) - (int)p;
        dx = (int)bnl_rng_below(&r, 2 * p + 1) - (int)p;
    }
    if (augment && aug && aug->flip) flip = (int)bnl_rng_below(&r, 2);
    float scale[3] = {1, 1, 1}, shift[3] = {0, 0, 0};
    if (aug) {
        for (int c = 0; c < 3; c++) {
            float sd = aug->std[c] != 0 ? aug->std[c] : 1.0f;
            scale[c] = 1.0f / (255.0f * sd);
            shift[c] = aug->mean[c] / sd;
        }
    }
    // RandomCrop(padding) then RandomHorizontalFlip: out(y,x) = base(y+dy, x'+dx), x' = flipped x,
    // zero (then normalized) outside. Per row: padding, the columns [x0, x1) that see the image,
    // padding. (No per-pixel branch: GCC 12 with -march=native miscompiled the if-converted,
    // AVX-512-masked version of that loop.)
    for (int y = 0; y < H; y++) {
        float *o = out + (size_t)y * W * 3;
        int sy = y + dy, x0 = 0, x1 = 0;
        if (sy >= 0 && sy < H) {
            // plain: 0 <= x + dx < W; flipped: 0 <= W-1-x + dx < W
            x0 = flip ? dx : -dx, x1 = flip ? W + dx : W - dx;
            x0 = x0 < 0 ? 0 : x0 > W ? W : x0;
            x1 = x1 < x0 ? x0 : x1 > W ? W : x1;
        }
        for (int x = 0; x < x0; x++)
            for (int c = 0; c < 3; c++) o[x * 3 + c] = -shift[c];
        const float *b = base + (size_t)(sy < 0 ? 0 : sy) * W * 3;
        if (!flip) {
            for (int x = x0; x < x1; x++)
                for (int c = 0; c < 3; c++) o[x * 3 + c] = b[(x + dx) * 3 + c] * scale[c] - shift[c];
        } else {
            for (int x = x0; x < x1; x++)
                for (int c = 0; c < 3; c++) o[x * 3 + c] = b[(W - 1 - x + dx) * 3 + c] * scale[c] - shift[c];
        }
        for (int x = x1; x < W; x++)
            for (int c = 0; c < 3; c++) o[x * 3 + c] = -shift[c];
    }
    return BNL_OK;
}

// Batch assembly: one item per batch position, each thread with its own scratch.
typedef struct {
    const bnl_dataset *d;
    const size_t *indices;
    const bnl_augment *a;
    uint64_t seed;
    float *x;
    size_t per;
    bnl_ds_scratch *scratch;   // one per thread
    bnl_first_error err;       // the error of the earliest batch position
} get_batch_t;

static void get_batch_items(void *vc, size_t k0, size_t k1, int tid) {
    get_batch_t *j = vc;
    for (size_t k = k0; k < k1; k++)
        bnl_first_error_note(&j->err, k, produce(j->d, j->indices[k], j->a, 1, j->seed, j->x + k * j->per, &j->scratch[tid]));
}

bnl_status bnl_dataset_get_batch(const bnl_dataset *d, float *x, int64_t *labels, const size_t *indices,
                                 size_t n, const bnl_augment *aug, uint64_t seed) {
    if (!d) return bnl_fail(BNL_ERR_ARG, "dataset_get_batch: dataset is NULL");
    if (n == 0) return BNL_OK;
    if (!x || !indices) return bnl_fail(BNL_ERR_ARG, "dataset_get_batch: x or indices is NULL");
    for (size_t k = 0; k < n; k++)
        if (indices[k] >= d->count)
            return bnl_fail(BNL_ERR_ARG, "dataset_get_batch: index %zu (batch position %zu) out of range (size %zu)",
                            indices[k], k, d->count);
    bnl_augment none = bnl_augment_none();
    const bnl_augment *a = aug ? aug : &none;
    if (a->pad_crop < 0 || a->pad_crop > 4096)
        return bnl_fail(BNL_ERR_ARG, "dataset_get_batch: pad_crop %d out of range", a->pad_crop);
    size_t per = (size_t)d->H * d->W * 3;
    if (labels)
        for (size_t k = 0; k < n; k++) labels[k] = bnl_dataset_label(d, indices[k]);

    get_batch_t job = {d, indices, a, seed, x, per, NULL, {0}};
    int T = bnl_threads_for(n, (double)n, 2.0);
    job.scratch = bnl_calloc((size_t)T, sizeof(bnl_ds_scratch));
    if (!job.scratch) return bnl_fail(BNL_ERR_NOMEM, "dataset_get_batch: out of memory");
    bnl_first_error_init(&job.err);
    bnl_parallel_for_dynamic(n, T, get_batch_items, &job);
    for (int t = 0; t < T; t++) bnl_ds_scratch_free(&job.scratch[t]);
    bnl_free(job.scratch);
    return bnl_first_error_status(&job.err);
}

bnl_status bnl_dataset_get_image_u8(const bnl_dataset *d, uint8_t *rgb, size_t i) {
    if (!d || !rgb) return bnl_fail(BNL_ERR_ARG, "dataset_get_image_u8: NULL argument");
    if (i >= d->count) return bnl_fail(BNL_ERR_ARG, "dataset_get_image_u8: index %zu out of range (size %zu)", i, d->count);
    bnl_ds_scratch s;
    memset(&s, 0, sizeof s);
    size_t per = (size_t)d->H * d->W * 3;
    float *f = bnl_alloc(per * sizeof(float));
    if (!f) return bnl_fail(BNL_ERR_NOMEM, "dataset_get_image_u8: out of memory");
    bnl_status st = produce(d, i, NULL, 0, 0, f, &s);
    if (st == BNL_OK)
        for (size_t k = 0; k < per; k++) {
            float v = f[k] + 0.5f;
            rgb[k] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
        }
    bnl_free(f);
    bnl_ds_scratch_free(&s);
    return st;
}
