// Datasets for training and the browser demo: a procedural one (generated on demand, identical
// natively and in wasm), CIFAR-10 (binary format), torchvision-style ImageFolder (JPEG/PNG) and IDX
// files (MNIST, Fashion-MNIST).
// Every dataset hands out normalized float batches in NHWC through one call.
//
//     bnl_dataset *d;
//     bnl_procedural_opts po = bnl_procedural_opts_default();   // 10 classes, 32x32, 10000 images
//     po.seed = 1;
//     if (bnl_dataset_procedural(&d, &po) != BNL_OK) fprintf(stderr, "%s\n", bnl_last_error());
//     // or: bnl_dataset_cifar10(&d, "data/cifar-10-batches-bin", 1);
//     // or: bnl_imagefolder_opts io = bnl_imagefolder_opts_default(); io.size = 64;
//     //     bnl_dataset_imagefolder(&d, "data/imagenette/train", &io);
//     size_t n = bnl_dataset_size(d), B = 128;
//     int H = bnl_dataset_height(d), W = bnl_dataset_width(d);
//     float *x = malloc(B * H * W * 3 * sizeof(float));                 // x: (B,H,W,3)
//     int64_t labels[128];
//     size_t *perm = malloc(n * sizeof(size_t));
//     bnl_augment aug = bnl_dataset_augment_default(d, 1);              // train: crop/flip + mean/std
//     for (int epoch = 0; epoch < E; epoch++) {
//         bnl_dataset_permutation(perm, n, seed, epoch);
//         for (size_t b = 0; b + B <= n; b += B)
//             bnl_dataset_get_batch(d, x, labels, perm + b, B, &aug, seed * 1000003u + epoch);
//     }
//     bnl_dataset_free(d);   // whoever creates a dataset frees it
//
// Determinism: image i of a procedural dataset depends only on (opts.seed, i) and is the same bytes
// natively and in wasm; the augmentation of image i in a batch depends only on (batch seed, i),
// never on the thread count or the batch it is in.
// Threads: a dataset is read-only once created; several threads may ask for batches at once.
// Wasm: procedural, CIFAR-from-bytes and IDX-from-bytes only (no file system, no zlib); the file
// loaders return BNL_ERR_UNSUPPORTED there.
#ifndef BNL_DATASET_H
#define BNL_DATASET_H
#include "bnlab.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bnl_dataset bnl_dataset;

void bnl_dataset_free(bnl_dataset *d);   // NULL is fine

size_t bnl_dataset_size(const bnl_dataset *d);              // number of images
int bnl_dataset_num_classes(const bnl_dataset *d);
const char *bnl_dataset_class_name(const bnl_dataset *d, int i);   // NULL if i is out of range
int bnl_dataset_height(const bnl_dataset *d);               // of the produced samples
int bnl_dataset_width(const bnl_dataset *d);
// Label of image i without producing the image; -1 if i is out of range.
int64_t bnl_dataset_label(const bnl_dataset *d, size_t i);

// ---------------------------------------------------------------------------------------------
// Procedural shapes: several shape classes (circle, square, triangle, ring, cross, ...) drawn with
// random position, scale, rotation, colour and texture on cluttered backgrounds. Nothing is stored:
// image i is drawn when asked for. Labels are balanced (image i has class (i + k) % classes).
#define BNL_PROCEDURAL_MAX_CLASSES 16

typedef struct bnl_procedural_opts {
    uint64_t seed;   // use different seeds for the train and the test split
    size_t count;    // number of images (default 10000)
    int classes;     // 2..BNL_PROCEDURAL_MAX_CLASSES (default 10)
    int size;        // images are size x size, size >= 8 (default 32)
} bnl_procedural_opts;

bnl_procedural_opts bnl_procedural_opts_default(void);
// o == NULL takes the defaults.
bnl_status bnl_dataset_procedural(bnl_dataset **out, const bnl_procedural_opts *o);

// ---------------------------------------------------------------------------------------------
// CIFAR-10 binary version: dir/data_batch_1.bin .. data_batch_5.bin (train = 1) or dir/test_batch.bin
// (train = 0); records of 1 label byte + 3072 bytes (R, G, B planes of 32x32). Class names come from
// dir/batches.meta.txt when present. Errors name the file (missing, size not a multiple of 3073,
// label > 9). Images are kept in memory as uint8 NHWC (150 MB for the train split).
bnl_status bnl_dataset_cifar10(bnl_dataset **out, const char *dir, int train);
// The same from bytes (the concatenated records, e.g. one .bin file in the browser); name is used in
// error messages. The bytes are copied.
bnl_status bnl_dataset_cifar10_from_buffer(bnl_dataset **out, const uint8_t *buf, size_t len,
                                           const char *name);

// ---------------------------------------------------------------------------------------------
// ImageFolder (torchvision layout): root/<class>/**/<image>.{jpg,jpeg,png} (case-insensitive
// extensions; hidden entries skipped), classes sorted by name, files sorted by name within a folder,
// subfolders after the files. Decoded with libjpeg / libpng (BNL_ERR_UNSUPPORTED in builds without
// them, e.g. wasm); the format comes from the first bytes; gray, palette, 16-bit and alpha are
// converted to 8-bit RGB (alpha dropped, as PIL's convert("RGB")). Eval samples: shorter side
// resized to `resize` (antialiased bilinear, as PIL), then a size x size center crop (torchvision's
// rounding). Large JPEGs are decoded at 1/2..1/8 scale in the DCT while the shorter side stays
// >= what the crop needs. The scan happens at open (an empty class folder is an error); a corrupt
// or truncated image is an error naming the file when a batch reaches it (at open with cache = 1).
typedef struct bnl_imagefolder_opts {
    int size;            // produced samples are size x size (default 224)
    int resize;          // shorter side before the center crop (default: size * 256 / 224)
    int cache;           // 1: decode every image once at open and keep it at shorter side = resize
                         //    (uint8) in memory; 0 (default): decode when a batch asks for it
    size_t max_per_class;   // 0 = all; else the first files of each class (quick experiments)
} bnl_imagefolder_opts;

bnl_imagefolder_opts bnl_imagefolder_opts_default(void);
bnl_status bnl_dataset_imagefolder(bnl_dataset **out, const char *root, const bnl_imagefolder_opts *o);

// ---------------------------------------------------------------------------------------------
// IDX files, the format of MNIST and Fashion-MNIST: images (magic 0x00000803: N, H, W, then N*H*W
// unsigned bytes, gray) and labels (magic 0x00000801: N, then N bytes), each plain or gzip'd
// (inflated with zlib; builds without zlib, e.g. wasm, return BNL_ERR_UNSUPPORTED for gzip'd bytes).
// A gray image becomes three identical channels, so RGB models load unchanged. Samples are S x S:
// S = the file's size (native), up to 4 pixels larger (zero padding, centered: 28 -> 32), else
// resized (shorter side to S, antialiased bilinear, center crop). Normalization: the mean and std of
// all the pixels of this file (Fashion-MNIST train: 0.2860, 0.3530), the same for the 3 channels;
// train augmentation: pad-crop by S/8 and horizontal flip. Classes: the largest label + 1 (at least
// 2), named "0", "1", ... or Fashion-MNIST's names. Errors, one line naming the file: truncated or
// corrupt (gzip or IDX), wrong magic number, images and labels counts that differ. The images are
// kept in memory as gray bytes (47 MB for Fashion-MNIST's training split).
// Where Debian's dataset-fashion-mnist package puts the four .gz files.
#define BNL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct bnl_idx_opts {
    int size;            // S (0 = the file's size)
    int fashion_names;   // 1: labels must be 0..9, named T-shirt/top, Trouser, ... Ankle boot
} bnl_idx_opts;

bnl_idx_opts bnl_idx_opts_default(void);
// Two files by path; messages name the path.
bnl_status bnl_dataset_idx(bnl_dataset **out, const char *images, const char *labels, const bnl_idx_opts *o);
// dir/train-images-idx3-ubyte[.gz] + dir/train-labels-idx1-ubyte[.gz] (train = 1) or the t10k-*
// pair (train = 0), the names MNIST and Fashion-MNIST are distributed under (.gz preferred).
bnl_status bnl_dataset_mnist(bnl_dataset **out, const char *dir, int train, const bnl_idx_opts *o);
// The same from bytes (copied); the names are used in error messages (NULL: generic names).
bnl_status bnl_dataset_idx_from_buffer(bnl_dataset **out, const uint8_t *images, size_t images_len,
                                       const uint8_t *labels, size_t labels_len, const char *images_name,
                                       const char *labels_name, const bnl_idx_opts *o);

// Replaces the normalization of both the training and the eval augmentation (e.g. by a model's own
// mean/std). Call it before any batch: a dataset is read-only once batches are being drawn.
bnl_status bnl_dataset_set_normalization(bnl_dataset *d, const float mean[3], const float std[3]);

// ---------------------------------------------------------------------------------------------
// Batches. x[k] = (v/255 - mean[c]) / std[c] for each pixel value v of the (augmented) sample.
typedef struct bnl_augment {
    float mean[3], std[3];      // per RGB channel
    int flip;                   // 1: horizontal flip with probability 1/2
    int pad_crop;               // p > 0: pad by p zero pixels on each side, crop H x W at a random
                                //        offset (the CIFAR recipe uses 4)
    int random_resized_crop;    // 1: a random region of area [scale_min, 1] of the source image and
                                //    aspect ratio [3/4, 4/3], resized to H x W (torchvision's
                                //    RandomResizedCrop); replaces the eval resize + center crop
    float scale_min;            // 0.08 in torchvision; larger is kinder to small images
} bnl_augment;

// ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), no augmentation.
bnl_augment bnl_augment_none(void);
// The usual recipe for this dataset: per-dataset mean/std; train = 1 adds augmentation
// (procedural, CIFAR: pad_crop = size/8 and flip; ImageFolder: random_resized_crop and flip).
bnl_augment bnl_dataset_augment_default(const bnl_dataset *d, int train);

// x: (n,H,W,3) floats, labels: (n) (may be NULL), indices: (n) image indices (each < size).
// aug == NULL means bnl_augment_none(). Augmentation of image indices[k] is drawn from
// (seed, indices[k]) only: pass a different seed each epoch. Images are produced in parallel
// (OpenMP, bnl_set_threads); results do not depend on the thread count.
bnl_status bnl_dataset_get_batch(const bnl_dataset *d, float *x, int64_t *labels, const size_t *indices,
                                 size_t n, const bnl_augment *aug, uint64_t seed);

// The un-normalized, un-augmented sample i as bytes, rgb: (H,W,3) (for display and checks).
bnl_status bnl_dataset_get_image_u8(const bnl_dataset *d, uint8_t *rgb, size_t i);

// perm: (n) a permutation of 0..n-1 drawn from (seed, epoch) (Fisher-Yates, splitmix64).
bnl_status bnl_dataset_permutation(size_t *perm, size_t n, uint64_t seed, uint64_t epoch);

#ifdef __cplusplus
}
#endif
#endif
