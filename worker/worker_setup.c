/* The worker's set-up from the first Welcome. */
#include "worker_setup.h"
#include "worker.h"

#include "jobspec.h"
#include "lora_targets.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int take_job(worker *w, const Loraps__Welcome *wel, uint64_t job_id, lp_err *err) {
    if (jobspec_to_job(wel->job, &w->job, err) < 0) return -1;
    if (w->cfg.rank >= w->job.workers)
        return lp_fail(err, "rank %d, but the job has %d workers", w->cfg.rank, w->job.workers);
    w->wire_dtype = wel->job->wire_dtype;
    atomic_store(&w->job_id, job_id);
    return 0;
}

/* The adapter as the model family builds it from the job's LoRA settings. */
static int build_adapter(worker *w, lp_err *err) {
    lora_config lc;
    if (job_lora_config(&w->job, &lc, err) < 0) return -1;
    const lora_module *mods;
    int n_mods = model_lora_modules(w->mdl, &mods);
    int rc = lora_adapter_build(&w->adapter, &lc, mods, n_mods, err);
    lora_config_free(&lc);
    return rc;
}

static int check_tensor(const worker *w, const Loraps__Welcome *wel, int i, lp_err *err) {
    const lora_tensor *t = &w->adapter.tensors[i];
    const Loraps__TensorSpec *s = wel->spec[i];
    if (strcmp(t->name, s->name) || (uint64_t)t->rows != s->rows || (uint64_t)t->cols != s->cols)
        return lp_fail(err,
                       "tensor %d: the servers have %s [%llu, %llu], this model %s [%lld, %lld]", i,
                       s->name, (unsigned long long)s->rows, (unsigned long long)s->cols, t->name,
                       (long long)t->rows, (long long)t->cols);
    if (wel->placement[i] >= wel->n_shards)
        return lp_fail(err, "tensor %d placed on shard %u of %u", i, wel->placement[i],
                       wel->n_shards);
    return 0;
}

/* The servers' spec must be this adapter's, tensor by tensor; it is kept to check that later
 * Welcomes (other shards, restarted servers) are the same job. */
static int take_spec(worker *w, const Loraps__Welcome *wel, lp_err *err) {
    if ((size_t)w->adapter.n_tensors != wel->n_spec || wel->n_placement != wel->n_spec)
        return lp_fail(err, "the servers' adapter has %zu tensors, this model gives %d",
                       wel->n_spec, w->adapter.n_tensors);
    w->n_spec = (int)wel->n_spec;
    w->spec_names = calloc(wel->n_spec, sizeof *w->spec_names);
    w->spec_rows = calloc(wel->n_spec, sizeof *w->spec_rows);
    w->spec_cols = calloc(wel->n_spec, sizeof *w->spec_cols);
    w->placement = calloc(wel->n_spec, sizeof *w->placement);
    if (!w->spec_names || !w->spec_rows || !w->spec_cols || !w->placement)
        return lp_fail(err, "out of memory");
    for (int i = 0; i < w->n_spec; i++) {
        if (check_tensor(w, wel, i, err) < 0) return -1;
        w->spec_names[i] = strdup(wel->spec[i]->name);
        w->spec_rows[i] = wel->spec[i]->rows;
        w->spec_cols[i] = wel->spec[i]->cols;
        w->placement[i] = wel->placement[i];
    }
    return 0;
}

static int open_data(worker *w, lp_err *err) {
    const worker_config *c = &w->cfg;
    worker_data_paths dp = {NULL, NULL, NULL};
    if (c->data_path[0]) {
        dp.data = c->data_path;
        dp.val_file = c->val_path[0] ? c->val_path : NULL;
        /* a .bin needs no tokenizer; text takes the model's unless told otherwise */
        size_t n = strlen(dp.data);
        int is_bin = n >= 4 && !strcmp(dp.data + n - 4, ".bin");
        dp.tokenizer = c->tokenizer_path[0] ? c->tokenizer_path : is_bin ? NULL : c->model_dir;
    } else if (c->val_path[0]) {
        return lp_fail(err, "--val-file needs --data");
    }
    if (worker_data_open(&w->data, &w->job, model_vocab_size(w->mdl), &dp, err) < 0)
        return lp_wrap(err, "data");
    return 0;
}

/* A whole step's sequences (train_step); a validation pass uses the first micro-batch. */
static int alloc_batch(worker *w, lp_err *err) {
    const job *j = &w->job;
    size_t n = (size_t)j->grad_accum * (size_t)j->micro_batch * (size_t)j->seq_len;
    w->inputs = malloc(n * sizeof *w->inputs);
    w->targets = malloc(n * sizeof *w->targets);
    if (!w->inputs || !w->targets) return lp_fail(err, "out of memory");
    return 0;
}

static void print_config(const worker *w, uint64_t job_id) {
    const worker_config *c = &w->cfg;
    fprintf(stderr, "loraps-worker[%d]: effective configuration\n", c->rank);
    fprintf(stderr, "  rank             %d of %d\n", c->rank, w->job.workers);
    for (int k = 0; k < c->n_servers; k++)
        fprintf(stderr, "  server           %s\n", c->servers[k]);
    fprintf(stderr, "  model            %s (fingerprint %016llx)\n", c->model_dir,
            (unsigned long long)w->fingerprint);
    fprintf(stderr, "  job id           %016llx\n", (unsigned long long)job_id);
    fprintf(stderr, "  adapter          %d tensors, %zu params\n", w->adapter.n_tensors,
            w->adapter.n_params);
    fprintf(stderr, "  data             %s\n", worker_data_name(w->data));
    fprintf(stderr, "  arena            %.1f MiB\n",
            model_trainer_arena_bytes(w->trainer) / 1048576.0);
    if (w->metrics.reg)
        fprintf(stderr, "  metrics          http://%s:%d/metrics (and /healthz, /readyz)\n",
                c->metrics_bind, w->metrics.port);
    fputs(c->env_notes, stderr);
    job_print(&w->job, stderr, "  ");
    fflush(stderr);
}

int worker_setup_from_welcome(worker *w, const Loraps__Welcome *wel, uint64_t job_id, lp_err *err) {
    const job *j = &w->job;
    if (take_job(w, wel, job_id, err) < 0 || build_adapter(w, err) < 0 ||
        take_spec(w, wel, err) < 0 ||
        model_trainer_new(&w->trainer, w->mdl, &w->adapter, j->micro_batch, j->seq_len, err) < 0 ||
        open_data(w, err) < 0 || alloc_batch(w, err) < 0)
        return -1;
    ops_set_threads(w->cfg.threads >= 0 ? w->cfg.threads : j->threads);
    print_config(w, job_id);
    return 0;
}

void worker_setup_free(worker *w) {
    for (int i = 0; i < w->n_spec; i++) free(w->spec_names[i]);
    free(w->spec_names);
    free(w->spec_rows);
    free(w->spec_cols);
    free(w->placement);
    free(w->inputs);
    free(w->targets);
    worker_data_free(w->data);
    model_trainer_free(w->trainer);
    lora_adapter_free(&w->adapter);
}
