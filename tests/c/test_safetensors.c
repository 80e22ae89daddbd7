// safetensors reader and writer: round trips, atomic files, half/bfloat16 bit patterns, and every
// malformed input built by hand, each checked for its status AND the phrase that names the problem.
#include "io/safetensors.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Helpers

// A file made of the header text (single quotes become double quotes, so headers read easily),
// `pad` spaces, and `dlen` data bytes 0, 1, 2, ...
static uint8_t *make_file(const char *header, size_t pad, size_t dlen, size_t *len) {
    size_t sl = strlen(header), hl = sl + pad;
    uint8_t *b = malloc(8 + hl + dlen + 1);
    uint64_t L = hl;
    memcpy(b, &L, 8);
    for (size_t i = 0; i < sl; i++) b[8 + i] = header[i] == '\'' ? '"' : (uint8_t)header[i];
    memset(b + 8 + sl, ' ', pad);
    for (size_t i = 0; i < dlen; i++) b[8 + hl + i] = (uint8_t)i;
    *len = 8 + hl + dlen;
    return b;
}

// Parses bytes and expects status `want` with every phrase (NULL-terminated list) in the message.
static void expect_bytes(int line, const char *what, const uint8_t *b, size_t len, bnl_status want,
                         const char *p1, const char *p2) {
    bnl_st_file f;
    bnl_status s = bnl_st_parse(&f, b, len);
    const char *msg = bnl_last_error();
    g_checks++;
    if (s != want || (p1 && !strstr(msg, p1)) || (p2 && !strstr(msg, p2))) {
        g_failures++;
        fprintf(stderr, "FAIL line %d: %s: got status %d \"%s\", want %d with \"%s\"%s%s%s\n", line, what, (int)s,
                msg, (int)want, p1 ? p1 : "", p2 ? " and \"" : "", p2 ? p2 : "", p2 ? "\"" : "");
    }
    if (s == BNL_OK) bnl_st_free(&f);
    else CHECK(f.count == 0 && f.tensors == NULL && f.meta_count == 0, "failed parse leaves an empty file");
}

static void expect_parse(int line, const char *header, size_t dlen, bnl_status want, const char *p1, const char *p2) {
    size_t len;
    uint8_t *b = make_file(header, 0, dlen, &len);
    expect_bytes(line, header, b, len, want, p1, p2);
    free(b);
}
#define EXPECT_BAD(header, dlen, phrase) expect_parse(__LINE__, header, dlen, BNL_ERR_FORMAT, phrase, NULL)
#define EXPECT_BAD2(header, dlen, p1, p2) expect_parse(__LINE__, header, dlen, BNL_ERR_FORMAT, p1, p2)
#define EXPECT_OK(header, dlen) expect_parse(__LINE__, header, dlen, BNL_OK, NULL, NULL)

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static char g_dir[256];

static void path_in_dir(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

// ---------------------------------------------------------------------------------------------
// Reader on a hand-made file

static void test_reader_basic(void) {
    const char *h = "{'__metadata__':{'format':'pt','labels':'[\\'cat\\',\\'dog\\']'},"
                    "'b':{'dtype':'I64','shape':[],'data_offsets':[8,16]},"
                    "'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}";
    size_t len;
    uint8_t *b = make_file(h, 5, 16, &len);
    float a[2] = {1.5f, -2.0f};
    int64_t v = -7;
    size_t data = len - 16;
    memcpy(b + data, a, 8);
    memcpy(b + data + 8, &v, 8);
    bnl_st_file f;
    bnl_status s = bnl_st_parse(&f, b, len);
    CHECK(s == BNL_OK, "parse: %s", bnl_last_error());
    if (s == BNL_OK) {
        CHECK(f.count == 2, "count %zu", f.count);
        CHECK(f.owned == NULL, "parse borrows the buffer");
        CHECK(strcmp(f.tensors[0].name, "a") == 0 && strcmp(f.tensors[1].name, "b") == 0, "sorted by offset");
        const bnl_st_tensor *ta = bnl_st_find(&f, "a"), *tb = bnl_st_find(&f, "b");
        CHECK(ta && ta->dtype == BNL_DT_F32 && ta->ndim == 1 && ta->shape[0] == 2 && ta->nelem == 2 && ta->nbytes == 8, "a");
        CHECK(ta && ta->data == b + data, "a data pointer");
        CHECK(tb && tb->dtype == BNL_DT_I64 && tb->ndim == 0 && tb->nelem == 1 && tb->nbytes == 8, "b scalar");
        CHECK(bnl_st_find(&f, "c") == NULL, "absent tensor");
        float got[2];
        int64_t gi;
        CHECK(bnl_st_to_f32(got, ta) == BNL_OK, "to_f32");
        check_close("a", got, a, 2, 0, 0);
        CHECK(bnl_st_to_i64(&gi, tb) == BNL_OK && gi == -7, "to_i64 %lld", (long long)gi);
        CHECK(bnl_st_to_f32(got, tb) == BNL_ERR_FORMAT && strstr(bnl_last_error(), "I64"), "to_f32 on I64: %s", bnl_last_error());
        CHECK(bnl_st_to_i64(&gi, ta) == BNL_ERR_FORMAT && strstr(bnl_last_error(), "F32"), "to_i64 on F32: %s", bnl_last_error());
        const char *fm = bnl_st_meta(&f, "format"), *lb = bnl_st_meta(&f, "labels");
        CHECK(fm && strcmp(fm, "pt") == 0, "meta format");
        CHECK(lb && strcmp(lb, "[\"cat\",\"dog\"]") == 0, "meta labels escaped: %s", lb ? lb : "(null)");
        CHECK(bnl_st_meta(&f, "nope") == NULL, "absent meta");
        bnl_st_free(&f);
        CHECK(f.count == 0 && f.tensors == NULL, "free clears");
        bnl_st_free(&f);   // twice is harmless
    }
    free(b);
}

// Escapes in names decode to UTF-8; unknown fields are skipped; JSON whitespace anywhere.
static void test_reader_json_forms(void) {
    size_t len;
    const char *h = "{ 'caf\\u00e9\\ud83d\\ude00\\n\\t\\/\\\\' : { 'extra' : [ { 'x' : [ 1 , -2 , 'y' ] } , [ ] , { } ] ,"
                    "\n\t'dtype':'U8', 'shape' : [ 2 ] , 'data_offsets' : [ 0 , 2 ] } }\r\n\t ";
    uint8_t *b = make_file(h, 3, 2, &len);
    bnl_st_file f;
    bnl_status s = bnl_st_parse(&f, b, len);
    CHECK(s == BNL_OK, "json forms: %s", bnl_last_error());
    if (s == BNL_OK) {
        const char *want = "caf\xc3\xa9\xf0\x9f\x98\x80\n\t/\\";
        CHECK(f.count == 1 && strcmp(f.tensors[0].name, want) == 0, "decoded name '%s'", f.count ? f.tensors[0].name : "");
        CHECK(bnl_st_find(&f, want) != NULL, "find by decoded name");
        bnl_st_free(&f);
    }
    free(b);
    // raw UTF-8 in names is fine too
    EXPECT_OK("{'\xc3\xa9t\xc3\xa9':{'dtype':'BOOL','shape':[1],'data_offsets':[0,1]}}", 1);
    // empty file with no tensors; metadata only; empty tensor
    EXPECT_OK("{}", 0);
    EXPECT_OK("{'__metadata__':{}}", 0);
    EXPECT_OK("{'__metadata__':{'a':'b'}}", 0);
    EXPECT_OK("{'e':{'dtype':'F32','shape':[0,3],'data_offsets':[0,0]}}", 0);
    // zero dims make the count 0 even when the other dims alone would overflow
    EXPECT_OK("{'e':{'dtype':'F32','shape':[9223372036854775807,0,9223372036854775807],'data_offsets':[0,0]}}", 0);
    // zero-sized tensors may share an offset with another tensor
    EXPECT_OK("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},'e':{'dtype':'F32','shape':[0],'data_offsets':[4,4]},"
              "'f':{'dtype':'I8','shape':[0],'data_offsets':[4,4]},'b':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 8);
    EXPECT_OK("{'a':{'dtype':'F32','shape':[1,1,1,1,1,1,1,2],'data_offsets':[0,8]}}", 8);
}

// ---------------------------------------------------------------------------------------------
// Conversions

static void test_f16_bf16(void) {
    // half bits -> float32 bits, covering zeros, normals, extremes, subnormals, inf and nan
    static const struct { uint16_t h; uint32_t f; } f16[] = {
        {0x0000, 0x00000000}, {0x8000, 0x80000000},                          // +0, -0
        {0x3C00, 0x3F800000}, {0xC000, 0xC0000000}, {0x3555, 0x3EAAA000},    // 1, -2, 0.333251953125
        {0x5640, 0x42C80000}, {0x7BFF, 0x477FE000}, {0xFBFF, 0xC77FE000},    // 100, 65504, -65504
        {0x0400, 0x38800000},                                                // 2^-14, smallest normal
        {0x0001, 0x33800000}, {0x8001, 0xB3800000},                          // +-2^-24, smallest subnormal
        {0x0002, 0x34000000}, {0x0003, 0x34400000},                          // 2^-23, 3*2^-24
        {0x03FF, 0x387FC000}, {0x0200, 0x38000000},                          // largest subnormal, 2^-15
        {0x7C00, 0x7F800000}, {0xFC00, 0xFF800000},                          // +inf, -inf
        {0x7E00, 0x7FC00000}, {0xFE00, 0xFFC00000}, {0x7C01, 0x7F802000},    // qnan, -qnan, snan payload
        {0x7FFF, 0x7FFFE000},
    };
    size_t n = sizeof f16 / sizeof f16[0];
    uint8_t raw[1 + 2 * 32];   // data at an odd address: the reader must not assume alignment
    for (size_t i = 0; i < n; i++) memcpy(raw + 1 + 2 * i, &f16[i].h, 2);
    bnl_st_tensor t = {.name = "h", .dtype = BNL_DT_F16, .ndim = 1, .shape = {(int64_t)n}, .nelem = n,
                       .nbytes = 2 * n, .data = raw + 1};
    float out[32];
    CHECK(bnl_st_to_f32(out, &t) == BNL_OK, "f16 convert");
    for (size_t i = 0; i < n; i++)
        CHECK(f32_bits(out[i]) == f16[i].f, "f16 0x%04x -> 0x%08x, want 0x%08x (%g)", f16[i].h, f32_bits(out[i]),
              f16[i].f, (double)out[i]);
    CHECK(out[9] == ldexpf(1.0f, -24) && out[13] == 1023 * ldexpf(1.0f, -24), "subnormal values");
    CHECK(signbit(out[1]) && out[1] == 0.0f, "negative zero");
    CHECK(isinf(out[15]) && out[15] > 0 && isinf(out[16]) && out[16] < 0, "inf");
    CHECK(isnan(out[17]) && isnan(out[19]), "nan");

    // every finite half converts exactly: check against a slow formula
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint16_t hh = (uint16_t)h;
        int e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) continue;
        double v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
        if (h & 0x8000) v = -v;
        float got;
        bnl_st_tensor one = {.name = "h", .dtype = BNL_DT_F16, .nelem = 1, .nbytes = 2, .data = (uint8_t *)&hh};
        bnl_st_to_f32(&got, &one);
        if ((double)got != v || !!signbit(got) != !!(h & 0x8000)) {
            if (bad++ < 5) fprintf(stderr, "  f16 0x%04x -> %.9g want %.9g\n", h, (double)got, v);
        }
    }
    CHECK(bad == 0, "%d of 63488 finite halves convert wrongly", bad);

    static const struct { uint16_t h; uint32_t f; } bf[] = {
        {0x3F80, 0x3F800000}, {0xC040, 0xC0400000}, {0x4049, 0x40490000},   // 1, -3, 3.140625
        {0x0000, 0x00000000}, {0x8000, 0x80000000},                        // +0, -0
        {0x0001, 0x00010000}, {0x807F, 0x807F0000},                        // subnormals
        {0x7F7F, 0x7F7F0000},                                              // largest finite
        {0x7F80, 0x7F800000}, {0xFF80, 0xFF800000}, {0x7FC0, 0x7FC00000},  // inf, -inf, nan
    };
    n = sizeof bf / sizeof bf[0];
    for (size_t i = 0; i < n; i++) memcpy(raw + 1 + 2 * i, &bf[i].h, 2);
    t.dtype = BNL_DT_BF16, t.nelem = n, t.nbytes = 2 * n, t.shape[0] = (int64_t)n;
    CHECK(bnl_st_to_f32(out, &t) == BNL_OK, "bf16 convert");
    for (size_t i = 0; i < n; i++)
        CHECK(f32_bits(out[i]) == bf[i].f, "bf16 0x%04x -> 0x%08x, want 0x%08x", bf[i].h, f32_bits(out[i]), bf[i].f);

    double d[5] = {1.0 / 3.0, -0.0, 1e300, -2.5, 1e-50};
    uint8_t draw[1 + sizeof d];
    memcpy(draw + 1, d, sizeof d);
    bnl_st_tensor td = {.name = "d", .dtype = BNL_DT_F64, .nelem = 5, .nbytes = 40, .data = draw + 1};
    CHECK(bnl_st_to_f32(out, &td) == BNL_OK, "f64 convert");
    CHECK(out[0] == (float)(1.0 / 3.0) && out[0] != 0, "f64 1/3");
    CHECK(out[1] == 0 && signbit(out[1]), "f64 -0");
    CHECK(isinf(out[2]) && out[3] == -2.5f && out[4] == 0, "f64 overflow/underflow");

    // integers, unaligned
    uint8_t iraw[1 + 64];
    int64_t got[8];
    int32_t i32[3] = {-5, 2147483647, (int32_t)0x80000000u};
    memcpy(iraw + 1, i32, sizeof i32);
    bnl_st_tensor ti = {.name = "i", .dtype = BNL_DT_I32, .nelem = 3, .nbytes = 12, .data = iraw + 1};
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == -5 && got[1] == 2147483647 && got[2] == -2147483648LL, "i32");
    int16_t i16[2] = {-32768, 32767};
    memcpy(iraw + 1, i16, sizeof i16);
    ti.dtype = BNL_DT_I16, ti.nelem = 2, ti.nbytes = 4;
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == -32768 && got[1] == 32767, "i16");
    uint8_t bytes[3] = {0x80, 0xFF, 0x02};
    memcpy(iraw + 1, bytes, 3);
    ti.dtype = BNL_DT_I8, ti.nelem = 3, ti.nbytes = 3;
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == -128 && got[1] == -1 && got[2] == 2, "i8");
    ti.dtype = BNL_DT_U8;
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == 128 && got[1] == 255 && got[2] == 2, "u8");
    ti.dtype = BNL_DT_BOOL;
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == 1 && got[1] == 1 && got[2] == 1, "bool");
    int64_t i64[2] = {INT64_MIN, 42};
    memcpy(iraw + 1, i64, sizeof i64);
    ti.dtype = BNL_DT_I64, ti.nelem = 2, ti.nbytes = 16;
    CHECK(bnl_st_to_i64(got, &ti) == BNL_OK && got[0] == INT64_MIN && got[1] == 42, "i64");
    CHECK(bnl_st_to_f32(out, &ti) == BNL_ERR_FORMAT && strstr(bnl_last_error(), "'i'"), "to_f32 names the tensor: %s",
          bnl_last_error());

    CHECK(strcmp(bnl_dtype_name(BNL_DT_BF16), "BF16") == 0 && bnl_dtype_size(BNL_DT_BF16) == 2, "dtype table");
    CHECK(bnl_dtype_size(BNL_DT_F64) == 8 && bnl_dtype_size(BNL_DT_BOOL) == 1 && bnl_dtype_size(BNL_DT_I16) == 2, "sizes");
}

// ---------------------------------------------------------------------------------------------
// Writer

typedef struct sample {
    float f32[6];
    uint16_t f16[4], bf16[2];
    double f64[3];
    int64_t i64;
    int32_t i32[2];
    int16_t i16[2];
    int8_t i8[3];
    uint8_t u8[5], b[2];
} sample;

static void fill_sample(sample *s) {
    for (int i = 0; i < 6; i++) s->f32[i] = 0.5f * (float)i - 1.0f;
    uint16_t h[4] = {0x3C00, 0x8001, 0x7C00, 0x7E00};
    memcpy(s->f16, h, sizeof h);
    s->bf16[0] = 0x4049, s->bf16[1] = 0xBF80;
    s->f64[0] = 0.1, s->f64[1] = -1e10, s->f64[2] = 3;
    s->i64 = 1234567890123LL;
    s->i32[0] = -1, s->i32[1] = 7;
    s->i16[0] = -300, s->i16[1] = 300;
    s->i8[0] = -1, s->i8[1] = 0, s->i8[2] = 127;
    for (int i = 0; i < 5; i++) s->u8[i] = (uint8_t)(250 + i);
    s->b[0] = 0, s->b[1] = 1;
}

static const char *k_names[] = {"conv1.weight", "half", "bfloat", "double", "bn1.num_batches_tracked",
                                "i32", "i16", "i8", "u8", "mask", "empty", "name \"with\" \\ quotes\n\x01 and \xc3\xa9"};

static bnl_st_writer *make_writer(const sample *s, int with_meta) {
    bnl_st_writer *w = NULL;
    CHECK(bnl_st_writer_create(&w) == BNL_OK, "create");
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s2[1] = {2}, s3[1] = {3}, s5[1] = {5}, s0[2] = {0, 4};
    int ok = 1;
    ok &= bnl_st_writer_add(w, k_names[0], BNL_DT_F32, 2, s23, s->f32) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[1], BNL_DT_F16, 1, s4, s->f16) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[2], BNL_DT_BF16, 1, s2, s->bf16) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[3], BNL_DT_F64, 1, s3, s->f64) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[4], BNL_DT_I64, 0, NULL, &s->i64) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[5], BNL_DT_I32, 1, s2, s->i32) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[6], BNL_DT_I16, 1, s2, s->i16) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[7], BNL_DT_I8, 1, s3, s->i8) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[8], BNL_DT_U8, 1, s5, s->u8) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[9], BNL_DT_BOOL, 1, s2, s->b) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[10], BNL_DT_F32, 2, s0, NULL) == BNL_OK;
    ok &= bnl_st_writer_add(w, k_names[11], BNL_DT_U8, 1, s2, s->u8) == BNL_OK;
    CHECK(ok, "writer add: %s", bnl_last_error());
    if (with_meta) {
        CHECK(bnl_st_writer_meta(w, "labels", "[\"tench\", \"goldfish\"]") == BNL_OK, "meta");
        CHECK(bnl_st_writer_meta(w, "mean", "wrong") == BNL_OK, "meta");
        CHECK(bnl_st_writer_meta(w, "mean", "0.485,0.456,0.406") == BNL_OK, "meta replace");
        CHECK(bnl_st_writer_meta(w, "odd \"key\"", "tab\there \\ \x1f \xe2\x82\xac") == BNL_OK, "meta escapes");
    }
    return w;
}

// Checks a parsed file against the sample, tensor by tensor, in the order written.
static void check_sample_file(const bnl_st_file *f, const sample *s, int with_meta) {
    size_t nt = sizeof k_names / sizeof k_names[0];
    CHECK(f->count == nt, "tensor count %zu, want %zu", f->count, nt);
    if (f->count != nt) return;
    static const bnl_dtype dts[] = {BNL_DT_F32, BNL_DT_F16, BNL_DT_BF16, BNL_DT_F64, BNL_DT_I64, BNL_DT_I32,
                                    BNL_DT_I16, BNL_DT_I8,  BNL_DT_U8,   BNL_DT_BOOL, BNL_DT_F32, BNL_DT_U8};
    static const int nds[] = {2, 1, 1, 1, 0, 1, 1, 1, 1, 1, 2, 1};
    const void *datas[] = {s->f32, s->f16, s->bf16, s->f64, &s->i64, s->i32, s->i16, s->i8, s->u8, s->b, NULL, s->u8};
    static const size_t bytes[] = {24, 8, 4, 24, 8, 8, 4, 3, 5, 2, 0, 2};
    for (size_t i = 0; i < nt; i++) {
        const bnl_st_tensor *t = &f->tensors[i];
        CHECK(strcmp(t->name, k_names[i]) == 0, "tensor %zu name '%s', want '%s'", i, t->name, k_names[i]);
        CHECK(t->dtype == dts[i] && t->ndim == nds[i] && t->nbytes == bytes[i], "tensor '%s' dtype %s ndim %d nbytes %zu",
              t->name, bnl_dtype_name(t->dtype), t->ndim, t->nbytes);
        CHECK(bytes[i] == 0 || memcmp(t->data, datas[i], bytes[i]) == 0, "tensor '%s' data differs", t->name);
        CHECK(bnl_st_find(f, k_names[i]) == t, "find '%s'", k_names[i]);
    }
    CHECK(f->tensors[0].shape[0] == 2 && f->tensors[0].shape[1] == 3 && f->tensors[0].nelem == 6, "shape [2,3]");
    CHECK(f->tensors[10].shape[0] == 0 && f->tensors[10].shape[1] == 4 && f->tensors[10].nelem == 0, "shape [0,4]");
    CHECK(f->tensors[4].nelem == 1, "scalar nelem");
    float h[4];
    CHECK(bnl_st_to_f32(h, &f->tensors[1]) == BNL_OK && h[0] == 1.0f && h[1] == ldexpf(-1.0f, -24) && isinf(h[2]) &&
              isnan(h[3]),
          "f16 values after the round trip");
    if (with_meta) {
        CHECK(f->meta_count == 3, "meta count %zu", f->meta_count);
        const char *l = bnl_st_meta(f, "labels"), *m = bnl_st_meta(f, "mean"), *o = bnl_st_meta(f, "odd \"key\"");
        CHECK(l && strcmp(l, "[\"tench\", \"goldfish\"]") == 0, "labels '%s'", l ? l : "(null)");
        CHECK(m && strcmp(m, "0.485,0.456,0.406") == 0, "mean replaced: '%s'", m ? m : "(null)");
        CHECK(o && strcmp(o, "tab\there \\ \x1f \xe2\x82\xac") == 0, "escaped meta");
    } else {
        CHECK(f->meta_count == 0, "no meta");
    }
}

static void test_writer_roundtrip(void) {
    sample s;
    fill_sample(&s);
    for (int with_meta = 0; with_meta < 2; with_meta++) {
        bnl_st_writer *w = make_writer(&s, with_meta);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK, "to_buffer: %s", bnl_last_error());
        uint64_t hl;
        memcpy(&hl, buf, 8);
        CHECK(hl % 8 == 0 && buf[8] == '{', "header padded to 8 (%llu) and starts with '{'", (unsigned long long)hl);
        CHECK(len == 8 + hl + 24 + 8 + 4 + 24 + 8 + 8 + 4 + 3 + 5 + 2 + 0 + 2, "total length %zu", len);
        char *hdr = malloc(hl + 1);
        memcpy(hdr, buf + 8, hl);
        hdr[hl] = 0;
        CHECK((strstr(hdr, "__metadata__") != NULL) == with_meta, "__metadata__ written only when present");
        CHECK(strstr(hdr, "\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}") != NULL,
              "header layout: %s", hdr);
        CHECK(hl < 8 || hdr[hl - 1] == ' ' || hdr[hl - 1] == '}', "padding is spaces");
        free(hdr);

        bnl_st_file f;
        bnl_status st = bnl_st_parse(&f, buf, len);
        CHECK(st == BNL_OK, "parse written buffer: %s", bnl_last_error());
        if (st == BNL_OK) {
            check_sample_file(&f, &s, with_meta);
            // rewrite from the parsed file: byte-identical
            bnl_st_writer *w2 = NULL;
            bnl_st_writer_create(&w2);
            for (size_t i = 0; i < f.meta_count; i++) bnl_st_writer_meta(w2, f.meta_keys[i], f.meta_values[i]);
            for (size_t i = 0; i < f.count; i++)
                bnl_st_writer_add(w2, f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape,
                                  f.tensors[i].data);
            uint8_t *buf2 = NULL;
            size_t len2 = 0;
            CHECK(bnl_st_writer_to_buffer(w2, &buf2, &len2) == BNL_OK, "rewrite");
            CHECK(len2 == len && memcmp(buf, buf2, len) == 0, "rewrite is byte-identical");
            free(buf2);
            bnl_st_writer_free(w2);
            bnl_st_free(&f);
        }
        // the same bytes at an odd address (data unaligned)
        uint8_t *odd = malloc(len + 1);
        memcpy(odd + 1, buf, len);
        st = bnl_st_parse(&f, odd + 1, len);
        CHECK(st == BNL_OK, "parse at odd address: %s", bnl_last_error());
        if (st == BNL_OK) {
            check_sample_file(&f, &s, with_meta);
            double d[3];
            float fd[3];
            memcpy(d, s.f64, sizeof d);
            CHECK(bnl_st_to_f32(fd, bnl_st_find(&f, "double")) == BNL_OK && fd[0] == (float)d[0] && fd[1] == (float)d[1],
                  "unaligned f64");
            int64_t i[2];
            CHECK(bnl_st_to_i64(i, bnl_st_find(&f, "i32")) == BNL_OK && i[0] == -1 && i[1] == 7, "unaligned i32");
            bnl_st_free(&f);
        }
        free(odd);
        free(buf);
        bnl_st_writer_free(w);
    }

    // an empty writer makes a valid empty file
    bnl_st_writer *w = NULL;
    bnl_st_writer_create(&w);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK && len == 16 && memcmp(buf + 8, "{}      ", 8) == 0,
          "empty file: %zu bytes", len);
    expect_bytes(__LINE__, "empty writer", buf, len, BNL_OK, NULL, NULL);
    free(buf);

    // writer argument errors
    float x[2] = {1, 2};
    int64_t s2[1] = {2}, neg[1] = {-1}, big[2] = {INT64_MAX, INT64_MAX}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(bnl_st_writer_add(w, "x", BNL_DT_F32, 1, s2, x) == BNL_OK, "add x");
    CHECK(bnl_st_writer_add(w, "x", BNL_DT_F32, 1, s2, x) == BNL_ERR_ARG && strstr(bnl_last_error(), "duplicate tensor name 'x'"),
          "dup: %s", bnl_last_error());
    CHECK(bnl_st_writer_add(w, "n", BNL_DT_F32, 1, neg, x) == BNL_ERR_ARG && strstr(bnl_last_error(), "negative"), "neg: %s",
          bnl_last_error());
    CHECK(bnl_st_writer_add(w, "b", BNL_DT_F32, 2, big, x) == BNL_ERR_ARG && strstr(bnl_last_error(), "too large"), "big: %s",
          bnl_last_error());
    CHECK(bnl_st_writer_add(w, "9", BNL_DT_F32, 9, nine, x) == BNL_ERR_ARG && strstr(bnl_last_error(), "ndim 9"), "ndim: %s",
          bnl_last_error());
    CHECK(bnl_st_writer_add(w, "__metadata__", BNL_DT_F32, 1, s2, x) == BNL_ERR_ARG, "reserved name");
    CHECK(bnl_st_writer_add(w, "", BNL_DT_F32, 1, s2, x) == BNL_ERR_ARG, "empty name");
    CHECK(bnl_st_writer_add(w, "bad\xff", BNL_DT_F32, 1, s2, x) == BNL_ERR_ARG, "non-UTF-8 name");
    CHECK(bnl_st_writer_add(w, "nul", BNL_DT_F32, 1, s2, NULL) == BNL_ERR_ARG && strstr(bnl_last_error(), "NULL"), "NULL data");
    CHECK(bnl_st_writer_add(w, "dt", (bnl_dtype)99, 1, s2, x) == BNL_ERR_ARG && strstr(bnl_last_error(), "dtype"), "dtype");
    CHECK(bnl_st_writer_meta(w, "k", "bad\xc3") == BNL_ERR_ARG, "non-UTF-8 meta");
    CHECK(bnl_st_writer_meta(w, "k", NULL) == BNL_ERR_ARG, "NULL meta");
    CHECK(bnl_st_writer_to_buffer(w, &buf, &len) == BNL_OK, "to_buffer after failed adds");
    {
        bnl_st_file f;
        CHECK(bnl_st_parse(&f, buf, len) == BNL_OK && f.count == 1 && f.tensors[0].nbytes == 8 && f.meta_count == 0,
              "failed adds leave the writer intact: %s", bnl_last_error());
        bnl_st_free(&f);
    }
    free(buf);
    bnl_st_writer_free(w);
    bnl_st_writer_free(NULL);
}

// ---------------------------------------------------------------------------------------------
// Files

static void test_files(void) {
    char p[512], tmp[600], dirpath[512], missing[512];
    path_in_dir(p, sizeof p, "model.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    sample s;
    fill_sample(&s);
    bnl_st_writer *w = make_writer(&s, 1);
    CHECK(bnl_st_writer_to_file(w, p) == BNL_OK, "to_file: %s", bnl_last_error());
    CHECK(!file_exists(tmp), "temp file removed after rename");
    uint8_t *mem = NULL;
    size_t mlen = 0;
    bnl_st_writer_to_buffer(w, &mem, &mlen);
    uint8_t *disk = NULL;
    size_t dlen = 0;
    CHECK(bnl_read_file(p, &disk, &dlen) == BNL_OK, "read_file: %s", bnl_last_error());
    CHECK(disk && dlen == mlen && memcmp(disk, mem, mlen) == 0, "file bytes == buffer bytes (%zu vs %zu)", dlen, mlen);
    free(disk);
    free(mem);
    bnl_st_file f;
    bnl_status st = bnl_st_read_file(&f, p);
    CHECK(st == BNL_OK, "st_read_file: %s", bnl_last_error());
    if (st == BNL_OK) {
        CHECK(f.owned != NULL, "read_file owns its buffer");
        check_sample_file(&f, &s, 1);
        bnl_st_free(&f);
    }
    bnl_st_writer_free(w);

    // overwrite with something smaller via bnl_write_file_atomic
    const uint8_t small[5] = {1, 2, 3, 4, 5};
    CHECK(bnl_write_file_atomic(p, small, 5) == BNL_OK, "atomic overwrite: %s", bnl_last_error());
    CHECK(bnl_read_file(p, &disk, &dlen) == BNL_OK && dlen == 5 && memcmp(disk, small, 5) == 0, "overwritten");
    free(disk);
    CHECK(!file_exists(tmp), "no temp file left");
    // a file that is not safetensors: the message starts with the path
    st = bnl_st_read_file(&f, p);
    CHECK(st == BNL_ERR_FORMAT && strncmp(bnl_last_error(), p, strlen(p)) == 0 && strstr(bnl_last_error(), "too short"),
          "bad file: %s", bnl_last_error());
    CHECK(bnl_write_file_atomic(p, NULL, 0) == BNL_OK, "empty file");
    CHECK(bnl_read_file(p, &disk, &dlen) == BNL_OK && dlen == 0, "read empty file");
    free(disk);

    // missing file, directory, missing directory, target is a directory
    path_in_dir(missing, sizeof missing, "does-not-exist.safetensors");
    st = bnl_st_read_file(&f, missing);
    CHECK(st == BNL_ERR_IO && strstr(bnl_last_error(), missing) && strstr(bnl_last_error(), "No such file"),
          "missing: %s", bnl_last_error());
    CHECK(bnl_read_file(missing, &disk, &dlen) == BNL_ERR_IO && disk == NULL, "read_file missing");
    st = bnl_st_read_file(&f, g_dir);
    CHECK(st == BNL_ERR_IO && strstr(bnl_last_error(), g_dir) && strstr(bnl_last_error(), "directory"), "dir: %s",
          bnl_last_error());
    path_in_dir(dirpath, sizeof dirpath, "no-such-dir/out.safetensors");
    st = bnl_write_file_atomic(dirpath, small, 5);
    CHECK(st == BNL_ERR_IO && strstr(bnl_last_error(), dirpath) && strstr(bnl_last_error(), "No such file"), "no dir: %s",
          bnl_last_error());
    path_in_dir(dirpath, sizeof dirpath, "subdir");
    mkdir(dirpath, 0755);
    w = make_writer(&s, 0);
    st = bnl_st_writer_to_file(w, dirpath);
    CHECK(st == BNL_ERR_IO && strstr(bnl_last_error(), dirpath), "target is a directory: %s", bnl_last_error());
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dirpath, (long)getpid());
    CHECK(!file_exists(tmp), "failed write removes its temp file");
    CHECK(file_exists(dirpath), "directory untouched");
    bnl_st_writer_free(w);
    rmdir(dirpath);
    remove(p);
}

// ---------------------------------------------------------------------------------------------
// Malformed inputs: status + the phrase that names the problem (and the tensor)

#define T_A "'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}"

static void test_malformed(void) {
    // not safetensors / sizes in the prefix
    uint8_t raw[64] = {0};
    expect_bytes(__LINE__, "empty", raw, 0, BNL_ERR_FORMAT, "too short", "not a safetensors file");
    expect_bytes(__LINE__, "7 bytes", raw, 7, BNL_ERR_FORMAT, "too short", "7 bytes");
    uint64_t L = 200000000;
    memcpy(raw, &L, 8);
    expect_bytes(__LINE__, "absurd header", raw, 64, BNL_ERR_FORMAT, "absurd", "200000000");
    L = UINT64_MAX;
    memcpy(raw, &L, 8);
    expect_bytes(__LINE__, "huge header", raw, 64, BNL_ERR_FORMAT, "absurd", NULL);
    L = 100;
    memcpy(raw, &L, 8);
    expect_bytes(__LINE__, "header beyond file", raw, 64, BNL_ERR_FORMAT, "beyond file size", "100");
    L = 57;
    memcpy(raw, &L, 8);
    expect_bytes(__LINE__, "header one beyond file", raw, 64, BNL_ERR_FORMAT, "beyond file size", NULL);
    L = 0;
    memcpy(raw, &L, 8);
    expect_bytes(__LINE__, "empty header", raw, 8, BNL_ERR_FORMAT, "bad JSON", "'{'");

    // bad JSON
    EXPECT_BAD2("[]", 0, "bad JSON", "'{'");
    EXPECT_BAD2(" {}", 0, "bad JSON", "'{'");
    EXPECT_BAD("{", 0, "bad JSON");
    EXPECT_BAD("{'a'", 0, "expected ':'");
    EXPECT_BAD("{'a' 1}", 0, "expected ':'");
    EXPECT_BAD("{'a':", 0, "tensor 'a'");
    EXPECT_BAD("{a:1}", 0, "expected a string");
    EXPECT_BAD("{} x", 0, "trailing characters");
    EXPECT_BAD("{}{}", 0, "trailing characters");
    EXPECT_BAD("{" T_A ",}", 8, "expected a string");
    EXPECT_BAD("{" T_A " " T_A "}", 8, "expected ',' or '}'");
    EXPECT_BAD("{'a", 0, "unterminated string");
    EXPECT_BAD("{'a\\", 0, "unterminated string");
    EXPECT_BAD("{'a\\q':1}", 0, "bad escape");
    EXPECT_BAD("{'a\\u12':1}", 0, "bad \\u escape");
    EXPECT_BAD("{'a\\u12g4':1}", 0, "bad \\u escape");
    EXPECT_BAD("{'a\\ud800':1}", 0, "surrogate");
    EXPECT_BAD("{'a\\ud800\\u0041':1}", 0, "surrogate");
    EXPECT_BAD("{'a\\udc00':1}", 0, "lone low surrogate");
    EXPECT_BAD("{'a\\u0000':1}", 0, "\\u0000");
    EXPECT_BAD("{'a\tb':1}", 0, "control character");
    EXPECT_BAD("{'a\xff':1}", 0, "invalid UTF-8");
    EXPECT_BAD("{'a\xc0\x80':1}", 0, "invalid UTF-8");             // overlong NUL
    EXPECT_BAD("{'a\xed\xa0\x80':1}", 0, "invalid UTF-8");         // encoded surrogate
    EXPECT_BAD("{'a\xe2\x82':1}", 0, "invalid UTF-8");             // truncated
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1.5],'data_offsets':[0,4]}}", 4, "fraction or exponent");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1e3],'data_offsets':[0,4]}}", 4, "fraction or exponent");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[01],'data_offsets':[0,4]}}", 4, "leading zero");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[-],'data_offsets':[0,4]}}", 4, "expected an integer");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1,],'data_offsets':[0,4]}}", 4, "must be an array of integers");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1 2],'data_offsets':[0,4]}}", 4, "expected ',' or ']'");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':true}}", 4, "unsupported JSON value");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':null}}", 4, "unsupported JSON value");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':0.5}}", 4, "fraction or exponent");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':[1,{'y':}]}}", 4, "bad JSON");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':[1 1]}}", 4, "expected ',' or ']'");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':{'y' 1}}}", 4, "expected ':'");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4] 'x':1}}", 4, "expected ',' or '}'");
    EXPECT_BAD("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}", 4, "bad JSON");
    {
        // a depth bomb in an unknown field: refused, not a stack overflow
        size_t depth = 100000;
        char *h = malloc(depth * 5 + 128);
        strcpy(h, "{'a':{'x':");
        size_t n = strlen(h);
        for (size_t i = 0; i < depth; i++) h[n++] = '[';
        for (size_t i = 0; i < depth; i++) h[n++] = ']';
        strcpy(h + n, "}}");
        EXPECT_BAD(h, 0, "nesting deeper than 64");
        strcpy(h, "{'a':{'x':");   // objects nest the same way
        n = strlen(h);
        for (size_t i = 0; i < depth; i++) memcpy(h + n, "{'k':", 5), n += 5;
        h[n] = 0;
        EXPECT_BAD(h, 0, "nesting deeper than 64");
        free(h);
        // 60 levels are fine
        char ok[512] = "{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1],'x':";
        n = strlen(ok);
        for (int i = 0; i < 60; i++) ok[n++] = '[';
        for (int i = 0; i < 60; i++) ok[n++] = ']';
        strcpy(ok + n, "}}");
        EXPECT_OK(ok, 1);
    }

    // tensor entries
    EXPECT_BAD2("{'w':1}", 0, "tensor 'w'", "must be an object");
    EXPECT_BAD2("{'w':'F32'}", 0, "tensor 'w'", "must be an object");
    EXPECT_BAD2("{'w':{'shape':[1],'data_offsets':[0,4]}}", 4, "tensor 'w'", "missing dtype");
    EXPECT_BAD2("{'w':{'dtype':'F32','data_offsets':[0,4]}}", 4, "tensor 'w'", "missing shape");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1]}}", 4, "tensor 'w'", "missing data_offsets");
    EXPECT_BAD2("{'w':{}}", 0, "tensor 'w'", "missing dtype");
    EXPECT_BAD2("{'w':{'dtype':'F32','dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 4, "tensor 'w'", "duplicate key 'dtype'");
    EXPECT_BAD2("{'w':{'dtype':3,'shape':[1],'data_offsets':[0,4]}}", 4, "tensor 'w'", "dtype must be a string");
    EXPECT_BAD2("{'w':{'dtype':'F8_E4M3','shape':[1],'data_offsets':[0,1]}}", 1, "tensor 'w'", "unknown dtype 'F8_E4M3'");
    EXPECT_BAD2("{'w':{'dtype':'f32','shape':[1],'data_offsets':[0,4]}}", 4, "tensor 'w'", "unknown dtype 'f32'");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':2,'data_offsets':[0,8]}}", 8, "tensor 'w'", "shape must be an array");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':['2'],'data_offsets':[0,8]}}", 8, "tensor 'w'", "shape must be an array of integers");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[-1],'data_offsets':[0,4]}}", 4, "tensor 'w'", "negative value -1 in shape");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[2,-3],'data_offsets':[0,4]}}", 4, "tensor 'w'", "negative value -3 in shape");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[-99999999999999999999],'data_offsets':[0,4]}}", 4, "tensor 'w'", "negative");
    EXPECT_OK("{'w':{'dtype':'F32','shape':[-0],'data_offsets':[0,0]}}", 0);   // -0 is 0
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[9223372036854775808],'data_offsets':[0,4]}}", 4, "tensor 'w'", "too large");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[99999999999999999999999],'data_offsets':[0,4]}}", 4, "tensor 'w'", "too large");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[4294967296,4294967296],'data_offsets':[0,4]}}", 4, "tensor 'w'",
                "shape too large");
    EXPECT_BAD2("{'w':{'dtype':'F64','shape':[2305843009213693952],'data_offsets':[0,4]}}", 4, "tensor 'w'",
                "shape too large");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,1],'data_offsets':[0,4]}}", 4, "tensor 'w'",
                "more than 8 entries");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[3],'data_offsets':[0,8]}}", 8, "tensor 'w'", "does not match byte size");
    EXPECT_BAD2("{'w':{'dtype':'F16','shape':[2,2],'data_offsets':[0,4]}}", 4, "tensor 'w'", "does not match byte size");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[],'data_offsets':[0,0]}}", 0, "tensor 'w'", "does not match byte size");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[0],'data_offsets':[0,4]}}", 4, "tensor 'w'", "does not match byte size");

    // offsets
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[0]}}", 4, "tensor 'w'", "data_offsets must have 2 entries");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[0,4,8]}}", 8, "tensor 'w'", "more than 2 entries");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[-4,0]}}", 4, "tensor 'w'", "negative value -4 in data_offsets");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':{'b':0}}}", 4, "tensor 'w'", "data_offsets must be an array");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[8,4]}}", 8, "tensor 'w'", "begin 8 > end 4");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 3, "tensor 'w'", "out of range of the data section");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[96,100]}}", 8, "tensor 'w'", "out of range");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[18446744073709551612,18446744073709551616]}}", 8,
                "tensor 'w'", "too large");
    EXPECT_BAD2("{'w':{'dtype':'F32','shape':[1],'data_offsets':[9223372036854775803,9223372036854775807]}}", 8,
                "tensor 'w'", "out of range");
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]}}",
                12, "tensors 'a' and 'b' overlap", NULL);
    EXPECT_BAD2("{'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]},'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}",
                12, "'a' and 'b' overlap", NULL);
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},'b':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}",
                8, "overlap", NULL);
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},'b':{'dtype':'F32','shape':[1],'data_offsets':[8,12]}}",
                12, "gap", "before tensor 'b'");
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 8, "gap", "[0, 4)");
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 8, "4 trailing bytes", NULL);
    EXPECT_BAD("{}", 3, "3 trailing bytes");
    EXPECT_BAD("{'__metadata__':{'k':'v'}}", 1, "trailing bytes");

    // duplicate tensor names (also when the duplicates are far apart, and escaped differently)
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
                8, "duplicate tensor name 'a'", NULL);
    EXPECT_BAD2("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},'b':{'dtype':'U8','shape':[0],'data_offsets':[4,4]},"
                "'\\u0061':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
                8, "duplicate tensor name 'a'", NULL);

    // __metadata__
    EXPECT_BAD2("{'__metadata__':[]}", 0, "__metadata__", "string->string map");
    EXPECT_BAD2("{'__metadata__':'x'}", 0, "__metadata__", "string->string map");
    EXPECT_BAD2("{'__metadata__':{'k':1}}", 0, "string->string map", "'k'");
    EXPECT_BAD2("{'__metadata__':{'k':{'a':'b'}}}", 0, "string->string map", "'k'");
    EXPECT_BAD2("{'__metadata__':{'k':['a']}}", 0, "string->string map", "'k'");
    EXPECT_BAD2("{'__metadata__':{'k':'a','k':'b'}}", 0, "string->string map", "duplicate key 'k'");
    EXPECT_BAD2("{'__metadata__':{'k':'a','l':'b','m':'c','k':'d'}}", 0, "string->string map", "duplicate key 'k'");
    EXPECT_BAD2("{'__metadata__':{'k':'a','l':'b'}," T_A ",'__metadata__':{}}", 8, "__metadata__ appears twice", NULL);
    EXPECT_BAD2("{'__metadata__':{'k':'a'},'__metadata__':{}}", 0, "__metadata__ appears twice", NULL);
    EXPECT_BAD("{'__metadata__':{'k':'a' 'l':'b'}}", 0, "expected ',' or '}'");
    EXPECT_BAD("{'__metadata__':{'k':'a\\u0000'}}", 0, "\\u0000");

    // header of valid JSON followed by spaces, tabs, newlines (padding) is fine; other padding is not
    size_t len;
    uint8_t *b = make_file("{" T_A "}", 7, 8, &len);
    expect_bytes(__LINE__, "space padding", b, len, BNL_OK, NULL, NULL);
    b[8 + strlen("{" T_A "}") + 3] = 0;
    expect_bytes(__LINE__, "NUL padding", b, len, BNL_ERR_FORMAT, "trailing characters", NULL);
    free(b);
}

// Random corruption of a valid file never crashes and never yields an inconsistent file.
static void test_mutations(void) {
    sample s;
    fill_sample(&s);
    bnl_st_writer *w = make_writer(&s, 1);
    uint8_t *good = NULL;
    size_t len = 0;
    bnl_st_writer_to_buffer(w, &good, &len);
    bnl_st_writer_free(w);
    uint8_t *b = malloc(len);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int bad_status = 0, bad_file = 0, ok = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(b, good, len);
        int nflip = 1 + (int)(rng % 4);
        for (int k = 0; k < nflip; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % len;
            static const char pick[] = "{}[],:\"\\0123456789- eu";
            b[at] = (rng & 1) ? (uint8_t)(rng >> 20) : (uint8_t)pick[(rng >> 24) % (sizeof pick - 1)];
        }
        size_t n = (rng >> 40) % 8 == 0 ? (size_t)(rng >> 13) % (len + 1) : len;   // sometimes truncate
        bnl_st_file f;
        bnl_status st = bnl_st_parse(&f, b, n);
        if (st == BNL_OK) {
            ok++;
            size_t at = 0, data0 = 8;
            uint64_t hl;
            memcpy(&hl, b, 8);
            data0 += (size_t)hl;
            for (size_t i = 0; i < f.count; i++) {
                const bnl_st_tensor *t = &f.tensors[i];
                if ((size_t)(t->data - b) != data0 + at || t->nbytes != t->nelem * bnl_dtype_size(t->dtype)) bad_file++;
                at += t->nbytes;
            }
            if (data0 + at != n) bad_file++;
            bnl_st_free(&f);
        } else if (st != BNL_ERR_FORMAT || !bnl_last_error()[0]) {
            bad_status++;
        }
    }
    CHECK(bad_status == 0, "%d mutated files gave a status other than FORMAT or no message", bad_status);
    CHECK(bad_file == 0, "%d mutated files parsed into an inconsistent layout", bad_file);
    printf("mutations: %d of 20000 still parse\n", ok);
    free(b);
    free(good);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/bnl_st_test_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "FAIL: cannot create a temporary directory %s\n", g_dir);
        return 1;
    }
    test_reader_basic();
    test_reader_json_forms();
    test_f16_bf16();
    test_writer_roundtrip();
    test_files();
    test_malformed();
    test_mutations();
    rmdir(g_dir);
    return test_summary("test_safetensors");
}
