#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_error(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    // one line, always: newlines inside a message would break scripts that read stderr
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "bnlab: error: %s\n", msg);
    return 1;
}

static void print_help(const char *usage, const char *about, const cli_opt *opts, int nopts) {
    printf("usage: %s\n\n%s\n", usage, about);
    if (nopts) printf("\noptions:\n");
    for (int i = 0; i < nopts; i++) {
        char left[96];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        printf("  %-30s %s", left, opts[i].help);
        if (opts[i].required) printf(" (required)");
        else if (opts[i].metavar && opts[i].value) printf(" [default: %s]", opts[i].value);
        printf("\n");
    }
    printf("  %-30s %s\n", "--help", "show this help");
}

int cli_parse(int argc, char **argv, const char *usage, const char *about, cli_opt *opts, int nopts,
              const char **pos, int max_pos, int *npos) {
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_help(usage, about, opts, nopts);
            return 1;
        }
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            cli_opt *o = NULL;
            for (int k = 0; k < nopts; k++)
                if (strlen(opts[k].name) == len && !strncmp(opts[k].name, name, len)) o = &opts[k];
            if (!o) {
                cli_error("unknown option '%.*s' for '%s' (see 'bnlab %s --help')", (int)(len + 2), a, argv[0], argv[0]);
                return -1;
            }
            if (!o->metavar) {
                if (eq) {
                    cli_error("option --%s takes no value", o->name);
                    return -1;
                }
                o->value = "1";
            } else if (eq) {
                o->value = eq + 1;
            } else {
                if (i + 1 >= argc) {
                    cli_error("option --%s needs a value (%s)", o->name, o->metavar);
                    return -1;
                }
                o->value = argv[++i];
            }
            continue;
        }
        if (np >= max_pos) {
            cli_error("unexpected argument '%s' for '%s'", a, argv[0]);
            return -1;
        }
        pos[np++] = a;
    }
    for (int k = 0; k < nopts; k++)
        if (opts[k].required && !opts[k].value) {
            cli_error("missing required option --%s for '%s'", opts[k].name, argv[0]);
            return -1;
        }
    if (npos) *npos = np;
    return 0;
}

const char *cli_get(const cli_opt *opts, int nopts, const char *name) {
    for (int k = 0; k < nopts; k++)
        if (!strcmp(opts[k].name, name)) return opts[k].value;
    return NULL;
}

int cli_get_double(const cli_opt *opts, int nopts, const char *name, double lo, double hi, double *out) {
    const char *v = cli_get(opts, nopts, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi)) {
        cli_error("--%s: expected a number in [%g, %g], got '%s'", name, lo, hi, v);
        return -1;
    }
    *out = d;
    return 0;
}

int cli_get_long(const cli_opt *opts, int nopts, const char *name, long lo, long hi, long *out) {
    const char *v = cli_get(opts, nopts, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    long d = strtol(v, &end, 10);
    if (errno || end == v || *end || d < lo || d > hi) {
        cli_error("--%s: expected an integer in [%ld, %ld], got '%s'", name, lo, hi, v);
        return -1;
    }
    *out = d;
    return 0;
}
