// The model card: what a loaded ResNet expects as input and what its outputs mean, read from the
// file's __metadata__ where it says so and assumed otherwise, with the reason either way.
//
//   bnl_model_card card;
//   bnl_model_card_get(&card, model);        // never fails: malformed values fall back, with a note
//   card.input_h, card.mean[c], card.labels.from == BNL_FROM_FILE ...
//
// Keys (see CONTRACT.md): input_size (JSON [3, H, W], timm's convention; a bare integer N is read as
// N x N), mean and std (JSON arrays of 3 numbers, std > 0), labels (JSON array of one name per class),
// train.data (the dataset it was trained on, as `bnlab train --data` spells it).
// A 1000-class model without a key is taken as an ImageNet model for that key: 224 x 224, ImageNet
// mean/std, the ImageNet class names, trained on ImageNet. A key that is present but malformed is
// not an error (the weights are fine): the card falls back as if it were absent and says why in
// `problem`, so the CLI and the page show it.
#ifndef BNL_MODEL_CARD_H
#define BNL_MODEL_CARD_H
#include "model/resnet.h"

typedef enum {
    BNL_FROM_FILE = 0,      // read from __metadata__
    BNL_FROM_ASSUMED = 1,   // not in the file (or malformed): assumed, see why
} bnl_card_from;

typedef struct bnl_card_field {
    bnl_card_from from;
    char why[160];          // where the value came from, in words
    char problem[200];      // non-empty when the file had the key but it was unusable
} bnl_card_field;

typedef enum {
    BNL_LABELS_FILE = 0,       // names from __metadata__ "labels"
    BNL_LABELS_IMAGENET = 1,   // the 1000 ImageNet class names (assumed)
    BNL_LABELS_NONE = 2,       // no names known: "class k"
} bnl_card_labels;

typedef struct bnl_model_card {
    int input_h, input_w;
    bnl_card_field input_size;
    double mean[3], std[3];   // as the file wrote them (JSON numbers are doubles)
    bnl_card_field mean_src, std_src;
    bnl_card_labels labels_kind;
    bnl_card_field labels;
    char train_data[128];   // "procedural", "fashion-mnist", "imagenet", ...; "" when unknown
    bnl_card_field train;
    int imagenet;           // 1000 classes: the ImageNet assumptions apply to absent keys
} bnl_model_card;

// Fills the card of a loaded model. Always succeeds for a valid model.
void bnl_model_card_get(bnl_model_card *card, const bnl_resnet *m);

// The card as one JSON object (malloc'd, caller frees), for the wasm bridge:
// {"inputSize":[3,H,W],"mean":[..],"std":[..],"labels":"file"|"imagenet"|"none","trainData":"..."|null,
//  "provenance":{"inputSize":{"from":"file"|"assumed","why":"...","problem":"..."?}, "mean":..., "std":...,
//  "labels":..., "trainData":...}}. NULL when out of memory.
char *bnl_model_card_json(const bnl_model_card *card);

#endif
