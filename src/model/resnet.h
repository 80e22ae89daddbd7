// torchvision ResNet (v1.5: stride on the 3x3 conv of bottlenecks) in NHWC. The architecture comes
// from a spec (bnl_resnet_create) or from a safetensors state dict (io/statedict.h: blocks per
// stage, basic or bottleneck, widths, class count).
//
//     bnl_resnet *m;
//     if (bnl_resnet_load_file(&m, "resnet50.safetensors") != BNL_OK) puts(bnl_last_error());   // io/statedict.h
//     bnl_resnet_set_training(m, 0);                        // eval: running statistics
//     bnl_resnet_forward(m, logits, x, N, 224, 224);        // x: (N,224,224,3), logits: (N,classes)
//     bnl_sgd sgd = bnl_sgd_default(); sgd.lr = 0.1f;
//     bnl_resnet_step(m, &loss, x, N, 224, 224, labels, &sgd);   // train-mode step
//     bnl_resnet_save_file(m, "out.safetensors");
//     bnl_resnet_free(m);                                   // whoever loads, frees
//
// Three parts (model/resnet_internal.h): a LAYOUT (layer tables and offsets, built in one walk), a
// STATE (parameters, running statistics, num_batches_tracked, metadata; gradients and SGD momentum,
// three buffers of one layout for one flat update loop, allocated on the first training step or
// request), and a CONTEXT (train/eval switch, BatchNorm config, norm kind, ISA, activation plan,
// last batch statistics, packed eval weights, sync buffers) that borrows the state. A bnl_resnet
// handle is a context; bnl_resnet_clone_context makes another one over the same state.
// Activations are planned once per batch shape and reused; a forward without backward keeps only
// three ping-pong buffers.
//
// Argument order, as in bnlab.h: the handle, then outputs, then inputs (constructors: the new
// handle first).
#ifndef BNL_RESNET_H
#define BNL_RESNET_H
#include "bnlab.h"

#define BNL_MAX_STAGES 8

typedef struct bnl_resnet bnl_resnet;

typedef struct bnl_resnet_info {
    int num_stages;
    int blocks[BNL_MAX_STAGES];       // blocks per stage, e.g. 3,4,6,3
    int widths[BNL_MAX_STAGES];       // output channels of each stage (256,512,1024,2048 for R50)
    int bottleneck;                   // 1: bottleneck blocks, 0: basic blocks
    int stem_width;                   // conv1 output channels (64)
    int in_channels;                  // conv1 input channels (3)
    int num_classes;
    int num_features;                 // fc input (2048 for R50)
    int num_bn;                       // BatchNorm layers, stem to last block
    size_t num_params;                // learnable parameters (conv, BN affine, fc)
    size_t num_stats;                 // running statistics values (means and variances)
    int norm;                         // bnl_norm kind (see bnl_resnet_set_norm; parameters: bnl_resnet_norm_spec)
} bnl_resnet_info;

typedef struct bnl_sgd {
    float lr;
    float momentum;            // PyTorch SGD: buf = momentum*buf + grad (first step: buf = grad)
    float weight_decay;        // grad += weight_decay * param, before momentum
    int nesterov;
    int no_decay_bn_bias;      // 1: no weight decay on BatchNorm parameters and the fc bias
} bnl_sgd;

bnl_sgd bnl_sgd_default(void);   // lr 0.1, plain SGD: no momentum, no decay

// A new torchvision-style ResNet with torchvision's initialization (Kaiming-normal fan_out convs,
// BN gamma 1 beta 0, running 0/1, fc uniform(+-1/sqrt(F))), deterministic from seed.
typedef struct bnl_resnet_spec {
    int num_stages;
    int blocks[BNL_MAX_STAGES];   // e.g. 3,4,6,3
    int inner_widths[BNL_MAX_STAGES];   // bottleneck: 64,128,256,512 (stage outputs, info.widths, are 4x)
    int bottleneck;
    int stem_width;               // 64
    int in_channels;              // 3
    int num_classes;
} bnl_resnet_spec;
// Fills spec for a named torchvision depth (18, 34, 50, 101, 152) at width_mult (1.0 = torchvision).
bnl_status bnl_resnet_spec_named(bnl_resnet_spec *spec, int depth, float width_mult, int num_classes);
bnl_status bnl_resnet_create(bnl_resnet **out, const bnl_resnet_spec *spec, uint64_t seed);
// Loading and saving state dicts: io/statedict.h.

// A second context over m's state: parameters, running statistics and num_batches_tracked are the
// same memory (weights are not copied; an SGD step through either is seen by both, and each
// context's eval cache notices it). The new context starts in eval mode with m's BatchNorm config,
// norm kind and ISA, and with update_running 0: its train-mode forwards normalize with batch
// statistics as usual but move a private copy of the running statistics (taken from the state at
// the start of each forward), never the shared ones. Its batch statistics, plan and caches are its
// own. Free each handle with bnl_resnet_free; the state goes with the last one.
bnl_status bnl_resnet_clone_context(bnl_resnet **out, const bnl_resnet *m);
// 1 (loads and creates): train-mode forwards move the state's running statistics. 0: they move the
// context's private copy instead (what the state holds is what eval mode and bn_stats show).
bnl_status bnl_resnet_set_update_running(bnl_resnet *m, int update);
int bnl_resnet_update_running(const bnl_resnet *m);
// The ISA whose GEMM kernels the context's packed eval weights are for (default: bnl_isa_active()
// when the context was made; BNL_ERR_UNSUPPORTED if not available). Train-mode kernels use the
// process-wide choice (bnl_isa_force).
bnl_status bnl_resnet_set_isa(bnl_resnet *m, bnl_isa isa);
bnl_isa bnl_resnet_isa(const bnl_resnet *m);
void bnl_resnet_free(bnl_resnet *m);

const bnl_resnet_info *bnl_resnet_get_info(const bnl_resnet *m);
const char *bnl_resnet_meta(const bnl_resnet *m, const char *key);   // __metadata__ value or NULL

// What the "bn" layers do. BNL_NORM_BATCH (every loaded or created model): BatchNorm. BNL_NORM_NONE:
// the network without normalization, for comparison: each "bn" layer is a learnable per-channel
// affine y = gamma*x + beta (+ReLU), identical in train and eval mode; running statistics are
// neither used nor updated (they keep their values and are still saved). The others (kernels in
// bnlab.h): BNL_NORM_GROUP, GroupNorm with `groups` groups per layer (the same in train and eval;
// no running statistics: a file holds bnK.weight/bias only, torchvision's
// resnet50(norm_layer=lambda c: nn.GroupNorm(G, c)) names); BNL_NORM_RENORM, Batch Renormalization
// with fixed renorm_rmax/renorm_dmax; BNL_NORM_GHOST, Ghost BatchNorm over virtual batches of
// `virtual_batch` images; BNL_NORM_FROZEN, BatchNorm whose running statistics are used in training
// too and never updated. Saves record the kind as __metadata__ "bnlab.norm" ("none", "group:G",
// "renorm" with "bnlab.renorm_rmax"/"bnlab.renorm_dmax", "ghost:V", "frozen"; BatchNorm: no key),
// and loads honour those keys ("batch" or absent: BatchNorm).
typedef enum {
    BNL_NORM_BATCH = 0,
    BNL_NORM_NONE = 1,
    BNL_NORM_GROUP = 2,
    BNL_NORM_RENORM = 3,
    BNL_NORM_GHOST = 4,
    BNL_NORM_FROZEN = 5,
} bnl_norm;
typedef struct bnl_norm_spec {
    bnl_norm kind;
    int groups;          // BNL_NORM_GROUP: G (must divide every layer's channels)
    int virtual_batch;   // BNL_NORM_GHOST: V images per virtual batch (must divide the training batch)
    float renorm_rmax, renorm_dmax;   // BNL_NORM_RENORM: r clipped to [1/rmax, rmax], d to [-dmax, dmax]
} bnl_norm_spec;
#define BNL_RENORM_RMAX_DEFAULT 3.0f   // the paper's final values (Ioffe 2017, section 4.1)
#define BNL_RENORM_DMAX_DEFAULT 5.0f
// Parses the "bnlab.norm" strings: batch, none, group:G, renorm, ghost:V, frozen (renorm gets the
// default rmax/dmax). BNL_ERR_ARG with a message naming the string otherwise.
bnl_status bnl_norm_parse(bnl_norm_spec *out, const char *s);
// The "bnlab.norm" string of a spec ("batch" for BatchNorm) into buf (always terminated).
void bnl_norm_format(const bnl_norm_spec *spec, char *buf, size_t cap);
// Kinds that need no parameter (batch, none, renorm with the defaults, frozen); group and ghost
// need bnl_resnet_set_norm_spec. BNL_ERR_ARG if the groups do not divide a layer's channels.
bnl_status bnl_resnet_set_norm(bnl_resnet *m, bnl_norm norm);
bnl_status bnl_resnet_set_norm_spec(bnl_resnet *m, const bnl_norm_spec *spec);
bnl_norm bnl_resnet_norm(const bnl_resnet *m);
bnl_norm_spec bnl_resnet_norm_spec(const bnl_resnet *m);
// Per-layer values of the last train-mode forward beyond BatchNorm's (pointers valid until the
// next forward or free; BNL_ERR_ARG if the kind has none or no forward has run): GroupNorm's
// per-sample group statistics mean/var (n_images x groups, row-major; from the last forward in
// either mode, as GroupNorm has no other), Renorm's r and d (C each), Ghost's per-virtual-batch
// mean/var ((N/V) x C). rows x cols is what the arrays hold.
typedef struct bnl_norm_view {
    int rows, cols;
    const float *a, *b;   // group: mean, var; renorm: r, d; ghost: mean, var
} bnl_norm_view;
bnl_status bnl_resnet_norm_stats(const bnl_resnet *m, bnl_norm_view *out, int i);
// torchvision's zero_init_residual: gamma of the last "bn" of every block set to 0, so each residual
// branch starts at zero and every block at the identity. With BNL_NORM_NONE this is SkipInit (De &
// Smith 2020), the usual way to make a deep ResNet trainable without normalization.
void bnl_resnet_zero_init_residual(bnl_resnet *m);

// A counter of the model state's writes: it changes whenever the parameters or the running
// statistics may have changed (a step, a train-mode forward that updates the running statistics,
// PreciseBN, a *_mut writer, a load), through any context over that state, and never otherwise.
// Equal counters: every forward of the same input gives the same bits (callers cache on it).
uint64_t bnl_resnet_state_version(const bnl_resnet *m);

// One switch for every BatchNorm layer (nnx .train()/.eval()).
void bnl_resnet_set_training(bnl_resnet *m, int training);
int bnl_resnet_training(const bnl_resnet *m);
// BatchNorm momentum (Flax convention), eps, running-variance rule, cumulative average. Relu
// fusion is the model's own business and is ignored here.
bnl_status bnl_resnet_set_bn_config(bnl_resnet *m, const bnl_bn_config *cfg);
bnl_bn_config bnl_resnet_bn_config(const bnl_resnet *m);

// logits: (N, classes), x: (N,H,W,in_channels) NHWC float32, already normalized.
// Train mode uses batch statistics and updates the running ones; eval mode only reads them.
bnl_status bnl_resnet_forward(bnl_resnet *m, float *logits, const float *x, int N, int H, int W);
// Train mode only: the forward up to and including BatchNorm layer `stop` (bnl_resnet_bn_name
// order), for a view of that layer: its batch statistics and those of every layer before it are
// computed and their running statistics updated, exactly as a full forward would; later layers keep
// what an earlier forward left (their running statistics do not move). No logits.
bnl_status bnl_resnet_forward_to(bnl_resnet *m, const float *x, int N, int H, int W, int stop);
// Train mode: the forward up to the input of BatchNorm layer `layer` (earlier layers exactly as in
// forward_to, so their running statistics move; `layer` itself does not run). Copies channel c of
// that input (the convolution's output before BatchNorm, N*H*W values in NHWC order) to out (cap floats,
// *n written); gbe: that channel's gamma, beta and the layers' eps.
bnl_status bnl_resnet_bn_input(bnl_resnet *m, float *out, size_t cap, size_t *n, float gbe[3], const float *x, int N,
                               int H, int W, int layer, int c);
// Train mode: a whole forward (as bnl_resnet_forward, logits written) that also copies out what
// bnl_resnet_bn_input gives for (layer, c), bit for bit: one forward instead of two.
bnl_status bnl_resnet_forward_bn_input(bnl_resnet *m, float *logits, float *out, size_t cap, size_t *n, float gbe[3],
                                       const float *x, int N, int H, int W, int layer, int c);

// Train-mode forward + softmax cross-entropy (mean over the batch) + backward: gradients are
// overwritten (zero-grad is part of it). *loss gets the loss; logits (may be NULL) the logits.
bnl_status bnl_resnet_forward_backward(bnl_resnet *m, float *loss, float *logits, const float *x, int N,
                                       int H, int W, const int64_t *labels);
// One SGD update from the current gradients.
bnl_status bnl_resnet_sgd_update(bnl_resnet *m, const bnl_sgd *opt);
// forward_backward then sgd_update, in train mode whatever the switch says (restored after).
bnl_status bnl_resnet_step(bnl_resnet *m, float *loss, const float *x, int N, int H, int W,
                           const int64_t *labels, const bnl_sgd *opt);

// Flat views of the state: count floats each; gradients all-reduce as one buffer. Read-only views:
const float *bnl_resnet_params(const bnl_resnet *m, size_t *count);
const float *bnl_resnet_stats(const bnl_resnet *m, size_t *count);   // running means and variances
// Writable views. Eval mode runs on a cache per context: conv weights with their BatchNorm folded
// in, packed for the GEMM. It is rebuilt after load, sgd_update, a train-mode forward that moves
// the state's running statistics, set_running_stats, set_bn_config, and when a *_mut view is handed
// out (which therefore marks the state changed for every context). Writing through a pointer taken
// earlier, after an eval forward: call bnl_resnet_params_changed before the next forward.
float *bnl_resnet_params_mut(bnl_resnet *m, size_t *count);
float *bnl_resnet_stats_mut(bnl_resnet *m, size_t *count);
// Gradients and SGD momentum: allocated (zero) on first use; NULL if that allocation fails. They
// feed no cache.
float *bnl_resnet_grads(bnl_resnet *m, size_t *count);
float *bnl_resnet_momentum(bnl_resnet *m, size_t *count);
void bnl_resnet_params_changed(bnl_resnet *m);

// BatchNorm layers, in order from the stem: names as in the state dict ("bn1", "layer1.0.bn1", ...).
int bnl_resnet_bn_count(const bnl_resnet *m);
const char *bnl_resnet_bn_name(const bnl_resnet *m, int i);
int bnl_resnet_bn_find(const bnl_resnet *m, const char *name);   // -1 if absent
// The batch statistics of the last train-mode forward (batch_var biased; zeros before any) and
// the running statistics. Pointers stay valid until the next forward or free.
typedef struct bnl_bn_view {
    int channels;
    const float *batch_mean, *batch_var, *running_mean, *running_var;
    int64_t num_batches_tracked;
    int has_batch;   // a train-mode forward has run since load
} bnl_bn_view;
// The running statistics are the state's (shared by every context over it); the batch statistics
// this context's.
bnl_status bnl_resnet_bn_stats(const bnl_resnet *m, bnl_bn_view *out, int i);
// Replaces layer i's running mean and variance (`channels` values each; read them back with
// bnl_resnet_bn_stats). BNL_ERR_ARG: a norm kind without running statistics (none, group), a wrong
// channel count, a non-finite value or a negative variance; nothing changes then. Invalidates the
// eval cache.
bnl_status bnl_resnet_set_running_stats(bnl_resnet *m, int i, const float *mean, const float *var, int channels);
// PreciseBN (Wu & Johnson 2021): every layer's running statistics replaced by the exact statistics
// of K train-mode batches taken together. begin; add each batch (one train-mode forward up to the
// last BatchNorm layer; the model's running statistics, num_batches_tracked, parameters and
// train/eval switch do not move, its last-batch views in bn_stats do); end sets, per layer and
// channel, mean = the mean over all K batches' activations and var = their pooled (biased)
// variance, merged in double with Chan's formula (= mean of the within-batch variances + variance
// of the batch means, weighted by batch size). Batches may differ in N, not in H x W. Plain
// BatchNorm only (BNL_ERR_ARG otherwise). Free the accumulator with bnl_precise_bn_free.
typedef struct bnl_precise_bn bnl_precise_bn;
bnl_status bnl_precise_bn_begin(bnl_precise_bn **out, const bnl_resnet *m);
bnl_status bnl_precise_bn_add(bnl_precise_bn *p, bnl_resnet *m, const float *x, int N, int H, int W);
bnl_status bnl_precise_bn_end(bnl_precise_bn *p, bnl_resnet *m);
void bnl_precise_bn_free(bnl_precise_bn *p);

// Synchronized BatchNorm (data-parallel training over `replicas` model copies). fn gathers: every
// replica passes n doubles in `mine` and receives every replica's n doubles in `all`, replica r's at
// all + r*n (an MPI_Allgather). One call per BatchNorm layer in the forward (count, mean and M2 per
// channel, merged with Chan's formula in replica order) and one per layer in the backward (the
// count and two sums per channel, added in replica order): every replica gets the same bits, the
// statistics of the global batch. NULL turns it off. BNL_ERR_NOMEM (and synchronization stays off)
// if the gather buffer cannot be allocated.
typedef bnl_status (*bnl_allgather_fn)(void *ctx, const double *mine, double *all, size_t n);
bnl_status bnl_resnet_set_sync_bn(bnl_resnet *m, bnl_allgather_fn fn, void *ctx, int replicas);
// Called by forward_backward while its backward runs, each time the gradients of params [lo, np)
// are final (after the fc, after each residual block, lo = 0 after the stem), so that data-parallel
// training can start reducing them. NULL turns it off. With a hook or synchronized BatchNorm set,
// a non-finite loss still runs the whole backward (every collective the other replicas make) and
// then returns BNL_ERR_NUMERIC.
typedef void (*bnl_grad_ready_fn)(void *ctx, size_t lo);
void bnl_resnet_set_grad_hook(bnl_resnet *m, bnl_grad_ready_fn fn, void *ctx);

#endif
