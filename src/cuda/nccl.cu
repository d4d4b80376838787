/* Data-parallel training over NCCL: see cuda_dist.h.
 *
 * NCCL is not linked: it is loaded with dlopen, so a CUDA build runs where NCCL is missing
 * (only --gpus N > 1 needs it) and finds it where it is only a Python wheel (the GPU machines
 * have it inside nvidia-nccl-cu13 alone). nccl.h gives the types and the prototypes whose
 * types the function pointers take (decltype), when the build found it (MG_HAVE_NCCL). */
#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_common.h"
#include "cuda/cuda_dist.h"

extern "C" {
#include "core/timing.h"
}

#ifndef MG_HAVE_NCCL

static mg_status no_nccl(void) {
    return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: this build has no NCCL (nccl.h was not found when it was built; "
                   "install NCCL's headers, e.g. libnccl-dev, and rebuild)");
}
extern "C" mg_status cuda_dist_probe(char *what, size_t n) { return no_nccl(); }
extern "C" mg_status cuda_dist_new(cuda_dist **out, const dist_rank *dr) { *out = NULL; return no_nccl(); }
extern "C" void cuda_dist_free(cuda_dist *d) {}
extern "C" void cuda_dist_abort(cuda_dist *d) {}
extern "C" mg_status cuda_dist_attach(cuda_dist *d, cuda_params *cp, int first, int last) { return no_nccl(); }
extern "C" mg_status cuda_dist_grads_begin(cuda_dist *d) { return no_nccl(); }
extern "C" mg_status cuda_dist_grads_finish(cuda_dist *d) { return no_nccl(); }
extern "C" mg_status cuda_dist_sum(cuda_dist *d, double *v, int n) { return no_nccl(); }
extern "C" void cuda_dist_stats(const cuda_dist *d, long *buckets, double *bytes) { *buckets = 0, *bytes = 0; }

#else
#include <nccl.h>

/* ---- the library ------------------------------------------------------------------------ */

static struct {
    void *h;
    char path[4096];
    int version;
    decltype(&ncclGetVersion) GetVersion;
    decltype(&ncclGetUniqueId) GetUniqueId;
    decltype(&ncclCommInitRankConfig) CommInitRankConfig;
    decltype(&ncclCommGetAsyncError) CommGetAsyncError;
    decltype(&ncclCommAbort) CommAbort;
    decltype(&ncclCommFinalize) CommFinalize;
    decltype(&ncclCommDestroy) CommDestroy;
    decltype(&ncclAllReduce) AllReduce;
    decltype(&ncclGetErrorString) GetErrorString;
    decltype(&ncclGetLastError) GetLastError;
} nc;

static void *try_open(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h) snprintf(nc.path, sizeof nc.path, "%s", path);
    return h;
}

/* pip's wheel: <prefix>/lib/python3.X/{site,dist}-packages/nvidia/nccl/lib/libnccl.so.2 for
 * the python3 on PATH (a virtual environment's prefix is the folder above its bin/), then the
 * system's prefixes */
static void *try_pip(char *looked, size_t n) {
    char prefixes[8][4096];
    int np = 0;
    const char *path = getenv("PATH");
    if (path) {
        char *copy = strdup(path), *save = NULL;
        for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir && np < 4; dir = strtok_r(NULL, ":", &save)) {
            char py[4200];
            snprintf(py, sizeof py, "%s/python3", dir);
            if (access(py, X_OK) != 0) continue;
            snprintf(prefixes[np++], sizeof prefixes[0], "%.4000s/..", dir);
            char real[4096];
            if (realpath(py, real)) { /* a symlinked python3: its own prefix too */
                char *sl = strrchr(real, '/');
                if (sl) {
                    *sl = 0;
                    snprintf(prefixes[np++], sizeof prefixes[0], "%.4000s/..", real);
                }
            }
            break;
        }
        free(copy);
    }
    const char *sys[] = {"/usr/local", "/usr", "/opt/conda"};
    for (int i = 0; i < 3 && np < 8; i++) snprintf(prefixes[np++], sizeof prefixes[0], "%s", sys[i]);
    for (int i = 0; i < np; i++) {
        const char *sub[] = {"site-packages", "dist-packages"};
        for (int j = 0; j < 2; j++) {
            char pat[4300];
            snprintf(pat, sizeof pat, "%.4000s/lib/python3*/%s/nvidia/nccl/lib/libnccl.so.2", prefixes[i], sub[j]);
            if (i == 0 && j == 0) snprintf(looked, n, "%s", pat);
            glob_t g;
            if (glob(pat, 0, NULL, &g) == 0) {
                void *h = NULL;
                for (size_t k = 0; k < g.gl_pathc && !h; k++) h = try_open(g.gl_pathv[k]);
                globfree(&g);
                if (h) return h;
            } else {
                globfree(&g);
            }
        }
    }
    return NULL;
}

static mg_status nccl_load(void) {
    if (nc.h) return MG_OK;
    const char *env = getenv("MIRAGE_NCCL");
    void *h = NULL;
    char looked[4400] = "";
    if (env && *env) {
        h = try_open(env);
        if (!h)
            return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: cannot load NCCL from MIRAGE_NCCL=%s: %s", env, dlerror());
    } else {
        h = try_open("libnccl.so.2");
        if (!h) h = try_pip(looked, sizeof looked);
        if (!h)
            return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: NCCL (libnccl.so.2) not found on the library path nor in pip's "
                           "nvidia-nccl package (%s); set MIRAGE_NCCL=/path/to/libnccl.so.2 (with pip: python3 -c "
                           "\"import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))\" prints the folder "
                           "above lib/)", looked[0] ? looked : "no python3 on PATH");
    }
#define SYM(name)                                                                                              \
    if (!(*(void **)&nc.name = dlsym(h, "nccl" #name))) {                                                      \
        dlclose(h);                                                                                            \
        return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: %s has no nccl" #name " (NCCL too old? 2.14 or newer)", nc.path); \
    }
    SYM(GetVersion) SYM(GetUniqueId) SYM(CommInitRankConfig) SYM(CommGetAsyncError) SYM(CommAbort)
    SYM(CommFinalize) SYM(CommDestroy) SYM(AllReduce) SYM(GetErrorString) SYM(GetLastError)
#undef SYM
    if (nc.GetVersion(&nc.version) != ncclSuccess) nc.version = 0;
    nc.h = h;
    return MG_OK;
}

extern "C" mg_status cuda_dist_probe(char *what, size_t n) {
    MG_TRY(nccl_load());
    if (what) snprintf(what, n, "%s (NCCL %d.%d.%d)", nc.path, nc.version / 10000, nc.version / 100 % 100, nc.version % 100);
    return MG_OK;
}

/* ---- the communicator ------------------------------------------------------------------- */

struct cuda_dist {
    dist_rank dr;
    ncclComm_t comm;
    int dead;                 /* aborted: every later call fails */
    cudaStream_t cs;          /* the collectives' stream */
    cudaEvent_t ready, done;
    cuda_params *cp;
    int first, last;
    size_t lo, pending;       /* float offsets: [lo, pending) is not reduced yet in this step */
    size_t bucket_floats;
    double *d_sum, *h_sum;    /* (16) for cuda_dist_sum: device, pinned */
    long buckets;
    double bytes;
};

static mg_status dist_failed(cuda_dist *d, mg_status s) {
    if (d->comm && !d->dead) nc.CommAbort(d->comm); /* wakes the NCCL kernels: the streams drain */
    d->dead = 1;
    d->comm = NULL;
    return s;
}

static mg_status nccl_fail(cuda_dist *d, const char *what, ncclResult_t r) {
    const char *last = d->comm ? nc.GetLastError(d->comm) : NULL;
    return dist_failed(d, mg_fail(MG_ERR_IO, "rank %d: NCCL %s: %s%s%s", d->dr.rank, what, nc.GetErrorString(r),
                                  last && *last ? ": " : "", last && *last ? last : ""));
}

/* One turn of a wait loop that started at t0, after its own checks: stops when another rank
 * failed or the watchdog's time is up (`late` says how: "no progress in", "not done after"),
 * else spins the first millisecond (a bucket often completes in microseconds), then sleeps. */
static mg_status watchdog(cuda_dist *d, const char *what, double t0, const char *late) {
    double w = mg_now_ms() - t0;
    if (dist_abort_requested())
        return dist_failed(d, mg_fail(MG_ERR_IO, "rank %d: %s: stopped, another rank failed", d->dr.rank, what));
    if (w > d->dr.timeout_s * 1000.0)
        return dist_failed(d, mg_fail(MG_ERR_IO, "rank %d: %s: %s %.0f s: a rank has died or hangs "
                                      "(MIRAGE_DIST_TIMEOUT sets the limit)", d->dr.rank, what, late, d->dr.timeout_s));
    if (w >= 1.0) {
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
    }
    return MG_OK;
}

/* Polls until the communicator leaves ncclInProgress (non-blocking calls), or gives up. */
static mg_status wait_state(cuda_dist *d, const char *what) {
    double t0 = mg_now_ms();
    for (;;) {
        ncclResult_t st;
        ncclResult_t r = nc.CommGetAsyncError(d->comm, &st);
        if (r != ncclSuccess) return nccl_fail(d, what, r);
        if (st == ncclSuccess) return MG_OK;
        if (st != ncclInProgress) return nccl_fail(d, what, st);
        MG_TRY(watchdog(d, what, t0, "no progress in"));
    }
}

/* Polls an event recorded after collectives: the watchdog instead of cudaEventSynchronize. */
static mg_status wait_event(cuda_dist *d, cudaEvent_t ev, const char *what) {
    double t0 = mg_now_ms();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return MG_OK;
        if (e != cudaErrorNotReady) return dist_failed(d, cu_fail(__FILE__, __LINE__, what, cudaGetErrorString(e)));
        ncclResult_t st;
        if (nc.CommGetAsyncError(d->comm, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress)
            return nccl_fail(d, what, st);
        MG_TRY(watchdog(d, what, t0, "not done after"));
    }
}

static mg_status check_live(cuda_dist *d, const char *fn) {
    if (!d) return mg_fail(MG_ERR_ARG, "%s: no communicator", fn);
    if (d->dead || !d->comm) return mg_fail(MG_ERR_IO, "rank %d: %s: the communicator was aborted after an error", d->dr.rank, fn);
    return MG_OK;
}

extern "C" mg_status cuda_dist_new(cuda_dist **out, const dist_rank *dr) {
    *out = NULL;
    MG_TRY(nccl_load());
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* see cuda_dist.h; the user's value wins */
    cuda_dist *d = (cuda_dist *)calloc(1, sizeof *d);
    if (!d) return mg_fail(MG_ERR_NOMEM, "out of memory");
    d->dr = *dr;
    mg_status s = MG_OK;
    ncclUniqueId id;
    ncclResult_t r;
    int prio_lo = 0, prio_hi = 0;
    const char *mb = getenv("MIRAGE_DIST_BUCKET_MB");
    double bmb = mb && *mb ? atof(mb) : 4.0;
    if (!(bmb > 0) || bmb > 65536) bmb = 4.0;
    d->bucket_floats = (size_t)(bmb * 1048576.0 / sizeof(float));
    /* the collectives' stream at the highest priority: a bucket's kernels start as soon as
     * they may, between the backward's */
    CU_TRY_GOTO(s, cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    CU_TRY_GOTO(s, cudaStreamCreateWithPriority(&d->cs, cudaStreamNonBlocking, prio_hi));
    CU_TRY_GOTO(s, cudaEventCreateWithFlags(&d->ready, cudaEventDisableTiming));
    CU_TRY_GOTO(s, cudaEventCreateWithFlags(&d->done, cudaEventDisableTiming));
    CU_TRY_GOTO(s, cudaMalloc(&d->d_sum, 16 * sizeof(double)));
    CU_TRY_GOTO(s, cudaMallocHost(&d->h_sum, 16 * sizeof(double)));
    /* rendezvous: rank 0 makes the id, the others read it from the file */
    if (dr->rank == 0) {
        if ((r = nc.GetUniqueId(&id)) != ncclSuccess) {
            s = mg_fail(MG_ERR_IO, "rank 0: ncclGetUniqueId: %s", nc.GetErrorString(r));
            goto fail;
        }
        if ((s = dist_id_write(dr->id_path, dr->nonce, &id, sizeof id)) != MG_OK) goto fail;
    } else if ((s = dist_id_wait(dr->id_path, dr->nonce, &id, sizeof id, dr->timeout_s)) != MG_OK) {
        goto fail;
    }
    {
        /* Blocking by default: a collective returns once its kernels are enqueued, by this
         * thread. Non-blocking (MIRAGE_DIST_NONBLOCKING=1) hands every call to NCCL's own
         * thread and each bucket then waits for it: measured slower (docs/RESULTS.md, issue 8).
         * The waits for results are ours either way (wait_event, with the watchdog); what a
         * blocking call can hang in (joining a communicator, the first collective's
         * connections, if a peer dies right then) the launcher ends with SIGKILL. */
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        const char *nb = getenv("MIRAGE_DIST_NONBLOCKING");
        cfg.blocking = nb && !strcmp(nb, "1") ? 0 : 1;
        r = nc.CommInitRankConfig(&d->comm, dr->nranks, id, dr->rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress) {
            s = mg_fail(MG_ERR_IO, "rank %d: ncclCommInitRankConfig (%d ranks): %s", dr->rank, dr->nranks,
                        nc.GetErrorString(r));
            d->comm = NULL; /* nothing to abort */
            goto fail;
        }
        if (!d->comm) {
            s = mg_fail(MG_ERR_IO, "rank %d: ncclCommInitRankConfig returned no communicator", dr->rank);
            goto fail;
        }
        if ((s = wait_state(d, "ncclCommInitRankConfig")) != MG_OK) goto fail;
    }
    *out = d;
    return MG_OK;
fail:
    cuda_dist_free(d);
    return s;
}

extern "C" void cuda_dist_free(cuda_dist *d) {
    if (!d) return;
    if (d->cp) cuda_params_set_grad_hook(d->cp, NULL, NULL);
    if (d->comm && !d->dead) {
        /* a clean end: flush, then destroy; an error or a timeout on the way aborts instead */
        ncclResult_t r = nc.CommFinalize(d->comm);
        if ((r == ncclSuccess || r == ncclInProgress) && wait_state(d, "ncclCommFinalize") == MG_OK)
            nc.CommDestroy(d->comm);
        else if (!d->dead)
            nc.CommAbort(d->comm);
    } else if (d->comm) {
        nc.CommAbort(d->comm);
    }
    if (d->cs) {
        cudaStreamSynchronize(d->cs);
        cudaStreamDestroy(d->cs);
    }
    if (d->ready) cudaEventDestroy(d->ready);
    if (d->done) cudaEventDestroy(d->done);
    cudaFree(d->d_sum);
    if (d->h_sum) cudaFreeHost(d->h_sum);
    free(d);
}

extern "C" void cuda_dist_abort(cuda_dist *d) {
    if (d && !d->dead) dist_failed(d, MG_OK);
}

/* ---- gradient buckets -------------------------------------------------------------------- */

static mg_status reduce_range(cuda_dist *d, size_t a, size_t b) {
    if (b <= a) return MG_OK;
    cudaStream_t st = (cudaStream_t)cuda_params_stream(d->cp);
    /* after everything the training stream has enqueued so far (the writes of these gradients) */
    CU_TRY(cudaEventRecord(d->ready, st));
    CU_TRY(cudaStreamWaitEvent(d->cs, d->ready, 0));
    float *g = d->cp->grad + a;
    ncclResult_t r = nc.AllReduce(g, g, b - a, ncclFloat32, ncclSum, d->comm, d->cs);
    if (r == ncclInProgress) MG_TRY(wait_state(d, "ncclAllReduce (gradients)"));
    else if (r != ncclSuccess) return nccl_fail(d, "ncclAllReduce (gradients)", r);
    d->buckets++;
    d->bytes += (double)(b - a) * sizeof(float);
    return MG_OK;
}

static mg_status on_grad_ready(void *user, size_t from) {
    cuda_dist *d = (cuda_dist *)user;
    MG_TRY(check_live(d, "gradient bucket"));
    if (from < d->lo) from = d->lo;
    if (from >= d->pending) return MG_OK;
    if (d->pending - from < d->bucket_floats && from > d->lo) return MG_OK; /* grow the bucket */
    MG_TRY(reduce_range(d, from, d->pending));
    d->pending = from;
    return MG_OK;
}

extern "C" mg_status cuda_dist_attach(cuda_dist *d, cuda_params *cp, int first, int last) {
    MG_TRY(check_live(d, "cuda_dist_attach"));
    if (first < 0 || last <= first || last > cp->tp->n_tensors)
        return mg_fail(MG_ERR_ARG, "cuda_dist_attach: tensor range [%d, %d) outside [0, %d)", first, last, cp->tp->n_tensors);
    d->cp = cp;
    d->first = first, d->last = last;
    d->lo = cp->tp->offset[first];
    d->pending = d->lo; /* nothing to reduce outside a step */
    cuda_params_set_grad_hook(cp, on_grad_ready, d);
    return MG_OK;
}

extern "C" mg_status cuda_dist_grads_begin(cuda_dist *d) {
    MG_TRY(check_live(d, "cuda_dist_grads_begin"));
    if (!d->cp) return mg_fail(MG_ERR_ARG, "cuda_dist_grads_begin: not attached");
    d->pending = d->cp->tp->offset[d->last];
    return MG_OK;
}

extern "C" mg_status cuda_dist_grads_finish(cuda_dist *d) {
    MG_TRY(check_live(d, "cuda_dist_grads_finish"));
    if (!d->cp) return mg_fail(MG_ERR_ARG, "cuda_dist_grads_finish: not attached");
    /* what the backward did not report (the autoencoder: all of it) */
    MG_TRY(reduce_range(d, d->lo, d->pending));
    d->pending = d->lo;
    CU_TRY(cudaEventRecord(d->done, d->cs));
    MG_TRY(wait_event(d, d->done, "the gradient all-reduce"));
    cu_pdl_fence();
    return MG_OK;
}

extern "C" mg_status cuda_dist_sum(cuda_dist *d, double *v, int n) {
    MG_TRY(check_live(d, "cuda_dist_sum"));
    if (n < 1 || n > 16) return mg_fail(MG_ERR_ARG, "cuda_dist_sum: %d values (1..16)", n);
    memcpy(d->h_sum, v, (size_t)n * sizeof(double));
    CU_TRY(cudaMemcpyAsync(d->d_sum, d->h_sum, (size_t)n * sizeof(double), cudaMemcpyHostToDevice, d->cs));
    ncclResult_t r = nc.AllReduce(d->d_sum, d->d_sum, (size_t)n, ncclFloat64, ncclSum, d->comm, d->cs);
    if (r == ncclInProgress) MG_TRY(wait_state(d, "ncclAllReduce (sums)"));
    else if (r != ncclSuccess) return nccl_fail(d, "ncclAllReduce (sums)", r);
    CU_TRY(cudaMemcpyAsync(d->h_sum, d->d_sum, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, d->cs));
    CU_TRY(cudaEventRecord(d->done, d->cs));
    MG_TRY(wait_event(d, d->done, "the all-reduce of the losses"));
    memcpy(v, d->h_sum, (size_t)n * sizeof(double));
    return MG_OK;
}

extern "C" void cuda_dist_stats(const cuda_dist *d, long *buckets, double *bytes) {
    *buckets = d ? d->buckets : 0;
    *bytes = d ? d->bytes : 0.0;
}

#endif
