/* mirage train ... --gpus N|LIST with more than one GPU (issue 8): starts one rank process per
 * GPU (src/cli/train_launch.c), each running trainer_run on its slice of every batch with NCCL
 * (src/cuda/cuda_dist.h), supervises them and returns the command's exit code: 0 when every
 * rank ended cleanly, else the first failing rank's. */
#ifndef MG_CLI_TRAIN_LAUNCH_H
#define MG_CLI_TRAIN_LAUNCH_H

#include "train/trainer.h"

int train_launch(train_opts *o);

#endif
