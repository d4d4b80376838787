/* Data-parallel training (issue 8): the pieces that need no GPU. `mirage train ... --gpus N`
 * starts one process per GPU (src/cli/train_launch.c); each rank trains on its slice of every
 * global batch, the gradients are summed over the ranks with NCCL (src/cuda/cuda_dist.h) and
 * every rank applies the same update, so all ranks hold the same weights and optimizer state.
 *
 *   dist_parse_gpus   --gpus N | --gpus 0,2,...
 *   dist_split        rank r's items [first, first + count) of a global batch of B items
 *   dist_id_write     the NCCL unique id, written by rank 0 next to the checkpoint (atomic:
 *   dist_id_wait      temporary file, fsync, rename); the other ranks wait for it. The file
 *                     carries the launch's nonce, so an id left by another launch is ignored.
 *   dist_abort_*      a flag the launcher raises (SIGUSR1) when another rank has died: every
 *                     wait of a rank checks it and gives up instead of hanging. */
#ifndef MG_TRAIN_DIST_H
#define MG_TRAIN_DIST_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define DIST_MAX_GPUS 16
#define DIST_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

/* What one rank process knows about the run it belongs to. */
typedef struct dist_rank {
    int rank, nranks;
    int gpu;                  /* the device index the user named (CUDA_VISIBLE_DEVICES maps it) */
    char id_path[4200];       /* the rendezvous file */
    uint64_t nonce;           /* this launch's token */
    double timeout_s;         /* longest wait for a peer (rendezvous, a collective) */
} dist_rank;

/* "N" (1..DIST_MAX_GPUS: GPUs 0..N-1) or a comma list of distinct device indices ("0,2").
 * MG_ERR_ARG with a message that names what is wrong. */
mg_status dist_parse_gpus(const char *arg, int *gpus, int *n);

/* Rank `rank` of `nranks` trains items [*first, *first + *count) of a global batch of `batch`
 * items: contiguous equal slices, so the ranks together make exactly the items 0..batch-1 a
 * single process makes. MG_ERR_ARG when nranks does not divide batch. */
mg_status dist_split(int batch, int nranks, int rank, int *first, int *count);

/* The rendezvous file. dist_id_write: "mirage-nccl-id 1 <nonce> <hex of the id>\n", atomically.
 * dist_id_wait: polls until the file holds an id of this nonce; MG_ERR_IO after timeout_s
 * seconds (naming the file and rank 0), or when dist_abort_requested() turns true. */
mg_status dist_id_write(const char *path, uint64_t nonce, const void *id, size_t n);
mg_status dist_id_wait(const char *path, uint64_t nonce, void *id, size_t n, double timeout_s);

/* Set from a signal handler (SIGUSR1 in a rank: another rank failed); read by every wait. */
extern volatile sig_atomic_t dist_abort_flag;
static inline int dist_abort_requested(void) { return dist_abort_flag != 0; }

/* The watchdog's limit: MIRAGE_DIST_TIMEOUT seconds if set (>= 1), else 600 (rank 0 may spend
 * minutes on a checkpoint, samples or validation while the others wait in a collective). */
double dist_timeout_default(void);

#endif
