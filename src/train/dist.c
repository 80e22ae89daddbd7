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
#endif

struct bnl_dist {
    int rank, size, local_size;
    int mpi;          // MPI_Init was called here
    int sync;         // a model's BatchNorm reduces through this
    int aborted;      // this step: a BatchNorm reduction learned that another rank failed
#ifdef BNL_HAVE_MPI
    MPI_Comm comm;
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
static int flag_max(bnl_dist *d, int flag) {
    int res = 0;
    MPI_Allreduce(&flag, &res, 1, MPI_INT, MPI_MAX, d->comm);
    return res;
}

static bnl_status sync_allreduce(void *ctx, double *buf, size_t n) {
    bnl_dist *d = ctx;
    // a rank whose step failed joins here with flag 1 instead of this reduction: stop cleanly
    if (flag_max(d, 0)) {
        d->aborted = 1;
        return bnl_fail(BNL_ERR_NUMERIC, "another rank failed during this step");
    }
    return mpi_sum(d, buf, n, MPI_DOUBLE, sizeof(double));
}
#endif

bnl_status bnl_dist_sync_bn(bnl_dist *d, bnl_resnet *m) {
    if (!d || d->size == 1 || !m) return BNL_OK;   // one rank: local statistics are the global ones
#ifdef BNL_HAVE_MPI
    bnl_status s = bnl_resnet_set_sync_bn(m, sync_allreduce, d);
    if (s != BNL_OK) return s;
    d->sync = 1;
#endif
    return BNL_OK;
}

void bnl_dist_step_begin(bnl_dist *d) {
    if (d) d->aborted = 0;
}

int bnl_dist_step_end(bnl_dist *d, int ok) {
    if (!d || d->size == 1) return ok ? -1 : 0;
    int origin_ok = ok || d->aborted;
#ifdef BNL_HAVE_MPI
    if (d->sync && !d->aborted) {
        // Every rank makes exactly one flag reduction per step that it did not see inside a
        // BatchNorm reduction: 1 from a rank that failed by itself (it releases the others), 0
        // from a rank that finished (it matches a rank that failed after the last BatchNorm).
        flag_max(d, ok ? 0 : 1);
    }
#endif
    return bnl_dist_first_failure(d, origin_ok);
}
