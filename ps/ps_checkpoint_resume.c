/* --resume: a checkpoint folder (or a PEFT adapter) back into this shard's part, with the
 * version, AdamW's t and the ranks' data positions. */
#include "ps_checkpoint.h"

#include "checkpoint.h"
#include "ps_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "key value" lines: the value of key, or NULL. */
static const char *setting(const char *text, const char *key, char *buf, size_t size) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *k = p;
        while (*k == ' ') k++;
        if (!strncmp(k, key, kl) && k[kl] == ' ') {
            const char *v = k + kl;
            while (*v == ' ') v++;
            size_t vl = (size_t)(p + len - v);
            if (vl >= size) vl = size - 1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            return buf;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

/* Warns about every job setting that differs from the checkpoint's: the resumed run then is not
 * the run the checkpoint came from (the LoRA shape itself was checked already). */
static void compare_settings(const ps_checkpoints *ck, const char *saved) {
    static const char *const quiet_keys[] = {"save_every",   "keep_checkpoints",     "threads",
                                             "heartbeat_ms", "heartbeat_timeout_ms", "eval_every"};
    int shard = ck->cfg->shard;
    char *now = NULL;
    ps_checkpoint_job_text(&ck->cfg->job, &now);
    int n_diff = 0;
    for (const char *p = now; p && *p;) {
        const char *eol = strchr(p, '\n');
        char key[64] = "";
        sscanf(p, "%63s", key);
        int quiet = 0;
        for (size_t i = 0; i < sizeof quiet_keys / sizeof quiet_keys[0]; i++)
            quiet |= !strcmp(key, quiet_keys[i]);
        char a[600], b[600];
        const char *x = setting(now, key, a, sizeof a), *y = setting(saved, key, b, sizeof b);
        if (!quiet && key[0] && x && (!y || strcmp(x, y))) {
            ps_log(shard, "warning: %s is %s; the checkpoint's job had %s", key, x,
                   y ? y : "(none)");
            n_diff++;
        }
        p = eol ? eol + 1 : NULL;
    }
    if (n_diff)
        ps_log(shard,
               "warning: %d job setting(s) differ from the checkpoint's: training continues, "
               "but not exactly as the original job would have",
               n_diff);
    free(now);
}

/* The checkpoint's adapter must be the job's, tensor by tensor and scale by scale. */
static int check_adapter(const ps_checkpoints *ck, const ps_adapter *a, const char *dir,
                         const ckpt_loaded *got, lp_err *err) {
    const lora_adapter *full = &a->full, *g = &got->adapter;
    const lora_module *mods = ck->adapters->model.modules;
    if (g->n_tensors != full->n_tensors)
        return lp_fail(err,
                       "--resume %s: the adapter has %d tensors, the job's LoRA settings give %d: "
                       "resume with the r, lora_alpha, target_modules and patterns of its "
                       "adapter_config.json",
                       dir, g->n_tensors, full->n_tensors);
    for (int i = 0; i < full->n_tensors; i++) {
        const lora_tensor *x = &g->tensors[i], *y = &full->tensors[i];
        if (strcmp(x->name, y->name) || x->rows != y->rows || x->cols != y->cols)
            return lp_fail(err,
                           "--resume %s: tensor %d is %s [%lld,%lld], the job gives %s "
                           "[%lld,%lld]: resume with the LoRA settings of its "
                           "adapter_config.json",
                           dir, i, x->name, (long long)x->rows, (long long)x->cols, y->name,
                           (long long)y->rows, (long long)y->cols);
    }
    for (int i = 0; i < full->n_sites; i++)
        if (g->sites[i].scale != full->sites[i].scale)
            return lp_fail(err,
                           "--resume %s: module %s has LoRA scale %g there, %g in this job: set "
                           "lora_alpha (and use_rslora, alpha_pattern) as in its "
                           "adapter_config.json",
                           dir, mods[full->sites[i].module].name, g->sites[i].scale,
                           full->sites[i].scale);
    return 0;
}

/* The trainer state must be of this base model, and leave something to train. */
static int check_trainer_state(const ps_checkpoints *ck, const char *dir, const ckpt_loaded *got,
                               lp_err *err) {
    const ps_config *c = ck->cfg;
    if (!got->has_state) return 0;
    uint64_t fingerprint = ck->adapters->model.fingerprint;
    if (got->info.legacy)
        ps_log(c->shard, "note: %s was %s: make sure --model is the model it was trained on", dir,
               CKPT_LEGACY_NOTE);
    if (!got->info.legacy && got->info.base_fingerprint != fingerprint)
        return lp_fail(err,
                       "--resume %s: trained on the base model with fingerprint %016" PRIx64
                       ", --model %s has %016" PRIx64,
                       dir, got->info.base_fingerprint, c->model_dir, fingerprint);
    if (got->info.step >= c->total_updates)
        return lp_fail(err,
                       "--resume %s: the checkpoint is at step %" PRIu64
                       " and the job ends at %" PRIu64 ": nothing left to train (raise "
                       "max_steps)",
                       dir, got->info.step, c->total_updates);
    if (strcmp(got->info.mode, c->job.mode))
        ps_log(c->shard, "warning: the checkpoint was trained in %s mode, this job is %s",
               got->info.mode, c->job.mode);
    return 0;
}

/* This shard's part of the parameters (and of the moments, if the checkpoint has them). */
static void restore_part(ps_adapter *a, const ckpt_loaded *got) {
    for (int t = 0; t < a->n; t++) {
        const lora_tensor *lt = &got->adapter.tensors[a->index[t]];
        size_t bytes = a->numel[t] * sizeof(float);
        memcpy(a->params + a->offset[t], got->adapter.params + lt->offset, bytes);
        if (got->has_optimizer) {
            memcpy(a->m + a->offset[t], got->m + lt->offset, bytes);
            memcpy(a->v + a->offset[t], got->v + lt->offset, bytes);
        }
    }
}

/* Where each rank continues: the checkpoint's positions when the data split is the same, else
 * after the sequences the checkpoint consumed. */
static void restore_ranks(ps_checkpoints *ck, const ckpt_info *info, uint64_t V) {
    const ps_config *c = ck->cfg;
    const job *j = &c->job;
    ps_step *st = ck->step;
    uint64_t global = st->per_rank * (uint64_t)j->workers;
    int same_split = info->n_ranks == j->workers && info->sequences_per_step == global;
    if (!same_split)
        ps_log(c->shard,
               "warning: the data split changed (%d workers, %" PRIu64
               " sequences a step in the checkpoint; %d and %" PRIu64
               " now): the data continues after the sequences the checkpoint consumed",
               info->n_ranks, info->sequences_per_step, j->workers, global);
    uint64_t consumed = info->n_ranks > 0 ? info->ranks[0].next_sequence : 0;
    for (int r = 0; r < j->workers; r++) {
        uint64_t data_step = V, seq = consumed + (uint64_t)r * st->per_rank;
        if (same_split) {
            data_step = info->ranks[r].next_step;
            seq = info->ranks[r].next_sequence;
        }
        ps_step_restore_rank(st, r, c->sync ? V : data_step, data_step, seq);
    }
}

/* A checkpoint with trainer state: the version, AdamW's t, and the data. Returns the version. */
static uint64_t restore_state(ps_checkpoints *ck, ps_adapter *a, const char *dir,
                              const ckpt_loaded *got) {
    uint64_t V = got->info.step;
    a->updates = got->has_optimizer ? got->info.updates : 0;
    ck->resumed_version = V;
    compare_settings(ck, got->info.job_settings);
    /* the data must be the checkpoint's, or its positions mean other sequences */
    ps_step_restore_data(ck->step, got->info.data_id);
    restore_ranks(ck, &got->info, V);
    if (!got->has_optimizer)
        ps_log(ck->cfg->shard, "warning: %s has no optimizer state: AdamW's moments start at zero",
               dir);
    return V;
}

int ps_checkpoint_resume(ps_checkpoints *ck, lp_err *err) {
    const ps_config *c = ck->cfg;
    if (!c->resume[0]) return 0;
    char dir[PATH_MAX];
    if (ckpt_resolve(c->resume, c->out_dir, dir, sizeof dir, err) < 0)
        return lp_wrap(err, "--resume");
    const ps_base_model *bm = &ck->adapters->model;
    ckpt_loaded got;
    if (ckpt_load(dir, bm->modules, bm->n_modules, &got, err) < 0) return lp_wrap(err, "--resume");
    ps_adapter *a = ps_adapters_default(ck->adapters);
    int rc = check_adapter(ck, a, dir, &got, err);
    if (rc == 0) rc = check_trainer_state(ck, dir, &got, err);
    if (rc == 0) {
        restore_part(a, &got);
        uint64_t V = 0;
        if (got.has_state)
            V = restore_state(ck, a, dir, &got);
        else
            ps_log(c->shard,
                   "warning: %s is a PEFT adapter without trainer state: training starts at step "
                   "0 from its weights, with fresh AdamW moments",
                   dir);
        ps_log(c->shard,
               "resumed from %s: step %" PRIu64 ", %" PRIu64 " optimizer updates%s; rank 0's data "
               "at sequence %" PRIu64,
               dir, V, a->updates, got.has_optimizer ? "" : " (fresh moments)",
               ps_data_position(ck->step, 0, ck->step->rank_next[0]));
        rc = ps_adapter_publish(a, V, err);
    }
    ckpt_loaded_free(&got);
    return rc;
}
