// bnlab: the command-line door onto the library. Subcommands live in cmd_*.c.
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int, char **);
    const char *about;
} command;

static const command commands[] = {
    {"demo", cmd_demo, "BatchNorm demonstration: batch vs running statistics for a few batch sizes"},
    {"info", cmd_info, "prints the ResNet architecture read from a safetensors file"},
    {"infer", cmd_infer, "forward pass of a batch (eval or train mode); writes logits"},
    {"step", cmd_step, "one SGD training step; writes the updated state"},
    {"precise-bn", cmd_precise_bn, "PreciseBN: exact running statistics over K batches; writes the updated state"},
    {"train", cmd_train, "trains a ResNet: data, epochs, checkpoints, resume, MPI data parallel"},
    {"bench", cmd_bench, "timings of the core kernels (key=value lines)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: bnlab <command> [options]   (bnlab <command> --help for each)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see 'bnlab --help')", argv[1]);
    return 2;
}
