// The training module's library pieces: the lr schedule at its boundaries, the checkpoint round
// trip (model, running statistics, num_batches_tracked, SGD momentum, metadata), checkpoint load
// errors, and determinism: two identical short runs give byte-identical files, another seed does
// not, and a run stopped mid-epoch (cosine + warmup) then resumed equals the straight run.
#include "bnlab.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "io/statedict.h"
#include "model/resnet.h"
#include "train/train.h"
#include "util.h"

#include <stdint.h>
#include <unistd.h>

static void check_lr(const bnl_schedule *s, int64_t t, double want) {
    double got = bnl_schedule_lr(s, t);
    CHECK(fabs(got - want) <= 1e-12 + 1e-9 * fabs(want), "lr(step %lld) = %.12g, want %.12g", (long long)t, got, want);
}

static void test_schedule(void) {
    const double PI = 3.14159265358979323846;
    bnl_schedule s = {0};
    s.kind = BNL_SCHED_COSINE, s.base_lr = 0.1, s.steps_per_epoch = 10, s.total_steps = 100, s.warmup_steps = 20;
    check_lr(&s, 0, 0.1 * 1 / 20);     // warmup starts above zero
    check_lr(&s, 9, 0.1 * 10 / 20);
    check_lr(&s, 19, 0.1);             // the last warmup step reaches the peak
    check_lr(&s, 20, 0.1);             // cosine starts at the peak
    check_lr(&s, 60, 0.05);            // halfway through the cosine
    check_lr(&s, 21, 0.1 * 0.5 * (1 + cos(PI * 1 / 80)));
    check_lr(&s, 99, 0.1 * 0.5 * (1 + cos(PI * 79 / 80)));
    check_lr(&s, 100, 0.0);
    s.warmup_steps = 0;
    check_lr(&s, 0, 0.1);
    check_lr(&s, 50, 0.05);
    // step: every 3 epochs x0.1 (StepLR), with a one-epoch warmup
    bnl_schedule st = {0};
    st.kind = BNL_SCHED_STEP, st.base_lr = 0.2, st.steps_per_epoch = 10, st.total_steps = 100, st.step_every = 3;
    st.gamma = 0.1, st.warmup_steps = 10;
    check_lr(&st, 0, 0.2 / 10);
    check_lr(&st, 9, 0.2);
    check_lr(&st, 29, 0.2);
    check_lr(&st, 30, 0.02);
    check_lr(&st, 59, 0.02);
    check_lr(&st, 60, 0.002);
    // milestones at epochs 2 and 5 (MultiStepLR)
    st.step_every = 0, st.n_milestones = 2, st.milestones[0] = 2, st.milestones[1] = 5, st.warmup_steps = 0;
    check_lr(&st, 19, 0.2);
    check_lr(&st, 20, 0.02);
    check_lr(&st, 49, 0.02);
    check_lr(&st, 50, 0.002);
    check_lr(&st, 99, 0.002);
}

static int tensors_equal(const char *pa, const char *pb, int *ntensors, int verbose) {
    bnl_st_file a, b;
    if (bnl_st_read_file(&a, pa) != BNL_OK || bnl_st_read_file(&b, pb) != BNL_OK) {
        fprintf(stderr, "  cannot read %s or %s: %s\n", pa, pb, bnl_last_error());
        return 0;
    }
    int same = a.count == b.count;
    *ntensors = (int)a.count;
    for (size_t i = 0; i < a.count && same; i++) {
        const bnl_st_tensor *t = &a.tensors[i], *u = bnl_st_find(&b, t->name);
        if (!u || u->nbytes != t->nbytes || memcmp(u->data, t->data, t->nbytes)) {
            if (verbose) fprintf(stderr, "  tensor '%s' differs between %s and %s\n", t->name, pa, pb);
            same = 0;
        }
    }
    bnl_st_free(&a), bnl_st_free(&b);
    return same;
}

static int files_equal(const char *pa, const char *pb) {
    uint8_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int same = bnl_read_file(pa, &a, &na) == BNL_OK && bnl_read_file(pb, &b, &nb) == BNL_OK && na == nb &&
               !memcmp(a, b, na);
    free(a), free(b);
    return same;
}

static void test_checkpoint(const char *dir) {
    bnl_resnet_spec sp;
    bnl_resnet *m = NULL, *m2 = NULL;
    CHECK(bnl_resnet_spec_named(&sp, 18, 0.125f, 4) == BNL_OK, "spec");
    CHECK(bnl_resnet_create(&m, &sp, 11) == BNL_OK, "create: %s", bnl_last_error());
    if (!m) return;
    // move the state away from its initialization: one step with momentum and a train forward
    enum { N = 4, H = 16, W = 16 };
    static float x[N * H * W * 3];
    int64_t labels[N] = {0, 1, 2, 3};
    bnl_rng rng = bnl_rng_seed(5);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = (float)bnl_rng_normal(&rng);
    bnl_sgd sgd = bnl_sgd_default();
    sgd.lr = 0.05f, sgd.momentum = 0.9f, sgd.weight_decay = 5e-4f;
    float loss;
    CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "step: %s", bnl_last_error());
    CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "step: %s", bnl_last_error());
    size_t np, ns;
    float *mom = bnl_resnet_momentum(m, &np);
    double mabs = 0;
    for (size_t i = 0; i < np; i++) mabs += fabs(mom[i]);
    CHECK(mabs > 0, "the momentum buffer should be non-zero after two steps");

    char path[512], plain[512];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(plain, sizeof plain, "%s/plain.safetensors", dir);
    const char *kv[] = {"train.step", "42", "train.seed", "7", "labels", "[\"a\",\"b\",\"c\",\"d\"]"};
    CHECK(bnl_checkpoint_save(m, path, 1, kv, 3) == BNL_OK, "save: %s", bnl_last_error());
    CHECK(bnl_checkpoint_load(&m2, path) == BNL_OK, "load: %s", bnl_last_error());
    if (!m2) return;
    bnl_resnet_stats(m, &ns);   // sizes first: argument evaluation order is unspecified
    CHECK(!memcmp(bnl_resnet_params(m, NULL), bnl_resnet_params(m2, NULL), np * sizeof(float)), "params differ");
    CHECK(!memcmp(bnl_resnet_momentum(m, NULL), bnl_resnet_momentum(m2, NULL), np * sizeof(float)), "momentum differs");
    CHECK(!memcmp(bnl_resnet_stats(m, NULL), bnl_resnet_stats(m2, NULL), ns * sizeof(float)), "running stats differ");
    for (int i = 0; i < bnl_resnet_bn_count(m); i++) {
        bnl_bn_view a, b;
        bnl_resnet_bn_stats(m, &a, i), bnl_resnet_bn_stats(m2, &b, i);
        CHECK(a.num_batches_tracked == 2 && b.num_batches_tracked == 2, "%s: num_batches_tracked %lld / %lld",
              bnl_resnet_bn_name(m, i), (long long)a.num_batches_tracked, (long long)b.num_batches_tracked);
    }
    const char *v = bnl_resnet_meta(m2, "train.step");
    CHECK(v && !strcmp(v, "42"), "metadata train.step: %s", v ? v : "(absent)");
    v = bnl_resnet_meta(m2, "labels");
    CHECK(v && !strcmp(v, "[\"a\",\"b\",\"c\",\"d\"]"), "metadata labels: %s", v ? v : "(absent)");
    // the same step from both gives the same state: nothing of the optimizer was lost
    CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "step");
    CHECK(bnl_resnet_step(m2, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "step");
    CHECK(!memcmp(bnl_resnet_params(m, NULL), bnl_resnet_params(m2, NULL), np * sizeof(float)),
          "a step after the round trip differs from a step without it");
    bnl_resnet_free(m2);
    m2 = NULL;

    // every tensor of the checkpoint that is not the model's is one the checkpoint code names as extra
    bnl_st_file cf;
    CHECK(bnl_st_read_file(&cf, path) == BNL_OK, "read %s: %s", path, bnl_last_error());
    int extra = 0;
    for (size_t i = 0; i < cf.count; i++) extra += bnl_checkpoint_owns_tensor(cf.tensors[i].name);
    CHECK(extra == 1 && bnl_checkpoint_owns_tensor("optimizer.momentum"), "%d extra tensors in the checkpoint", extra);
    CHECK(!bnl_checkpoint_owns_tensor("fc.weight") && !bnl_checkpoint_owns_tensor("optimizer") &&
              !bnl_checkpoint_owns_tensor("layer1.0.optimizer.x"),
          "model tensors are not extra");
    bnl_st_free(&cf);

    // a plain model file is not a checkpoint; a wrong momentum size is refused
    CHECK(bnl_checkpoint_save(m, plain, 0, NULL, 0) == BNL_OK, "save plain: %s", bnl_last_error());
    CHECK(bnl_checkpoint_load(&m2, plain) == BNL_ERR_FORMAT && !m2, "a model without momentum must be refused");
    CHECK(strstr(bnl_last_error(), "optimizer.momentum") && strstr(bnl_last_error(), plain), "message: %s",
          bnl_last_error());
    bnl_resnet *plain_m = NULL;
    CHECK(bnl_resnet_load_file(&plain_m, plain) == BNL_OK, "a plain model file loads as a model: %s", bnl_last_error());
    bnl_resnet_free(plain_m);
    bnl_st_file f;
    CHECK(bnl_st_read_file(&f, path) == BNL_OK, "read");
    bnl_st_writer *w;
    bnl_st_writer_create(&w);
    for (size_t i = 0; i < f.count; i++) {
        bnl_st_tensor *t = &f.tensors[i];
        int64_t one[1] = {(int64_t)t->nelem - 1};
        if (!strcmp(t->name, "optimizer.momentum")) bnl_st_writer_add(w, t->name, t->dtype, 1, one, t->data);
        else bnl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    CHECK(bnl_st_writer_to_file(w, bad) == BNL_OK, "write bad");
    bnl_st_writer_free(w);
    bnl_st_free(&f);
    CHECK(bnl_checkpoint_load(&m2, bad) == BNL_ERR_FORMAT && !m2, "a momentum of the wrong size must be refused");
    CHECK(strstr(bnl_last_error(), "F32 [") != NULL, "message: %s", bnl_last_error());
    bnl_resnet_free(m);
}

static bnl_train_config tiny(const char *out) {
    bnl_train_config c = bnl_train_config_default();
    c.data = "procedural";
    c.classes = 4, c.image_size = 16, c.train_size = 40, c.val_size = 16, c.data_seed = 3;
    c.depth = 18, c.width_mult = 0.125f;
    c.epochs = 2, c.batch_size = 8;   // 5 steps an epoch
    c.lr = 0.05, c.warmup_epochs = 0.5;
    c.seed = 9;
    c.out_dir = out;
    return c;
}

static int run(const bnl_train_config *c, bnl_dist *d) {
    bnl_train_result res;
    bnl_status s = bnl_train_run(c, d, NULL, &res);
    if (s != BNL_OK) fprintf(stderr, "  run into %s: %s\n", c->out_dir, bnl_last_error());
    return s == BNL_OK;
}

static void test_runs(const char *dir, bnl_dist *d) {
    char a[512], b[512], c2[512], r[512], pa[600], pb[600];
    snprintf(a, sizeof a, "%s/a", dir), snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c2, sizeof c2, "%s/c", dir), snprintf(r, sizeof r, "%s/r", dir);
    bnl_train_config ca = tiny(a), cb = tiny(b), cc = tiny(c2), cr = tiny(r);
    cc.seed = 10;
    CHECK(run(&ca, d), "run a");
    CHECK(run(&cb, d), "run b");
    CHECK(run(&cc, d), "run c");
    int nt = 0;
    snprintf(pa, sizeof pa, "%s/model.safetensors", a), snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    CHECK(files_equal(pa, pb), "two identical runs must write identical model files");
    snprintf(pa, sizeof pa, "%s/last.safetensors", a), snprintf(pb, sizeof pb, "%s/last.safetensors", b);
    CHECK(files_equal(pa, pb), "two identical runs must write identical checkpoints");
    snprintf(pa, sizeof pa, "%s/model.safetensors", a), snprintf(pb, sizeof pb, "%s/model.safetensors", c2);
    CHECK(!tensors_equal(pa, pb, &nt, 0), "another seed must give other weights");

    // stop inside epoch 1 (cosine with warmup), resume, finish: the weights of the straight run
    cr.max_steps = 3;
    CHECK(run(&cr, d), "run r (3 steps)");
    snprintf(pb, sizeof pb, "%s/last.safetensors", r);
    bnl_resnet *m = NULL;
    CHECK(bnl_checkpoint_load(&m, pb) == BNL_OK, "load %s: %s", pb, bnl_last_error());
    if (m) {
        const char *st = bnl_resnet_meta(m, "train.step");
        CHECK(st && !strcmp(st, "3"), "the checkpoint after --max-steps 3 says step %s", st ? st : "(absent)");
        bnl_resnet_free(m);
    }
    cr.max_steps = 0, cr.resume = 1;
    CHECK(run(&cr, d), "run r (resumed)");
    snprintf(pa, sizeof pa, "%s/model.safetensors", a), snprintf(pb, sizeof pb, "%s/model.safetensors", r);
    CHECK(tensors_equal(pa, pb, &nt, 1) && nt > 50, "stopped at step 3 + resumed must equal the straight run (%d tensors)", nt);
    snprintf(pa, sizeof pa, "%s/last.safetensors", a), snprintf(pb, sizeof pb, "%s/last.safetensors", r);
    CHECK(tensors_equal(pa, pb, &nt, 1), "the final checkpoints (momentum included) must be equal");

    // a resume with another hyperparameter is refused, naming it
    cr.lr = 0.1;
    bnl_train_result res;
    CHECK(bnl_train_run(&cr, d, NULL, &res) == BNL_ERR_ARG, "a resume with another lr must be refused");
    CHECK(strstr(bnl_last_error(), "--lr") != NULL, "message names --lr: %s", bnl_last_error());
    // a NaN loss stops the run before any update, names epoch and step, leaves the checkpoint alone:
    // poison the fc bias of a checkpoint at step 2 and resume from it
    char nd[512], np_[600];
    snprintf(nd, sizeof nd, "%s/nan", dir);
    bnl_train_config cn = tiny(nd);
    cn.max_steps = 2;
    CHECK(run(&cn, d), "run nan (2 steps)");
    snprintf(np_, sizeof np_, "%s/last.safetensors", nd);
    m = NULL;
    CHECK(bnl_checkpoint_load(&m, np_) == BNL_OK, "load: %s", bnl_last_error());
    if (m) {
        size_t n;
        float *p = bnl_resnet_params_mut(m, &n);
        p[n - 1] = NAN;   // the last parameter is the fc bias
        CHECK(bnl_checkpoint_save(m, np_, 1, NULL, 0) == BNL_OK, "save: %s", bnl_last_error());
        bnl_resnet_free(m);
        uint8_t *before = NULL, *after = NULL;
        size_t nb = 0, na = 0;
        bnl_read_file(np_, &before, &nb);
        cn.max_steps = 0, cn.resume = 1;
        bnl_status s = bnl_train_run(&cn, d, NULL, &res);
        CHECK(s == BNL_ERR_NUMERIC && res.report_error, "a NaN loss must stop the run (status %d)", (int)s);
        CHECK(strstr(bnl_last_error(), "loss is nan at epoch 1 step 3") != NULL, "message: %s", bnl_last_error());
        bnl_read_file(np_, &after, &na);
        CHECK(before && after && na == nb && !memcmp(before, after, na), "the checkpoint changed after a NaN loss");
        free(before), free(after);
    }
    // a new run into a directory that holds one is refused
    CHECK(bnl_train_run(&ca, d, NULL, &res) == BNL_ERR_ARG, "a second run into the same directory must be refused");
}

// Under mpirun -np 2 (tests/c/cli_mpi.sh runs `test_train --mpi`): the step protocol of
// synchronized BatchNorm with bucketed gradient sums. Rank 1 alone gets a NaN loss (a NaN fc bias,
// after every BatchNorm), so rank 0 is already waiting in its first backward gather: rank 1 must
// make every collective of the backward all the same, both ranks must name rank 1, and the next
// step must run in lockstep again, with the gradients summed over ranks identical on both.
static int mpi_protocol(int *argc, char ***argv) {
    bnl_dist *d = NULL;
    CHECK(bnl_dist_init(&d, argc, argv) == BNL_OK, "dist init: %s", bnl_last_error());
    if (!d) return 1;
    int rank = bnl_dist_rank(d);
    CHECK(bnl_dist_size(d) == 2, "run with mpirun -np 2 (size %d)", bnl_dist_size(d));
    if (bnl_dist_size(d) == 2) {
        bnl_resnet_spec sp;
        bnl_resnet *m = NULL;
        bnl_resnet_spec_named(&sp, 18, 0.125f, 4);
        CHECK(bnl_resnet_create(&m, &sp, 7) == BNL_OK, "create");
        CHECK(bnl_dist_attach(d, m, 1) == BNL_OK, "attach: %s", bnl_last_error());
        enum { N = 4, H = 16, W = 16 };
        static float x[N * H * W * 3];
        int64_t labels[N] = {0, 1, 2, 3};
        bnl_rng rng = bnl_rng_seed(3 + (uint64_t)rank);
        for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = (float)bnl_rng_normal(&rng);
        size_t np;
        float *p = bnl_resnet_params_mut(m, &np), loss = 0, keep = p[np - 1];
        for (int round = 0; round < 3; round++) {
            if (round == 1 && rank == 1) p[np - 1] = NAN;
            if (round == 2) p[np - 1] = keep;
            bnl_dist_step_begin(d);
            bnl_status s = bnl_resnet_forward_backward(m, &loss, NULL, x, N, H, W, labels);
            double sums[2] = {1.0 + rank, 10.0 * rank};
            int first = bnl_dist_step_end(d, s == BNL_OK, sums);
            if (round == 1) {
                CHECK(first == 1, "rank %d: round 1: the failing rank is %d, want 1", rank, first);
                if (rank == 0) CHECK(s == BNL_OK, "rank 0: round 1 succeeds here: %s", bnl_last_error());
                if (rank == 1) CHECK(s == BNL_ERR_NUMERIC && isnan(loss), "rank 1: status %d loss %g", (int)s, (double)loss);
            } else {
                CHECK(first == -1 && s == BNL_OK, "rank %d: round %d: status %d, first failure %d (%s)", rank, round,
                      (int)s, first, bnl_last_error());
                CHECK(sums[0] == 3.0 && sums[1] == 10.0, "rank %d: step sums %g %g, want 3 10", rank, sums[0], sums[1]);
                int early = 0, nb = bnl_dist_buckets(d, &early);
                CHECK(nb >= 2 && early >= 1 && early < nb, "rank %d: %d gradient buckets, %d started during the backward",
                      rank, nb, early);
                if (round == 0 && rank == 0) printf("test_train --mpi: %d gradient buckets, %d started during the backward\n", nb, early);
                float *g = bnl_resnet_grads(m, NULL);   // summed over ranks by the step
                uint64_t h = 1469598103934665603ull;
                for (size_t i = 0; i < np * sizeof(float); i++) h = (h ^ ((unsigned char *)g)[i]) * 1099511628211ull;
                CHECK(bnl_dist_same_u64(d, h), "rank %d: round %d: summed gradients differ between ranks", rank, round);
            }
        }
        bnl_resnet_free(m);
    }
    bnl_dist_finalize(d);
    char name[64];
    snprintf(name, sizeof name, "test_train --mpi (rank %d)", rank);
    return test_summary(name);
}

int main(int argc, char **argv) {
    (void)check_close;
    if (argc > 1 && !strcmp(argv[1], "--mpi")) return mpi_protocol(&argc, &argv);
    bnl_set_threads(1);
    test_schedule();
    char dir[] = "/tmp/bnl_test_train_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_checkpoint(dir);
    bnl_dist *d = NULL;
    CHECK(bnl_dist_init(&d, NULL, NULL) == BNL_OK && bnl_dist_size(d) == 1, "single-rank dist: %s", bnl_last_error());
    test_runs(dir, d);
    bnl_dist_finalize(d);
    if (!g_failures) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "files kept in %s\n", dir);
    }
    return test_summary("test_train");
}
