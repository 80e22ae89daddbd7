// ResNet against PyTorch 1.13 fixtures (tests/fixtures/resnet, made by tests/gen_fixtures_resnet.py):
// eval and train logits, running statistics after a train-mode forward (both variance rules),
// batch statistics, the state after one SGD step (two optimizer configs), F16/BF16 weights, and
// load -> save bit-exactness. Runs once per available ISA. Also the network without normalization
// (tests/fixtures/nonorm, tests/gen_fixtures_nonorm.py): every BatchNorm a per-channel affine; and
// GroupNorm, Batch Renorm, Ghost and frozen BatchNorm (tests/fixtures/norms, tests/gen_fixtures_norms.py).
#include "bnlab.h"
#include "io/safetensors.h"
#include "io/statedict.h"
#include "model/resnet.h"
#include "util.h"

#include <stdint.h>

static const char *DIR = "tests/fixtures/resnet";

typedef struct {
    bnl_st_file weights, input, expected;
    uint8_t *wbuf;
    size_t wlen;
} fixture;

static int load_fixture(fixture *f, const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s.weights.safetensors", dir, name);
    if (bnl_read_file(p, &f->wbuf, &f->wlen) != BNL_OK || bnl_st_parse(&f->weights, f->wbuf, f->wlen) != BNL_OK) {
        fprintf(stderr, "FAIL cannot read %s: %s\n", p, bnl_last_error());
        return 0;
    }
    snprintf(p, sizeof p, "%s/%s.input.safetensors", dir, name);
    if (bnl_st_read_file(&f->input, p) != BNL_OK) return fprintf(stderr, "FAIL %s: %s\n", p, bnl_last_error()), 0;
    snprintf(p, sizeof p, "%s/%s.expected.safetensors", dir, name);
    if (bnl_st_read_file(&f->expected, p) != BNL_OK) return fprintf(stderr, "FAIL %s: %s\n", p, bnl_last_error()), 0;
    return 1;
}

static float *tensor_f32(const bnl_st_file *f, const char *name, size_t *n) {
    const bnl_st_tensor *t = bnl_st_find(f, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        g_failures++;
        return NULL;
    }
    float *d = malloc(t->nelem * sizeof(float) + 4);
    bnl_st_to_f32(d, t);
    if (n) *n = t->nelem;
    return d;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

// logits: relative 1e-4 of the largest |logit| (and elementwise 1e-4)
static void check_logits(const char *what, const float *got, const bnl_st_file *exp, const char *key) {
    size_t n;
    float *want = tensor_f32(exp, key, &n);
    if (!want) return;
    check_close(what, got, want, n, 1e-4 * max_abs(want, n), 1e-4);
    free(want);
}

// Every tensor of the saved state against `prefix.<name>` in the expected file.
static void check_state(const char *what, bnl_resnet *m, const bnl_st_file *exp, const char *prefix,
                        int only_running, double atol, double rtol) {
    uint8_t *buf;
    size_t len;
    bnl_st_file s;
    CHECK(bnl_resnet_save(m, &buf, &len) == BNL_OK, "%s: save: %s", what, bnl_last_error());
    CHECK(bnl_st_parse(&s, buf, len) == BNL_OK, "%s: parse saved: %s", what, bnl_last_error());
    int compared = 0;
    for (size_t i = 0; i < s.count; i++) {
        const bnl_st_tensor *t = &s.tensors[i];
        if (only_running && !strstr(t->name, "running_") && !strstr(t->name, "num_batches")) continue;
        char key[256], label[300];
        snprintf(key, sizeof key, "%s.%s", prefix, t->name);
        const bnl_st_tensor *w = bnl_st_find(exp, key);
        if (!w) {
            CHECK(0, "%s: expected tensor '%s' missing", what, key);
            continue;
        }
        snprintf(label, sizeof label, "%s %s", what, t->name);
        if (t->dtype == BNL_DT_I64) {
            int64_t a, b;
            bnl_st_to_i64(&a, t), bnl_st_to_i64(&b, w);
            CHECK(a == b, "%s: got %lld want %lld", label, (long long)a, (long long)b);
        } else {
            float *g = malloc(t->nelem * 4 + 4), *e = malloc(w->nelem * 4 + 4);
            bnl_st_to_f32(g, t), bnl_st_to_f32(e, w);
            CHECK(t->nelem == w->nelem, "%s: %zu values, want %zu", label, t->nelem, w->nelem);
            if (t->nelem == w->nelem) check_close(label, g, e, t->nelem, atol, rtol);
            free(g), free(e);
        }
        compared++;
    }
    CHECK(compared > 0, "%s: nothing compared", what);
    bnl_st_free(&s);
    free(buf);
}

static bnl_resnet *load_model(const fixture *f, int unbiased) {
    bnl_resnet *m = NULL;
    bnl_status s = bnl_resnet_load(&m, f->wbuf, f->wlen);
    CHECK(s == BNL_OK, "load: %s", bnl_last_error());
    if (m) {
        bnl_bn_config c = bnl_resnet_bn_config(m);
        c.unbiased = unbiased;
        bnl_resnet_set_bn_config(m, &c);
    }
    return m;
}

static void run_model(const char *name, int check_halves) {
    fixture f;
    memset(&f, 0, sizeof f);
    if (!load_fixture(&f, DIR, name)) {
        g_failures++;
        return;
    }
    const bnl_st_tensor *xt = bnl_st_find(&f.input, "input");
    int N = (int)xt->shape[0], H = (int)xt->shape[1], W = (int)xt->shape[2];
    float *x = tensor_f32(&f.input, "input", NULL);
    int64_t labels[64];
    bnl_st_to_i64(labels, bnl_st_find(&f.input, "labels"));
    char what[320];

    // eval, then the state must be untouched (bit-identical running stats)
    bnl_resnet *m = load_model(&f, 0);
    if (!m) return;
    int K = bnl_resnet_get_info(m)->num_classes;
    float *logits = calloc((size_t)N * K, sizeof(float));
    size_t nstats;
    const float *stats = bnl_resnet_stats(m, &nstats);
    float *before = malloc(nstats * sizeof(float));
    memcpy(before, stats, nstats * sizeof(float));
    bnl_resnet_set_training(m, 0);
    CHECK(bnl_resnet_forward(m, logits, x, N, H, W) == BNL_OK, "%s eval: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "%s logits_eval", name);
    check_logits(what, logits, &f.expected, "logits_eval");
    CHECK(!memcmp(before, stats, nstats * sizeof(float)), "%s: eval forward changed running statistics", name);

    // train-mode forward, bnlab default (biased) rule
    bnl_resnet_set_training(m, 1);
    CHECK(bnl_resnet_forward(m, logits, x, N, H, W) == BNL_OK, "%s train: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "%s logits_train", name);
    check_logits(what, logits, &f.expected, "logits_train");
    snprintf(what, sizeof what, "%s after_train_forward_biased", name);
    check_state(what, m, &f.expected, "after_train_forward_biased", 1, 1e-5, 1e-4);
    // the batch statistics each layer used
    for (int i = 0; i < bnl_resnet_bn_count(m); i++) {
        bnl_bn_view v;
        bnl_resnet_bn_stats(m, &v, i);
        char key[200];
        snprintf(key, sizeof key, "train_batch_mean.%s", bnl_resnet_bn_name(m, i));
        float *e = tensor_f32(&f.expected, key, NULL);
        snprintf(what, sizeof what, "%s %s", name, key);
        if (e) check_close(what, v.batch_mean, e, (size_t)v.channels, 1e-5, 1e-4), free(e);
        snprintf(key, sizeof key, "train_batch_var.%s", bnl_resnet_bn_name(m, i));
        e = tensor_f32(&f.expected, key, NULL);
        snprintf(what, sizeof what, "%s %s", name, key);
        if (e) check_close(what, v.batch_var, e, (size_t)v.channels, 1e-5, 1e-4), free(e);
        CHECK(v.has_batch, "%s: no batch statistics after a train forward", name);
    }
    bnl_resnet_free(m);

    // PyTorch's unbiased rule
    m = load_model(&f, 1);
    bnl_resnet_set_training(m, 1);
    CHECK(bnl_resnet_forward(m, logits, x, N, H, W) == BNL_OK, "%s train: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "%s after_train_forward", name);
    check_state(what, m, &f.expected, "after_train_forward", 1, 1e-5, 1e-4);
    bnl_resnet_free(m);

    // one SGD step: lr 0.1, momentum 0.9, weight decay 1e-4; and plain SGD lr 0.05
    struct { const char *prefix, *loss; bnl_sgd sgd; } steps[] = {
        {"after_step", "step_loss", {0.1f, 0.9f, 1e-4f, 0, 0}},
        {"after_step_plain", "step_plain_loss", {0.05f, 0.0f, 0.0f, 0, 0}},
    };
    for (int s = 0; s < 2; s++) {
        m = load_model(&f, 1);
        float loss = 0;
        CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &steps[s].sgd) == BNL_OK, "%s step: %s", name,
              bnl_last_error());
        float *el = tensor_f32(&f.expected, steps[s].loss, NULL);
        snprintf(what, sizeof what, "%s %s", name, steps[s].loss);
        if (el) check_close(what, &loss, el, 1, 1e-6, 1e-5), free(el);
        snprintf(what, sizeof what, "%s %s", name, steps[s].prefix);
        check_state(what, m, &f.expected, steps[s].prefix, 0, 1e-5, 1e-4);
        bnl_resnet_free(m);
    }

    // load -> save is bit-exact: every tensor's bytes equal the file's
    m = load_model(&f, 0);
    uint8_t *buf;
    size_t len;
    bnl_st_file saved;
    CHECK(bnl_resnet_save(m, &buf, &len) == BNL_OK, "save: %s", bnl_last_error());
    CHECK(bnl_st_parse(&saved, buf, len) == BNL_OK, "parse saved: %s", bnl_last_error());
    CHECK(saved.count == f.weights.count, "%s: saved %zu tensors, file has %zu", name, saved.count, f.weights.count);
    for (size_t i = 0; i < f.weights.count; i++) {
        const bnl_st_tensor *a = &f.weights.tensors[i], *b = bnl_st_find(&saved, a->name);
        CHECK(b && b->nbytes == a->nbytes && !memcmp(a->data, b->data, a->nbytes) && b->ndim == a->ndim,
              "%s: tensor '%s' not bit-exact after load+save", name, a->name);
    }
    for (size_t i = 0; i < f.weights.meta_count; i++) {
        const char *v = bnl_st_meta(&saved, f.weights.meta_keys[i]);
        CHECK(v && !strcmp(v, f.weights.meta_values[i]), "%s: metadata '%s' lost on save", name,
              f.weights.meta_keys[i]);
    }
    bnl_st_free(&saved);
    free(buf);
    bnl_resnet_free(m);

    // half-precision weights load and give torch's logits for the same rounded weights
    if (check_halves) {
        const char *kinds[2][2] = {{"weights_f16", "logits_eval_from_f16"}, {"weights_bf16", "logits_eval_from_bf16"}};
        for (int k = 0; k < 2; k++) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s.%s.safetensors", DIR, name, kinds[k][0]);
            bnl_resnet *h = NULL;
            CHECK(bnl_resnet_load_file(&h, p) == BNL_OK, "%s: %s", p, bnl_last_error());
            if (!h) continue;
            bnl_resnet_set_training(h, 0);
            CHECK(bnl_resnet_forward(h, logits, x, N, H, W) == BNL_OK, "%s: %s", p, bnl_last_error());
            snprintf(what, sizeof what, "%s %s", name, kinds[k][1]);
            check_logits(what, logits, &f.expected, kinds[k][1]);
            bnl_resnet_free(h);
        }
    }
    free(x), free(logits), free(before);
    bnl_st_free(&f.weights), bnl_st_free(&f.input), bnl_st_free(&f.expected);
    free(f.wbuf);
}

// The network without normalization: "bnlab.norm": "none" in the file's metadata.
static void run_nonorm(const char *name) {
    char what[320];
    fixture f;
    memset(&f, 0, sizeof f);
    if (!load_fixture(&f, "tests/fixtures/nonorm", name)) {
        g_failures++;
        return;
    }
    const bnl_st_file *in = &f.input, *ex = &f.expected;
    const bnl_st_tensor *xt = bnl_st_find(in, "input");
    int N = (int)xt->shape[0], H = (int)xt->shape[1], W = (int)xt->shape[2];
    float *x = tensor_f32(in, "input", NULL);
    int64_t labels[64];
    bnl_st_to_i64(labels, bnl_st_find(in, "labels"));

    bnl_resnet *m = NULL;
    CHECK(bnl_resnet_load(&m, f.wbuf, f.wlen) == BNL_OK, "nonorm %s: %s", name, bnl_last_error());
    if (!m) return;
    CHECK(bnl_resnet_norm(m) == BNL_NORM_NONE && bnl_resnet_get_info(m)->norm == BNL_NORM_NONE,
          "%s: the file's \"bnlab.norm\": \"none\" was not honoured", name);
    int K = bnl_resnet_get_info(m)->num_classes;
    float *logits = calloc((size_t)N * K, sizeof(float)), *first = calloc((size_t)N * K, sizeof(float));
    size_t nstats;
    const float *stats = bnl_resnet_stats(m, &nstats);
    float *before = malloc(nstats * sizeof(float));
    memcpy(before, stats, nstats * sizeof(float));
    // eval (folded into the packed convs) and train mode (the affine kernels) give torch's logits
    bnl_resnet_set_training(m, 0);
    CHECK(bnl_resnet_forward(m, first, x, N, H, W) == BNL_OK, "%s eval: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "nonorm %s logits (eval)", name);
    check_logits(what, first, ex, "logits");
    bnl_resnet_set_training(m, 1);
    CHECK(bnl_resnet_forward(m, logits, x, N, H, W) == BNL_OK, "%s train: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "nonorm %s logits (train)", name);
    check_logits(what, logits, ex, "logits");
    CHECK(!memcmp(before, stats, nstats * sizeof(float)), "nonorm %s: a train forward changed running statistics", name);
    bnl_bn_view v;
    bnl_resnet_bn_stats(m, &v, 0);
    CHECK(!v.has_batch && v.num_batches_tracked == 7, "nonorm %s: batch statistics reported (has_batch %d, tracked %lld)",
          name, v.has_batch, (long long)v.num_batches_tracked);
    // one SGD step; running statistics and num_batches_tracked come out unchanged (in after_step)
    float loss = 0;
    bnl_sgd sgd = {0.1f, 0.9f, 1e-4f, 0, 0};
    CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "%s step: %s", name, bnl_last_error());
    float *el = tensor_f32(ex, "step_loss", NULL);
    snprintf(what, sizeof what, "nonorm %s step_loss", name);
    if (el) check_close(what, &loss, el, 1, 1e-6, 1e-5), free(el);
    snprintf(what, sizeof what, "nonorm %s after_step", name);
    check_state(what, m, ex, "after_step", 0, 1e-5, 1e-4);
    // the mode survives save -> load; switching it back to BatchNorm changes the function and the metadata
    uint8_t *buf;
    size_t len;
    CHECK(bnl_resnet_save(m, &buf, &len) == BNL_OK, "save: %s", bnl_last_error());
    bnl_resnet *m2 = NULL;
    CHECK(bnl_resnet_load(&m2, buf, len) == BNL_OK, "reload: %s", bnl_last_error());
    free(buf);
    if (m2) {
        CHECK(bnl_resnet_norm(m2) == BNL_NORM_NONE, "nonorm %s: the mode was lost on save", name);
        CHECK(bnl_resnet_set_norm(m2, BNL_NORM_BATCH) == BNL_OK, "set_norm: %s", bnl_last_error());
        CHECK(bnl_resnet_meta(m2, "bnlab.norm") == NULL, "nonorm %s: set_norm(BATCH) kept the metadata", name);
        bnl_resnet_set_training(m2, 0);
        CHECK(bnl_resnet_forward(m2, logits, x, N, H, W) == BNL_OK, "%s: %s", name, bnl_last_error());
        double d = 0;
        for (int i = 0; i < N * K; i++) d = fmax(d, fabs((double)logits[i] - first[i]));
        CHECK(d > 1e-3, "nonorm %s: BatchNorm mode gave the affine mode's logits (max diff %g)", name, d);
        CHECK(bnl_resnet_set_norm(m2, (bnl_norm)7) == BNL_ERR_ARG, "set_norm accepted an unknown mode");
        bnl_resnet_free(m2);
    }
    // zero_init_residual: exactly the last gamma of every residual branch becomes 0
    size_t np;
    const float *params = bnl_resnet_params(m, &np);
    float *pb = malloc(np * sizeof(float));
    memcpy(pb, params, np * sizeof(float));
    bnl_resnet_zero_init_residual(m);
    size_t changed = 0, want = 0;
    for (size_t i = 0; i < np; i++) {
        changed += pb[i] != params[i];
        CHECK(pb[i] == params[i] || params[i] == 0.0f, "zero_init_residual made a value nonzero");
    }
    const char *last = bnl_resnet_get_info(m)->bottleneck ? ".bn3" : ".bn2";
    for (int i = 0; i < bnl_resnet_bn_count(m); i++) {
        const char *bn = bnl_resnet_bn_name(m, i);
        if (strlen(bn) > 4 && !strcmp(bn + strlen(bn) - 4, last)) {
            bnl_resnet_bn_stats(m, &v, i);
            want += (size_t)v.channels;
        }
    }
    CHECK(changed == want && want > 0, "nonorm %s zero_init_residual: %zu values zeroed, want %zu", name, changed, want);
    free(pb);
    bnl_resnet_free(m);

    // a metadata value other than batch/none is refused, naming the key
    bnl_st_writer *w;
    bnl_st_writer_create(&w);
    for (size_t i = 0; i < f.weights.count; i++) {
        const bnl_st_tensor *t = &f.weights.tensors[i];
        bnl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    bnl_st_writer_meta(w, "bnlab.norm", "layer");
    CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK, "%s", bnl_last_error());
    bnl_status s = bnl_resnet_load(&m, buf, len);
    CHECK(s == BNL_ERR_FORMAT && strstr(bnl_last_error(), "bnlab.norm") && strstr(bnl_last_error(), "layer"),
          "bad bnlab.norm: status %d, '%s'", s, bnl_last_error());
    free(buf);
    bnl_st_writer_free(w);
    free(x), free(logits), free(first), free(before);
    bnl_st_free(&f.weights), bnl_st_free(&f.input), bnl_st_free(&f.expected);
    free(f.wbuf);
}

// GroupNorm, Batch Renorm, Ghost BatchNorm, frozen BatchNorm (tests/fixtures/norms, made by
// tests/gen_fixtures_norms.py): the kind from the file's metadata, eval and train logits, running
// statistics after a train forward, each layer's own statistics (bnl_resnet_norm_stats), one SGD step.
static void run_norms(const char *kind, const char *name) {
    static const char *DIRN = "tests/fixtures/norms";
    char what[320], p[512];
    fixture f;
    memset(&f, 0, sizeof f);
    snprintf(p, sizeof p, "%s/%s-%s.weights.safetensors", DIRN, kind, name);
    if (bnl_read_file(p, &f.wbuf, &f.wlen) != BNL_OK || bnl_st_parse(&f.weights, f.wbuf, f.wlen) != BNL_OK) {
        CHECK(0, "cannot read %s: %s", p, bnl_last_error());
        return;
    }
    snprintf(p, sizeof p, "%s/%s.input.safetensors", DIRN, name);
    CHECK(bnl_st_read_file(&f.input, p) == BNL_OK, "%s: %s", p, bnl_last_error());
    snprintf(p, sizeof p, "%s/%s-%s.expected.safetensors", DIRN, kind, name);
    CHECK(bnl_st_read_file(&f.expected, p) == BNL_OK, "%s: %s", p, bnl_last_error());
    const bnl_st_file *in = &f.input, *ex = &f.expected;
    const bnl_st_tensor *xt = bnl_st_find(in, "input");
    int N = (int)xt->shape[0], H = (int)xt->shape[1], W = (int)xt->shape[2];
    float *x = tensor_f32(in, "input", NULL);
    int64_t labels[64];
    bnl_st_to_i64(labels, bnl_st_find(in, "labels"));
    bnl_norm_spec want;
    CHECK(bnl_norm_parse(&want, bnl_st_meta(&f.weights, "bnlab.norm")) == BNL_OK, "%s", bnl_last_error());
    int group = want.kind == BNL_NORM_GROUP;

    bnl_resnet *m = NULL;
    CHECK(bnl_resnet_load(&m, f.wbuf, f.wlen) == BNL_OK, "norms %s-%s: %s", kind, name, bnl_last_error());
    if (!m) return;
    bnl_norm_spec got = bnl_resnet_norm_spec(m);
    CHECK(got.kind == want.kind && got.groups == want.groups && got.virtual_batch == want.virtual_batch &&
              bnl_resnet_get_info(m)->norm == (int)want.kind,
          "norms %s-%s: the file's bnlab.norm was not honoured (kind %d)", kind, name, (int)got.kind);
    if (want.kind == BNL_NORM_RENORM)
        CHECK(got.renorm_rmax == 1.5f && got.renorm_dmax == 0.5f, "norms %s-%s: renorm bounds %g %g not read", kind,
              name, (double)got.renorm_rmax, (double)got.renorm_dmax);
    int K = bnl_resnet_get_info(m)->num_classes;
    float *logits = calloc((size_t)N * K, sizeof(float)), *first = calloc((size_t)N * K, sizeof(float));
    size_t nstats;
    const float *stats = bnl_resnet_stats(m, &nstats);
    float *before = malloc(nstats * sizeof(float));
    memcpy(before, stats, nstats * sizeof(float));
    bnl_resnet_set_training(m, 0);
    CHECK(bnl_resnet_forward(m, first, x, N, H, W) == BNL_OK, "%s eval: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "norms %s-%s logits (eval)", kind, name);
    check_logits(what, first, ex, "logits_eval");
    CHECK(!memcmp(before, stats, nstats * sizeof(float)), "norms %s-%s: eval changed running statistics", kind, name);
    bnl_resnet_set_training(m, 1);
    CHECK(bnl_resnet_forward(m, logits, x, N, H, W) == BNL_OK, "%s train: %s", name, bnl_last_error());
    snprintf(what, sizeof what, "norms %s-%s logits (train)", kind, name);
    check_logits(what, logits, ex, "logits_train");
    if (group) {   // GroupNorm: the same function in both modes, no running statistics touched
        CHECK(!memcmp(before, stats, nstats * sizeof(float)), "norms %s-%s: train changed statistics", kind, name);
    } else {
        snprintf(what, sizeof what, "norms %s-%s after_train_forward", kind, name);
        check_state(what, m, ex, "after_train_forward", 1, 1e-5, 1e-4);
    }
    // each layer's own statistics of that forward
    static const char *keys[][2] = {{"", ""}, {"", ""}, {"group_mean", "group_var"}, {"renorm_r", "renorm_d"},
                                    {"ghost_mean", "ghost_var"}, {"", ""}};
    int compared = 0;
    for (int i = 0; i < bnl_resnet_bn_count(m); i++) {
        bnl_norm_view v;
        bnl_status s = bnl_resnet_norm_stats(m, &v, i);
        if (!keys[want.kind][0][0]) {
            CHECK(s == BNL_ERR_ARG, "norms %s-%s: norm_stats answered for a kind without statistics", kind, name);
            break;
        }
        CHECK(s == BNL_OK, "norms %s-%s norm_stats(%d): %s", kind, name, i, bnl_last_error());
        if (s != BNL_OK) break;
        for (int j = 0; j < 2; j++) {
            char key[160];
            size_t n;
            snprintf(key, sizeof key, "%s.%s", keys[want.kind][j], bnl_resnet_bn_name(m, i));
            float *e = tensor_f32(ex, key, &n);
            if (!e) continue;
            CHECK(n == (size_t)v.rows * v.cols, "%s: %zu values, the view has %dx%d", key, n, v.rows, v.cols);
            snprintf(what, sizeof what, "norms %s-%s %s", kind, name, key);
            if (n == (size_t)v.rows * v.cols) check_close(what, j ? v.b : v.a, e, n, 1e-5, 1e-4), compared++;
            free(e);
        }
    }
    CHECK(!keys[want.kind][0][0] || compared == 2 * bnl_resnet_bn_count(m), "norms %s-%s: %d views compared", kind,
          name, compared);
    bnl_resnet_free(m);

    // one SGD step from the file's state
    m = NULL;
    CHECK(bnl_resnet_load(&m, f.wbuf, f.wlen) == BNL_OK, "%s", bnl_last_error());
    float loss = 0;
    bnl_sgd sgd = {0.1f, 0.9f, 1e-4f, 0, 0};
    CHECK(bnl_resnet_step(m, &loss, x, N, H, W, labels, &sgd) == BNL_OK, "%s step: %s", name, bnl_last_error());
    float *el = tensor_f32(ex, "step_loss", NULL);
    snprintf(what, sizeof what, "norms %s-%s step_loss", kind, name);
    if (el) check_close(what, &loss, el, 1, 1e-6, 1e-5), free(el);
    // every saved tensor against torch's state dict (a GroupNorm save holding running statistics would fail)
    snprintf(what, sizeof what, "norms %s-%s after_step", kind, name);
    check_state(what, m, ex, "after_step", 0, 1e-5, 1e-4);
    if (want.kind == BNL_NORM_GHOST) {   // a batch the virtual batches do not divide
        bnl_status s = bnl_resnet_step(m, &loss, x, N - 1, H, W, labels, &sgd);
        CHECK(s == BNL_ERR_BATCH && strstr(bnl_last_error(), "ghost:2") && strstr(bnl_last_error(), "batch of 3"),
              "ghost with N=3: status %d '%s'", s, bnl_last_error());
    }
    bnl_resnet_free(m);

    // bad metadata: groups that do not divide a layer, a bad renorm bound, a group file read as BatchNorm
    static const char *bad[][3] = {{"bnlab.norm", "group:3", "do not divide"},
                                   {"bnlab.norm", "ghost:0", "bnlab.norm"},
                                   {"bnlab.renorm_rmax", "0.5", "bnlab.renorm_rmax"},
                                   {"bnlab.norm", "batch", "running_mean"}};
    for (int b = 0; b < 4; b++) {
        if (b == 2 && want.kind != BNL_NORM_RENORM) continue;
        if (b == 3 && !group) continue;
        bnl_st_writer *w;
        bnl_st_writer_create(&w);
        for (size_t i = 0; i < f.weights.count; i++) {
            const bnl_st_tensor *t = &f.weights.tensors[i];
            bnl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        for (size_t i = 0; i < f.weights.meta_count; i++)
            if (strcmp(f.weights.meta_keys[i], bad[b][0]))
                bnl_st_writer_meta(w, f.weights.meta_keys[i], f.weights.meta_values[i]);
        bnl_st_writer_meta(w, bad[b][0], bad[b][1]);
        uint8_t *buf;
        size_t len;
        CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK, "%s", bnl_last_error());
        bnl_status s = bnl_resnet_load(&m, buf, len);
        CHECK(s != BNL_OK && strstr(bnl_last_error(), bad[b][2]), "norms %s-%s with %s=%s: status %d '%s'", kind, name,
              bad[b][0], bad[b][1], s, bnl_last_error());
        free(buf);
        bnl_st_writer_free(w);
    }
    free(x), free(logits), free(first), free(before);
    bnl_st_free(&f.weights), bnl_st_free(&f.input), bnl_st_free(&f.expected);
    free(f.wbuf);
}

// The "bnlab.norm" strings: parse -> format round trip; malformed ones refused naming the string.
static void test_norm_strings(void) {
    static const char *good[] = {"batch", "none", "group:1", "group:32", "renorm", "ghost:4", "frozen"};
    static const char *bad[] = {"", "Batch", "group", "group:", "group:0", "group:01", "group:4x", "ghost:-1",
                                "ghost:99999999999", "renorm:3", "frozen "};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        bnl_norm_spec sp;
        char back[48];
        CHECK(bnl_norm_parse(&sp, good[i]) == BNL_OK, "norm '%s' refused: %s", good[i], bnl_last_error());
        bnl_norm_format(&sp, back, sizeof back);
        CHECK(!strcmp(back, good[i]), "norm '%s' formats back as '%s'", good[i], back);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bnl_norm_spec sp;
        CHECK(bnl_norm_parse(&sp, bad[i]) == BNL_ERR_ARG && strstr(bnl_last_error(), "is not a normalization"),
              "norm '%s' accepted or unclear: '%s'", bad[i], bnl_last_error());
    }
}

int main(void) {
    for (int isa = 0; isa < BNL_ISA_COUNT; isa++) {
        if (!bnl_isa_available((bnl_isa)isa)) continue;
        bnl_isa_force((bnl_isa)isa);
        int before = g_failures;
        run_model("resnet50", 0);
        run_model("resnet18", 1);
        run_nonorm("basic");
        run_nonorm("bottleneck");
        static const char *kinds[] = {"group", "renorm", "ghost", "frozen"};
        for (int k = 0; k < 4; k++) run_norms(kinds[k], "basic"), run_norms(kinds[k], "bottleneck");
        printf("isa %s: %s\n", bnl_isa_name((bnl_isa)isa), g_failures == before ? "ok" : "FAILED");
    }
    bnl_isa_reset();
    test_norm_strings();
    return test_summary("test_resnet");
}
