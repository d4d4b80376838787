/* Data-parallel training over NCCL (issue 8; src/cuda/nccl.cu). One process per GPU, one
 * communicator over them; the trainer (src/train/trainer.c) uses it around each step:
 *
 *   cuda_dist_new          loads libnccl.so.2 (dlopen), meets the other ranks through the
 *                          rendezvous file of dist.h, creates the communicator
 *   cuda_dist_attach       hooks the gradient buckets to a cuda_params (cuda_params_grad_ready)
 *   cuda_dist_grads_begin  before the backward of a step
 *                          ... the backward: each time it reports gradients complete, the ones
 *                          not yet reduced are all-reduced (sum) on a second stream, in
 *                          buckets of >= MIRAGE_DIST_BUCKET_MB (default 4) MiB, overlapping the
 *                          rest of the backward (an event orders each after what wrote it) ...
 *   cuda_dist_grads_finish reduces what is left, then waits for every bucket: after it the
 *                          gradients are the sums over the ranks on every rank
 *   cuda_dist_sum          sums a few doubles over the ranks (losses, stop flags)
 *
 * Every wait for a result polls the GPU with a watchdog instead of blocking: it gives up
 * (MG_ERR_IO) when NCCL reports an error, when the launcher signals that another rank failed
 * (dist.h), or after the rank's timeout, and then aborts the communicator (ncclCommAbort), so
 * a dead peer never leaves a rank hanging in a collective. (The NCCL calls themselves only
 * enqueue; the few that can block on a peer, joining and the first connections, are covered
 * by the launcher, which kills a rank that has not ended 60 s after another failed.)
 *
 * NCCL is found at run time: MIRAGE_NCCL=/path/libnccl.so.2 if set, else libnccl.so.2 on the
 * library path (LD_LIBRARY_PATH, the CUDA toolkit's lib64), else the pip package
 * nvidia-nccl-cu* beside python3 (site-packages/nvidia/nccl/lib). NCCL_NVLS_ENABLE is set to 0
 * unless the user set it: NVLink SHARP multicast is not needed for these buckets, and on shared
 * hosts a program using it can take the GPUs out of service. */
#ifndef MG_CUDA_DIST_H
#define MG_CUDA_DIST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "train/dist.h"
#ifdef __cplusplus
}
#endif
#include "cuda/cuda_train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_dist cuda_dist;

/* Loads NCCL without creating anything (no CUDA call: the launcher runs it before it forks).
 * MG_ERR_UNSUPPORTED naming where it looked and how to set MIRAGE_NCCL; else MG_OK and the
 * library's path and version in `what`. */
mg_status cuda_dist_probe(char *what, size_t n);

/* Rank dr->rank of dr->nranks on the current CUDA device. Rank 0 writes the id file. */
mg_status cuda_dist_new(cuda_dist **out, const dist_rank *dr);
/* cuda_dist_free ends cleanly (finalize); after an error, cuda_dist_abort first, so that the
 * peers' collectives fail instead of waiting for this rank. */
void cuda_dist_free(cuda_dist *d);
void cuda_dist_abort(cuda_dist *d);

/* Gradients of tensors [first, last) of cp are the ones reduced. */
mg_status cuda_dist_attach(cuda_dist *d, cuda_params *cp, int first, int last);
mg_status cuda_dist_grads_begin(cuda_dist *d);
mg_status cuda_dist_grads_finish(cuda_dist *d);
/* v[0..n) (n <= 16) summed over the ranks, in place, on every rank. */
mg_status cuda_dist_sum(cuda_dist *d, double *v, int n);
/* Buckets launched and bytes reduced since cuda_dist_new (for the log). */
void cuda_dist_stats(const cuda_dist *d, long *buckets, double *bytes);

#ifdef __cplusplus
}
#endif
#endif
