/* Checkpoints: a folder per checkpoint that is a valid PEFT adapter (adapter_config.json +
 * adapter_model.safetensors, which PeftModel.from_pretrained loads unchanged) with the resume
 * state beside it:
 *
 *   <parent>/checkpoint-<step>/
 *       adapter_config.json, adapter_model.safetensors   the adapter (peft_save)
 *       optimizer.safetensors   AdamW's moments: exp_avg.<tensor> and exp_avg_sq.<tensor> (F32,
 *                               the tensor's shape) and step (I64 [1], AdamW's t)
 *       trainer_state.json      step, optimizer updates, the data position of every worker
 *                               rank, the RNG seeds, the job's fingerprint and settings, and the
 *                               size and SHA-256 of every file above
 *       SHA256SUMS              the SHA-256 of all four files, as `sha256sum -c SHA256SUMS`
 *                               checks them in the folder (written after them)
 *       README.md               the model card (model_card.h): for people, not hashed
 *   <parent>/latest             a symbolic link to the newest complete checkpoint folder
 *
 * Every file is written atomically (temporary file, fsync, rename, fsync of the folder) into a
 * hidden .checkpoint-<step>.partial folder, which is renamed to checkpoint-<step> only once
 * complete; `latest` is replaced (symlink to a temporary name, rename) only after that. A kill
 * at any moment therefore leaves `latest` on a complete checkpoint.
 *
 * format_version 1 (before SHA-256 and XXH3) recorded hash64_fnv per file and no SHA256SUMS; such
 * checkpoints still load, verified with that hash, with info.legacy set: their base-model and
 * data fingerprints are of the old kind and cannot be compared with today's (CKPT_LEGACY_NOTE). */
#ifndef LORAPS_CHECKPOINT_H
#define LORAPS_CHECKPOINT_H

#include "error.h"
#include "lora.h"
#include "model_card.h"

#include <stddef.h>
#include <stdint.h>

#define CKPT_STATE_FILE     "trainer_state.json"
#define CKPT_OPTIMIZER_FILE "optimizer.safetensors"
#define CKPT_FORMAT         "loraps-checkpoint"
#define CKPT_FORMAT_VERSION 2
#define CKPT_LEGACY_NOTE                                                                           \
    "written before SHA-256 (format_version 1): its files were verified with the older hash64, "   \
    "and its base-model and data fingerprints are of the pre-XXH3 kind, so they cannot be "        \
    "compared with this model's and data's; a checkpoint written from now on records SHA-256"

/* Where rank r's data continues: its next step and the index of the first sequence of its part
 * of that step. */
typedef struct ckpt_rank {
    uint64_t next_step;
    uint64_t next_sequence;
} ckpt_rank;

typedef struct ckpt_info {
    uint64_t step;    /* the adapter version: optimizer steps done (sync) */
    uint64_t updates; /* AdamW's t */
    uint64_t total_updates;
    uint64_t base_fingerprint;
    uint64_t job_id;
    uint64_t seed;
    uint64_t sequences_per_step; /* the global batch in sequences */
    uint64_t data_id;            /* the workers' data (Push.data_id); 0: the demo task, unknown */
    int n_shards;
    char mode[8];
    char base_model[4096];
    int n_ranks;
    ckpt_rank *ranks;
    /* The job's settings as job_print writes them ("key value" lines); owned when loaded. */
    char *job_settings;
    int legacy; /* loaded from a format_version 1 checkpoint (see above); 0 when writing */
} ckpt_info;

typedef struct ckpt_write_opts {
    const char *base_model; /* adapter_config.json's base_model_name_or_path */
    int fan_in_fan_out;
    int keep; /* keep the newest K checkpoint folders; 0 keeps all */
    /* what the folder's README.md says of the training (its folder is the checkpoint's); NULL:
     * the step, mode, workers and job of info alone */
    const model_card *card;
} ckpt_write_opts;

/* Writes <parent>/checkpoint-<info->step> from the adapter (its params) and the AdamW moments
 * m, v (the adapter's layout; NULL for none), points `latest` at it and prunes old ones. The
 * folder written is returned in written (may be NULL). An existing folder of the same step is
 * replaced only once the new one is complete. LORAPS_TEST_CHECKPOINT_SLEEP_MS (tests only)
 * sleeps between files, so a test can kill the writer mid-checkpoint. */
int ckpt_write(const char *parent, const lora_adapter *a, const float *m, const float *v,
               const ckpt_info *info, const ckpt_write_opts *o, char *written, size_t written_size,
               lp_err *err);

/* Resolves what --resume names: a checkpoint or adapter folder, `latest` (then <parent>/latest),
 * or a folder holding a `latest` link. */
int ckpt_resolve(const char *path, const char *parent, char *out, size_t size, lp_err *err);

typedef struct ckpt_loaded {
    lora_adapter adapter; /* built over the modules given, params from the checkpoint */
    int has_state;        /* trainer_state.json was there (a loraps checkpoint) */
    int has_optimizer;
    float *m, *v; /* adapter layout; NULL without optimizer state */
    ckpt_info info;
} ckpt_loaded;

/* Loads a checkpoint folder, or a plain PEFT adapter folder (has_state 0). Every file is checked
 * against its recorded size and SHA-256 first (ckpt_read_state), so a truncated or corrupted
 * checkpoint is refused with a message naming the file. */
int ckpt_load(const char *dir, const lora_module *modules, int n_modules, ckpt_loaded *out,
              lp_err *err);
void ckpt_loaded_free(ckpt_loaded *c);

/* Reads and checks trainer_state.json: its own SHA-256 (from SHA256SUMS) first, then every file
 * it or SHA256SUMS lists against the recorded size and SHA-256 (hash64 for format_version 1). */
int ckpt_read_state(const char *dir, ckpt_info *info, lp_err *err);
void ckpt_info_free(ckpt_info *info);

typedef enum ckpt_verified {
    CKPT_NOTHING_RECORDED, /* a plain PEFT folder: no trainer_state.json, no SHA256SUMS */
    CKPT_SHA256_VERIFIED,  /* every file matches its recorded SHA-256 */
    CKPT_LEGACY_VERIFIED   /* a format_version 1 checkpoint, verified with hash64 */
} ckpt_verified;

/* What generate, eval and merge do before reading an adapter folder: a checkpoint is checked as
 * ckpt_read_state checks it, any other folder against its SHA256SUMS if it has one. */
int ckpt_verify(const char *dir, ckpt_verified *how, lp_err *err);
/* ckpt_verify, then peft_load: the adapter of a checkpoint or PEFT folder, checked first. */
int ckpt_load_adapter(const char *dir, const lora_module *modules, int n_modules, lora_adapter *a,
                      ckpt_verified *how, lp_err *err);

/* Removes all but the newest `keep` checkpoint-<step> folders (and stale .partial folders). */
int ckpt_prune(const char *parent, int keep, lp_err *err);

#endif
