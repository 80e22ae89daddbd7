// The model card (see card.h): input size, mean/std, class names and training data of a loaded
// model, from __metadata__ or assumed, with the reason. A small strict JSON reader for the arrays
// the keys hold (numbers, strings); anything it refuses, JSON.parse refuses too.
#include "model/card.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double IMAGENET_MEAN[3] = {0.485, 0.456, 0.406};
static const double IMAGENET_STD[3] = {0.229, 0.224, 0.225};
#define IMAGENET_CLASSES 1000
#define DEFAULT_SIZE 64      // not ImageNet and no input_size: the page's procedural default
#define MIN_SIZE 8
#define MAX_SIZE 4096

// ---- a strict reader for JSON arrays of numbers or strings --------------------------------------
typedef struct {
    const char *p;
} jr;

static void ws(jr *j) {
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r') j->p++;
}

// A JSON number (RFC 8259 grammar), finite. Returns 0 on success.
static int read_number(jr *j, double *out) {
    const char *s = j->p, *q = s;
    if (*q == '-') q++;
    if (*q == '0') q++;
    else if (*q >= '1' && *q <= '9') while (*q >= '0' && *q <= '9') q++;
    else return 1;
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return 1;
        while (*q >= '0' && *q <= '9') q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9')) return 1;
        while (*q >= '0' && *q <= '9') q++;
    }
    char *end;
    double v = strtod(s, &end);
    if (end != q || !isfinite(v)) return 1;
    j->p = q;
    *out = v;
    return 0;
}

static int hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Skips a JSON string (escapes checked, no raw control characters). Returns 0 on success.
static int skip_string(jr *j) {
    const char *q = j->p;
    if (*q++ != '"') return 1;
    for (;;) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') break;
        if (c < 0x20) return 1;   // includes the terminating NUL: unterminated
        if (c == '\\') {
            q++;
            if (*q == 'u') {
                if (!hex(q[1]) || !hex(q[2]) || !hex(q[3]) || !hex(q[4])) return 1;
                q += 5;
                continue;
            }
            if (!strchr("\"\\/bfnrt", *q) || !*q) return 1;
        }
        q++;
    }
    j->p = q + 1;
    return 0;
}

// A JSON array, nothing else around it but whitespace: of numbers when v is given (up to max of them
// into v), else of strings; count in *n. Returns 0 on success.
static int read_array(const char *s, double *v, int max, int *n) {
    jr j = {s};
    *n = 0;
    ws(&j);
    if (*j.p++ != '[') return 1;
    ws(&j);
    if (*j.p == ']') j.p++;
    else {
        for (;;) {
            ws(&j);
            if (v) {
                double x;
                if (read_number(&j, &x)) return 1;
                if (*n < max) v[*n] = x;
            } else if (skip_string(&j)) {
                return 1;
            }
            (*n)++;
            ws(&j);
            if (*j.p == ',') { j.p++; continue; }
            if (*j.p++ == ']') break;
            return 1;
        }
    }
    ws(&j);
    return *j.p != '\0';
}

// ---- the card ---------------------------------------------------------------------------------------
static void say(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

// The first characters of a bad value, for messages (non-printable bytes as '?').
static void excerpt(char *dst, size_t cap, const char *v) {
    size_t n = 0, len = strlen(v), keep = len > 40 ? 40 : len;
    for (size_t i = 0; i < keep && n + 1 < cap; i++) dst[n++] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    if (len > keep && n + 4 < cap) dst[n++] = '.', dst[n++] = '.', dst[n++] = '.';
    dst[n] = '\0';
}

static void card_input_size(bnl_model_card *c, const bnl_resnet *m, int in_channels) {
    const char *v = bnl_resnet_meta(m, "input_size");
    bnl_card_field *f = &c->input_size;
    if (v) {
        double d[4], dh = 0, dw = 0;
        int n;
        if (!read_array(v, d, 4, &n)) {
            if (n == 3 && d[0] == in_channels) dh = d[1], dw = d[2];
        } else {
            // a bare integer N (older converters): N x N
            jr j = {v};
            double x;
            ws(&j);
            if (!read_number(&j, &x)) {
                ws(&j);
                if (!*j.p) dh = dw = x;
            }
        }
        if (dh >= MIN_SIZE && dw >= MIN_SIZE && dh <= MAX_SIZE && dw <= MAX_SIZE && dh == floor(dh) && dw == floor(dw)) {
            c->input_h = (int)dh, c->input_w = (int)dw;
            f->from = BNL_FROM_FILE;
            say(f->why, sizeof f->why, "__metadata__ input_size");
            return;
        }
        char ex[48];
        excerpt(ex, sizeof ex, v);
        say(f->problem, sizeof f->problem, "input_size '%s' is not [%d, H, W] with %d <= H, W <= %d", ex, in_channels,
            MIN_SIZE, MAX_SIZE);
    }
    f->from = BNL_FROM_ASSUMED;
    if (c->imagenet) {
        c->input_h = c->input_w = 224;
        say(f->why, sizeof f->why, "%s; 1000 classes: an ImageNet model (224x224, photos resized to 256 and centre-cropped)",
            v ? "unusable input_size" : "no input_size in the file");
        return;
    }
    // a bnlab training run records its image size even where input_size is missing
    const char *ts = bnl_resnet_meta(m, "train.image-size");
    int th, tw;
    char tail;
    if (ts && sscanf(ts, "%dx%d%c", &th, &tw, &tail) == 2 && th >= MIN_SIZE && tw >= MIN_SIZE && th <= MAX_SIZE &&
        tw <= MAX_SIZE) {
        c->input_h = th, c->input_w = tw;
        say(f->why, sizeof f->why, "%s; train.image-size in the file", v ? "unusable input_size" : "no input_size");
        return;
    }
    c->input_h = c->input_w = DEFAULT_SIZE;
    say(f->why, sizeof f->why, "%s and not a 1000-class model: the page's default %dx%d",
        v ? "unusable input_size" : "no input_size in the file", DEFAULT_SIZE, DEFAULT_SIZE);
}

static void card_triple(bnl_model_card *c, const bnl_resnet *m, const char *key, double *dst, const double *dflt,
                        bnl_card_field *f, int positive) {
    const char *v = bnl_resnet_meta(m, key);
    if (v) {
        double d[3];
        int n;
        if (!read_array(v, d, 3, &n) && n == 3 && (!positive || (d[0] > 0 && d[1] > 0 && d[2] > 0))) {
            for (int i = 0; i < 3; i++) dst[i] = d[i];
            f->from = BNL_FROM_FILE;
            say(f->why, sizeof f->why, "__metadata__ %s", key);
            return;
        }
        char ex[48];
        excerpt(ex, sizeof ex, v);
        say(f->problem, sizeof f->problem, "%s '%s' is not a JSON array of 3 %snumbers", key, ex,
            positive ? "positive " : "");
    }
    for (int i = 0; i < 3; i++) dst[i] = dflt[i];
    f->from = BNL_FROM_ASSUMED;
    say(f->why, sizeof f->why, "%s; ImageNet's %s%s", v ? "unusable" : "not in the file", key,
        c->imagenet ? " (1000 classes: an ImageNet model)" : " (the usual choice for photos)");
}

static void card_labels(bnl_model_card *c, const bnl_resnet *m, int K) {
    const char *v = bnl_resnet_meta(m, "labels");
    bnl_card_field *f = &c->labels;
    if (v) {
        int n;
        char ex[48];
        excerpt(ex, sizeof ex, v);
        if (read_array(v, NULL, 0, &n)) {
            say(f->problem, sizeof f->problem, "labels '%s' is not a JSON array of strings", ex);
        } else if (n != K) {
            say(f->problem, sizeof f->problem, "labels has %d names for %d classes", n, K);
        } else {
            c->labels_kind = BNL_LABELS_FILE;
            f->from = BNL_FROM_FILE;
            say(f->why, sizeof f->why, "__metadata__ labels");
            return;
        }
    }
    f->from = BNL_FROM_ASSUMED;
    if (c->imagenet) {
        c->labels_kind = BNL_LABELS_IMAGENET;
        say(f->why, sizeof f->why, "%s; 1000 classes: the ImageNet class names", v ? "unusable labels" : "no labels in the file");
    } else {
        c->labels_kind = BNL_LABELS_NONE;
        say(f->why, sizeof f->why, "%s: classes are numbered", v ? "unusable labels" : "no labels in the file");
    }
}

static void card_train(bnl_model_card *c, const bnl_resnet *m) {
    const char *v = bnl_resnet_meta(m, "train.data");
    bnl_card_field *f = &c->train;
    if (v && *v && strlen(v) < sizeof c->train_data) {
        snprintf(c->train_data, sizeof c->train_data, "%s", v);
        f->from = BNL_FROM_FILE;
        say(f->why, sizeof f->why, "__metadata__ train.data");
        return;
    }
    if (v) say(f->problem, sizeof f->problem, "train.data is %s", *v ? "too long" : "empty");
    f->from = BNL_FROM_ASSUMED;
    if (c->imagenet) {
        snprintf(c->train_data, sizeof c->train_data, "imagenet");
        say(f->why, sizeof f->why, "no train.data in the file; 1000 classes: ImageNet");
    } else {
        c->train_data[0] = '\0';
        say(f->why, sizeof f->why, "no train.data in the file");
    }
}

void bnl_model_card_get(bnl_model_card *c, const bnl_resnet *m) {
    memset(c, 0, sizeof *c);
    const bnl_resnet_info *in = bnl_resnet_get_info(m);
    c->imagenet = in->num_classes == IMAGENET_CLASSES;
    card_input_size(c, m, in->in_channels);
    card_triple(c, m, "mean", c->mean, IMAGENET_MEAN, &c->mean_src, 0);
    card_triple(c, m, "std", c->std, IMAGENET_STD, &c->std_src, 1);
    card_labels(c, m, in->num_classes);
    card_train(c, m);
}

// ---- JSON out -----------------------------------------------------------------------------------
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sb;

static void put(sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 512) + n;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = 1; return; }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void puts_(sb *b, const char *s) { put(b, s, strlen(s)); }
static void putf(sb *b, const char *fmt, ...) {
    char tmp[256];   // the formats below print at most ~150 characters
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) { b->oom = 1; return; }
    put(b, tmp, (size_t)n);
}
static void put_json_string(sb *b, const char *s) {
    puts_(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { char e[2] = {'\\', (char)*p}; put(b, e, 2); }
        else if (*p < 0x20) putf(b, "\\u%04x", *p);   // UTF-8 passes through (the reader checked it)
        else put(b, (const char *)p, 1);
    }
    puts_(b, "\"");
}
static void put_field(sb *b, const char *name, const bnl_card_field *f) {
    putf(b, "\"%s\":{\"from\":\"%s\",\"why\":", name, f->from == BNL_FROM_FILE ? "file" : "assumed");
    put_json_string(b, f->why);
    if (f->problem[0]) {
        puts_(b, ",\"problem\":");
        put_json_string(b, f->problem);
    }
    puts_(b, "}");
}

char *bnl_model_card_json(const bnl_model_card *c) {
    static const char *kinds[] = {"file", "imagenet", "none"};
    sb b = {0};
    putf(&b, "{\"inputSize\":[3,%d,%d],\"mean\":[%.17g,%.17g,%.17g]", c->input_h, c->input_w, c->mean[0], c->mean[1],
         c->mean[2]);
    putf(&b, ",\"std\":[%.17g,%.17g,%.17g],\"labels\":\"%s\",\"trainData\":", c->std[0], c->std[1], c->std[2],
         kinds[c->labels_kind]);
    if (c->train_data[0]) put_json_string(&b, c->train_data);
    else puts_(&b, "null");
    puts_(&b, ",\"provenance\":{");
    put_field(&b, "inputSize", &c->input_size);
    puts_(&b, ",");
    put_field(&b, "mean", &c->mean_src);
    puts_(&b, ",");
    put_field(&b, "std", &c->std_src);
    puts_(&b, ",");
    put_field(&b, "labels", &c->labels);
    puts_(&b, ",");
    put_field(&b, "trainData", &c->train);
    puts_(&b, "}}");
    if (b.oom) { free(b.s); return NULL; }
    return b.s;
}
