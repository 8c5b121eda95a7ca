/* Training data from files: .txt, .jsonl ({"text"} or {"prompt","completion"}) and pre-tokenized
 * .bin, turned into fixed-length sequences of T tokens (inputs) and T targets (-1 = no loss).
 *
 * Sequence number i (a global counter, as the worker's demo task uses) is a pure function of the
 * dataset, the seed and i: epoch = i / n, and within an epoch the n sequences come in a
 * permutation drawn from (seed, epoch). A global batch of G sequences starting at i split over
 * N ranks therefore covers exactly what one process would see, ranks read disjoint sequences,
 * and a resumed job continues exactly where it stopped from the saved position alone.
 *
 * Not thread-safe: one dataset per thread (it caches the current epoch's permutation). */
#ifndef LORAPS_DATASET_H
#define LORAPS_DATASET_H

#include "demo_task.h"
#include "error.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum { DS_TRAIN = 0, DS_VAL = 1 };
enum { DS_LONG_SPLIT = 0, DS_LONG_TRUNCATE = 1, DS_LONG_REJECT = 2 };

typedef struct dataset_options {
    int seq_len;          /* T (required) */
    int pack;             /* 1 (default): documents + EOS concatenated and cut into T+1 windows
                             (stride T); 0: one document per sequence, padded (targets -1) */
    int txt_by_line;      /* .txt: one document per line; default 0: blank lines separate them */
    int skip_bad;         /* bad records (invalid UTF-8, malformed JSON, missing keys, bad ids,
                             too long with on_long = REJECT) are skipped and counted; default 0:
                             the first one fails dataset_open with file:line */
    int on_long;          /* pad mode, a document longer than T+1 tokens: DS_LONG_SPLIT (default)
                             into several sequences, TRUNCATE, or REJECT (bad data) */
    int allow_special;    /* special tokens written in the text are recognised (default 0: they
                             are encoded as ordinary text) */
    double val_fraction;  /* share of documents held out for validation (default 0) */
    const char *val_path; /* a separate validation file instead (default NULL) */
    uint64_t seed;        /* shuffling and the validation split */
    int vocab_size;       /* .bin ids must be below it; 0: the tokenizer's size */
} dataset_options;

void dataset_options_default(dataset_options *o);
/* Sets one option from text, for job files, flags and LORAPS_* variables:
 *   seq_len N | layout pack|pad | txt_docs blank|line | bad_data fail|skip |
 *   long_docs split|truncate|reject | special_tokens text|special | val_fraction F |
 *   val_file PATH (kept by pointer) | seed N | vocab_size N
 * An unknown key or a bad value is an error naming the key and what it accepts. */
int dataset_options_set(dataset_options *o, const char *key, const char *value, lp_err *err);

typedef struct dataset dataset;

/* tok may be NULL for .bin files (then vocab_size must be set, and pad mode needs no EOS:
 * documents in a .bin are separated by its header's eos id). */
int dataset_open(dataset **out, const char *path, const tokenizer *tok, const dataset_options *o,
                 lp_err *err);
void dataset_free(dataset *d);

uint64_t dataset_n_sequences(const dataset *d, int split); /* per epoch; 0 if no such split */
uint64_t dataset_n_tokens(const dataset *d, int split);    /* tokens stored (before windows) */
int dataset_seq_len(const dataset *d);
/* One line: file, documents, sequences, tokens, and what was skipped and why (the first). */
const char *dataset_summary(const dataset *d);
uint64_t dataset_n_skipped(const dataset *d);
/* An XXH3 hash of the sequences both splits are cut from (tokens, loss mask, sequence bounds,
 * seq_len, layout), never 0: equal on every worker that reads the same data with the same options,
 * whether from text or the .bin made from it. */
uint64_t dataset_id(const dataset *d);

/* Sequence number `index` (any value; DS_TRAIN is shuffled per epoch, DS_VAL is in order and
 * wraps) into inputs[T] and targets[T]. A full validation pass is indices
 * [0, dataset_n_sequences(d, DS_VAL)), split over ranks like a training batch. */
void dataset_sequence(dataset *d, int split, uint64_t index, int *inputs, int *targets);
/* Sequences [first, first + n): inputs and targets of n*T each. */
void dataset_batch(dataset *d, int split, uint64_t first, int n, int *inputs, int *targets);

/* Where training stands: the next sequence is number epoch * n + index. */
typedef struct dataset_pos {
    uint64_t epoch, index;
} dataset_pos;

uint64_t dataset_pos_global(const dataset *d, const dataset_pos *p);
/* One step of a job with n_ranks workers of B sequences each: rank `rank` gets sequences
 * [g + rank*B, g + (rank+1)*B) of the global batch starting at g = *p, and every rank advances
 * *p by n_ranks*B (so all ranks keep the same position). */
void dataset_next_batch(dataset *d, dataset_pos *p, int rank, int n_ranks, int B, int *inputs,
                        int *targets);
/* {"epoch": e, "index": i, "n_sequences": n, "seed": s}; restoring checks that n and seed match
 * this dataset (d may be NULL to skip the check). */
json_t *dataset_pos_to_json(const dataset *d, const dataset_pos *p);
int dataset_pos_from_json(const dataset *d, json_t *j, dataset_pos *p, lp_err *err);

/* Pre-tokenized .bin: "LPTK", u32 version 1, u32 bytes per token (2 or 4), u32 eos id
 * (0xFFFFFFFF: none), u64 token count, then the tokens, all little-endian. */
int dataset_write_bin(const char *path, const int *ids, size_t n, int bytes_per_token, int eos_id,
                      lp_err *err);

/* Writes a split's token stream (documents with their EOS, as packing sees it) as a .bin with
 * 2 bytes per token when the vocabulary fits, else 4: tokenize once, train many times. Refused
 * for data with prompt masking (a .bin has no mask). */
int dataset_export_bin(const dataset *d, int split, const char *path, lp_err *err);

/* Where a worker's sequences come from: the embedded demo task or a file dataset. Both answer
 * "sequence number i" the same way, so the worker does not care which. */
typedef struct data_source {
    int is_file;
    demo_task demo;
    dataset *ds;
    tokenizer *tok; /* owned when opened from a path */
} data_source;

int data_source_open_demo(data_source *s, uint64_t seed, int vocab_size);
/* tokenizer_path: a tokenizer.json or a model folder (NULL for .bin data). */
int data_source_open_file(data_source *s, const char *data_path, const char *tokenizer_path,
                          const dataset_options *o, lp_err *err);
/* T must be the dataset's seq_len for a file source. */
int data_source_batch(data_source *s, int split, uint64_t first, int n, int T, int *inputs,
                      int *targets, lp_err *err);
/* Sequences in a full validation pass: the file's validation split (0 if it has none), or
 * DATA_DEMO_VAL_SEQUENCES of the demo task (held out far past any training sequence). */
enum { DATA_DEMO_VAL_SEQUENCES = 64 };
uint64_t data_source_val_sequences(const data_source *s);
/* One line saying what the source is (the dataset's summary for a file). */
const char *data_source_name(const data_source *s);
/* dataset_id of a file source; 0 for the demo task (the job's seed defines it). */
uint64_t data_source_id(const data_source *s);
void data_source_close(data_source *s);

#endif
