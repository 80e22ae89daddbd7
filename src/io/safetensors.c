// safetensors: a strict reader (from a borrowed buffer or a file) and a writer (to a buffer, or
// atomically to a file). The header parser is a small hand-written JSON parser that accepts only
// what safetensors headers need (objects, arrays, strings, integers), bounds its nesting depth and
// checks every size computation, because it reads untrusted files (and is fuzzed).
//
// Layout: u64 LE header length L | L bytes of JSON (space padded) | data section.
// Data may sit at any alignment in the buffer: every element is read with memcpy.
// Little-endian host assumed (x86-64 and wasm32).
#include "io/safetensors.h"
#include "core/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if defined(__unix__) || defined(__APPLE__) || defined(__EMSCRIPTEN__)
#include <fcntl.h>
#include <unistd.h>
#define BNL_HAVE_POSIX 1
#endif

#define ST_MAX_HEADER (100u * 1000u * 1000u)   // 100 MB, as the reference implementation
#define ST_MAX_DEPTH 64                        // nesting limit for skipped JSON values

// ---------------------------------------------------------------------------------------------
// dtypes

static const struct {
    const char *name;
    size_t size;
} k_dtypes[] = {
    [BNL_DT_F32] = {"F32", 4}, [BNL_DT_F16] = {"F16", 2}, [BNL_DT_BF16] = {"BF16", 2},
    [BNL_DT_F64] = {"F64", 8}, [BNL_DT_I64] = {"I64", 8}, [BNL_DT_I32] = {"I32", 4},
    [BNL_DT_I16] = {"I16", 2}, [BNL_DT_I8] = {"I8", 1},   [BNL_DT_U8] = {"U8", 1},
    [BNL_DT_BOOL] = {"BOOL", 1},
};
#define ST_NDTYPES ((int)(sizeof k_dtypes / sizeof k_dtypes[0]))

const char *bnl_dtype_name(bnl_dtype dt) {
    if ((int)dt < 0 || (int)dt >= ST_NDTYPES) return "?";
    return k_dtypes[dt].name;
}

size_t bnl_dtype_size(bnl_dtype dt) {
    if ((int)dt < 0 || (int)dt >= ST_NDTYPES) return 0;
    return k_dtypes[dt].size;
}

static int dtype_from_name(const char *s, bnl_dtype *out) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) {
            *out = (bnl_dtype)i;
            return 1;
        }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// JSON, just enough for safetensors headers

typedef struct jparser {
    const char *base;   // header start (for byte positions in messages)
    const char *p, *end;
    bnl_status nomem;   // BNL_ERR_NOMEM once an allocation failed (else BNL_OK): the failure is not the file's
} jparser;

static int jfail(jparser *j, const char *what) {
    bnl_fail(BNL_ERR_FORMAT, "safetensors: bad JSON header at byte %zu: %s", (size_t)(j->p - j->base), what);
    return 0;
}

static void jws(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int jexpect(jparser *j, char c, const char *what) {
    jws(j);
    if (j->p >= j->end || *j->p != c) return jfail(j, what);
    j->p++;
    return 1;
}

// Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as serde_json demands of the header.
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i <= k) return i;
        for (size_t m = 1; m <= k; m++) {
            if ((s[i + m] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + m] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return SIZE_MAX;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

// Parses a string into a malloc'd NUL-terminated copy (*out may be NULL to only skip it).
// The decoded form is never longer than the raw one, so one allocation of the raw length suffices.
static int jstring(jparser *j, char **out) {
    jws(j);
    if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a string");
    const char *start = ++j->p;
    const char *q = start;
    while (q < j->end && *q != '"') {
        if (*q == '\\') q++;   // the escaped char can't end the string
        q++;
    }
    if (q >= j->end) return jfail(j, "unterminated string");
    char *buf = NULL, *w = NULL;
    if (out) {
        buf = malloc((size_t)(q - start) + 1);
        if (!buf) return j->nomem = bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory parsing the header"), 0;
        w = buf;
    }
    const char *p = start;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            j->p = p;
            free(buf);
            return jfail(j, "control character in string");
        }
        if (c != '\\') {
            if (w) *w++ = (char)c;
            p++;
            continue;
        }
        p++;   // p < q holds: the scan above never ends a string on a backslash
        char e = *p++, r;
        switch (e) {
        case '"': r = '"'; break;
        case '\\': r = '\\'; break;
        case '/': r = '/'; break;
        case 'b': r = '\b'; break;
        case 'f': r = '\f'; break;
        case 'n': r = '\n'; break;
        case 'r': r = '\r'; break;
        case 't': r = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            const char *at = p - 2;
            if (q - p < 4 || !hex4(p, &cp)) {
                j->p = at, free(buf);
                return jfail(j, "bad \\u escape (need 4 hex digits)");
            }
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                j->p = at, free(buf);
                return jfail(j, "lone low surrogate in \\u escape");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    j->p = at, free(buf);
                    return jfail(j, "high surrogate in \\u escape not followed by a low surrogate");
                }
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                j->p = at, free(buf);
                return jfail(j, "\\u0000 in a string is not supported");
            }
            // UTF-8 of cp takes at most as many bytes as its escape (6 or 12 chars)
            if (w) {
                if (cp < 0x80) *w++ = (char)cp;
                else if (cp < 0x800) *w++ = (char)(0xC0 | (cp >> 6)), *w++ = (char)(0x80 | (cp & 0x3F));
                else if (cp < 0x10000)
                    *w++ = (char)(0xE0 | (cp >> 12)), *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)),
                    *w++ = (char)(0x80 | (cp & 0x3F));
                else
                    *w++ = (char)(0xF0 | (cp >> 18)), *w++ = (char)(0x80 | ((cp >> 12) & 0x3F)),
                    *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *w++ = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        }
        default:
            j->p = p - 2, free(buf);
            return jfail(j, "bad escape in string");
        }
        if (w) *w++ = r;
    }
    if (w) *w = 0;
    if (out) *out = buf;
    j->p = q + 1;
    return 1;
}

// Parses a JSON integer: *neg and its magnitude; *overflow set when it exceeds 2^64-1.
// Fractions, exponents and leading zeros are rejected (JSON has no leading zeros; headers no floats).
static int jinteger(jparser *j, int *neg, uint64_t *mag, int *overflow) {
    jws(j);
    *neg = 0, *mag = 0, *overflow = 0;
    if (j->p < j->end && *j->p == '-') *neg = 1, j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jfail(j, "expected an integer");
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
        return jfail(j, "leading zero in an integer");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p - '0');
        if (v > (UINT64_MAX - d) / 10) *overflow = 1;
        else v = v * 10 + d;
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return jfail(j, "expected an integer, got a number with a fraction or exponent");
    *mag = v;
    return 1;
}

// Skips any value made of objects, arrays, strings and integers; anything else is rejected.
static int jskip(jparser *j, int depth) {
    if (depth > ST_MAX_DEPTH) return jfail(j, "nesting deeper than 64 levels");
    jws(j);
    if (j->p >= j->end) return jfail(j, "unexpected end of header, expected a value");
    char c = *j->p;
    if (c == '"') return jstring(j, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) {
        int neg, ovf;
        uint64_t m;
        return jinteger(j, &neg, &m, &ovf);
    }
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        j->p++;
        jws(j);
        if (j->p < j->end && *j->p == close) return j->p++, 1;
        for (;;) {
            if (c == '{') {
                if (!jstring(j, NULL) || !jexpect(j, ':', "expected ':' after an object key")) return 0;
            }
            if (!jskip(j, depth + 1)) return 0;
            jws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == close) return j->p++, 1;
            return jfail(j, c == '[' ? "expected ',' or ']' in an array" : "expected ',' or '}' in an object");
        }
    }
    return jfail(j, "unsupported JSON value (only objects, arrays, strings and integers are allowed)");
}

// ---------------------------------------------------------------------------------------------
// Reader

void bnl_st_free(bnl_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->meta_count; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->owned);
    memset(f, 0, sizeof *f);
}

// Per-tensor bookkeeping while parsing: the offsets are kept for validation only.
typedef struct st_parse {
    jparser j;
    bnl_st_file *f;
    size_t cap, meta_cap;
    uint64_t *begin, *end;   // parallel to f->tensors
    size_t data_len;
    int seen_meta;
} st_parse;

static int parse_meta(st_parse *s) {
    jparser *j = &s->j;
    if (s->seen_meta) {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: __metadata__ appears twice in the header");
        return 0;
    }
    s->seen_meta = 1;
    jws(j);
    if (j->p >= j->end || *j->p != '{') {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: __metadata__ must be a string->string map (got a non-object)");
        return 0;
    }
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == '}') return j->p++, 1;
    for (;;) {
        char *key = NULL, *val = NULL;
        if (!jstring(j, &key)) return 0;
        if (!jexpect(j, ':', "expected ':' after a key in __metadata__")) return free(key), 0;
        jws(j);
        if (j->p >= j->end || *j->p != '"') {
            bnl_fail(BNL_ERR_FORMAT, "safetensors: __metadata__ must be a string->string map (value of '%.100s' is not a string)", key);
            free(key);
            return 0;
        }
        if (!jstring(j, &val)) return free(key), 0;
        bnl_st_file *f = s->f;
        if (f->meta_count == s->meta_cap) {
            size_t nc = s->meta_cap ? 2 * s->meta_cap : 8;
            char **nk = realloc(f->meta_keys, nc * sizeof *nk);
            if (nk) f->meta_keys = nk;
            char **nv = nk ? realloc(f->meta_values, nc * sizeof *nv) : NULL;
            if (nv) f->meta_values = nv;
            if (!nk || !nv) {
                free(key), free(val);
                s->j.nomem = bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory parsing __metadata__");
                return 0;
            }
            s->meta_cap = nc;
        }
        f->meta_keys[f->meta_count] = key;
        f->meta_values[f->meta_count] = val;
        f->meta_count++;
        jws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == '}') return j->p++, 1;
        return jfail(j, "expected ',' or '}' in __metadata__");
    }
}

// Parses a shape or data_offsets array of non-negative integers into v (at most maxn).
// Returns the count, or -1 after setting the error.
static int parse_uint_array(st_parse *s, const char *name, const char *field, uint64_t *v, int maxn) {
    jparser *j = &s->j;
    jws(j);
    if (j->p >= j->end || *j->p != '[') {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': %s must be an array of integers", name, field);
        return -1;
    }
    j->p++;
    jws(j);
    int n = 0;
    if (j->p < j->end && *j->p == ']') return j->p++, 0;
    for (;;) {
        int neg, ovf;
        uint64_t m;
        jws(j);
        if (j->p >= j->end || !(*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))) {
            bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': %s must be an array of integers", name, field);
            return -1;
        }
        if (!jinteger(j, &neg, &m, &ovf)) return -1;
        if (neg && (m != 0 || ovf)) {
            bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': negative value -%s%llu in %s", name,
                     ovf ? ">" : "", (unsigned long long)m, field);
            return -1;
        }
        if (ovf || m > (uint64_t)INT64_MAX) {
            bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': value in %s too large (over 2^63-1)", name, field);
            return -1;
        }
        if (n >= maxn) {
            bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': %s has more than %d entries", name, field, maxn);
            return -1;
        }
        v[n++] = m;
        jws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == ']') return j->p++, n;
        jfail(j, "expected ',' or ']' in an array");
        return -1;
    }
}

// Parses one tensor entry (name already read and owned by the caller until stored).
static int parse_tensor(st_parse *s, char *name) {
    jparser *j = &s->j;
    jws(j);
    if (j->p >= j->end || *j->p != '{') {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': entry must be an object with dtype, shape and data_offsets", name);
        return 0;
    }
    j->p++;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    bnl_dtype dt = BNL_DT_F32;
    uint64_t shape[BNL_ST_MAX_DIMS], offs[2];
    int ndim = 0;
    jws(j);
    if (j->p < j->end && *j->p == '}') j->p++;
    else
        for (;;) {
            char *key = NULL;
            if (!jstring(j, &key)) return 0;
            if (!jexpect(j, ':', "expected ':' after an object key")) return free(key), 0;
            int *seen = strcmp(key, "dtype") == 0          ? &have_dtype
                        : strcmp(key, "shape") == 0        ? &have_shape
                        : strcmp(key, "data_offsets") == 0 ? &have_offsets
                                                           : NULL;
            if (seen && *seen) {
                bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': duplicate key '%s'", name, key);
                return free(key), 0;
            }
            if (seen == &have_dtype) {
                char *d = NULL;
                jws(j);
                if (j->p >= j->end || *j->p != '"') {
                    bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': dtype must be a string", name);
                    return free(key), 0;
                }
                if (!jstring(j, &d)) return free(key), 0;
                if (!dtype_from_name(d, &dt)) {
                    bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': unknown dtype '%.40s'", name, d);
                    return free(d), free(key), 0;
                }
                free(d);
            } else if (seen == &have_shape) {
                ndim = parse_uint_array(s, name, "shape", shape, BNL_ST_MAX_DIMS);
                if (ndim < 0) return free(key), 0;
            } else if (seen == &have_offsets) {
                int n = parse_uint_array(s, name, "data_offsets", offs, 2);
                if (n < 0) return free(key), 0;
                if (n != 2) {
                    bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': data_offsets must have 2 entries [begin, end]", name);
                    return free(key), 0;
                }
            } else if (!jskip(j, 1)) {
                return free(key), 0;
            }
            if (seen) *seen = 1;
            free(key);
            jws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == '}') { j->p++; break; }
            return jfail(j, "expected ',' or '}' in a tensor entry");
        }
    const char *missing = !have_dtype ? "dtype" : !have_shape ? "shape" : !have_offsets ? "data_offsets" : NULL;
    if (missing) {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': missing %s", name, missing);
        return 0;
    }
    // element count: 0 if any dim is 0 (even when the others would overflow), else a checked product
    size_t nelem = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) zero |= shape[i] == 0;
    if (zero) nelem = 0;
    else
        for (int i = 0; i < ndim; i++)
            if (shape[i] > SIZE_MAX || !bnl_mul_ok(nelem, (size_t)shape[i], &nelem)) {
                bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': shape too large (element count overflows)", name);
                return 0;
            }
    size_t nbytes;
    if (!bnl_mul_ok(nelem, bnl_dtype_size(dt), &nbytes)) {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': shape too large (byte size overflows)", name);
        return 0;
    }
    if (offs[0] > offs[1]) {
        bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s': data_offsets begin %llu > end %llu", name,
                 (unsigned long long)offs[0], (unsigned long long)offs[1]);
        return 0;
    }
    if (offs[1] > s->data_len) {
        bnl_fail(BNL_ERR_FORMAT,
                 "safetensors: tensor '%.100s': data_offsets [%llu, %llu] out of range of the data section (%zu bytes)",
                 name, (unsigned long long)offs[0], (unsigned long long)offs[1], s->data_len);
        return 0;
    }
    if ((uint64_t)nbytes != offs[1] - offs[0]) {
        bnl_fail(BNL_ERR_FORMAT,
                 "safetensors: tensor '%.100s': shape does not match byte size: %zu %s elements = %zu bytes, "
                 "but data_offsets [%llu, %llu] span %llu bytes",
                 name, nelem, bnl_dtype_name(dt), nbytes, (unsigned long long)offs[0], (unsigned long long)offs[1],
                 (unsigned long long)(offs[1] - offs[0]));
        return 0;
    }
    bnl_st_file *f = s->f;
    if (f->count == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        bnl_st_tensor *nt = realloc(f->tensors, nc * sizeof *nt);
        if (nt) f->tensors = nt;
        uint64_t *nb = nt ? realloc(s->begin, nc * sizeof *nb) : NULL;
        if (nb) s->begin = nb;
        uint64_t *ne = nb ? realloc(s->end, nc * sizeof *ne) : NULL;
        if (ne) s->end = ne;
        if (!ne) {
            s->j.nomem = bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory parsing the header");
            return 0;
        }
        s->cap = nc;
    }
    bnl_st_tensor *t = &f->tensors[f->count];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = (int64_t)shape[i];
    t->nelem = nelem;
    t->nbytes = nbytes;
    t->data = NULL;   // set once the data section is known to be covered
    s->begin[f->count] = offs[0];
    s->end[f->count] = offs[1];
    f->count++;
    return 1;
}

typedef struct st_order {
    uint64_t begin, end;
    size_t idx;
    const char *name;
} st_order;

static int cmp_by_offset(const void *a, const void *b) {
    const st_order *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b) {
    const st_order *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

// Duplicate names, offset coverage, then reorders tensors by data offset.
static bnl_status finish(st_parse *s, const uint8_t *data) {
    bnl_st_file *f = s->f;
    size_t n = f->count;
    if (n == 0) {
        if (s->data_len != 0)
            return bnl_fail(BNL_ERR_FORMAT, "safetensors: %zu trailing bytes in the data section (no tensor covers them)",
                            s->data_len);
        return BNL_OK;
    }
    st_order *ord = malloc(n * sizeof *ord);
    if (!ord) return bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory checking %zu tensors", n);
    for (size_t i = 0; i < n; i++)
        ord[i] = (st_order){s->begin[i], s->end[i], i, f->tensors[i].name};
    qsort(ord, n, sizeof *ord, cmp_by_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ord[i - 1].name, ord[i].name) == 0) {
            bnl_status st = bnl_fail(BNL_ERR_FORMAT, "safetensors: duplicate tensor name '%.100s'", ord[i].name);
            free(ord);
            return st;
        }
    for (size_t i = 0; i < f->meta_count; i++)   // metadata maps are small: a quadratic check is fine
        for (size_t k = 0; k < i; k++)
            if (strcmp(f->meta_keys[i], f->meta_keys[k]) == 0) {
                free(ord);
                return bnl_fail(BNL_ERR_FORMAT, "safetensors: __metadata__ must be a string->string map (duplicate key '%.100s')",
                                f->meta_keys[i]);
            }
    qsort(ord, n, sizeof *ord, cmp_by_offset);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        bnl_status st = BNL_OK;
        if (ord[i].begin < at)
            st = bnl_fail(BNL_ERR_FORMAT,
                          "safetensors: tensors '%.100s' and '%.100s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])",
                          ord[i - 1].name, ord[i].name, (unsigned long long)ord[i - 1].begin,
                          (unsigned long long)ord[i - 1].end, (unsigned long long)ord[i].begin,
                          (unsigned long long)ord[i].end);
        else if (ord[i].begin > at)
            st = bnl_fail(BNL_ERR_FORMAT,
                          "safetensors: gap in the data section: bytes [%llu, %llu) before tensor '%.100s' belong to no tensor",
                          (unsigned long long)at, (unsigned long long)ord[i].begin, ord[i].name);
        if (st != BNL_OK) {
            free(ord);
            return st;
        }
        at = ord[i].end;
    }
    if (at != s->data_len) {
        free(ord);
        return bnl_fail(BNL_ERR_FORMAT, "safetensors: %llu trailing bytes in the data section after the last tensor",
                        (unsigned long long)(s->data_len - at));
    }
    bnl_st_tensor *sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        free(ord);
        return bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory checking %zu tensors", n);
    }
    for (size_t i = 0; i < n; i++) {
        sorted[i] = f->tensors[ord[i].idx];
        sorted[i].data = data + ord[i].begin;
    }
    free(f->tensors);
    f->tensors = sorted;
    free(ord);
    return BNL_OK;
}

bnl_status bnl_st_parse(bnl_st_file *out, const uint8_t *buf, size_t len) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "bnl_st_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!buf && len) return bnl_fail(BNL_ERR_ARG, "bnl_st_parse: buffer is NULL");
    if (len < 8)
        return bnl_fail(BNL_ERR_FORMAT,
                        "safetensors: not a safetensors file: too short (%zu bytes, need at least 8 for the header length)", len);
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    if (hlen > ST_MAX_HEADER)
        return bnl_fail(BNL_ERR_FORMAT,
                        "safetensors: not a safetensors file: header length %llu is absurd (limit 100 MB)",
                        (unsigned long long)hlen);
    if (hlen > len - 8)
        return bnl_fail(BNL_ERR_FORMAT, "safetensors: header length %llu beyond file size %zu (8 + header > file)",
                        (unsigned long long)hlen, len);
    const char *h = (const char *)buf + 8;
    size_t bad = utf8_invalid_at((const uint8_t *)h, (size_t)hlen);
    if (bad != SIZE_MAX) return bnl_fail(BNL_ERR_FORMAT, "safetensors: bad JSON header at byte %zu: invalid UTF-8", bad);

    st_parse s;
    memset(&s, 0, sizeof s);
    s.j.base = s.j.p = h;
    s.j.end = h + hlen;
    s.f = out;
    s.data_len = len - 8 - (size_t)hlen;
    jparser *j = &s.j;
    bnl_status st;
    int ok = 1;
    // the reference implementation requires the header to start with '{' (no leading whitespace)
    if (hlen == 0 || *h != '{') {
        jfail(j, "the header must be a JSON object starting with '{'");
        goto fail;
    }
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == '}') j->p++;
    else
        for (;;) {
            char *key = NULL;
            if (!jstring(j, &key) || !jexpect(j, ':', "expected ':' after a tensor name")) {
                free(key);
                goto fail;
            }
            if (strcmp(key, "__metadata__") == 0) {
                free(key);
                ok = parse_meta(&s);
            } else {
                ok = parse_tensor(&s, key);
                if (!ok) free(key);   // stored (and owned by out) only on success
            }
            if (!ok) goto fail;
            jws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == '}') { j->p++; break; }
            jfail(j, "expected ',' or '}' after a tensor entry");
            goto fail;
        }
    jws(j);
    if (j->p != j->end) {
        jfail(j, "trailing characters after the JSON object");
        goto fail;
    }
    st = finish(&s, buf + 8 + hlen);
    if (st != BNL_OK) goto done;
    free(s.begin), free(s.end);
    return BNL_OK;
fail:
    st = s.j.nomem != BNL_OK ? s.j.nomem : BNL_ERR_FORMAT;   // the message is already set
done:
    free(s.begin), free(s.end);
    bnl_st_free(out);
    return st;
}

bnl_status bnl_st_read_file(bnl_st_file *out, const char *path) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "bnl_st_read_file: out is NULL");
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    size_t len = 0;
    bnl_status st = bnl_read_file(path, &buf, &len);
    if (st != BNL_OK) return st;
    st = bnl_st_parse(out, buf, len);
    if (st != BNL_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bnl_last_error());
        free(buf);
        return bnl_fail(st, "%s: %s", path, msg);
    }
    out->owned = buf;
    return BNL_OK;
}

const bnl_st_tensor *bnl_st_find(const bnl_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *bnl_st_meta(const bnl_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Conversions

// IEEE half -> single, exactly: normals rebias the exponent, subnormals (m * 2^-24) are exact in
// float, inf/nan keep sign and payload (the quiet bit stays the top mantissa bit).
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    float f;
    if (exp == 0) {
        f = (float)mant * 5.9604644775390625e-8f;   // 2^-24; +0 when mant == 0
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

bnl_status bnl_st_to_f32(float *dst, const bnl_st_tensor *t) {
    if (!t || (!dst && t->nelem)) return bnl_fail(BNL_ERR_ARG, "bnl_st_to_f32: NULL argument");
    const uint8_t *p = t->data;
    size_t n = t->nelem;
    switch (t->dtype) {
    case BNL_DT_F32:
        if (n) memcpy(dst, p, n * 4);
        return BNL_OK;
    case BNL_DT_F16:
    case BNL_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == BNL_DT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        return BNL_OK;
    case BNL_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return BNL_OK;
    default:
        return bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s' has dtype %s, expected a float type (F32, F16, BF16, F64)",
                        t->name ? t->name : "?", bnl_dtype_name(t->dtype));
    }
}

bnl_status bnl_st_to_i64(int64_t *dst, const bnl_st_tensor *t) {
    if (!t || (!dst && t->nelem)) return bnl_fail(BNL_ERR_ARG, "bnl_st_to_i64: NULL argument");
    const uint8_t *p = t->data;
    size_t n = t->nelem;
    switch (t->dtype) {
    case BNL_DT_I64:
        if (n) memcpy(dst, p, n * 8);
        return BNL_OK;
    case BNL_DT_I32:
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = v;
        }
        return BNL_OK;
    case BNL_DT_I16:
        for (size_t i = 0; i < n; i++) {
            int16_t v;
            memcpy(&v, p + 2 * i, 2);
            dst[i] = v;
        }
        return BNL_OK;
    case BNL_DT_I8:
        for (size_t i = 0; i < n; i++) dst[i] = (int8_t)p[i];
        return BNL_OK;
    case BNL_DT_U8:
        for (size_t i = 0; i < n; i++) dst[i] = p[i];
        return BNL_OK;
    case BNL_DT_BOOL:
        for (size_t i = 0; i < n; i++) dst[i] = p[i] != 0;
        return BNL_OK;
    default:
        return bnl_fail(BNL_ERR_FORMAT, "safetensors: tensor '%.100s' has dtype %s, expected an integer type (I64, I32, I16, I8, U8, BOOL)",
                        t->name ? t->name : "?", bnl_dtype_name(t->dtype));
    }
}

// ---------------------------------------------------------------------------------------------
// Files

bnl_status bnl_read_file(const char *path, uint8_t **buf, size_t *len) {
    if (!path || !buf || !len) return bnl_fail(BNL_ERR_ARG, "bnl_read_file: NULL argument");
    *buf = NULL, *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return bnl_fail(BNL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    size_t cap = 0;
    if (fstat(fileno(f), &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            fclose(f);
            return bnl_fail(BNL_ERR_IO, "%s: cannot read: is a directory", path);
        }
        if (S_ISREG(sb.st_mode) && sb.st_size > 0) {
            if ((unsigned long long)sb.st_size >= (unsigned long long)SIZE_MAX) {
                fclose(f);
                return bnl_fail(BNL_ERR_IO, "%s: file too large (%lld bytes) for this build", path, (long long)sb.st_size);
            }
            cap = (size_t)sb.st_size + 1;   // +1: reach EOF without growing
        }
    }
    if (cap < 4096) cap = 4096;
    uint8_t *b = malloc(cap);
    if (!b) {
        fclose(f);
        return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory reading the file", path);
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {   // the file grew, or is not a regular file
            size_t nc = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
            uint8_t *nb = nc > cap ? realloc(b, nc) : NULL;
            if (!nb) {
                free(b), fclose(f);
                return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory reading the file", path);
            }
            b = nb, cap = nc;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0 || n < cap) {
            if (ferror(f)) {
                int e = errno;
                free(b), fclose(f);
                return bnl_fail(BNL_ERR_IO, "%s: cannot read: %s", path, strerror(e));
            }
            if (feof(f)) break;
        }
    }
    fclose(f);
    *buf = b, *len = n;
    return BNL_OK;
}
