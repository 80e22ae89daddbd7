// What the dataset sources (procedural, CIFAR-10, ImageFolder) share with the batch assembly in
// dataset.c. A source only hands out the raw RGB bytes of image i; geometry (resize, crops, flip)
// and normalization happen once, in dataset.c, for every source.
#ifndef BNL_DATASET_INTERNAL_H
#define BNL_DATASET_INTERNAL_H
#include "core/common.h"
#include "io/dataset.h"

// Per-thread scratch memory, grown on demand and freed after the batch.
typedef struct bnl_ds_scratch {
    uint8_t *u8;    // the source image when a source draws or decodes it
    size_t u8_cap;
    uint8_t *aux;   // a source's own use (the bytes of a file)
    size_t aux_cap;
    float *f32;   // resize coefficients
    size_t f32_cap;
    float *tmp;   // resize: the horizontal pass
    size_t tmp_cap;
    float *img;   // the un-normalized sample, (H,W,3)
    size_t img_cap;
} bnl_ds_scratch;

// NULL on failure (with bnl_fail recorded).
uint8_t *bnl_ds_grow_u8(uint8_t **buf, size_t *cap, size_t bytes);
static inline uint8_t *bnl_ds_scratch_u8(bnl_ds_scratch *s, size_t bytes) { return bnl_ds_grow_u8(&s->u8, &s->u8_cap, bytes); }
float *bnl_ds_scratch_f32(float **buf, size_t *cap, size_t count);
void bnl_ds_scratch_free(bnl_ds_scratch *s);

// A source image: pix: (h,w,3) RGB bytes, borrowed (from the dataset or the scratch).
typedef struct bnl_ds_image {
    const uint8_t *pix;
    int h, w;
} bnl_ds_image;

typedef struct bnl_ds_ops {
    // The source of image i. need_short is the smallest shorter side the caller can use without
    // losing detail (a hint: JPEG decoding may use it to decode at a reduced scale).
    bnl_status (*source)(const bnl_dataset *d, size_t i, int need_short, bnl_ds_image *img,
                         bnl_ds_scratch *s);
    int64_t (*label)(const bnl_dataset *d, size_t i);   // NULL: d->labels
    void (*destroy)(void *impl);
} bnl_ds_ops;

struct bnl_dataset {
    const bnl_ds_ops *ops;
    void *impl;
    size_t count;
    int classes;
    char **names;         // (classes) owned strings
    int H, W;             // produced samples
    int resize;           // eval: shorter side resized to this, then the H x W center crop
    int64_t *labels;      // (count) when ops->label is NULL
    bnl_augment train_aug, eval_aug;
};

// Resizes all of src to dst (oh,ow,3) with the antialiased bilinear filter of the batch pipeline.
bnl_status bnl_ds_resize_u8(uint8_t *dst, int oh, int ow, const bnl_ds_image *src, bnl_ds_scratch *s);

// A zeroed dataset with `classes` NULL names; NULL + bnl_fail on failure.
bnl_dataset *bnl_ds_new(int classes);
char *bnl_ds_strdup(const char *s);
#ifndef __EMSCRIPTEN__
// The whole file into a new buffer (bnl_free it); messages name the path.
bnl_status bnl_ds_read_file(const char *path, uint8_t **buf, size_t *len);
#endif

// splitmix64's finalizer: a strong 64-bit mix, used to derive independent streams from (seed, i).
static inline uint64_t bnl_ds_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t bnl_ds_key(uint64_t seed, uint64_t i) {
    return bnl_ds_mix(bnl_ds_mix(seed) ^ (i * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
}

#endif
