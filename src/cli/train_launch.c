/* mirage train ... --gpus N (issue 8): one process per GPU, no MPI. See train_launch.h.
 *
 * The launcher forks before any CUDA call (a process that has initialised CUDA cannot hand it
 * to a child): each rank gets its GPU through CUDA_VISIBLE_DEVICES and sees it as device 0.
 * The ranks meet through a file next to the checkpoint (dist.h), marked with this launch's
 * nonce. The parent only supervises: it forwards SIGINT/SIGTERM to the ranks (they stop
 * together, with a checkpoint), and when a rank dies or fails it raises SIGUSR1 in the others,
 * whose waits then abort the communicator instead of hanging in a collective; a rank that
 * still has not exited 60 s later is killed. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/train_launch.h"
#include "core/timing.h"
#include "train/dist.h"
#ifdef MG_HAVE_CUDA
#include "cuda/cuda_dist.h"
#endif

#ifdef MG_HAVE_CUDA /* the launcher proper; a build without CUDA only says so */
static volatile sig_atomic_t forward_sig = 0;
static void on_forward(int sig) { forward_sig = sig; }
static void on_abort(int sig) { (void)sig, dist_abort_flag = 1; }

/* rank r's CUDA_VISIBLE_DEVICES: the index, or the index-th entry of the user's own list */
static int visible_for(int gpu, char *out, size_t n) {
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    if (!vis) {
        snprintf(out, n, "%d", gpu);
        return 0;
    }
    const char *p = vis;
    for (int k = 0; k < gpu; k++) {
        p = strchr(p, ',');
        if (!p) return -1;
        p++;
    }
    size_t len = strcspn(p, ",");
    if (len == 0 || len >= n) return -1;
    memcpy(out, p, len);
    out[len] = 0;
    return 0;
}

static int count_cpus(void) {
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int run_rank(train_opts *o, const dist_rank *dr, pid_t parent) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_abort;
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the launcher killed: stop cleanly */
    if (getppid() != parent) return EXIT_FAIL;
    if (dr->rank > 0) { /* rank 0 alone logs; errors still reach stderr */
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, STDOUT_FILENO), close(fd);
    }
    o->dist = dr;
    mg_status s = trainer_run(o);
    if (s == MG_OK) return EXIT_OK;
    if (dist_abort_requested()) return EXIT_FAIL; /* the failing rank has said why */
    const char *msg = mg_last_error();
    if (s == MG_ERR_ARG && strstr(msg, "differs from the checkpoint"))
        return dr->rank == 0 ? cli_usage("train", "%s", msg) : EXIT_USAGE;
    return cli_fail("rank %d (GPU %d): %s", dr->rank, dr->gpu, msg);
}

#endif

int train_launch(train_opts *o) {
    int n = o->n_gpus;
#ifndef MG_HAVE_CUDA
    (void)n;
    return cli_fail("--gpus %d: this build has no CUDA (built without nvcc)", o->n_gpus);
#else
    char what[4400];
    mg_status s = cuda_dist_probe(what, sizeof what); /* loads the library; no CUDA call */
    if (s != MG_OK) return cli_status(s);
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* cuda_dist.h says why; inherited by the ranks */
    char vis[DIST_MAX_GPUS][256];
    for (int r = 0; r < n; r++)
        if (visible_for(o->gpus[r], vis[r], sizeof vis[r]) != 0)
            return cli_fail("--gpus: GPU %d is not in CUDA_VISIBLE_DEVICES=%s (the indices count its entries)",
                            o->gpus[r], getenv("CUDA_VISIBLE_DEVICES"));
    if (o->threads <= 0) { /* the batch threads of the ranks share the CPUs; one core each is
                            * left to the rank's main thread (and NCCL's) */
        o->threads = count_cpus() / n - 1;
        if (o->threads < 1) o->threads = 1;
    }
    dist_rank dr;
    memset(&dr, 0, sizeof dr);
    dr.nranks = n;
    dr.timeout_s = dist_timeout_default();
    char ckpt[4096];
    trainer_ckpt_path(o, ckpt, sizeof ckpt);
    snprintf(dr.id_path, sizeof dr.id_path, "%s.nccl-id", ckpt);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    dr.nonce = (uint64_t)now.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)now.tv_sec << 20 ^ (uint64_t)getpid();
    unlink(dr.id_path);
    printf("train: %d ranks, GPUs", n);
    for (int r = 0; r < n; r++) printf("%s%d", r ? "," : " ", o->gpus[r]);
    printf(", %d CPU threads each; %s; rendezvous %s\n", o->threads, what, dr.id_path);
    fflush(stdout);
    fflush(stderr);

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_forward;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    forward_sig = 0;
    pid_t parent = getpid(), pid[DIST_MAX_GPUS];
    int alive = 0, code = EXIT_OK, first_bad = -1;
    for (int r = 0; r < n; r++) {
        pid[r] = fork();
        if (pid[r] == 0) {
            dr.rank = r;
            dr.gpu = o->gpus[r];
            setenv("CUDA_VISIBLE_DEVICES", vis[r], 1);
            int rc = run_rank(o, &dr, parent);
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
        if (pid[r] < 0) {
            code = cli_fail("cannot start rank %d: %s", r, strerror(errno));
            first_bad = r;
            for (int k = 0; k < r; k++) kill(pid[k], SIGUSR1);
            break;
        }
        alive++;
    }
    double kill_at = -1.0;
    while (alive > 0) {
        if (forward_sig) {
            int sig = forward_sig;
            forward_sig = 0;
            for (int r = 0; r < n; r++)
                if (pid[r] > 0) kill(pid[r], sig);
        }
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w < 0 && errno != EINTR) break;
        if (w <= 0) {
            if (kill_at > 0 && mg_now_ms() > kill_at) {
                for (int r = 0; r < n; r++)
                    if (pid[r] > 0) kill(pid[r], SIGKILL);
                kill_at = -1.0;
            }
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        int r = 0;
        while (r < n && pid[r] != w) r++;
        if (r == n) continue;
        pid[r] = -1;
        alive--;
        int rc = WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_FAIL;
        if (WIFSIGNALED(st) && first_bad < 0)
            fprintf(stderr, "mirage: error: rank %d (GPU %d) was killed by signal %d (%s)\n", r, o->gpus[r],
                    WTERMSIG(st), strsignal(WTERMSIG(st)));
        if (rc != EXIT_OK && first_bad < 0) {
            first_bad = r;
            code = rc;
            /* the others: give up their waits (dist.h), and be gone within a minute */
            for (int k = 0; k < n; k++)
                if (pid[k] > 0) kill(pid[k], SIGUSR1);
            kill_at = mg_now_ms() + 60000.0;
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    unlink(dr.id_path);
    return code;
#endif
}
