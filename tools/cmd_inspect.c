/* loraps inspect: what a model folder, an adapter, a checkpoint (or a folder of them) or a single
 * .safetensors file holds. Everything is validated while it is read; a corrupt file is an error
 * naming the file, with a non-zero exit. */
#include "checkpoint.h"
#include "commands.h"
#include "fsutil.h"
#include "hf_weights.h"
#include "safetensors.h"

#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps inspect PATH [--all]\n\n"
            "Prints what PATH holds, checking it as it reads:\n"
            "  a .safetensors file    its tensors (name, dtype, shape, bytes) and metadata\n"
            "  an HF model folder     config.json and the weights (all files of a sharded one)\n"
            "  a PEFT adapter folder  adapter_config.json and the A/B tensors\n"
            "  a loraps checkpoint    the adapter, the optimizer state and the trainer state\n"
            "                         (step, data positions, fingerprints); every file is checked\n"
            "                         against the size and hash trainer_state.json records\n"
            "  a folder of checkpoints  each checkpoint-<step> and where `latest` points\n"
            "Corrupt or truncated files are reported by name, with exit status 1.\n\n"
            "  --all   list every tensor (default: the first 40 of each file)\n");
}

static void human(char *buf, size_t n, double b) {
    if (b >= 1e9)
        snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.2f MB", b / 1e6);
    else if (b >= 1e3)
        snprintf(buf, n, "%.1f kB", b / 1e3);
    else
        snprintf(buf, n, "%.0f B", b);
}

static void shape_text(const st_tensor *t, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && used < n; d++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* Non-finite values of a float tensor (a corrupt or diverged file shows here). */
static int64_t non_finite(const st_tensor *t) {
    if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16) return 0;
    int64_t bad = 0;
    float buf[4096];
    size_t es = dtype_size(t->dtype);
    for (int64_t i = 0; i < t->numel; i += 4096) {
        size_t n = (size_t)(t->numel - i < 4096 ? t->numel - i : 4096);
        dtype_to_f32((const char *)t->data + (size_t)i * es, t->dtype, buf, n);
        for (size_t k = 0; k < n; k++) bad += !isfinite(buf[k]);
    }
    return bad;
}

/* The tensors, the first 40 only unless all. */
static void list_tensors(const st_file *f, const char *indent, int all) {
    int shown = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!all && shown == 40) {
            printf("%s... %d more (--all lists them)\n", indent, f->n_tensors - 40);
            break;
        }
        char sh[128];
        shape_text(t, sh, sizeof sh);
        int64_t bad = non_finite(t);
        printf("%s%-60s %-5s %-16s %10zu B%s\n", indent, t->name, dtype_name(t->dtype), sh,
               t->nbytes, bad ? "  NON-FINITE VALUES" : "");
        if (bad) printf("%s  (%" PRId64 " NaN/Inf values)\n", indent, bad);
        shown++;
    }
}

static int file_summary(const char *path, const char *indent, int list, int all) {
    lp_err err;
    st_file f;
    if (st_open(&f, path, &err) < 0) {
        fprintf(stderr, "loraps inspect: error: %s\n", err.msg);
        return -1;
    }
    size_t bytes = 0;
    int64_t params = 0;
    for (int i = 0; i < f.n_tensors; i++)
        bytes += f.tensors[i].nbytes, params += f.tensors[i].numel;
    char hb[32];
    human(hb, sizeof hb, (double)bytes);
    printf("%s%s: %d tensors, %" PRId64 " elements, %s of data\n", indent, path, f.n_tensors,
           params, hb);
    for (int i = 0; i < f.n_metadata; i++)
        printf("%s  metadata %s = %s\n", indent, f.metadata_keys[i], f.metadata_values[i]);
    if (list) {
        char in2[32];
        snprintf(in2, sizeof in2, "%s  ", indent);
        list_tensors(&f, in2, all);
    }
    st_close(&f);
    return 0;
}

static int print_json_file(const char *path, const char *title) {
    json_error_t jerr;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        fprintf(stderr, "loraps inspect: error: %s:%d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    printf("%s (%s):\n", title, path);
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        printf("  %-26s %s\n", k, text ? text : "?");
        free(text);
    }
    json_decref(o);
    return 0;
}

static int inspect_checkpoint_state(const char *dir) {
    lp_err err;
    ckpt_info info;
    if (ckpt_read_state(dir, &info, &err) < 0) {
        fprintf(stderr, "loraps inspect: error: %s\n", err.msg);
        return -1;
    }
    printf("loraps checkpoint (%s/%s): every file's size and %s verified\n", dir, CKPT_STATE_FILE,
           info.legacy ? "hash64" : "SHA-256 (also: sha256sum -c SHA256SUMS)");
    if (info.legacy) printf("  note: %s\n", CKPT_LEGACY_NOTE);
    printf("  step                       %" PRIu64 " of %" PRIu64 "\n", info.step,
           info.total_updates);
    printf("  optimizer updates          %" PRIu64 "\n", info.updates);
    printf("  mode                       %s, %d server shard(s)\n", info.mode, info.n_shards);
    printf("  base model                 %s (fingerprint %016" PRIx64 ")\n", info.base_model,
           info.base_fingerprint);
    printf("  job fingerprint            %016" PRIx64 "\n", info.job_id);
    printf("  seed                       %" PRIu64 "\n", info.seed);
    printf("  sequences per step         %" PRIu64 "\n", info.sequences_per_step);
    for (int r = 0; r < info.n_ranks; r++)
        printf("  rank %-4d next step %-8" PRIu64 " next sequence %" PRIu64 "\n", r,
               info.ranks[r].next_step, info.ranks[r].next_sequence);
    ckpt_info_free(&info);
    return 0;
}

static int inspect_adapter(const char *dir, int all) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (print_json_file(path, "PEFT adapter config") < 0) return -1;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    lp_err err;
    st_file f;
    if (st_open(&f, path, &err) < 0) {
        fprintf(stderr, "loraps inspect: error: %s\n", err.msg);
        return -1;
    }
    /* Every tensor must be a PEFT LoRA key, and every A must have its B of a matching rank. */
    int rc = 0, pairs = 0;
    int64_t params = 0;
    for (int i = 0; i < f.n_tensors && rc == 0; i++) {
        const st_tensor *t = &f.tensors[i];
        params += t->numel;
        const char *suf = strstr(t->name, ".lora_A.weight");
        int is_a = suf && !strcmp(suf, ".lora_A.weight");
        const char *sb = strstr(t->name, ".lora_B.weight");
        int is_b = sb && !strcmp(sb, ".lora_B.weight");
        if (strncmp(t->name, "base_model.model.", 17) || (!is_a && !is_b) || t->ndim != 2) {
            rc = -1;
            fprintf(stderr, "loraps inspect: error: %s: '%s' is not a PEFT LoRA tensor\n", path,
                    t->name);
        } else if (is_a) {
            char bname[512];
            snprintf(bname, sizeof bname, "%.*s.lora_B.weight", (int)(suf - t->name), t->name);
            const st_tensor *b = st_find(&f, bname);
            if (!b || b->ndim != 2 || b->shape[1] != t->shape[0]) {
                rc = -1;
                fprintf(stderr, "loraps inspect: error: %s: %s has no lora_B of rank %lld\n", path,
                        t->name, (long long)t->shape[0]);
            } else {
                pairs++;
            }
        }
    }
    if (rc == 0) {
        printf("adapter weights: %d adapted modules, %" PRId64 " parameters\n", pairs, params);
        file_summary(path, "  ", 1, all);
    }
    st_close(&f);
    return rc;
}

static int inspect_model(const char *dir, int all) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (print_json_file(path, "model config") < 0) return -1;
    lp_err err;
    hf_weights w;
    if (hf_weights_open(&w, dir, &err) < 0) {
        fprintf(stderr, "loraps inspect: error: %s\n", err.msg);
        return -1;
    }
    int64_t params = 0;
    int n = 0;
    for (int k = 0; k < w.n_files; k++)
        for (int i = 0; i < w.files[k].n_tensors; i++) params += w.files[k].tensors[i].numel, n++;
    char hb[32];
    human(hb, sizeof hb, (double)hf_weights_total_bytes(&w));
    printf("weights: %d file(s), %d tensors, %" PRId64 " parameters, %s\n", w.n_files, n, params,
           hb);
    for (int k = 0; k < w.n_files; k++) {
        printf("  %s\n", w.files[k].path);
        list_tensors(&w.files[k], "    ", all);
    }
    hf_weights_close(&w);
    return 0;
}

static int inspect_checkpoints_parent(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int n = 0, rc = 0;
    char latest[PATH_MAX + 16], target[PATH_MAX];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    ssize_t tl = readlink(latest, target, sizeof target - 1);
    target[tl > 0 ? tl : 0] = 0;
    printf("checkpoints in %s:\n", dir);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "checkpoint-", 11)) continue;
        char sub[PATH_MAX + 300];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        ckpt_info info;
        lp_err err;
        if (ckpt_read_state(sub, &info, &err) < 0) {
            printf("  %-24s CORRUPT: %s\n", e->d_name, err.msg);
            rc = -1;
        } else {
            printf("  %-24s step %" PRIu64 "%s\n", e->d_name, info.step,
                   !strcmp(target, e->d_name) ? "  <- latest" : "");
            ckpt_info_free(&info);
        }
        n++;
    }
    closedir(d);
    if (!n) return 1; /* not such a folder */
    if (!target[0]) printf("  (no `latest` link: no checkpoint was completed)\n");
    if (rc < 0) fprintf(stderr, "loraps inspect: error: %s holds corrupt checkpoints\n", dir);
    return rc;
}

/* --all: every tensor listed, the optimizer state's too. */
static int inspect_dir(const char *dir, int all) {
    char p1[PATH_MAX + 64], p2[PATH_MAX + 64], p3[PATH_MAX + 64];
    snprintf(p1, sizeof p1, "%s/adapter_config.json", dir);
    snprintf(p2, sizeof p2, "%s/%s", dir, CKPT_STATE_FILE);
    snprintf(p3, sizeof p3, "%s/config.json", dir);
    if (fs_exists(p2)) {
        if (inspect_checkpoint_state(dir) < 0) return -1;
        if (inspect_adapter(dir, all) < 0) return -1;
        snprintf(p2, sizeof p2, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
        if (fs_exists(p2)) {
            printf("optimizer state (AdamW moments):\n");
            return file_summary(p2, "  ", all, all);
        }
        printf("no optimizer state\n");
        return 0;
    }
    if (fs_exists(p1)) return inspect_adapter(dir, all);
    if (fs_exists(p3)) return inspect_model(dir, all);
    int rc = inspect_checkpoints_parent(dir);
    if (rc <= 0) return rc;
    fprintf(stderr,
            "loraps inspect: error: %s: not a model, adapter or checkpoint folder (no config.json, "
            "adapter_config.json, %s or checkpoint-*)\n",
            dir, CKPT_STATE_FILE);
    return -1;
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--all"))
            all = 1;
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else {
            fprintf(stderr, "loraps inspect: error: %s: unexpected argument (see --help)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "loraps inspect: error: %s: no such file or folder\n", path);
        return 1;
    }
    char real[PATH_MAX];
    if (S_ISDIR(st.st_mode)) {
        if (realpath(path, real) && strcmp(real, path)) {
            struct stat lst;
            if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) printf("%s -> %s\n", path, real);
        }
        return inspect_dir(path, all) < 0 ? 1 : 0;
    }
    return file_summary(path, "", 1, all) < 0 ? 1 : 0;
}
