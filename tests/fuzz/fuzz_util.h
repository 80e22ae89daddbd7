// Shared by the libFuzzer targets: a private temp directory and whole-file writes, for the
// loaders whose API takes a path. Each target is one process with one input at a time.
#ifndef BNL_FUZZ_UTIL_H
#define BNL_FUZZ_UTIL_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// A directory of this process, removed at exit (files the targets write are removed with it).
static char fuzz_dir[256];

static inline void fuzz_rm_dir(void) {
    if (!fuzz_dir[0]) return;
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

static inline const char *fuzz_tmpdir(const char *tag) {
    if (fuzz_dir[0]) return fuzz_dir;
    const char *base = getenv("TMPDIR");
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/bnl_%s_XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_rm_dir);
    return fuzz_dir;
}

// Writes (data, size) to path, replacing it; aborts on failure (not the input's fault).
static inline void fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

// A property the library promises was broken: report it as a crash (libFuzzer keeps the input).
#define FUZZ_CHECK(cond, ...)                                                                       \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "fuzz: check failed: %s: ", #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                                           \
            fprintf(stderr, "\n");                                                                  \
            abort();                                                                                \
        }                                                                                           \
    } while (0)

#endif
