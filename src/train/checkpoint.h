/* Training checkpoints and model files, both safetensors written atomically (st_writer_save:
 * FILE.tmp.PID, fsync, rename), so a kill -9 at any moment leaves either the previous complete
 * file or the new complete one.
 *
 * A checkpoint is an index file PATH plus parts PATH.step<S>.part<K> of at most part_bytes
 * each (the GPU machines bring back files of at most 16 MiB). The parts of a step are written
 * (each atomically) before the index that names them; the previous step's parts are deleted
 * only after the new index is in place. Whatever moment a kill -9 lands, PATH names a complete
 * set of parts: the old one or the new one. Between them they hold everything needed to
 * continue a run bit for bit:
 *   param/<name>        every tensor's weights (F32), both networks
 *   ema/<name>, m/<name>, v/<name>   the EMA and AdamW moments of the trained network only
 *                       (m and v F32, or BF16 with ckpt_save_ex)
 *                       (the frozen one's EMA is its weights and its moments are zero)
 *   __metadata__        format "mirage-train", ckpt_version "1", stage (tae|dit), step, the
 *                       model's config keys and prompts (as in a weights file), and the
 *                       trainer's own keys (seed and the options that must not change).
 * A model file (--out) is a normal mirage weights file of one array (the EMA), F32 or BF16.
 * Sizes and the format are documented in docs/TRAINING.md. */
#ifndef MG_TRAIN_CHECKPOINT_H
#define MG_TRAIN_CHECKPOINT_H

#include "core/safetensors.h"
#include "core/status.h"
#include "train/train.h"

#define CKPT_VERSION 1

/* Extra metadata: n pairs key[i] = val[i]. */
typedef struct ckpt_meta {
    int n;
    char key[64][64];
    char val[64][128];
} ckpt_meta;

void ckpt_meta_set(ckpt_meta *cm, const char *key, const char *fmt, ...) MG_PRINTF(3, 4);
const char *ckpt_meta_get(const ckpt_meta *cm, const char *key); /* NULL if absent */

/* Tensors [first, last) are the trained network (ema, m, v saved for them). stage is "tae" or
 * "dit"; step the number of optimizer steps done. */
mg_status ckpt_save(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                    const ckpt_meta *extra, size_t part_bytes);

/* Removes what a killed writer leaves: PATH.tmp.<pid> and PATH.step<S>.part<K>.tmp.<pid>
 * (any pid but ours; one trainer per checkpoint). The complete parts are left alone. */
void ckpt_remove_stale(const char *path);

/* As ckpt_save, with the AdamW moments (m, v) stored as `moments`: ST_F32 (exact) or ST_BF16,
 * which makes a dit checkpoint of config tiny small enough to travel back from a GPU machine
 * (docs/TRAINING.md) at the price of exactness: a resumed run continues from moments rounded
 * to 8 significant bits. The index says which (metadata "moments"). */
mg_status ckpt_save_ex(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                       const ckpt_meta *extra, size_t part_bytes, st_dtype moments);

/* As ckpt_save_ex, plus an auxiliary network aux (the discriminator of `train tae --adv`,
 * train/adv.h; NULL: none) that is trained but never shipped: its param, m and v, always F32,
 * as aux.param/<name>, aux.m/<name>, aux.v/<name> in the same parts (so the same atomic
 * switch of the index covers them). ckpt_load skips these; ckpt_load_aux reads them. */
mg_status ckpt_save_aux(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                        const ckpt_meta *extra, size_t part_bytes, st_dtype moments, const train_params *aux);
/* Fills aux (laid out by its owner, e.g. adv_init) from the checkpoint at path: every tensor's
 * param, m and v must be there, F32 and of aux's shapes; its grad is zeroed. */
mg_status ckpt_load_aux(const char *path, train_params *aux);

/* What an index says about its checkpoint, checked (ckpt_index_parse): the stage ("tae" or
 * "dit"), the step, the number of parts, the model's config (model_config_from_meta). */
typedef struct ckpt_index {
    char stage[8];
    long step, parts;
    mg_config cfg;
} ckpt_index;

/* Checks an index's metadata (format "mirage-train", ckpt_version, stage, step, parts, the config
 * keys and the prompt list) and touches nothing else: the parser of ckpt_load, apart for the
 * fuzzer (fuzz/fuzz_ckpt.c). MG_ERR_FORMAT names the file and the key. */
mg_status ckpt_index_parse(const st_file *f, ckpt_index *ix);

/* Reads and validates a checkpoint into a fresh *tp (param, ema, m, v; grad zero; the frozen
 * network's ema = param). *stage gets "tae"/"dit", *step the step, *extra every metadata key
 * (the trainer checks its own). Errors name the file and what is wrong. */
mg_status ckpt_load(const char *path, train_params *tp, char stage[8], long *step, ckpt_meta *extra);

/* Writes arr (tp->param or tp->ema) as a mirage weights file, dtype ST_F32 or ST_BF16
 * (rounded to nearest even). */
mg_status ckpt_write_model(const char *path, const train_params *tp, const float *arr, st_dtype dtype);

/* Bytes ckpt_save and ckpt_write_model write (data + a header estimate), for the log. */
size_t ckpt_bytes(const train_params *tp, int first, int last, st_dtype moments);
size_t ckpt_model_bytes(const train_params *tp, st_dtype dtype);

#endif
