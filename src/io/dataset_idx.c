// IDX files (the MNIST / Fashion-MNIST format): an images file of unsigned bytes (magic 0x00000803,
// dims N, H, W, then N*H*W pixels) and a labels file (magic 0x00000801, dim N, then N bytes), each
// plain or gzip'd (inflated with zlib where the build has it). Kept in memory as the file's gray
// bytes (N,H,W); a sample becomes three identical channels, zero-padded or resized to S x S.
#include "io/dataset_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#ifdef BNL_HAVE_ZLIB
#include <zlib.h>
#endif

static const char *const k_fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct idx_impl {
    uint8_t *pix;   // (count, h, w) gray
    int h, w;
    int pad;        // > 0: the sample is the image zero-padded to S x S, top/left offset `pad`
    int S;
} idx_impl;

bnl_idx_opts bnl_idx_opts_default(void) {
    bnl_idx_opts o;
    memset(&o, 0, sizeof o);
    return o;
}

// Gray image i as RGB (S x S when padded, else the file's h x w for the pipeline to resize).
static bnl_status idx_source(const bnl_dataset *d, size_t i, int need_short, bnl_ds_image *img, bnl_ds_scratch *s) {
    const idx_impl *c = d->impl;
    int oh = c->pad >= 0 ? c->S : c->h, ow = c->pad >= 0 ? c->S : c->w;
    int top = c->pad >= 0 ? c->pad : 0, left = c->pad >= 0 ? (c->S - c->w) / 2 : 0;
    uint8_t *o = bnl_ds_scratch_u8(s, (size_t)oh * ow * 3);
    if (!o) return BNL_ERR_NOMEM;
    if (c->pad >= 0) memset(o, 0, (size_t)oh * ow * 3);
    const uint8_t *g = c->pix + i * (size_t)c->h * c->w;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) {
            uint8_t v = g[(size_t)y * c->w + x];
            uint8_t *p = o + ((size_t)(y + top) * ow + (x + left)) * 3;
            p[0] = p[1] = p[2] = v;
        }
    img->pix = o, img->h = oh, img->w = ow;
    return BNL_OK;
}

static void idx_destroy(void *impl) {
    idx_impl *c = impl;
    if (c) bnl_free(c->pix);
    bnl_free(c);
}

static const bnl_ds_ops k_idx_ops = {idx_source, NULL, idx_destroy};

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int is_gzip(const uint8_t *buf, size_t len) { return len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b; }

// The largest decompressed file we accept (the Fashion-MNIST training images are 47 MB).
#define IDX_MAX_BYTES (sizeof(size_t) > 4 ? (uint64_t)1 << 32 : (uint64_t)0x7fffffff)

#ifdef BNL_HAVE_ZLIB
// Inflates a gzip file (one or more members) into a new buffer (bnl_free it).
static bnl_status gunzip(const uint8_t *in, size_t len, const char *name, uint8_t **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    // the trailer's ISIZE (size mod 2^32) is a good first guess for one member
    // (a damaged trailer must not make us allocate gigabytes: deflate expands at most 1032:1)
    size_t cap = len >= 18 ? (size_t)(in[len - 4] | in[len - 3] << 8 | in[len - 2] << 16 | (uint32_t)in[len - 1] << 24) : 0;
    if (cap / 1032 > len) cap = len * 1032;
    if (cap > ((size_t)1 << 28)) cap = (size_t)1 << 28;
    if (cap < 4096) cap = 4096;
    uint8_t *buf = bnl_alloc(cap);
    if (!buf) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory inflating the gzip data", name);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        bnl_free(buf);
        return bnl_fail(BNL_ERR_NOMEM, "%s: cannot start zlib", name);
    }
    size_t done_in = 0, n = 0;
    bnl_status st = BNL_OK;
    for (;;) {
        if (n == cap) {
            if (cap >= IDX_MAX_BYTES) {
                st = bnl_fail(BNL_ERR_FORMAT, "%s: inflates to more than %llu bytes (not an IDX file?)", name,
                              (unsigned long long)IDX_MAX_BYTES);
                break;
            }
            size_t nc = cap * 2 > IDX_MAX_BYTES ? (size_t)IDX_MAX_BYTES : cap * 2;
            uint8_t *nb = bnl_alloc(nc);
            if (!nb) {
                st = bnl_fail(BNL_ERR_NOMEM, "%s: out of memory inflating the gzip data", name);
                break;
            }
            memcpy(nb, buf, n);
            bnl_free(buf);
            buf = nb, cap = nc;
        }
        size_t avail_in = len - done_in, avail_out = cap - n;
        z.next_in = (Bytef *)(in + done_in);
        z.avail_in = avail_in > 0x40000000u ? 0x40000000u : (uInt)avail_in;
        z.next_out = buf + n;
        z.avail_out = avail_out > 0x40000000u ? 0x40000000u : (uInt)avail_out;
        uInt given_in = z.avail_in, given_out = z.avail_out;
        int r = inflate(&z, Z_NO_FLUSH);
        done_in += given_in - z.avail_in;
        n += given_out - z.avail_out;
        if (r == Z_STREAM_END) {
            // another gzip member may follow (as gzip -c a b > c writes)
            if (done_in < len && is_gzip(in + done_in, len - done_in)) {
                inflateReset(&z);
                continue;
            }
            if (done_in < len) st = bnl_fail(BNL_ERR_FORMAT, "%s: %zu bytes of garbage after the gzip data", name, len - done_in);
            break;
        }
        if (r == Z_DATA_ERROR || r == Z_NEED_DICT) {
            st = bnl_fail(BNL_ERR_FORMAT, "%s: corrupt gzip data (%s)", name, z.msg ? z.msg : "invalid stream");
            break;
        }
        if (r == Z_MEM_ERROR) {
            st = bnl_fail(BNL_ERR_NOMEM, "%s: out of memory in zlib", name);
            break;
        }
        if (r == Z_BUF_ERROR && done_in == len) {
            st = bnl_fail(BNL_ERR_FORMAT, "%s: truncated gzip data (the stream ends early)", name);
            break;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            st = bnl_fail(BNL_ERR_FORMAT, "%s: gzip error %d", name, r);
            break;
        }
        if (done_in == len && n < cap) {
            st = bnl_fail(BNL_ERR_FORMAT, "%s: truncated gzip data (the stream ends early)", name);
            break;
        }
    }
    inflateEnd(&z);
    if (st != BNL_OK) {
        bnl_free(buf);
        return st;
    }
    *out = buf, *out_len = n;
    return BNL_OK;
}
#endif

// Checks an IDX header: type unsigned byte, `dims` dimensions, and a size that matches them.
// dim: (dims) the sizes; *data: the payload.
static bnl_status idx_header(const uint8_t *buf, size_t len, const char *name, int dims, const char *what,
                             uint32_t *dim, const uint8_t **data) {
    if (len < 4)
        return bnl_fail(BNL_ERR_FORMAT, "%s: %zu bytes, too short for an IDX header (truncated or empty file)", name, len);
    uint32_t magic = be32(buf);
    uint32_t want = 0x00000800u | (uint32_t)dims;
    if (magic != want) {
        if (buf[0] == 0 && buf[1] == 0 && buf[2] == 0x08 && buf[3] >= 1 && buf[3] <= 4)
            return bnl_fail(BNL_ERR_FORMAT, "%s: an IDX file of %d dimensions, expected %d (%s; %s file?)", name, buf[3],
                            dims, what, dims == 3 ? "a labels" : "an images");
        if (buf[0] == 0 && buf[1] == 0 && buf[2] != 0x08)
            return bnl_fail(BNL_ERR_FORMAT, "%s: IDX data type 0x%02x, expected 0x08 (unsigned bytes)", name, buf[2]);
        return bnl_fail(BNL_ERR_FORMAT, "%s: wrong magic number 0x%08x, expected 0x%08x (%s)", name, magic, want, what);
    }
    size_t hdr = 4 + 4 * (size_t)dims;
    if (len < hdr) return bnl_fail(BNL_ERR_FORMAT, "%s: truncated IDX header (%zu of %zu bytes)", name, len, hdr);
    uint64_t total = 1;
    for (int k = 0; k < dims; k++) {
        dim[k] = be32(buf + 4 + 4 * k);
        total *= dim[k];
        if (total > IDX_MAX_BYTES) return bnl_fail(BNL_ERR_FORMAT, "%s: dimensions too large", name);
    }
    if (len - hdr < total)
        return bnl_fail(BNL_ERR_FORMAT, "%s: truncated: %zu bytes of data, the header says %llu", name, len - hdr,
                        (unsigned long long)total);
    if (len - hdr > total)
        return bnl_fail(BNL_ERR_FORMAT, "%s: %zu bytes after the %llu the header announces (corrupt or not this IDX file)",
                        name, len - hdr - (size_t)total, (unsigned long long)total);
    *data = buf + hdr;
    return BNL_OK;
}

// Plain bytes of one file (inflated when gzip'd). *owned: the buffer to bnl_free, or NULL when
// *plain points into buf.
static bnl_status plain_bytes(const uint8_t *buf, size_t len, const char *name, const uint8_t **plain,
                              size_t *plain_len, uint8_t **owned) {
    *owned = NULL, *plain = buf, *plain_len = len;
    if (!is_gzip(buf, len)) return BNL_OK;
#ifdef BNL_HAVE_ZLIB
    bnl_status st = gunzip(buf, len, name, owned, plain_len);
    if (st == BNL_OK) *plain = *owned;
    return st;
#else
    return bnl_fail(BNL_ERR_UNSUPPORTED, "%s: gzip'd, and this build has no zlib: pass the decompressed bytes", name);
#endif
}

static bnl_status idx_build(bnl_dataset **out, const uint8_t *ibuf, size_t ilen, const uint8_t *lbuf, size_t llen,
                            const char *iname, const char *lname, const bnl_idx_opts *o) {
    bnl_idx_opts def = bnl_idx_opts_default();
    if (!o) o = &def;
    const uint8_t *ip = NULL, *lp = NULL, *ipix = NULL, *lab = NULL;
    size_t ipl, lpl;
    uint8_t *iown = NULL, *lown = NULL;
    uint32_t idim[3] = {0, 0, 0}, ldim[1] = {0};
    bnl_dataset *d = NULL;
    bnl_status st = plain_bytes(ibuf, ilen, iname, &ip, &ipl, &iown);
    if (st == BNL_OK) st = plain_bytes(lbuf, llen, lname, &lp, &lpl, &lown);
    if (st == BNL_OK) st = idx_header(ip, ipl, iname, 3, "IDX images: 0x00000803", idim, &ipix);
    if (st == BNL_OK) st = idx_header(lp, lpl, lname, 1, "IDX labels: 0x00000801", ldim, &lab);
    if (st == BNL_OK && idim[0] != ldim[0])
        st = bnl_fail(BNL_ERR_FORMAT, "%s holds %u images but %s holds %u labels", iname, idim[0], lname, ldim[0]);
    if (st == BNL_OK && idim[0] == 0) st = bnl_fail(BNL_ERR_FORMAT, "%s: no images", iname);
    if (st == BNL_OK && (idim[1] < 1 || idim[2] < 1 || idim[1] > 4096 || idim[2] > 4096))
        st = bnl_fail(BNL_ERR_FORMAT, "%s: images of %ux%u pixels, expected 1..4096 on each side", iname, idim[1], idim[2]);
    int max_label = 0;
    for (uint32_t k = 0; st == BNL_OK && k < ldim[0]; k++)
        if (lab[k] > max_label) max_label = lab[k];
    int classes = max_label + 1;
    if (st == BNL_OK && o->fashion_names && classes > 10) {
        uint32_t k = 0;
        while (lab[k] <= 9) k++;
        st = bnl_fail(BNL_ERR_FORMAT, "%s: label %d at image %u, Fashion-MNIST has classes 0..9", lname, lab[k], k);
    }
    if (st == BNL_OK && o->fashion_names) classes = 10;
    if (st == BNL_OK && classes < 2) classes = 2;   // a one-class file still gets two outputs
    int h = (int)idim[1], w = (int)idim[2], big = h > w ? h : w;
    int S = o->size > 0 ? o->size : big;
    if (st == BNL_OK && (o->size < 0 || S > 4096)) st = bnl_fail(BNL_ERR_ARG, "IDX: image size %d out of range", o->size);
    if (st == BNL_OK && !(d = bnl_ds_new(classes))) st = BNL_ERR_NOMEM;
    idx_impl *c = NULL;
    if (st == BNL_OK) {
        c = bnl_calloc(1, sizeof *c);
        d->impl = c, d->ops = &k_idx_ops;
        size_t n = (size_t)idim[0] * h * w;
        if (c) c->pix = bnl_alloc(n);
        d->labels = bnl_calloc(idim[0], sizeof(int64_t));
        if (!c || !c->pix || !d->labels) st = bnl_fail(BNL_ERR_NOMEM, "%s: cannot allocate %u images", iname, idim[0]);
        else memcpy(c->pix, ipix, n);
    }
    for (int k = 0; st == BNL_OK && k < classes; k++) {
        char num[16];
        snprintf(num, sizeof num, "%d", k);
        if (!(d->names[k] = bnl_ds_strdup(o->fashion_names ? k_fashion_names[k] : num)))
            st = bnl_fail(BNL_ERR_NOMEM, "IDX: out of memory");
    }
    if (st == BNL_OK) {
        for (uint32_t k = 0; k < idim[0]; k++) d->labels[k] = lab[k];
        c->h = h, c->w = w, c->S = S;
        // up to 4 pixels larger: zero padding, centered (28 -> 32 as the LeNet papers did); else resized
        c->pad = S >= big && S - big <= 4 ? (S - h) / 2 : -1;
        d->count = idim[0];
        d->H = d->W = S;
        d->resize = S;   // padded: the source is S x S already; otherwise shorter side -> S, center crop
        // the data's own statistics, the same for the three channels
        double sum = 0, sq = 0;
        size_t n = (size_t)idim[0] * h * w;
        for (size_t k = 0; k < n; k++) {
            double v = c->pix[k] / 255.0;
            sum += v, sq += v * v;
        }
        double mean = sum / (double)n, var = sq / (double)n - mean * mean;
        double sd = var > 1e-12 ? sqrt(var) : 1.0;
        bnl_augment a = bnl_augment_none();
        for (int k = 0; k < 3; k++) a.mean[k] = (float)mean, a.std[k] = (float)sd;
        d->eval_aug = a;
        a.pad_crop = S / 8 > 0 ? S / 8 : 1, a.flip = 1;   // RandomCrop(S, padding=S/8) + RandomHorizontalFlip
        d->train_aug = a;
    }
    bnl_free(iown);
    bnl_free(lown);
    if (st != BNL_OK) {
        bnl_dataset_free(d);
        return st;
    }
    *out = d;
    return BNL_OK;
}

bnl_status bnl_dataset_idx_from_buffer(bnl_dataset **out, const uint8_t *images, size_t images_len,
                                       const uint8_t *labels, size_t labels_len, const char *images_name,
                                       const char *labels_name, const bnl_idx_opts *o) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "IDX: out is NULL");
    *out = NULL;
    if (!images_name) images_name = "IDX images";
    if (!labels_name) labels_name = "IDX labels";
    if ((!images && images_len) || (!labels && labels_len)) return bnl_fail(BNL_ERR_ARG, "IDX: a buffer is NULL");
    return idx_build(out, images, images_len, labels, labels_len, images_name, labels_name, o);
}

bnl_status bnl_dataset_set_normalization(bnl_dataset *d, const float mean[3], const float std[3]) {
    if (!d || !mean || !std) return bnl_fail(BNL_ERR_ARG, "dataset_set_normalization: NULL argument");
    for (int k = 0; k < 3; k++)
        if (!(std[k] > 0) || !isfinite(mean[k]) || !isfinite(std[k]))
            return bnl_fail(BNL_ERR_ARG, "dataset_set_normalization: channel %d: mean %g, std %g (std must be finite and > 0)",
                            k, mean[k], std[k]);
    for (int k = 0; k < 3; k++) {
        d->train_aug.mean[k] = d->eval_aug.mean[k] = mean[k];
        d->train_aug.std[k] = d->eval_aug.std[k] = std[k];
    }
    return BNL_OK;
}

#ifdef __EMSCRIPTEN__
bnl_status bnl_dataset_idx(bnl_dataset **out, const char *images, const char *labels, const bnl_idx_opts *o) {
    if (out) *out = NULL;
    return bnl_fail(BNL_ERR_UNSUPPORTED, "IDX: no file system in this build; use bnl_dataset_idx_from_buffer");
}
bnl_status bnl_dataset_mnist(bnl_dataset **out, const char *dir, int train, const bnl_idx_opts *o) {
    if (out) *out = NULL;
    return bnl_fail(BNL_ERR_UNSUPPORTED, "IDX: no file system in this build; use bnl_dataset_idx_from_buffer");
}
#else
bnl_status bnl_dataset_idx(bnl_dataset **out, const char *images, const char *labels, const bnl_idx_opts *o) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "IDX: out is NULL");
    *out = NULL;
    if (!images || !labels) return bnl_fail(BNL_ERR_ARG, "IDX: a path is NULL");
    uint8_t *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    bnl_status st = bnl_ds_read_file(images, &ib, &il);
    if (st == BNL_OK) st = bnl_ds_read_file(labels, &lb, &ll);
    if (st == BNL_OK) st = idx_build(out, ib, il, lb, ll, images, labels, o);
    bnl_free(ib);
    bnl_free(lb);
    return st;
}

static int exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

bnl_status bnl_dataset_mnist(bnl_dataset **out, const char *dir, int train, const bnl_idx_opts *o) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "IDX: out is NULL");
    *out = NULL;
    if (!dir) return bnl_fail(BNL_ERR_ARG, "IDX: directory is NULL");
    const char *split = train ? "train" : "t10k";
    char ip[4200], lp[4200];
    size_t dl = strlen(dir);
    if (dl > 4000) return bnl_fail(BNL_ERR_ARG, "IDX: directory name too long");
    const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";
    // the .gz name first (as distributed), then the plain one (as gunzip leaves it)
    snprintf(ip, sizeof ip, "%s%s%s-images-idx3-ubyte.gz", dir, sep, split);
    if (!exists(ip)) snprintf(ip, sizeof ip, "%s%s%s-images-idx3-ubyte", dir, sep, split);
    snprintf(lp, sizeof lp, "%s%s%s-labels-idx1-ubyte.gz", dir, sep, split);
    if (!exists(lp)) snprintf(lp, sizeof lp, "%s%s%s-labels-idx1-ubyte", dir, sep, split);
    if (!exists(ip))
        return bnl_fail(BNL_ERR_IO, "%s%s%s-images-idx3-ubyte[.gz]: not found (expected %s-{images-idx3,labels-idx1}-ubyte[.gz] in %s)",
                        dir, sep, split, split, dir);
    return bnl_dataset_idx(out, ip, lp, o);
}
#endif
