// Shared helpers for the C tests: fail loudly, print the first differing values and the largest
// error, exit non-zero. Include in exactly one .c per test executable.
#ifndef BNL_TEST_UTIL_H
#define BNL_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0, g_checks = 0;

// n zeroed floats, or exit(2): a test cannot go on without them
static inline float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(2);
    }
    return p;
}

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        g_checks++;                                                                    \
        if (!(cond)) {                                                                 \
            g_failures++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
        }                                                                              \
    } while (0)

// |got - want| <= atol + rtol*|want| elementwise. Prints the first 5 mismatches and the largest
// absolute and relative error. Returns 1 if all close.
static int check_close(const char *what, const float *got, const float *want, size_t n, double atol, double rtol) {
    size_t bad = 0, worst = 0;
    double max_abs = 0, max_rel = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i], d = fabs(g - w);
        int ok = d <= atol + rtol * fabs(w) && !isnan(g) == !isnan(w);
        if (d > max_abs || isnan(d)) max_abs = d, worst = i;
        if (fabs(w) > 0 && d / fabs(w) > max_rel) max_rel = d / fabs(w);
        if (!ok) {
            if (bad < 5) fprintf(stderr, "  %s[%zu]: got %.9g want %.9g (diff %.3g)\n", what, i, g, w, d);
            bad++;
        }
    }
    g_checks++;
    if (bad) {
        g_failures++;
        fprintf(stderr, "FAIL %s: %zu of %zu values differ; max abs err %.3g at [%zu], max rel err %.3g (atol %.1g rtol %.1g)\n",
                what, bad, n, max_abs, worst, max_rel, atol, rtol);
        return 0;
    }
    return 1;
}

// Call at the end of main: prints a summary line and returns the exit code.
static int test_summary(const char *name) {
    printf("%s: %d checks, %d failed\n", name, g_checks, g_failures);
    return g_failures ? 1 : 0;
}
#endif
