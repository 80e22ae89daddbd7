// Internal to src/train/: the state of one training run and the functions its files share.
//   train.c       configuration, model, evaluation and the loop (train_step, end_epoch)
//   schedule.c    the learning-rate schedule
//   checkpoint.c  checkpoints: save/load (atomic), resume; the only file that knows `optimizer.*`
//   runmeta.c     the run's metadata: train.* keys, metrics.csv, batch dumps
//   data.c        --data strings -> datasets (shared with bnlab precise-bn), subsets
// Sizes: B images per rank and step, K ranks, GB = K*B global batch, H,W image size, C classes.
#ifndef BNL_TRAIN_INTERNAL_H
#define BNL_TRAIN_INTERNAL_H
#include "train/train.h"

#include "core/common.h"
#include "io/dataset.h"

#include <stddef.h>
#include <stdint.h>

#define TR_MAX_KV 48
#define TR_VAL_LEN 512

typedef struct tr_run {
    const bnl_train_config *cfg;
    bnl_dist *dist;
    const bnl_train_hooks *hooks;
    int rank, K;
    // data
    bnl_dataset *train, *val;
    size_t *train_map, *val_map;   // subsets (NULL: identity)
    size_t n_train, n_val;
    int H, W, C;
    bnl_augment aug_train, aug_val;
    char *labels_json;
    // model
    bnl_resnet *m;
    char arch[64];
    bnl_schedule sched;
    int64_t spe, total, limit;
    // metrics
    char **rows;
    size_t nrows, caprows;
    double best_top1;
    int best_epoch;
    int64_t ckpt_step;   // the step of the last checkpoint on disk
    // paths
    char last_path[1100], best_path[1100], model_path[1100], metrics_path[1100];
    // metadata
    const char *kv[2 * TR_MAX_KV];
    char kv_buf[TR_MAX_KV][TR_VAL_LEN];
    size_t nkv;
    // on failure: 1 on the rank that should print bnl_last_error(); 1 when the other ranks can only be ended
    int report, abort_ranks;
} tr_run;

// train.c: small helpers
double tr_now_s(void);
uint64_t tr_mix64(uint64_t a, uint64_t b);
int tr_file_exists(const char *path);
bnl_status tr_mkdir_p(const char *dir);
int tr_all_finite(const float *p, size_t n);
void tr_note(tr_run *r, const char *fmt, ...) BNL_PRINTF(2, 3);

// schedule.c: the schedule of this run (after r->spe and r->total are known)
void tr_schedule_init(tr_run *r);

// checkpoint.c
bnl_status tr_load_resume(tr_run *r, int64_t *step);   // DIR/last.safetensors into r->m, its step
bnl_status tr_verify_resume(const tr_run *r);          // it was trained with this configuration
bnl_status tr_save_last(tr_run *r, int64_t step);      // model + momentum + metadata
bnl_status tr_save_model(tr_run *r, const char *path, int64_t step);   // model + metadata

// runmeta.c
void tr_kv_set(tr_run *r, const char *key, const char *fmt, ...) BNL_PRINTF(3, 4);
const char *tr_kv_get(const tr_run *r, const char *key);
void tr_set_config_meta(tr_run *r);
void tr_set_state_meta(tr_run *r, int64_t step);
bnl_status tr_labels_json(tr_run *r);                   // r->labels_json from the training split's class names
bnl_status tr_metrics_add(tr_run *r, const bnl_train_epoch *row);
bnl_status tr_metrics_write(tr_run *r);
bnl_status tr_metrics_load(tr_run *r, int64_t upto);   // the rows of an earlier metrics.csv up to a step
bnl_status tr_dump_batch(const tr_run *r, int64_t step, const float *x, const int64_t *labels);

// data.c
bnl_status tr_open_data(tr_run *r);
void tr_batch_indices(size_t *dst, const size_t *src, size_t n, const size_t *map);
#endif
