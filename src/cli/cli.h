// The `bnlab` command: argument parsing and nothing else; every subcommand calls the library.
#ifndef BNL_CLI_H
#define BNL_CLI_H
#include <stddef.h>
#include <stdint.h>

// One option of a subcommand: "--name VALUE", or a flag "--name" when takes_value is 0.
typedef struct cli_opt {
    const char *name;      // without the leading dashes
    const char *metavar;   // NULL for flags
    const char *help;
    const char *value;     // default on entry, parsed value after cli_parse (flags: "1" when given)
    int required;
} cli_opt;

// Parses argv[1..] of a subcommand (argv[0] is its name). Positionals go to pos[] (at most max_pos).
// Returns 0 to go on, 1 when --help was printed (exit 0), -1 after printing an error (exit 2).
int cli_parse(int argc, char **argv, const char *usage, const char *about, cli_opt *opts, int nopts,
              const char **pos, int max_pos, int *npos);
const char *cli_get(const cli_opt *opts, int nopts, const char *name);
// Typed getters: print "bnlab: error: --name: ..." and return -1 on a bad value.
int cli_get_double(const cli_opt *opts, int nopts, const char *name, double lo, double hi, double *out);
int cli_get_long(const cli_opt *opts, int nopts, const char *name, long lo, long hi, long *out);
// Prints "bnlab: error: <formatted>" on one line to stderr; returns 1 (the exit code for errors).
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Subcommands (src/cli/cmd_*.c). Each returns the process exit code.
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_precise_bn(int argc, char **argv);
int cmd_step(int argc, char **argv);
int cmd_train(int argc, char **argv);

#endif
