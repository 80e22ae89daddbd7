// libFuzzer target: the safetensors reader and the ResNet loader on arbitrary bytes.
//   1. bnl_st_parse; if it parses: every tensor lies inside the buffer with nbytes = nelem * dtype
//      size = prod(shape) * dtype size, is found by its name, converts with bnl_st_to_f32 or
//      bnl_st_to_i64 (the other one refuses it cleanly), and the file round-trips through the
//      writer to the same tensors and metadata.
//   2. bnl_resnet_load on the same bytes; if it loads and is small: save -> load again must succeed,
//      then an eval forward and a train forward + backward run without a sanitizer report.
#include "bnlab.h"
#include "io/safetensors.h"
#include "io/statedict.h"
#include "model/resnet.h"

#include "fuzz_util.h"

static void check_parsed(const bnl_st_file *f, const uint8_t *data, size_t size) {
    for (size_t i = 0; i < f->count; i++) {
        const bnl_st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->name != NULL, "tensor %zu has no name", i);
        size_t es = bnl_dtype_size(t->dtype), n = 1;
        FUZZ_CHECK(es > 0, "%s: dtype %d", t->name, (int)t->dtype);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= BNL_ST_MAX_DIMS, "%s: ndim %d", t->name, t->ndim);
        for (int k = 0; k < t->ndim; k++) {
            FUZZ_CHECK(t->shape[k] >= 0, "%s: negative dim", t->name);
            n *= (size_t)t->shape[k];
        }
        FUZZ_CHECK(n == t->nelem && t->nbytes == n * es, "%s: nelem %zu nbytes %zu", t->name, t->nelem, t->nbytes);
        FUZZ_CHECK(t->nbytes == 0 || (t->data >= data && t->data + t->nbytes <= data + size), "%s: data outside",
                   t->name);
        const bnl_st_tensor *found = bnl_st_find(f, t->name);
        FUZZ_CHECK(found && !strcmp(found->name, t->name), "%s: not found by name", t->name);

        void *dst = malloc(t->nelem * 8 + 8);
        int is_float = t->dtype == BNL_DT_F32 || t->dtype == BNL_DT_F16 || t->dtype == BNL_DT_BF16 ||
                       t->dtype == BNL_DT_F64;
        bnl_status a = bnl_st_to_f32(dst, t), b = bnl_st_to_i64(dst, t);
        FUZZ_CHECK((a == BNL_OK) == is_float && (b == BNL_OK) == !is_float, "%s: conversions %d %d", t->name, a, b);
        free(dst);
    }
    for (size_t i = 0; i < f->meta_count; i++) {
        const char *v = bnl_st_meta(f, f->meta_keys[i]);
        FUZZ_CHECK(v != NULL, "metadata key %zu not found", i);
    }
}

// Writer round trip: what the reader accepts, the writer writes, and the reader reads back the same.
// One documented exception: an empty tensor name parses (as in the reference implementation) but
// the writer refuses to create one.
static void round_trip(const bnl_st_file *f) {
    for (size_t i = 0; i < f->count; i++)
        if (!f->tensors[i].name[0]) return;
    bnl_st_writer *w;
    FUZZ_CHECK(bnl_st_writer_create(&w) == BNL_OK, "writer");
    for (size_t i = 0; i < f->count; i++) {
        const bnl_st_tensor *t = &f->tensors[i];
        bnl_status s = bnl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        FUZZ_CHECK(s == BNL_OK, "writer refuses tensor '%s' the reader accepted: %s", t->name, bnl_last_error());
    }
    for (size_t i = 0; i < f->meta_count; i++) {
        bnl_status s = bnl_st_writer_meta(w, f->meta_keys[i], f->meta_values[i]);
        FUZZ_CHECK(s == BNL_OK, "writer refuses metadata the reader accepted: %s", bnl_last_error());
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    FUZZ_CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK, "writer: %s", bnl_last_error());
    bnl_st_writer_free(w);
    bnl_st_file g;
    FUZZ_CHECK(bnl_st_parse(&g, buf, len) == BNL_OK, "the writer's output does not parse: %s", bnl_last_error());
    FUZZ_CHECK(g.count == f->count && g.meta_count == f->meta_count, "round trip: %zu/%zu tensors, %zu/%zu meta",
               g.count, f->count, g.meta_count, f->meta_count);
    for (size_t i = 0; i < f->count; i++) {
        const bnl_st_tensor *t = &f->tensors[i], *u = bnl_st_find(&g, t->name);
        FUZZ_CHECK(u && u->dtype == t->dtype && u->ndim == t->ndim && u->nbytes == t->nbytes &&
                       !memcmp(u->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) &&
                       (t->nbytes == 0 || !memcmp(u->data, t->data, t->nbytes)),
                   "round trip changed tensor '%s'", t->name);
    }
    for (size_t i = 0; i < f->meta_count; i++) {
        const char *v = bnl_st_meta(&g, f->meta_keys[i]);
        FUZZ_CHECK(v && !strcmp(v, bnl_st_meta(f, f->meta_keys[i])), "round trip changed metadata");
    }
    bnl_st_free(&g);
    free(buf);
}

static void exercise_model(bnl_resnet *m) {
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    // small models only: the point is the loader, not the kernels' speed
    if (in->num_params > 200000 || in->in_channels > 8 || in->num_classes > 1000) return;
    // before any train forward: the running statistics are still the (valid) loaded ones
    uint8_t *buf = NULL;
    size_t len = 0;
    FUZZ_CHECK(bnl_resnet_save(m, &buf, &len) == BNL_OK, "save: %s", bnl_last_error());
    bnl_resnet *m2;
    FUZZ_CHECK(bnl_resnet_load(&m2, buf, len) == BNL_OK, "a saved model does not load: %s", bnl_last_error());
    FUZZ_CHECK(bnl_resnet_get_info(m2)->num_params == in->num_params, "reload changed the parameter count");
    bnl_resnet_free(m2);
    free(buf);
    enum { N = 2, S = 8 };
    int C = in->in_channels, K = in->num_classes;
    float *x = malloc(sizeof(float) * N * S * S * (size_t)C), *logits = malloc(sizeof(float) * N * (size_t)K);
    for (int i = 0; i < N * S * S * C; i++) x[i] = (float)((i * 37) % 17) / 8.0f - 1.0f;
    bnl_resnet_set_training(m, 0);
    bnl_status s = bnl_resnet_forward(m, logits, x, N, S, S);
    FUZZ_CHECK(s == BNL_OK || s == BNL_ERR_NUMERIC || s == BNL_ERR_SHAPE, "eval forward: %s", bnl_last_error());
    int64_t labels[N] = {0, K - 1};
    float loss;
    s = bnl_resnet_forward_backward(m, &loss, logits, x, N, S, S, labels);
    FUZZ_CHECK(s == BNL_OK || s == BNL_ERR_NUMERIC || s == BNL_ERR_SHAPE, "forward_backward: %s", bnl_last_error());
    free(x), free(logits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bnl_st_file f;
    if (bnl_st_parse(&f, data, size) == BNL_OK) {
        check_parsed(&f, data, size);
        round_trip(&f);
        bnl_st_free(&f);
    } else {
        FUZZ_CHECK(bnl_last_error()[0] != 0, "a refused file without a message");
    }
    bnl_resnet *m;
    if (bnl_resnet_load(&m, data, size) == BNL_OK) {
        exercise_model(m);
        bnl_resnet_free(m);
    } else {
        FUZZ_CHECK(bnl_last_error()[0] != 0, "a refused model without a message");
    }
    return 0;
}
