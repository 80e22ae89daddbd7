// safetensors: a strict reader (from a borrowed buffer or a file) and a writer (to a buffer, or
// atomically to a file). The header parser is a small hand-written JSON parser that accepts only
// what safetensors headers need (objects, arrays, strings, integers), bounds its nesting depth and
// checks every size computation, because it reads untrusted files (and is fuzzed).
//
// Layout: u64 LE header length L | L bytes of JSON (space padded) | data section.
// Data may sit at any alignment in the buffer: every element is read with memcpy.
// Little-endian host assumed (x86-64 and wasm32).
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L   // fileno, fsync, getpid under strict -std=c11
#endif
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
        if (*q == '\\' && q + 1 < j->end) q++;   // the escaped char can't end the string
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

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Duplicate names, offset coverage, then reorders tensors by data offset.
static bnl_status finish(st_parse *s, const uint8_t *data) {
    bnl_st_file *f = s->f;
    size_t n = f->count;
    if (f->meta_count > 1) {   // sorted copy of the keys: linear-log even for a hostile 100 MB header
        char **keys = malloc(f->meta_count * sizeof *keys);
        if (!keys) return bnl_fail(BNL_ERR_NOMEM, "safetensors: out of memory checking __metadata__");
        memcpy(keys, f->meta_keys, f->meta_count * sizeof *keys);
        qsort(keys, f->meta_count, sizeof *keys, cmp_str);
        for (size_t i = 1; i < f->meta_count; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                bnl_status st = bnl_fail(BNL_ERR_FORMAT,
                                         "safetensors: __metadata__ must be a string->string map (duplicate key '%.100s')", keys[i]);
                free(keys);
                return st;
            }
        free(keys);
    }
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

static char *st_strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = 0;
    return d;
}
static char *st_strdup(const char *s) { return st_strndup(s, strlen(s)); }

// Writes parts[0..n) to PATH.tmp.<pid> in PATH's directory, fsyncs it, and renames it over PATH,
// so PATH is always either the old file or the complete new one. On failure the temp file is removed.
static bnl_status write_parts_atomic(const char *path, const void *const *parts, const size_t *lens, size_t n) {
    if (!path || !*path) return bnl_fail(BNL_ERR_ARG, "write: empty output path");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return bnl_fail(BNL_ERR_NOMEM, "%s: out of memory", path);
#ifdef BNL_HAVE_POSIX
    long pid = (long)getpid();
#else
    long pid = 0;
#endif
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, pid);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        return bnl_fail(BNL_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    int e = 0;
    const char *what = "cannot write";
    for (size_t i = 0; i < n && !e; i++)
        if (lens[i] && fwrite(parts[i], 1, lens[i], f) != lens[i]) e = errno ? errno : EIO;
    if (!e && fflush(f) != 0) e = errno ? errno : EIO;
#ifdef BNL_HAVE_POSIX
    if (!e && fsync(fileno(f)) != 0) e = errno, what = "cannot sync";
#endif
    if (fclose(f) != 0 && !e) e = errno ? errno : EIO;
    if (!e && rename(tmp, path) != 0) e = errno, what = "cannot rename the temporary file over it";
    if (e) {
        remove(tmp);
        free(tmp);
        return bnl_fail(BNL_ERR_IO, "%s: %s: %s", path, what, strerror(e));
    }
    free(tmp);
#if defined(BNL_HAVE_POSIX) && !defined(__EMSCRIPTEN__)
    // make the rename itself durable; best effort (some filesystems refuse to fsync directories)
    {
        const char *slash = strrchr(path, '/');
        char *dir = slash ? st_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : st_strdup(".");
        if (dir) {
            int fd = open(dir, O_RDONLY);
            if (fd >= 0) {
                (void)fsync(fd);
                close(fd);
            }
            free(dir);
        }
    }
#endif
    return BNL_OK;
}

bnl_status bnl_write_file_atomic(const char *path, const uint8_t *buf, size_t len) {
    if (!buf && len) return bnl_fail(BNL_ERR_ARG, "bnl_write_file_atomic: buffer is NULL");
    const void *parts[1] = {buf};
    return write_parts_atomic(path, parts, &len, 1);
}

// ---------------------------------------------------------------------------------------------
// Writer

typedef struct st_wtensor {
    char *name;
    bnl_dtype dtype;
    int ndim;
    int64_t shape[BNL_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} st_wtensor;

struct bnl_st_writer {
    st_wtensor *t;
    size_t count, cap;
    char **mk, **mv;
    size_t mcount, mcap;
};

bnl_status bnl_st_writer_create(bnl_st_writer **out) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "bnl_st_writer_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
    return BNL_OK;
}

void bnl_st_writer_free(bnl_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) free(w->t[i].name);
    free(w->t);
    for (size_t i = 0; i < w->mcount; i++) free(w->mk[i]), free(w->mv[i]);
    free(w->mk);
    free(w->mv);
    free(w);
}

// Names and values must be valid UTF-8 (the header is JSON text) and non-empty names.
static int valid_text(const char *s) { return utf8_invalid_at((const uint8_t *)s, strlen(s)) == SIZE_MAX; }

bnl_status bnl_st_writer_add(bnl_st_writer *w, const char *name, bnl_dtype dt, int ndim,
                             const int64_t *shape, const void *data) {
    if (!w || !name) return bnl_fail(BNL_ERR_ARG, "safetensors writer: NULL writer or name");
    if (!*name || strcmp(name, "__metadata__") == 0 || !valid_text(name))
        return bnl_fail(BNL_ERR_ARG, "safetensors writer: invalid tensor name '%.100s' (empty, reserved or not UTF-8)", name);
    if ((int)dt < 0 || (int)dt >= ST_NDTYPES)
        return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': invalid dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > BNL_ST_MAX_DIMS || (ndim > 0 && !shape))
        return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': ndim %d (need 0..%d and a shape)", name, ndim,
                        BNL_ST_MAX_DIMS);
    size_t nelem = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': negative dim %lld", name, (long long)shape[i]);
        zero |= shape[i] == 0;
    }
    if (zero) nelem = 0;
    else
        for (int i = 0; i < ndim; i++)
            if ((uint64_t)shape[i] > SIZE_MAX || !bnl_mul_ok(nelem, (size_t)shape[i], &nelem))
                return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': shape too large", name);
    size_t nbytes;
    if (!bnl_mul_ok(nelem, bnl_dtype_size(dt), &nbytes))
        return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': shape too large", name);
    if (nbytes && !data) return bnl_fail(BNL_ERR_ARG, "safetensors writer: tensor '%.100s': data is NULL", name);
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return bnl_fail(BNL_ERR_ARG, "safetensors writer: duplicate tensor name '%.100s'", name);
    if (w->count == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        st_wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
        w->t = nt, w->cap = nc;
    }
    st_wtensor *t = &w->t[w->count];
    memset(t, 0, sizeof *t);
    t->name = st_strdup(name);
    if (!t->name) return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->data = data;
    w->count++;
    return BNL_OK;
}

// Sets key to value (a later call for the same key replaces the value, as a dict would).
bnl_status bnl_st_writer_meta(bnl_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return bnl_fail(BNL_ERR_ARG, "safetensors writer: NULL writer, key or value");
    if (!valid_text(key) || !valid_text(value))
        return bnl_fail(BNL_ERR_ARG, "safetensors writer: metadata '%.100s' is not valid UTF-8", key);
    char *v = st_strdup(value);
    if (!v) return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
    for (size_t i = 0; i < w->mcount; i++)
        if (strcmp(w->mk[i], key) == 0) {
            free(w->mv[i]);
            w->mv[i] = v;
            return BNL_OK;
        }
    if (w->mcount == w->mcap) {
        size_t nc = w->mcap ? 2 * w->mcap : 8;
        char **nk = realloc(w->mk, nc * sizeof *nk);
        if (nk) w->mk = nk;
        char **nv = nk ? realloc(w->mv, nc * sizeof *nv) : NULL;
        if (nv) w->mv = nv;
        if (!nv) return free(v), bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
        w->mcap = nc;
    }
    char *k = st_strdup(key);
    if (!k) return free(v), bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
    w->mk[w->mcount] = k;
    w->mv[w->mcount] = v;
    w->mcount++;
    return BNL_OK;
}

// A growable byte string for the header.
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->n - 1) { b->oom = 1; return; }
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc = nc > SIZE_MAX / 2 ? SIZE_MAX : nc * 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np, b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_put(b, esc, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

// Builds the header (padded with spaces to a multiple of 8, as the Python library does) and the
// total data size. Tensors are laid out back to back in the order they were added.
static bnl_status build_header(const bnl_st_writer *w, sbuf *hb, size_t *data_len) {
    memset(hb, 0, sizeof *hb);
    char num[64];
    size_t off = 0;
    sb_str(hb, "{");
    if (w->mcount) {
        sb_str(hb, "\"__metadata__\":{");
        for (size_t i = 0; i < w->mcount; i++) {
            if (i) sb_str(hb, ",");
            sb_json_string(hb, w->mk[i]);
            sb_str(hb, ":");
            sb_json_string(hb, w->mv[i]);
        }
        sb_str(hb, "}");
    }
    for (size_t i = 0; i < w->count; i++) {
        const st_wtensor *t = &w->t[i];
        if (i || w->mcount) sb_str(hb, ",");
        sb_json_string(hb, t->name);
        sb_str(hb, ":{\"dtype\":\"");
        sb_str(hb, bnl_dtype_name(t->dtype));
        sb_str(hb, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            sb_str(hb, num);
        }
        if (t->nbytes > SIZE_MAX - off) {
            free(hb->p);
            return bnl_fail(BNL_ERR_ARG, "safetensors writer: total data size overflows");
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        sb_str(hb, num);
        off += t->nbytes;
    }
    sb_str(hb, "}");
    while (!hb->oom && hb->n % 8) sb_str(hb, " ");
    if (hb->oom) {
        free(hb->p);
        return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory building the header");
    }
    *data_len = off;
    return BNL_OK;
}

bnl_status bnl_st_writer_to_buffer(bnl_st_writer *w, uint8_t **buf, size_t *len) {
    if (!w || !buf || !len) return bnl_fail(BNL_ERR_ARG, "bnl_st_writer_to_buffer: NULL argument");
    *buf = NULL, *len = 0;
    sbuf hb;
    size_t dlen;
    bnl_status st = build_header(w, &hb, &dlen);
    if (st != BNL_OK) return st;
    if (hb.n > SIZE_MAX - 8 || dlen > SIZE_MAX - 8 - hb.n) {
        free(hb.p);
        return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: file size overflows");
    }
    size_t total = 8 + hb.n + dlen;
    uint8_t *b = malloc(total);
    if (!b) {
        free(hb.p);
        return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory for %zu bytes", total);
    }
    uint64_t L = hb.n;
    memcpy(b, &L, 8);
    memcpy(b + 8, hb.p, hb.n);
    size_t at = 8 + hb.n;
    for (size_t i = 0; i < w->count; i++) {
        if (w->t[i].nbytes) memcpy(b + at, w->t[i].data, w->t[i].nbytes);
        at += w->t[i].nbytes;
    }
    free(hb.p);
    *buf = b, *len = total;
    return BNL_OK;
}

// Streams header and tensor data straight to the file: no second copy of the weights in memory.
bnl_status bnl_st_writer_to_file(bnl_st_writer *w, const char *path) {
    if (!w) return bnl_fail(BNL_ERR_ARG, "bnl_st_writer_to_file: writer is NULL");
    sbuf hb;
    size_t dlen;
    bnl_status st = build_header(w, &hb, &dlen);
    if (st != BNL_OK) return st;
    size_t n = w->count + 2;
    const void **parts = malloc(n * sizeof *parts);
    size_t *lens = malloc(n * sizeof *lens);
    if (!parts || !lens) {
        free(parts), free(lens), free(hb.p);
        return bnl_fail(BNL_ERR_NOMEM, "safetensors writer: out of memory");
    }
    uint64_t L = hb.n;
    parts[0] = &L, lens[0] = 8;
    parts[1] = hb.p, lens[1] = hb.n;
    for (size_t i = 0; i < w->count; i++) parts[i + 2] = w->t[i].data, lens[i + 2] = w->t[i].nbytes;
    st = write_parts_atomic(path, parts, lens, n);
    free(parts), free(lens), free(hb.p);
    return st;
}
