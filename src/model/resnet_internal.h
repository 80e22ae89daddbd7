// The ResNet in three parts (internal to src/model and src/io/statedict.c):
//
//   layout   what the network is: the layer tables and where every layer's values sit in the flat
//            buffers. Built in one walk (layout.c): the same builder calls for a spec and for the
//            names of a state dict (io/statedict.c), and the float counts come from those calls.
//   state    the values: parameters, running statistics, num_batches_tracked, __metadata__, and
//            gradients and SGD momentum (allocated on first use). Shared by reference count.
//   context  how one user runs it: train/eval switch, BatchNorm config, norm kind, ISA, the
//            activation plan, the last batch statistics, the packed eval weights, the sync
//            buffers. It borrows a state. `struct bnl_resnet` (the public handle) IS a context;
//            bnl_resnet_clone_context makes a second one over the same state.
#ifndef BNL_RESNET_INTERNAL_H
#define BNL_RESNET_INTERNAL_H

#include "model/resnet.h"
#include "ops/ops.h"

#define BNL_NAME_LEN 64
#define BNL_NORM_META_KEY "bnlab.norm"
#define BNL_RMAX_META_KEY "bnlab.renorm_rmax"
#define BNL_DMAX_META_KEY "bnlab.renorm_dmax"

// ---------------------------------------------------------------------------------------------
// Layout

typedef struct {
    char name[BNL_NAME_LEN];   // "layer1.0.conv1" (".weight" appended in the file)
    int cin, cout, k, stride, pad;
    size_t w;                  // params offset of (cout,k,k,cin), OHWI
} bnl_lconv;

typedef struct {
    char name[BNL_NAME_LEN];   // "layer1.0.bn1"
    int C;
    int relu;                  // a ReLU follows directly: fused
    size_t gamma, beta;        // params offsets
    size_t rm, rv;             // stats offsets (running mean, running var)
    size_t bm, bv, bis;        // batch offsets (batch mean, batch var, invstd saved for backward)
} bnl_lbn;

typedef struct {
    int conv1, conv2, conv3, dconv;   // indices (conv3/dconv -1 if absent)
    int bn1, bn2, bn3, dbn;
    int cin, cout, stride;
} bnl_lblock;

typedef struct { size_t off, n; int decay; } bnl_lseg;

typedef struct bnl_layout {
    bnl_resnet_info info;   // info.norm is the context's (always 0 here)
    bnl_lconv *convs;       // conv c is followed by BatchNorm c (stem, then block order)
    int nconv, cap_conv;
    bnl_lbn *bns;
    int nbn, cap_bn;
    bnl_lblock *blocks;
    int nblocks, cap_block;
    bnl_lseg *segs;         // parameter segments, in order; decay 0: BN affine and fc bias
    int nseg, cap_seg;
    size_t fc_w, fc_b;
    size_t np, ns, nb;      // floats of params, running stats, batch stats
    int next_cin;           // while building: channels into the next block
} bnl_layout;

// The builder: begin, stem, then for each stage its blocks and end_stage, then head. Every
// layout (spec or file) is made by these calls only, in this order.
bnl_status bnl_layout_begin(bnl_layout **out);
bnl_status bnl_layout_stem(bnl_layout *L, int in_channels, int stem_width);
// Block `index` of stage `stage` (0-based): mid = inner width (bottleneck) or cout (basic). The
// block index is written to *bi.
bnl_status bnl_layout_block(bnl_layout *L, int stage, int index, int bottleneck, int mid, int cout, int has_down,
                            int *bi);
void bnl_layout_end_stage(bnl_layout *L, int stage, int nblocks);
bnl_status bnl_layout_head(bnl_layout *L, int num_classes);
bnl_status bnl_layout_from_spec(bnl_layout **out, const bnl_resnet_spec *spec);
void bnl_layout_free(bnl_layout *L);

// ---------------------------------------------------------------------------------------------
// State

typedef struct bnl_state {
    bnl_layout *L;          // owned
    float *params;          // L->np
    float *stats;           // L->ns: running means and variances
    float *grads, *mom;     // L->np each; NULL until first needed (bnl_state_need_grads)
    int64_t *tracked;       // L->nbn: num_batches_tracked per layer
    int has_tracked;        // the file had num_batches_tracked (saves write it back then)
    char **meta_k, **meta_v;
    size_t nmeta;
    uint64_t version;       // bumped by every write the library makes or is told of
    uint64_t pversion;      // bumped by writes that may touch the parameters (not the statistics alone)
    int refs;               // contexts borrowing it
} bnl_state;

// Takes L (freed with the state, also on failure). refs = 1.
bnl_status bnl_state_create(bnl_state **out, bnl_layout *L);
void bnl_state_release(bnl_state *st);   // refs--, freed at 0
bnl_status bnl_state_need_grads(bnl_state *st);
// Writes to the running statistics alone (the eval caches fold them in); everything else that may
// touch the parameters calls bnl_state_params_changed (the train-mode Winograd weights depend on it).
static inline void bnl_state_changed(bnl_state *st) { st->version++; }
static inline void bnl_state_params_changed(bnl_state *st) { st->version++, st->pversion++; }
const char *bnl_state_meta(const bnl_state *st, const char *key);
// Conv weights between torch's OIHW and bnlab's OHWI (K out, C in, R x R kernel).
void bnl_oihw_to_ohwi(float *dst, const float *src, int K, int C, int R);
void bnl_ohwi_to_oihw(float *dst, const float *src, int K, int C, int R);
// BNL_ERR_ARG naming `what` when the context's norm kind keeps no running statistics.
bnl_status bnl_resnet_need_running_stats(const bnl_resnet *m, const char *what);
bnl_status bnl_state_meta_set(bnl_state *st, const char *key, const char *value);   // NULL removes

// ---------------------------------------------------------------------------------------------
// Context

typedef struct {
    float *pre, *post;   // plan: input (the conv output) and output of this layer
    int H, W;            // spatial size of its input
    size_t xo;           // offset in nbuf of this layer's kind-specific statistics (norm_plan)
} bnl_act_bn;

typedef struct {
    float *in, *out;     // plan: block input and output
    int Hin, Win, Hout, Wout;
} bnl_act_block;

struct bnl_resnet {
    bnl_state *st;               // borrowed (reference counted)
    const bnl_layout *L;         // st->L
    bnl_resnet_info info;        // L->info with this context's norm kind
    int training;
    int update_running;          // 0: train mode leaves the state's running statistics alone
    bnl_bn_config bn;
    bnl_norm_spec ns;
    bnl_isa isa;                 // the packed eval weights are for this ISA's GEMM
    float *run_stats;            // update_running 0: a private copy of the running statistics
    int64_t *run_tracked;
    float *batch;                // L->nb
    int has_batch;
    bnl_act_bn *act;             // per BatchNorm layer
    bnl_act_block *ablk;         // per block
    // per layer, what group/renorm/ghost keep beyond BatchNorm's batch statistics
    // (group: mean, var, invstd (N,G); renorm: r, d (C); ghost: mean, var, invstd (N/V,C))
    float *nbuf;
    size_t nbuf_cap;
    int nbuf_N, has_norm_stats;
    bnl_allgather_fn sync_fn;
    void *sync_ctx;
    int sync_replicas;
    double *sync_buf;            // (replicas + 1) * (2C + 1) doubles of the widest BN layer
    bnl_grad_ready_fn grad_fn;   // data parallel: gradients [lo, np) are final
    void *grad_ctx;
    // activation plan for (N,H,W,keep)
    int pN, pH, pW, pkeep;
    float *arena;
    float *lean[3];              // keep = 0: the three ping-pong buffers, allocated apart (each < 2 GB)
    int32_t *argmax;
    float *stem_pool, *feat, *probs, *grad_buf[4], *scratch;
    float *pp[3];                // the eval forward's ping-pong buffers
    int Hs, Ws, Hp, Wp;          // stem conv output, pool output
    // Eval inference: every conv with its BatchNorm folded in, packed for `isa`. Valid while
    // pk_valid and pk_version == st->version.
    bnl_conv_packed **pk;
    bnl_conv_packed *pk_fc;
    float *fold_bias;            // per conv, cout floats each, in conv order
    int pk_valid;
    uint64_t pk_version;
    // Train-mode forwards without a backward (the page's statistics, forwardTo, bn_input, PreciseBN):
    // 3x3 stride-1 weights, unscaled, packed for Winograd (NULL for other convs). Valid while
    // pkt_valid and pkt_version == st->pversion. fwd_only is 0 while a training step's forward runs.
    bnl_conv_packed **pkt;
    int pkt_valid, fwd_only;
    // set only during bnl_resnet_forward_bn_input: the input of one BatchNorm layer's channel is
    // copied out as the forward reaches that layer
    struct bnl_bn_capture *cap;
    uint64_t pkt_version;
    // Tests only: 1 runs each residual block's output as three passes (BatchNorm apply, the
    // shortcut's apply, add + ReLU) instead of block_output's one, to compare the bits.
    int unfused;
};

// A new context over st (takes one reference): eval mode, default BatchNorm config, BatchNorm
// norm, the active ISA, update_running 1.
bnl_status bnl_context_create(bnl_resnet **out, bnl_state *st);
// The running statistics a train-mode forward reads and moves (the state's, or the private copy).
static inline float *bnl_ctx_stats(const bnl_resnet *m) { return m->update_running ? m->st->stats : m->run_stats; }
static inline int64_t *bnl_ctx_tracked(const bnl_resnet *m) {
    return m->update_running ? m->st->tracked : m->run_tracked;
}
bnl_status bnl_context_plan(bnl_resnet *m, int N, int H, int W, int keep);
bnl_status bnl_context_norm_plan(bnl_resnet *m, int N);
bnl_status bnl_context_fold_and_pack(bnl_resnet *m);
bnl_status bnl_context_pack_train(bnl_resnet *m);
// The norm kind from "bnlab.norm" metadata values (io/statedict.c reads them).
bnl_status bnl_context_check_groups(const bnl_resnet *m, int G, int from_file);

#endif
