// Ranks for data-parallel training: MPI when this build has it and the process was started by an
// MPI launcher, else a single rank whose collectives are no-ops. MPI_Init is called only under a
// launcher, so a plain run needs no MPI runtime at all.
#include "train/train.h"

#include "core/common.h"

#include <stdlib.h>
#include <string.h>

#ifdef BNL_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#include <time.h>
#endif

#define MAX_BUCKETS 64

struct bnl_dist {
    int rank, size, local_size;
    int mpi;            // MPI_Init was called here
    double comm_s;      // seconds spent waiting in collectives (since init)
    int sleep_wait;     // waits sleep between tests after a 20 us spin (else they spin)
    double timeout_s;   // a wait in a step's collective longer than this ends the run (0: never)
    // an attached model: its gradients are summed in buckets of fixed ranges, bucket b is
    // params [lo[b], hi[b]), b = 0 the last parameters (the first the backward finishes)
    bnl_resnet *m;
    float *grads;
    size_t np;
    int nbuckets, started;   // buckets started in this step
    int early;               // of those, started before the backward's last call (overlapped)
    size_t lo[MAX_BUCKETS], hi[MAX_BUCKETS];
#ifdef BNL_HAVE_MPI
    MPI_Comm comm;
    MPI_Request req[MAX_BUCKETS];
#endif
};

static const char *env_any(const char *const *names) {
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (v && *v) return v;
    }
    return NULL;
}

static const char *const k_size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", NULL};
static const char *const k_rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", NULL};

int bnl_dist_launched(void) { return env_any(k_size_vars) != NULL || env_any(k_rank_vars) != NULL; }

int bnl_dist_env_rank(void) {
    const char *v = env_any(k_rank_vars);
    return v ? atoi(v) : 0;
}

#ifndef BNL_HAVE_MPI
static int env_size(void) {
    const char *v = env_any(k_size_vars);
    return v ? atoi(v) : 1;
}
#endif

int bnl_dist_available(void) {
#ifdef BNL_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

bnl_status bnl_dist_init(bnl_dist **out, int *argc, char ***argv) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "dist init: NULL argument");
    *out = NULL;
    bnl_dist *d = calloc(1, sizeof *d);
    if (!d) return bnl_fail(BNL_ERR_NOMEM, "out of memory");
    d->rank = 0, d->size = 1, d->local_size = 1;
    // BNLAB_MPI_SPIN=1: spin while waiting (ranks with cores of their own: a few microseconds less
    // per collective); by default a wait sleeps after 20 us, which on shared cores was 1.2x against 1.5x
    d->sleep_wait = !(getenv("BNLAB_MPI_SPIN") && atoi(getenv("BNLAB_MPI_SPIN")) == 1);
    // BNLAB_MPI_TIMEOUT=S: a rank that waits S seconds in one collective of a step (another rank
    // stopped, or a network cut that TCP does not report) ends the run instead of hanging
    const char *to = getenv("BNLAB_MPI_TIMEOUT");
    d->timeout_s = to && *to ? atof(to) : 600.0;
    if (!(d->timeout_s >= 0)) d->timeout_s = 600.0;
    if (bnl_dist_launched()) {
#ifdef BNL_HAVE_MPI
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            if (MPI_Init(argc, argv) != MPI_SUCCESS) {
                free(d);
                return bnl_fail(BNL_ERR_UNSUPPORTED, "MPI_Init failed");
            }
            d->mpi = 1;
        }
        d->comm = MPI_COMM_WORLD;
        MPI_Comm_rank(d->comm, &d->rank);
        MPI_Comm_size(d->comm, &d->size);
        MPI_Comm node;
        if (MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
            MPI_Comm_size(node, &d->local_size);
            MPI_Comm_free(&node);
        }
#else
        (void)argc, (void)argv;
        if (env_size() > 1) {
            free(d);
            return bnl_fail(BNL_ERR_UNSUPPORTED,
                            "launched as %d MPI processes, but this bnlab was built without MPI (install an MPI "
                            "implementation, e.g. libopenmpi-dev, and rebuild)",
                            env_size());
        }
#endif
    }
    *out = d;
    return BNL_OK;
}

void bnl_dist_finalize(bnl_dist *d) {
    if (!d) return;
#ifdef BNL_HAVE_MPI
    if (d->mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
#endif
    free(d);
}

int bnl_dist_rank(const bnl_dist *d) { return d ? d->rank : 0; }
int bnl_dist_size(const bnl_dist *d) { return d ? d->size : 1; }
int bnl_dist_local_size(const bnl_dist *d) { return d ? d->local_size : 1; }

#ifdef BNL_HAVE_MPI
// MPI counts are ints: large buffers go in chunks.
#define CHUNK ((size_t)1 << 28)
static bnl_status mpi_sum(bnl_dist *d, void *buf, size_t n, MPI_Datatype t, size_t elem) {
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * elem, (int)k, t, MPI_SUM, d->comm) != MPI_SUCCESS)
            return bnl_fail(BNL_ERR_IO, "MPI_Allreduce failed");
    }
    return BNL_OK;
}
#endif

bnl_status bnl_dist_sum_f32(bnl_dist *d, float *buf, size_t n) {
    if (!d || d->size == 1) return BNL_OK;
#ifdef BNL_HAVE_MPI
    return mpi_sum(d, buf, n, MPI_FLOAT, sizeof(float));
#else
    return BNL_OK;
#endif
}

bnl_status bnl_dist_sum_f64(bnl_dist *d, double *buf, size_t n) {
    if (!d || d->size == 1) return BNL_OK;
#ifdef BNL_HAVE_MPI
    return mpi_sum(d, buf, n, MPI_DOUBLE, sizeof(double));
#else
    return BNL_OK;
#endif
}

bnl_status bnl_dist_bcast_f32(bnl_dist *d, float *buf, size_t n, int root) {
    if (!d || d->size == 1) return BNL_OK;
#ifdef BNL_HAVE_MPI
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        if (MPI_Bcast(buf + off, (int)k, MPI_FLOAT, root, d->comm) != MPI_SUCCESS)
            return bnl_fail(BNL_ERR_IO, "MPI_Bcast failed");
    }
#endif
    return BNL_OK;
}

int bnl_dist_first_failure(bnl_dist *d, int ok) {
    if (!d || d->size == 1) return ok ? -1 : 0;
#ifdef BNL_HAVE_MPI
    int mine = ok ? INT_MAX : d->rank, first = INT_MAX;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm);
    return first == INT_MAX ? -1 : first;
#else
    return ok ? -1 : 0;
#endif
}

int bnl_dist_same_u64(bnl_dist *d, uint64_t v) {
    if (!d || d->size == 1) return 1;
#ifdef BNL_HAVE_MPI
    uint64_t lo = v, hi = v;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, d->comm);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, d->comm);
    return lo == hi;
#else
    return 1;
#endif
}

#ifdef BNL_HAVE_MPI
// Waits for a request: spins for a few microseconds (the usual case on an idle machine: the other
// ranks arrive together), then sleeps between tests so that a rank sharing its core with others
// (test hosts on one machine, a busy node) gives the core away instead of spinning on it.
// A wait past the timeout fails with the error set (what: the collective).
static int wait_reqs(bnl_dist *d, int n, MPI_Request *rq, const char *what) {
    int done = 0, rc = MPI_SUCCESS;
    double t0 = MPI_Wtime(), last = t0, waited = 0;
    while (!done && rc == MPI_SUCCESS) {
        rc = MPI_Testall(n, rq, &done, MPI_STATUSES_IGNORE);
        if (done || rc != MPI_SUCCESS) break;
        // time spent waiting while running: a gap of over 0.1 s between two tests means this rank
        // itself was stopped or not scheduled, which is no reason to blame the others
        double now = MPI_Wtime(), gap = now - last;
        waited += gap < 0.1 ? gap : 0.0;
        last = now;
        if (d->timeout_s > 0 && waited > d->timeout_s) {
            bnl_fail(BNL_ERR_IO, "no answer from the other ranks for %.0f s in %s (a rank stopped or the network is "
                     "cut; BNLAB_MPI_TIMEOUT sets this limit)", waited, what);
            return MPI_ERR_OTHER;
        }
        if (d->sleep_wait && now - t0 > 20e-6) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    return rc;
}
static int wait_one(bnl_dist *d, MPI_Request *rq, const char *what) { return wait_reqs(d, 1, rq, what); }

// Synchronized BatchNorm's collective: one MPI_Allgather per layer and direction.
static bnl_status sync_gather(void *ctx, const double *mine, double *all, size_t n) {
    bnl_dist *d = ctx;
    double t0 = MPI_Wtime();
    MPI_Request rq;
    int rc = MPI_Iallgather(mine, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, d->comm, &rq);
    if (rc != MPI_SUCCESS) return bnl_fail(BNL_ERR_IO, "MPI_Iallgather failed");
    rc = wait_one(d, &rq, "a BatchNorm all-gather");
    d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? BNL_OK : BNL_ERR_IO;
}

// The backward finished the gradients of params [lo, np): start the sums of the buckets that lie
// in there (in bucket order, the same on every rank), and let MPI progress the earlier ones.
static void grad_ready(void *ctx, size_t lo) {
    bnl_dist *d = ctx;
    double t0 = MPI_Wtime();
    while (d->started < d->nbuckets && d->lo[d->started] >= lo) {
        int b = d->started++;
        d->early += lo > 0;
        MPI_Iallreduce(MPI_IN_PLACE, d->grads + d->lo[b], (int)(d->hi[b] - d->lo[b]), MPI_FLOAT, MPI_SUM, d->comm,
                       &d->req[b]);
    }
    int done;
    MPI_Testall(d->started, d->req, &done, MPI_STATUSES_IGNORE);
    d->comm_s += MPI_Wtime() - t0;
}
#endif

bnl_status bnl_dist_attach(bnl_dist *d, bnl_resnet *m, int sync_bn) {
    if (!d || d->size == 1 || !m) return BNL_OK;   // one rank: local statistics are the global ones
#ifdef BNL_HAVE_MPI
    d->m = m;
    d->grads = bnl_resnet_grads(m, &d->np);   // allocated on first use: NULL only if that failed
    if (!d->grads) return bnl_fail(BNL_ERR_NOMEM, "data parallel: out of memory for the gradients");
    // buckets of about np/8 values (64K..4M floats), fixed ranges counted from the end: the same on
    // every rank and every step, so the sums are deterministic
    size_t b = d->np / 8;
    b = b < ((size_t)1 << 16) ? ((size_t)1 << 16) : b > ((size_t)1 << 22) ? ((size_t)1 << 22) : b;
    d->nbuckets = 0;
    for (size_t hi = d->np; hi > 0 && d->nbuckets < MAX_BUCKETS;) {
        size_t lo = hi > b ? hi - b : 0;
        if (d->nbuckets == MAX_BUCKETS - 1) lo = 0;
        d->lo[d->nbuckets] = lo, d->hi[d->nbuckets] = hi, d->nbuckets++;
        hi = lo;
    }
    for (int i = 0; i < MAX_BUCKETS; i++) d->req[i] = MPI_REQUEST_NULL;
    d->started = d->nbuckets;   // nothing in flight before the first step
    if (sync_bn) {
        bnl_status s = bnl_resnet_set_sync_bn(m, sync_gather, d, d->size);
        if (s != BNL_OK) return s;
    }
    bnl_resnet_set_grad_hook(m, grad_ready, d);
#else
    (void)sync_bn;
#endif
    return BNL_OK;
}

void bnl_dist_step_begin(bnl_dist *d) {
    if (d && d->m) d->started = 0, d->early = 0;
}

int bnl_dist_step_end(bnl_dist *d, int ok, double sums[2]) {
    if (!d || d->size == 1) return ok ? -1 : 0;
#ifdef BNL_HAVE_MPI
    if (d->m && d->started < d->nbuckets) {
        // the backward did not finish here: the other ranks wait in a collective this rank cannot
        // tell (a failure in the middle of the step); only an abort ends them
        return BNL_DIST_STUCK;
    }
    double t0 = MPI_Wtime();
    if (d->m && wait_reqs(d, d->nbuckets, d->req, "the gradient sums") != MPI_SUCCESS) return BNL_DIST_STUCK;
    // one collective for the step's outcome and its sums: (ok, sums) of every rank, in rank order
    double mine[3] = {ok ? 1.0 : 0.0, sums ? sums[0] : 0.0, sums ? sums[1] : 0.0};
    double stack[3 * 16], *all = d->size <= 16 ? stack : malloc(3 * (size_t)d->size * sizeof(double));
    if (!all) return bnl_fail(BNL_ERR_NOMEM, "out of memory"), BNL_DIST_STUCK;
    MPI_Request rq;
    int rc = MPI_Iallgather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, d->comm, &rq);
    if (rc == MPI_SUCCESS) rc = wait_one(d, &rq, "the end of a step");
    else bnl_fail(BNL_ERR_IO, "MPI_Iallgather failed");
    d->comm_s += MPI_Wtime() - t0;
    int first = -1;
    double s0 = 0, s1 = 0;
    for (int r = 0; r < d->size; r++) {
        if (all[3 * r] == 0.0 && first < 0) first = r;
        s0 += all[3 * r + 1], s1 += all[3 * r + 2];
    }
    if (all != stack) free(all);
    if (rc != MPI_SUCCESS) return BNL_DIST_STUCK;
    if (sums) sums[0] = s0, sums[1] = s1;
    return first;
#else
    (void)sums;
    return ok ? -1 : 0;
#endif
}

double bnl_dist_comm_seconds(const bnl_dist *d) { return d ? d->comm_s : 0.0; }

int bnl_dist_buckets(const bnl_dist *d, int *early) {
    if (early) *early = d ? d->early : 0;
    return d ? d->nbuckets : 0;
}

void bnl_dist_abort(bnl_dist *d, int code) {
#ifdef BNL_HAVE_MPI
    if (d && d->size > 1) MPI_Abort(d->comm, code);
#else
    (void)d, (void)code;
#endif
}
