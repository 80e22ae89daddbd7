// Native training: SGD on a dataset, data parallel under MPI, with checkpoints and exact resume.
//
//     bnl_dist *dist;                                   // MPI when launched by mpirun, else one rank
//     if (bnl_dist_init(&dist, &argc, &argv) != BNL_OK) puts(bnl_last_error());
//     bnl_train_config cfg = bnl_train_config_default();
//     cfg.out_dir = "runs/r18"; cfg.epochs = 2; cfg.batch_size = 32;
//     bnl_train_result res;
//     if (bnl_train_run(&cfg, dist, NULL, &res) != BNL_OK && res.report_error) puts(bnl_last_error());
//     bnl_dist_finalize(dist);                          // whoever inits, finalizes
//
// One step: each rank assembles its slice of the global batch (rank r takes images
// [r*B, r*B+B) of the global batch of K*B, drawn from a permutation of the training set by
// (seed, epoch)), runs forward+backward, the gradients are summed over ranks and divided by K,
// and every rank applies the same SGD update: the weights stay identical everywhere.
//
// Files in out_dir (written by rank 0 only, each one atomically):
//   last.safetensors   after every epoch (and once before the first): the model in torchvision
//                      names, the SGD momentum as one flat F32 tensor `optimizer.momentum`, and
//                      `train.*` metadata (step, epoch, seed, every hyperparameter a resume must
//                      agree with). A resume from it continues bit for bit.
//   best.safetensors   the model (no optimizer state) with the best validation top-1 so far.
//   model.safetensors  the final model, with class names in __metadata__ "labels" (a JSON array).
//   metrics.csv        epoch,step,lr,train_loss,train_acc,val_loss,val_top1,val_top5,images_per_s,seconds
#ifndef BNL_TRAIN_H
#define BNL_TRAIN_H
#include "bnlab.h"
#include "model/resnet.h"

#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// Learning-rate schedule, computed for every step.
typedef enum { BNL_SCHED_COSINE = 0, BNL_SCHED_STEP = 1 } bnl_sched_kind;

#define BNL_MAX_MILESTONES 16

typedef struct bnl_schedule {
    bnl_sched_kind kind;
    double base_lr;
    int64_t steps_per_epoch;
    int64_t total_steps;      // epochs * steps_per_epoch
    int64_t warmup_steps;     // linear warmup: step t < warmup gets base * (t+1)/warmup
    // cosine: after warmup, base * (1 + cos(pi * (t - warmup)/(total - warmup))) / 2
    // step: base * gamma^d, d = epochs passed (t / steps_per_epoch) divided by step_every
    //       (StepLR) or, when step_every is 0, the number of milestones <= that epoch (MultiStepLR)
    int step_every;
    int n_milestones;
    int milestones[BNL_MAX_MILESTONES];
    double gamma;
} bnl_schedule;

// lr of global step t (0-based).
double bnl_schedule_lr(const bnl_schedule *s, int64_t t);

// ---------------------------------------------------------------------------------------------
// Ranks. Without MPI (or when not launched by mpirun) there is one rank and every call is cheap.
typedef struct bnl_dist bnl_dist;

// 1 if the environment says this process was started by an MPI launcher (mpirun, srun, hydra).
int bnl_dist_launched(void);
// The rank the launcher gave this process (from the environment, before any MPI call), 0 if none.
int bnl_dist_env_rank(void);
// 1 if this build has MPI support.
int bnl_dist_available(void);
// Calls MPI_Init only when launched by an MPI launcher. A launch of more than one process on a
// build without MPI returns BNL_ERR_UNSUPPORTED. Whoever inits calls bnl_dist_finalize.
bnl_status bnl_dist_init(bnl_dist **out, int *argc, char ***argv);
void bnl_dist_finalize(bnl_dist *d);
int bnl_dist_rank(const bnl_dist *d);
int bnl_dist_size(const bnl_dist *d);
int bnl_dist_local_size(const bnl_dist *d);   // ranks on this node
// In-place sums over ranks.
bnl_status bnl_dist_sum_f32(bnl_dist *d, float *buf, size_t n);
bnl_status bnl_dist_sum_f64(bnl_dist *d, double *buf, size_t n);
bnl_status bnl_dist_bcast_f32(bnl_dist *d, float *buf, size_t n, int root);
// The lowest rank that passes ok == 0, or -1 when every rank is ok. A collective: every rank calls it.
int bnl_dist_first_failure(bnl_dist *d, int ok);
// 1 if every rank passes the same value.
int bnl_dist_same_u64(bnl_dist *d, uint64_t v);
// Data-parallel steps of m over all ranks (no-op with one rank). The gradients are summed over
// ranks in buckets of fixed ranges, each started (MPI_Iallreduce) as soon as the backward has
// finished it (bnl_resnet_set_grad_hook); with sync_bn every BatchNorm layer uses the statistics
// of the global batch, one MPI_Allgather per layer in the forward and one in the backward
// (bnl_resnet_set_sync_bn). Every step: bnl_dist_step_begin, forward_backward, bnl_dist_step_end.
bnl_status bnl_dist_attach(bnl_dist *d, bnl_resnet *m, int sync_bn);
void bnl_dist_step_begin(bnl_dist *d);
// After forward_backward (ok: it succeeded here): waits for the gradient sums (the gradients then
// hold the SUM over ranks) and, in one collective, learns every rank's ok and the sums over ranks
// of sums[0..2) (in: this rank's, out: the totals, added in rank order; may be NULL). Returns the
// lowest rank whose step failed, -1 when none did, or BNL_DIST_STUCK when this rank's backward did
// not run to its end (a failure in the middle of the step): the other ranks then wait in a
// collective this rank cannot join, and only bnl_dist_abort ends them; also when a wait in this
// step's collectives ran past BNLAB_MPI_TIMEOUT seconds (default 600; another rank hangs). A step that fails on one
// rank with a non-finite loss runs its whole backward (forward_backward does that) and is released
// cleanly; a rank whose batch could not be read runs the step on any batch, then passes ok = 0.
#define BNL_DIST_STUCK (-2)
int bnl_dist_step_end(bnl_dist *d, int ok, double sums[2]);
// Seconds this rank spent in communication it waited for (collectives, bucket waits) since init.
double bnl_dist_comm_seconds(const bnl_dist *d);
// Gradient buckets of the attached model (0 with one rank); *early: how many of them the last step
// started while its backward still ran (the rest start at its end).
int bnl_dist_buckets(const bnl_dist *d, int *early);
// Ends every rank (MPI_Abort); for a rank that cannot release the others. No-op with one rank.
void bnl_dist_abort(bnl_dist *d, int code);

// ---------------------------------------------------------------------------------------------
// Checkpoints: the model (bnl_resnet_add_to_writer), `optimizer.momentum` (F32 [num_params])
// when with_momentum, and the metadata pairs kv[0..2*nkv) (key, value, key, value, ...). Atomic.
bnl_status bnl_checkpoint_save(bnl_resnet *m, const char *path, int with_momentum, const char *const *kv,
                               size_t nkv);
// 1 if `name` is a tensor a checkpoint carries beside the model (the optimizer's state, `optimizer.*`):
// what a model loader reading a checkpoint as weights should skip.
int bnl_checkpoint_owns_tensor(const char *name);
// Loads a checkpoint written by bnl_checkpoint_save(with_momentum = 1): the model with its
// metadata (bnl_resnet_meta) and the momentum buffer. The caller frees *out.
bnl_status bnl_checkpoint_load(bnl_resnet **out, const char *path);

// ---------------------------------------------------------------------------------------------
// Data: the --data strings of `bnlab train` (and `bnlab precise-bn`, which reads the same splits).
struct bnl_dataset;
typedef enum { BNL_DATA_PROCEDURAL = 0, BNL_DATA_CIFAR10, BNL_DATA_FOLDER, BNL_DATA_IDX } bnl_data_kind;

typedef struct bnl_data_spec {
    bnl_data_kind kind;
    const char *dir;     // points into the parsed string (IDX without a DIR: BNL_FASHION_MNIST_DIR); NULL for procedural
    int fashion;         // IDX: Fashion-MNIST's class names
} bnl_data_spec;

// "procedural", "cifar10:DIR", "folder:DIR" (DIR/train, DIR/val), "fashion-mnist[:DIR]", "mnist:DIR";
// anything else (or an empty DIR) is BNL_ERR_ARG "--data: expected ..., got '<spec>'".
bnl_status bnl_data_spec_parse(bnl_data_spec *out, const char *spec);

typedef struct bnl_data_opts {
    int classes;         // procedural: 2..16 (0 = 10)
    int image_size;      // procedural (0 = 32), folder (0 = 224), IDX (0 = the files' size); CIFAR-10: 0 or 32
    size_t count;        // procedural: images (0 = 10000 for the training split, 2000 for validation)
    uint64_t seed;       // procedural: the images (the validation split draws from a seed derived from it)
} bnl_data_opts;

// Opens one split of a parsed spec (train = 1: training, 0: validation). The caller frees *out.
bnl_status bnl_data_open(struct bnl_dataset **out, const bnl_data_spec *spec, int train, const bnl_data_opts *o);

// ---------------------------------------------------------------------------------------------
// A training run.
typedef struct bnl_train_config {
    // data
    const char *data;          // "procedural", "cifar10:DIR", "folder:DIR" (DIR/train, DIR/val),
                               // "fashion-mnist[:DIR]" or "mnist:DIR" (IDX files, bnl_dataset_mnist)
    int classes;               // procedural: 2..16 (0 = 10)
    int image_size;            // procedural (0 = 32), folder (0 = 224), IDX (0 = the files' size)
    size_t train_size;         // procedural: images (0 = 10000); others: a fixed random subset (0 = all)
    size_t val_size;           // procedural: images (0 = 2000; use no_val for none); others as above
    int no_val;                // 1: no validation split (no eval, no best.safetensors)
    uint64_t data_seed;        // procedural images (validation: a derived seed) and subsets
    int augment;               // 1: the dataset's training augmentation (crop + flip)
    // model
    int depth;                 // 18, 34, 50, 101, 152
    float width_mult;          // 1 = torchvision
    const char *init;          // start from these weights instead (NULL: fresh, from seed)
    bnl_norm_spec norm;        // normalization of a fresh model (bnl_norm_parse: batch, none, group:G, renorm, ghost:V, frozen)
    int zero_init_residual;    // fresh model: the last gamma of every block starts at 0
    // optimization
    int epochs;
    int batch_size;            // per rank
    double lr, sgd_momentum, weight_decay;
    int no_decay_bn_bias;
    bnl_sched_kind schedule;
    int step_every, n_milestones, milestones[BNL_MAX_MILESTONES];
    double step_gamma;
    double warmup_epochs;
    float bn_momentum;         // Flax convention (0.9)
    int unbiased;              // running variance rule
    int sync_bn;               // synchronized BatchNorm over ranks
    int nudge_input;           // testing: every input value one ulp up (a float32 perturbation of the run)
    const char *dump_batches;  // testing: a directory; each step's batch (this rank's slice) is written there
    uint64_t seed;             // initialization, data order, augmentation
    // run
    const char *out_dir;
    int resume;
    int eval_every;            // evaluate every N epochs and after the last (0: after the last only)
    int64_t max_steps;         // stop after this many global steps (0: no limit)
} bnl_train_config;

bnl_train_config bnl_train_config_default(void);

typedef struct bnl_train_info {     // what the run is about to do (for a header line)
    const char *arch;               // "resnet18" or the --init path
    size_t num_params;
    int num_classes, height, width, world_size, batch_size;
    size_t train_images, val_images;
    int64_t steps_per_epoch, total_steps, start_step;
    int epochs, threads;
} bnl_train_info;

typedef struct bnl_train_progress {
    int epoch, epochs;              // 1-based
    int64_t step_in_epoch, steps_per_epoch, global_step, total_steps;   // steps done
    double lr, loss, acc;           // loss and accuracy: means over this epoch so far
    double images_per_s, eta_s;
    double comm_ms;                 // mean per step over this epoch so far: time waiting in communication
} bnl_train_progress;

typedef struct bnl_train_epoch {    // one row of metrics.csv
    int epoch;                      // 1-based
    int complete;                   // 0: stopped by max_steps inside the epoch
    int64_t step;                   // global steps done
    double lr, train_loss, train_acc;
    int has_val, best;
    double val_loss, val_top1, val_top5;
    double images_per_s, seconds;
    double comm_ms;                 // mean per step: time waiting in communication (0 with one rank)
} bnl_train_epoch;

// Called on rank 0 only. Any of them may be NULL.
typedef struct bnl_train_hooks {
    void *ctx;
    void (*on_start)(void *ctx, const bnl_train_info *info);
    void (*on_step)(void *ctx, const bnl_train_progress *p);
    void (*on_epoch)(void *ctx, const bnl_train_epoch *e);
    void (*on_note)(void *ctx, const char *line);
} bnl_train_hooks;

typedef struct bnl_train_result {
    int64_t steps_done;             // global steps done, including those before a resume
    int best_epoch;                 // 0 if never evaluated
    double best_val_top1;
    double last_train_loss;
    int report_error;               // on failure: 1 on the one rank that should print bnl_last_error()
    int abort_ranks;                // on failure: the other ranks wait in a collective; end them (bnl_dist_abort)
} bnl_train_result;

// Runs (or resumes) a training run. Every rank calls it with the same configuration; on failure
// every rank returns the same non-OK status (ranks agree before any collective goes astray).
bnl_status bnl_train_run(const bnl_train_config *cfg, bnl_dist *dist, const bnl_train_hooks *hooks,
                         bnl_train_result *out);

#endif
