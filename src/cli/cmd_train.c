// `bnlab train`: options -> bnl_train_config, a progress printer, and bnl_train_run (src/train/).
#include "bnlab.h"
#include "cli/cli.h"
#include "train/train.h"
#include "io/dataset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>

// ---------------------------------------------------------------------------------------------
// Progress: a redrawn bar on a terminal, a few plain lines otherwise.

typedef struct {
    int tty, quiet, bar_shown;
    double last_draw, last_line;
} printer;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_duration(char *out, size_t cap, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(out, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

// ---------------------------------------------------------------------------------------------
// MPI: when a rank dies, mpirun ends the others with SIGTERM. Rank 0 says so in one line, with the
// checkpoint to resume from (written ahead: the handler only write()s); when rank 0 is the one that
// died, Open MPI's own message names it.

static struct {
    int rank, K;
    const char *out;
    char msg[1400];
    volatile size_t len;
} g_term;

static void term_prepare(long long step) {
    if (g_term.K < 2 || g_term.rank != 0) return;
    char other[32], at[64] = "";
    if (g_term.K == 2) snprintf(other, sizeof other, "rank 1");
    else snprintf(other, sizeof other, "another rank");
    if (step >= 0) snprintf(at, sizeof at, " (step %lld)", step);
    int n = snprintf(g_term.msg, sizeof g_term.msg,
                     "bnlab: error: rank %d of %d was ended by mpirun: %s died or the run was interrupted; the last "
                     "checkpoint %s/last.safetensors%s is intact: continue with --resume\n",
                     g_term.rank, g_term.K, other, g_term.out, at);
    g_term.len = n > 0 ? (size_t)n < sizeof g_term.msg ? (size_t)n : sizeof g_term.msg - 1 : 0;
}

static void on_sigterm(int sig) {
    if (g_term.len) {
        ssize_t w = write(2, g_term.msg, g_term.len);
        (void)w;
    }
    _exit(128 + sig);
}

static void on_start(void *ctx, const bnl_train_info *in) {
    term_prepare((long long)in->start_step);
    printer *p = ctx;
    p->last_line = mono();   // plain progress lines only for epochs that take a while
    if (p->quiet) return;
    printf("bnlab train: %s, %zu parameters, %d classes, %dx%d images, %zu train / %zu val images\n", in->arch,
           in->num_params, in->num_classes, in->height, in->width, in->train_images, in->val_images);
    printf("bnlab train: batch %d x %d rank%s, %lld steps/epoch, %d epochs (%lld steps), %d thread%s per rank\n",
           in->batch_size, in->world_size, in->world_size == 1 ? "" : "s", (long long)in->steps_per_epoch, in->epochs,
           (long long)in->total_steps, in->threads, in->threads == 1 ? "" : "s");
    fflush(stdout);
}

static void on_step(void *ctx, const bnl_train_progress *pr) {
    printer *p = ctx;
    if (p->quiet) return;
    double t = mono();
    char eta[32];
    fmt_duration(eta, sizeof eta, pr->eta_s);
    char comm[48] = "";   // MPI: time per step waiting in communication
    if (pr->comm_ms > 0) snprintf(comm, sizeof comm, " comm %.2f ms/step", pr->comm_ms);
    if (p->tty) {
        if (t - p->last_draw < 0.1 && pr->step_in_epoch != pr->steps_per_epoch) return;
        p->last_draw = t;
        char bar[31];
        int fill = (int)(30 * pr->step_in_epoch / (pr->steps_per_epoch > 0 ? pr->steps_per_epoch : 1));
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[30] = 0;
        fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %lld/%lld loss %.4f acc %.3f lr %.3g %.0f img/s%s ETA %s", pr->epoch,
                pr->epochs, bar, (long long)pr->step_in_epoch, (long long)pr->steps_per_epoch, pr->loss, pr->acc,
                pr->lr, pr->images_per_s, comm, eta);
        fflush(stderr);
        p->bar_shown = 1;
        return;
    }
    // plain: about ten lines an epoch, and none for epochs that take seconds
    int64_t every = pr->steps_per_epoch / 10 > 0 ? pr->steps_per_epoch / 10 : 1;
    if (pr->step_in_epoch % every || t - p->last_line < 5.0) return;
    p->last_line = t;
    fprintf(stderr, "epoch %d/%d step %lld/%lld loss %.4f acc %.3f lr %.3g %.0f img/s%s ETA %s\n", pr->epoch,
            pr->epochs, (long long)pr->step_in_epoch, (long long)pr->steps_per_epoch, pr->loss, pr->acc, pr->lr,
            pr->images_per_s, comm, eta);
}

static void clear_bar(printer *p) {
    if (p->bar_shown) fprintf(stderr, "\r\033[K"), fflush(stderr);
    p->bar_shown = 0;
}

static void on_epoch(void *ctx, const bnl_train_epoch *e) {
    printer *p = ctx;
    term_prepare((long long)e->step);   // that epoch's checkpoint is on disk
    if (p->quiet) return;
    clear_bar(p);
    printf("epoch %d%s step %lld lr %.4g train_loss %.4f train_acc %.4f", e->epoch, e->complete ? "" : " (partial)",
           (long long)e->step, e->lr, e->train_loss, e->train_acc);
    if (e->has_val) printf(" val_loss %.4f val_top1 %.4f val_top5 %.4f", e->val_loss, e->val_top1, e->val_top5);
    printf(" %.0f img/s", e->images_per_s);
    if (e->comm_ms > 0) printf(" comm %.2f ms/step", e->comm_ms);
    printf(" %.1fs%s\n", e->seconds, e->best ? " *best" : "");
    p->last_line = mono();
    fflush(stdout);
}

static void on_note(void *ctx, const char *line) {
    printer *p = ctx;
    if (p->quiet) return;
    clear_bar(p);
    printf("bnlab train: %s\n", line);
    fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Options

static int parse_milestones(const char *v, bnl_train_config *c) {
    char *end;
    if (!strchr(v, ',')) {
        long n = strtol(v, &end, 10);
        if (end == v || *end || n < 1 || n > 1000000)
            return cli_error("--step-epochs: expected N (every N epochs) or A,B,... (at these epochs), got '%s'", v);
        c->step_every = (int)n, c->n_milestones = 0;
        return 0;
    }
    c->step_every = 0, c->n_milestones = 0;
    const char *s = v;
    while (*s) {
        long n = strtol(s, &end, 10);
        if (end == s || n < 1 || n > 1000000 || (*end && *end != ',') ||
            (c->n_milestones && n <= c->milestones[c->n_milestones - 1]) || c->n_milestones == BNL_MAX_MILESTONES)
            return cli_error("--step-epochs: expected increasing epochs A,B,... (at most %d), got '%s'",
                             BNL_MAX_MILESTONES, v);
        c->milestones[c->n_milestones++] = (int)n;
        s = *end ? end + 1 : end;
    }
    return 0;
}

static int parse_arch(const char *v, int *depth) {
    const char *d = !strncmp(v, "resnet", 6) ? v + 6 : v;
    static const int known[] = {18, 34, 50, 101, 152};
    char *end;
    long n = strtol(d, &end, 10);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (end != d && !*end && n == known[i]) {
            *depth = (int)n;
            return 0;
        }
    return cli_error("--arch: expected resnet18, resnet34, resnet50, resnet101 or resnet152, got '%s'", v);
}

static int parse_u64(const cli_opt *opts, int nopts, const char *name, uint64_t *out) {
    const char *v = cli_get(opts, nopts, name);
    if (!v) return 0;
    char *end;
    unsigned long long u = strtoull(v, &end, 10);
    if (end == v || *end || v[0] == '-') return cli_error("--%s: expected a non-negative integer, got '%s'", name, v);
    *out = u;
    return 0;
}

int cmd_train(int argc, char **argv) {
    cli_opt opts[] = {
        {"data", "SPEC", "procedural | cifar10:DIR (the binary version) | folder:DIR (DIR/train/<class>/*, DIR/val/<class>/*) "
                         "| fashion-mnist[:DIR] (default DIR " BNL_FASHION_MNIST_DIR ") | mnist:DIR (IDX files: "
                         "DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz])", "procedural", 0},
        {"classes", "K", "procedural: number of classes, 2..16 [default: 10]", NULL, 0},
        {"image-size", "S", "procedural: S x S images [default: 32]; folder: S x S crops [default: 224]; fashion-mnist/"
                            "mnist: the files' size (28), up to 4 more zero-padded (32), larger resized [default: 28]", NULL, 0},
        {"train-size", "N", "procedural: training images [default: 10000]; cifar10/folder: a fixed random subset", NULL, 0},
        {"val-size", "N", "procedural: validation images [default: 2000]; others: a subset; 0: no validation", NULL, 0},
        {"data-seed", "SEED", "procedural: seed of the images (validation: a derived seed); seed of subsets", "1", 0},
        {"arch", "NAME", "resnet18 | resnet34 | resnet50 | resnet101 | resnet152 [default: resnet18]", NULL, 0},
        {"width-mult", "W", "channel width multiplier (1 = torchvision, 0.25 = a quarter) [default: 1]", NULL, 0},
        {"init", "W.safetensors", "start from these weights (architecture from the file; another class count gets a new fc)",
         NULL, 0},
        {"norm", "KIND", "batch: BatchNorm; none: no normalization, every BatchNorm layer becomes a learnable per-channel "
                         "scale and shift (the BN-free baseline); group:G: GroupNorm with G groups; renorm: Batch "
                         "Renormalization (r_max 3, d_max 5); ghost:V: Ghost BatchNorm over virtual batches of V images; "
                         "frozen: BatchNorm with its running statistics fixed, in training too [default: batch]", NULL, 0},
        {"zero-init-residual", NULL, "start the last BatchNorm gamma (scale) of every block at 0 (torchvision's "
                                     "zero_init_residual; with --norm none: SkipInit)", NULL, 0},
        {"epochs", "E", "epochs", "10", 0},
        {"batch-size", "B", "images per step and rank (MPI: the global batch is B x ranks, like PyTorch DDP)", "128", 0},
        {"lr", "LR", "peak learning rate", "0.1", 0},
        {"sgd-momentum", "M", "SGD momentum (PyTorch semantics)", "0.9", 0},
        {"weight-decay", "WD", "L2 weight decay (5e-4 for CIFAR-style runs, 1e-4 for ImageNet)", "5e-4", 0},
        {"no-decay-bn-bias", NULL, "no weight decay on BatchNorm weights and biases and the fc bias", NULL, 0},
        {"schedule", "S", "cosine (to 0 after the warmup) or step", "cosine", 0},
        {"step-epochs", "N|A,B", "step schedule: multiply the lr by --step-gamma every N epochs, or at epochs A,B,...", "30", 0},
        {"step-gamma", "G", "step schedule: factor per step", "0.1", 0},
        {"warmup-epochs", "E", "linear warmup over E epochs (fractions allowed), computed per step", "0", 0},
        {"bn-momentum", "M", "BatchNorm momentum, Flax convention: running = M*running + (1-M)*batch", "0.9", 0},
        {"running-var", "RULE", "running variance rule: biased (blog, Flax) or unbiased (PyTorch)", "biased", 0},
        {"sync-bn", NULL, "MPI: BatchNorm statistics over the global batch (synchronized BatchNorm)", NULL, 0},
        {"nudge-input", NULL, "testing: every input value one ulp up, a float32 perturbation (how much does this run amplify rounding?)", NULL, 0},
        {"dump-batches", "DIR", "testing: write each step's batch to DIR/step-<step>.rank<r>.safetensors (input, labels)", NULL, 0},
        {"augment", NULL, "augment training images: random crop + flip (the default)", NULL, 0},
        {"no-augment", NULL, "no augmentation", NULL, 0},
        {"threads", "T", "threads per rank (0 = all cores, under MPI divided by the ranks on the node)", "0", 0},
        {"seed", "SEED", "seed of the initialization, the data order and the augmentation", "0", 0},
        {"out", "DIR", "output directory: last.safetensors, best.safetensors, model.safetensors, metrics.csv", NULL, 1},
        {"resume", NULL, "continue the run in --out from DIR/last.safetensors, exactly (same settings; --epochs may grow)",
         NULL, 0},
        {"eval-every", "N", "evaluate every N epochs and after the last (0: after the last only)", "1", 0},
        {"max-steps", "S", "stop after S steps in all (0: no limit); --resume continues from there", "0", 0},
        {"quiet", NULL, "print nothing but errors", NULL, 0},
    };
    int nopts = sizeof opts / sizeof opts[0];
    // under mpirun every rank parses the same options: only rank 0 may print while doing so
    int env_rank = bnl_dist_env_rank(), saved_out = -1, saved_err = -1;
    if (env_rank > 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            fflush(stdout), fflush(stderr);
            saved_out = dup(1), saved_err = dup(2);
            dup2(devnull, 1), dup2(devnull, 2);
            close(devnull);
        }
    }
    bnl_train_config cfg = bnl_train_config_default();
    int rc = cli_parse(argc, argv, "bnlab train --out DIR [options]",
                       "Trains a ResNet with SGD (momentum, weight decay, cosine or step schedule with warmup) in train\n"
                       "mode BatchNorm, evaluates top-1/top-5 in eval mode after each epoch, and writes to DIR:\n"
                       "  last.safetensors   every epoch: model + SGD momentum + train.* metadata (for --resume)\n"
                       "  best.safetensors   the model with the best validation top-1\n"
                       "  model.safetensors  the final model, class names in __metadata__ \"labels\"\n"
                       "  metrics.csv        epoch,step,lr,train_loss,train_acc,val_loss,val_top1,val_top5,images_per_s,seconds,comm_ms\n"
                       "Each file is written atomically. A non-finite loss stops the run (exit 1) before any update.\n"
                       "The last partial batch of an epoch is dropped. Same seed and thread count: same result.\n"
                       "Data parallel: mpirun -np K bnlab train ... (each rank takes its slice of every global batch;\n"
                       "gradients are averaged over ranks; rank 0 writes the files).",
                       opts, nopts, NULL, 0, NULL);
    int bad = rc != 0;
    const char *data = cli_get(opts, nopts, "data");
    long l;
    double d;
    if (!bad) {
        bnl_data_spec ds;
        if (bnl_data_spec_parse(&ds, data) != BNL_OK) {
            bad = cli_error("%s", bnl_last_error());
        } else if (ds.kind != BNL_DATA_PROCEDURAL && cli_get(opts, nopts, "classes")) {
            bad = cli_error("--classes applies to --data procedural only (the classes come from the data)");
        } else if (ds.kind == BNL_DATA_CIFAR10 && cli_get(opts, nopts, "image-size")) {
            bad = cli_error("--image-size does not apply to CIFAR-10 (32x32 images)");
        }
        cfg.data = data;
    }
    if (!bad && cli_get(opts, nopts, "classes")) {
        bad = cli_get_long(opts, nopts, "classes", 2, 16, &l) != 0;
        cfg.classes = (int)l;
    }
    if (!bad && cli_get(opts, nopts, "image-size")) {
        bad = cli_get_long(opts, nopts, "image-size", 8, 4096, &l) != 0;
        cfg.image_size = (int)l;
    }
    if (!bad && cli_get(opts, nopts, "train-size")) {
        bad = cli_get_long(opts, nopts, "train-size", 1, 100000000, &l) != 0;
        cfg.train_size = (size_t)l;
    }
    if (!bad && cli_get(opts, nopts, "val-size")) {
        bad = cli_get_long(opts, nopts, "val-size", 0, 100000000, &l) != 0;
        cfg.val_size = (size_t)l;
        cfg.no_val = l == 0;
    }
    if (!bad) bad = parse_u64(opts, nopts, "data-seed", &cfg.data_seed) || parse_u64(opts, nopts, "seed", &cfg.seed);
    cfg.init = cli_get(opts, nopts, "init");
    if (!bad && cfg.init && (cli_get(opts, nopts, "arch") || cli_get(opts, nopts, "width-mult")))
        bad = cli_error("--init takes the architecture from the file: drop --arch and --width-mult");
    if (!bad && cfg.init && (cli_get(opts, nopts, "norm") || cli_get(opts, nopts, "zero-init-residual")))
        bad = cli_error("--init: the file decides the normalization and holds its weights: drop --norm and --zero-init-residual");
    if (!bad && cli_get(opts, nopts, "norm")) {
        const char *nm = cli_get(opts, nopts, "norm");
        if (bnl_norm_parse(&cfg.norm, nm) != BNL_OK) bad = cli_error("--norm: %s", bnl_last_error());
    }
    cfg.zero_init_residual = cli_get(opts, nopts, "zero-init-residual") != NULL;
    if (!bad && cli_get(opts, nopts, "arch")) bad = parse_arch(cli_get(opts, nopts, "arch"), &cfg.depth) != 0;
    if (!bad && cli_get(opts, nopts, "width-mult")) {
        bad = cli_get_double(opts, nopts, "width-mult", 1e-3, 16, &d) != 0;
        cfg.width_mult = (float)d;
    }
    if (!bad) {
        bad = cli_get_long(opts, nopts, "epochs", 1, 1000000, &l) != 0;
        cfg.epochs = (int)l;
    }
    if (!bad) {
        bad = cli_get_long(opts, nopts, "batch-size", 1, 65536, &l) != 0;
        cfg.batch_size = (int)l;
    }
    if (!bad) bad = cli_get_double(opts, nopts, "lr", 0, 1e9, &cfg.lr) != 0;
    if (!bad) bad = cli_get_double(opts, nopts, "sgd-momentum", 0, 1, &cfg.sgd_momentum) != 0;
    if (!bad) bad = cli_get_double(opts, nopts, "weight-decay", 0, 1e3, &cfg.weight_decay) != 0;
    cfg.no_decay_bn_bias = cli_get(opts, nopts, "no-decay-bn-bias") != NULL;
    if (!bad) {
        const char *sc = cli_get(opts, nopts, "schedule");
        if (!strcmp(sc, "cosine")) cfg.schedule = BNL_SCHED_COSINE;
        else if (!strcmp(sc, "step")) cfg.schedule = BNL_SCHED_STEP;
        else bad = cli_error("--schedule: expected 'cosine' or 'step', got '%s'", sc);
    }
    if (!bad) bad = parse_milestones(cli_get(opts, nopts, "step-epochs"), &cfg) != 0;
    if (!bad) bad = cli_get_double(opts, nopts, "step-gamma", 0, 1e12, &cfg.step_gamma) != 0;
    if (!bad) bad = cli_get_double(opts, nopts, "warmup-epochs", 0, 1e6, &cfg.warmup_epochs) != 0;
    if (!bad) {
        bad = cli_get_double(opts, nopts, "bn-momentum", 0, 1, &d) != 0;
        cfg.bn_momentum = (float)d;
    }
    if (!bad) {
        const char *rv = cli_get(opts, nopts, "running-var");
        if (!strcmp(rv, "biased")) cfg.unbiased = 0;
        else if (!strcmp(rv, "unbiased")) cfg.unbiased = 1;
        else bad = cli_error("--running-var: expected 'biased' or 'unbiased', got '%s'", rv);
    }
    cfg.sync_bn = cli_get(opts, nopts, "sync-bn") != NULL;
    cfg.nudge_input = cli_get(opts, nopts, "nudge-input") != NULL;
    cfg.dump_batches = cli_get(opts, nopts, "dump-batches");
    if (!bad && cfg.sync_bn && cfg.norm.kind != BNL_NORM_BATCH)
        bad = cli_error("--sync-bn has nothing to synchronize with --norm %s (it synchronizes BatchNorm's batch statistics only)",
                        cli_get(opts, nopts, "norm"));
    if (!bad && cli_get(opts, nopts, "augment") && cli_get(opts, nopts, "no-augment"))
        bad = cli_error("--augment and --no-augment contradict each other");
    cfg.augment = cli_get(opts, nopts, "no-augment") == NULL;
    long threads = 0;
    if (!bad) bad = cli_get_long(opts, nopts, "threads", 0, 4096, &threads) != 0;
    cfg.out_dir = cli_get(opts, nopts, "out");
    if (!bad && cfg.out_dir && !*cfg.out_dir) bad = cli_error("--out: empty directory name");
    cfg.resume = cli_get(opts, nopts, "resume") != NULL;
    if (!bad) {
        bad = cli_get_long(opts, nopts, "eval-every", 0, 1000000, &l) != 0;
        cfg.eval_every = (int)l;
    }
    if (!bad) {
        bad = cli_get_long(opts, nopts, "max-steps", 0, 2000000000L, &l) != 0;
        cfg.max_steps = l;
    }
    if (!bad && cfg.sync_bn && !bnl_dist_available())
        bad = cli_error("--sync-bn needs MPI, and this bnlab was built without it (install libopenmpi-dev and rebuild)");
    if (saved_out >= 0) {
        fflush(stdout), fflush(stderr);
        dup2(saved_out, 1), dup2(saved_err, 2);
        close(saved_out), close(saved_err);
    }
    if (rc > 0) return 0;   // --help
    if (bad) return 2;

    bnl_dist *dist;
    if (bnl_dist_init(&dist, &argc, &argv) != BNL_OK) return env_rank > 0 ? 1 : cli_error("%s", bnl_last_error());
    int rank = bnl_dist_rank(dist), K = bnl_dist_size(dist);
    if (threads == 0 && bnl_dist_local_size(dist) > 1) {
        // ranks on one node share its cores
        bnl_set_threads(0);
        int all = bnl_get_threads(), per = all / bnl_dist_local_size(dist);
        bnl_set_threads(per > 0 ? per : 1);
    } else {
        bnl_set_threads((int)threads);
    }
    if (K > 1) {
        g_term.rank = rank, g_term.K = K, g_term.out = cfg.out_dir;
        term_prepare(-1);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigterm;
        sigaction(SIGTERM, &sa, NULL);
    }
    printer pr = {isatty(fileno(stderr)), cli_get(opts, nopts, "quiet") != NULL, 0, 0, 0};
    bnl_train_hooks hooks = {&pr, on_start, on_step, on_epoch, on_note};
    if (rank == 0 && cfg.sync_bn && K == 1) on_note(&pr, "--sync-bn with one process: the local batch is the global one");
    bnl_train_result res;
    bnl_status s = bnl_train_run(&cfg, dist, rank == 0 ? &hooks : NULL, &res);
    g_term.len = 0;   // the ranks have agreed on how the run ended: a SIGTERM from here on says nothing new
    rc = 0;
    if (s != BNL_OK) {
        clear_bar(&pr);
        if (res.report_error) {
            if (rank > 0) cli_error("rank %d: %s", rank, bnl_last_error());
            else cli_error("%s", bnl_last_error());
        }
        rc = 1;
        if (res.abort_ranks) {   // the other ranks wait in a collective this one cannot join
            g_term.len = 0;      // this rank has said why: no second line when the launcher ends it
            fflush(stderr);
            bnl_dist_abort(dist, 1);
        }
    } else if (rank == 0 && !pr.quiet) {
        if (res.best_epoch > 0)
            printf("bnlab train: done, %lld steps; best val_top1 %.4f at epoch %d; wrote %s/model.safetensors\n",
                   (long long)res.steps_done, res.best_val_top1, res.best_epoch, cfg.out_dir);
        else
            printf("bnlab train: done, %lld steps; wrote %s/model.safetensors\n", (long long)res.steps_done, cfg.out_dir);
    }
    bnl_dist_finalize(dist);
    return rc;
}
