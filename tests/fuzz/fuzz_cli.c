// libFuzzer target: the command-line parser (src/cli/args.c) and `bnlab train`'s option handling
// (src/cli/cmd_train.c, included here so its static parsers are reachable), on arbitrary argv.
// The input is split into arguments at NUL and newline bytes. The training itself is replaced by
// a check of the configuration the options produced: whatever the parser accepts must lie in the
// ranges the options document. Run with -close_fd_mask=3 (help and error lines are expected).
#include "../../src/cli/args.c"

#define bnl_train_run fuzz_fake_train_run   // cmd_train parses, validates, then "trains" here
#include "../../src/cli/cmd_train.c"
#undef bnl_train_run

#include "fuzz_util.h"

#include <limits.h>
#include <math.h>

static long fake_runs;

bnl_status fuzz_fake_train_run(const bnl_train_config *c, bnl_dist *dist, const bnl_train_hooks *hooks,
                               bnl_train_result *out) {
    (void)dist, (void)hooks;
    FUZZ_CHECK(c->out_dir && *c->out_dir, "--out accepted empty");
    FUZZ_CHECK(c->data && *c->data, "--data empty");
    FUZZ_CHECK(c->epochs >= 1 && c->epochs <= 1000000, "epochs %d", c->epochs);
    FUZZ_CHECK(c->batch_size >= 1 && c->batch_size <= 65536, "batch size %d", c->batch_size);
    FUZZ_CHECK(c->classes == 0 || (c->classes >= 2 && c->classes <= 16), "classes %d", c->classes);
    FUZZ_CHECK(c->image_size == 0 || (c->image_size >= 8 && c->image_size <= 4096), "image size %d", c->image_size);
    FUZZ_CHECK(isfinite(c->width_mult) && c->width_mult > 0 && c->width_mult <= 16, "width %g", (double)c->width_mult);
    FUZZ_CHECK(isfinite(c->lr) && c->lr >= 0, "lr %g", c->lr);
    FUZZ_CHECK(c->sgd_momentum >= 0 && c->sgd_momentum <= 1, "momentum %g", c->sgd_momentum);
    FUZZ_CHECK(c->weight_decay >= 0 && c->weight_decay <= 1e3, "weight decay %g", c->weight_decay);
    FUZZ_CHECK(c->bn_momentum >= 0 && c->bn_momentum <= 1, "bn momentum %g", (double)c->bn_momentum);
    FUZZ_CHECK(isfinite(c->warmup_epochs) && c->warmup_epochs >= 0, "warmup %g", c->warmup_epochs);
    FUZZ_CHECK(isfinite(c->step_gamma) && c->step_gamma >= 0, "gamma %g", c->step_gamma);
    FUZZ_CHECK(c->depth == 18 || c->depth == 34 || c->depth == 50 || c->depth == 101 || c->depth == 152, "depth %d",
               c->depth);
    FUZZ_CHECK(c->n_milestones >= 0 && c->n_milestones <= BNL_MAX_MILESTONES, "%d milestones", c->n_milestones);
    FUZZ_CHECK(c->n_milestones > 0 || c->step_every >= 1, "neither milestones nor a step period");
    for (int i = 0; i < c->n_milestones; i++)
        FUZZ_CHECK(c->milestones[i] >= 1 && (i == 0 || c->milestones[i] > c->milestones[i - 1]), "milestone %d", i);
    FUZZ_CHECK(c->eval_every >= 0 && c->max_steps >= 0, "eval-every %d max-steps %lld", c->eval_every,
               (long long)c->max_steps);
    memset(out, 0, sizeof *out);
    fake_runs++;
    return BNL_OK;
}

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "train";
    char *p = text, *end = text + size;
    while (p <= end && argc < MAX_ARGS) {
        char *q = p;
        while (q < end && *q && *q != '\n') q++;
        *q = 0;
        argv[argc++] = p;
        p = q + 1;
    }
    argv[argc] = NULL;

    // 1. the generic parser on a table with every kind of option, then the typed getters
    cli_opt opts[] = {
        {"n", "N", "an integer", "4", 0},
        {"x", "X", "a number", NULL, 0},
        {"name", "S", "a string", NULL, 0},
        {"out", "DIR", "required, as in bnlab train", NULL, 1},
        {"epochs", "E", "as in bnlab train", "10", 0},
        {"flag", NULL, "a flag", NULL, 0},
        {"step-epochs", "N|A,B", "milestones", "30", 0},
    };
    int nopts = sizeof opts / sizeof opts[0];
    const char *pos[3];
    int npos = -1;
    int rc = cli_parse(argc, argv, "fuzz [options]", "about", opts, nopts, pos, 3, &npos);
    FUZZ_CHECK(rc >= -1 && rc <= 1, "cli_parse returned %d", rc);
    if (rc == 0) {
        FUZZ_CHECK(npos >= 0 && npos <= 3, "npos %d", npos);
        FUZZ_CHECK(cli_get(opts, nopts, "out") != NULL, "a required option is missing after success");
        long l = 0;
        double d = 0;
        if (cli_get_long(opts, nopts, "n", -1000, 1000, &l) == 0) FUZZ_CHECK(l >= -1000 && l <= 1000, "%ld", l);
        if (cli_get_double(opts, nopts, "x", -1.5, 1e300, &d) == 0 && cli_get(opts, nopts, "x"))
            FUZZ_CHECK(d >= -1.5 && d <= 1e300, "%g", d);
        (void)cli_get_long(opts, nopts, "epochs", LONG_MIN, LONG_MAX, &l);
        (void)cli_get_long(opts, nopts, "name", 1, 1000000, &l);
        (void)cli_get_double(opts, nopts, "name", -INFINITY, INFINITY, &d);
        FUZZ_CHECK(cli_get(opts, nopts, "absent") == NULL, "an unknown name has a value");
        bnl_train_config cfg = bnl_train_config_default();
        if (parse_milestones(cli_get(opts, nopts, "step-epochs"), &cfg) == 0) {
            FUZZ_CHECK(cfg.n_milestones <= BNL_MAX_MILESTONES, "%d milestones", cfg.n_milestones);
            for (int i = 1; i < cfg.n_milestones; i++) FUZZ_CHECK(cfg.milestones[i] > cfg.milestones[i - 1], "order");
        }
        for (int i = 0; i < npos; i++) {
            int depth = 0;
            uint64_t u;
            cli_opt one[] = {{"v", "V", "", pos[i], 0}};
            if (parse_arch(pos[i], &depth) == 0) FUZZ_CHECK(depth >= 18 && depth <= 152, "depth %d", depth);
            (void)parse_u64(one, 1, "v", &u);
        }
    }

    // 2. `bnlab train` itself: every option check, up to the (fake) run
    char *targv[MAX_ARGS + 2];
    memcpy(targv, argv, sizeof(char *) * (size_t)(argc + 1));
    rc = cmd_train(argc, targv);
    FUZZ_CHECK(rc == 0 || rc == 1 || rc == 2, "cmd_train returned %d", rc);
    free(text);
    return 0;
}
