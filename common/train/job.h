/* A training job's settings: one table of keys, set from a job file (JSON), then flags
 * (--lora-alpha 16), then LORAPS_* environment variables (LORAPS_LORA_ALPHA=16), in that order of
 * precedence from lowest. The server owns the job; workers receive it in Welcome. */
#ifndef LORAPS_JOB_H
#define LORAPS_JOB_H

#include "adamw.h"
#include "dataset.h"
#include "error.h"
#include "lora.h"

#include <stdio.h>

typedef enum job_mode { JOB_SYNC, JOB_ASYNC } job_mode;

#define JOB_MAX_THREADS 1024

typedef struct job {
    /* LoRA (PEFT names) */
    int r;
    float lora_alpha;
    float lora_dropout;
    int use_rslora;
    char target_modules[512]; /* "c_attn,c_proj", "all-linear" or "re:<regex>" */
    char rank_pattern[512];   /* "key=8,key2=4" */
    char alpha_pattern[512];
    /* optimizer (HF Trainer names) */
    float lr;
    float adam_beta1, adam_beta2, adam_epsilon;
    float weight_decay;
    char lr_scheduler[16]; /* constant | linear | cosine */
    int warmup_steps;
    float max_grad_norm; /* <= 0: no clipping */
    /* batch and length */
    int micro_batch;
    int seq_len;
    int grad_accum;
    int max_steps;
    /* intervals, seed, threads */
    int eval_every;
    int save_every;
    int keep_checkpoints; /* the newest K checkpoints are kept; 0 keeps all */
    unsigned long long seed;
    int threads; /* per worker; 0 = all cores */
    /* distribution */
    char mode[8];  /* sync | async */
    int staleness; /* async: how many versions ahead a worker may run; 0 = unbounded */
    int workers;   /* the world size N the data is split over; sync starts when N have joined */
    char wire_dtype[8];       /* f32 | bf16 | f16: tensors on the wire */
    int heartbeat_ms;         /* how often workers heartbeat */
    int heartbeat_timeout_ms; /* a worker silent this long is dropped */
    /* data: how every worker turns its file into sequences (they must agree; the file's path is
     * each worker's own). See dataset_options_set. */
    char layout[8];          /* pack | pad */
    char txt_docs[8];        /* blank | line: how a .txt separates documents */
    char bad_data[8];        /* fail | skip */
    char long_docs[16];      /* split | truncate | reject (pad layout) */
    char special_tokens[16]; /* text | special */
    float val_fraction;      /* share of documents held out for validation */
} job;

/* The table every setting is one row of: its name (the job file's, the flag's with '-' for '_',
 * the variable's upper-cased after LORAPS_), its type and where it lives in struct job. Code that
 * moves a job elsewhere (the wire's JobSpec: net/jobspec.c) walks this table, so a new setting
 * is one row here. */
typedef enum key_type { K_INT, K_FLOAT, K_BOOL, K_STRING, K_U64 } key_type;

typedef struct job_key {
    const char *name;
    key_type type;
    size_t offset;
    size_t size; /* for strings */
    const char *help;
} job_key;

const job_key *job_keys(size_t *n);

void job_defaults(job *j);
/* Sets one key from text. The key is the table's name ("lora_alpha"), or its flag spelling
 * ("lora-alpha"). */
int job_set(job *j, const char *key, const char *value, lp_err *err);
/* A JSON object of key: value (numbers, strings, booleans, or a list for target_modules). */
int job_load_file(job *j, const char *path, lp_err *err);
/* Applies every LORAPS_<KEY> variable that names a job key. */
int job_apply_env(job *j, lp_err *err);
/* If argv[*i] is "--<key>" (with the value in argv[*i+1]) or "--<key>=<v>", applies it,
 * advances *i past it and returns 1; returns 0 if argv[*i] is not a job flag; -1 on a bad
 * value. */
int job_parse_flag(job *j, int argc, char **argv, int *i, lp_err *err);
/* Checks ranges and combinations once everything is applied. */
int job_validate(const job *j, lp_err *err);
void job_print(const job *j, FILE *out, const char *prefix);
/* job_print's lines as one malloc'd string (NULL when out of memory): what checkpoints and model
 * cards record. */
char *job_print_text(const job *j);
/* One help line per key. */
void job_print_help(FILE *out);

/* Derived views. */
int job_lora_config(const job *j, lora_config *c, lp_err *err);
/* The data settings (seq_len, seed, layout, ...) as dataset options; o may be NULL to only check
 * them. A validation file is each worker's own: set o->val_path after. */
int job_data_options(const job *j, dataset_options *o, lp_err *err);
void job_adamw(const job *j, adamw_config *c);
void job_schedule(const job *j, int total_steps, lr_schedule *s);

#endif
