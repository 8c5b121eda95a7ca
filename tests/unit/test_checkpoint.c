/* Checkpoint folders (common/checkpoint.h): write/load round trip bit for bit (adapter, AdamW
 * moments, trainer state), `latest`, keeping the newest K, rewriting a step, resolving what
 * --resume names, and refusing damaged files by name. SHA-256 for every file, in
 * trainer_state.json and in a SHA256SUMS that coreutils' sha256sum checks; damage to any file,
 * the state file included, refused; format_version 1 checkpoints (hash64) still verified and
 * loaded, flagged legacy. The model card (README.md) in adapter and checkpoint folders: what it
 * says, and that editing it breaks no load. And peft_merge on a Linear-weight family (Llama:
 * W [out, in], no transpose), in F32 (logits <= 1e-5 relative) and BF16 (dtype kept). */
#include "checkpoint.h"
#include "checkpoint_sums.h"
#include "lora_targets.h"
#include "model_load.h"
#include "fsutil.h"
#include "llama_init.h"
#include "model.h"
#include "model_init.h"
#include "peft.h"
#include "rng.h"
#include "safetensors.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "file_damage.h"

static char g_dir[64];
static model *g_gpt2;

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/loraps-ckpt-test.XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/tiny", g_dir);
    lp_err err;
    gpt2_config c;
    if (model_preset("tiny", &c, &err) < 0 || model_init_write(path, &c, 7, &err) < 0 ||
        model_load(&g_gpt2, path, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(g_gpt2);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void make_adapter(lora_adapter *a, const model *m, const char *targets, uint64_t seed) {
    lp_err err;
    lora_config c;
    lora_config_defaults(&c);
    c.r = 4;
    c.alpha = 8;
    assert_int_equal(lora_config_set_targets(&c, targets, &err), 0);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    if (lora_adapter_build(a, &c, mods, n, &err) < 0) fail_msg("%s", err.msg);
    lora_config_free(&c);
    rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = 0.3f * rng_normal(&r);
}

static void fill(float *x, size_t n, uint64_t seed, int positive) {
    rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = positive ? rng_uniform(&r) * 1e-3f : rng_normal(&r);
}

static void info_for(ckpt_info *info, uint64_t step, ckpt_rank *ranks) {
    memset(info, 0, sizeof *info);
    info->step = step;
    info->updates = step;
    info->total_updates = 100;
    info->base_fingerprint = 0x1234abcdULL;
    info->job_id = 0xfeedULL;
    info->seed = 1337;
    info->sequences_per_step = 8;
    info->n_shards = 2;
    snprintf(info->mode, sizeof info->mode, "sync");
    snprintf(info->base_model, sizeof info->base_model, "some/model");
    info->n_ranks = 2;
    ranks[0] = (ckpt_rank){step, step * 8};
    ranks[1] = (ckpt_rank){step, step * 8 + 4};
    info->ranks = ranks;
    info->job_settings = "r 4\nlr 0.01\ntarget_modules c_attn,c_fc\n";
}

static void test_write_load_keep_latest(void **state) {
    (void)state;
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_attn,c_fc", 1);
    float *m = malloc(a.n_params * sizeof(float)), *v = malloc(a.n_params * sizeof(float));
    char parent[128], where[512];
    snprintf(parent, sizeof parent, "%s/run", g_dir);
    ckpt_write_opts o = {"some/model", 1, 2, NULL};
    lp_err err;
    ckpt_rank ranks[2];
    for (uint64_t step = 2; step <= 6; step += 2) {
        fill(a.params, a.n_params, step, 0);
        fill(m, a.n_params, step + 100, 0);
        fill(v, a.n_params, step + 200, 1);
        ckpt_info info;
        info_for(&info, step, ranks);
        if (ckpt_write(parent, &a, m, v, &info, &o, where, sizeof where, &err) < 0)
            fail_msg("%s", err.msg);
    }
    /* keep 2: checkpoint-2 is gone; latest names checkpoint-6 */
    char path[600], link[64];
    snprintf(path, sizeof path, "%s/checkpoint-2", parent);
    assert_false(fs_exists(path));
    snprintf(path, sizeof path, "%s/checkpoint-4/trainer_state.json", parent);
    assert_true(fs_exists(path));
    snprintf(path, sizeof path, "%s/latest", parent);
    ssize_t n = readlink(path, link, sizeof link - 1);
    assert_true(n > 0);
    link[n] = 0;
    assert_string_equal(link, "checkpoint-6");
    /* resolve and load: bit for bit */
    char dir[512];
    assert_int_equal(ckpt_resolve("latest", parent, dir, sizeof dir, &err), 0);
    assert_non_null(strstr(dir, "checkpoint-6"));
    const lora_module *mods;
    int n_mods = model_lora_modules(g_gpt2, &mods);
    ckpt_loaded ck;
    if (ckpt_load(dir, mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_true(ck.has_state && ck.has_optimizer);
    assert_int_equal(ck.adapter.n_params, a.n_params);
    assert_memory_equal(ck.adapter.params, a.params, a.n_params * sizeof(float));
    assert_memory_equal(ck.m, m, a.n_params * sizeof(float));
    assert_memory_equal(ck.v, v, a.n_params * sizeof(float));
    assert_int_equal(ck.info.step, 6);
    assert_int_equal(ck.info.updates, 6);
    assert_int_equal(ck.info.base_fingerprint, 0x1234abcdULL);
    assert_int_equal(ck.info.job_id, 0xfeedULL);
    assert_int_equal(ck.info.seed, 1337);
    assert_int_equal(ck.info.n_ranks, 2);
    assert_int_equal(ck.info.ranks[1].next_sequence, 6 * 8 + 4);
    assert_string_equal(ck.info.mode, "sync");
    assert_non_null(strstr(ck.info.job_settings, "lr 0.01\n"));
    assert_non_null(strstr(ck.info.job_settings, "target_modules c_attn,c_fc\n"));
    ckpt_loaded_free(&ck);
    /* a folder holding `latest` resolves to it, as does the link itself */
    assert_int_equal(ckpt_resolve(parent, NULL, dir, sizeof dir, &err), 0);
    assert_non_null(strstr(dir, "checkpoint-6"));
    assert_int_equal(ckpt_resolve("latest", "", dir, sizeof dir, &err), -1);
    assert_int_equal(ckpt_resolve("latest", g_dir, dir, sizeof dir, &err), -1);
    assert_non_null(strstr(err.msg, "no checkpoint has been completed"));
    assert_int_equal(ckpt_resolve(g_dir, NULL, dir, sizeof dir, &err), -1);
    assert_non_null(strstr(err.msg, "no adapter_config.json"));

    /* rewriting an existing step replaces it whole, with no leftovers */
    fill(a.params, a.n_params, 999, 0);
    ckpt_info info;
    info_for(&info, 6, ranks);
    if (ckpt_write(parent, &a, m, v, &info, &o, where, sizeof where, &err) < 0)
        fail_msg("%s", err.msg);
    if (ckpt_load(where, mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_memory_equal(ck.adapter.params, a.params, a.n_params * sizeof(float));
    ckpt_loaded_free(&ck);
    snprintf(path, sizeof path, "%s/.checkpoint-6.old", parent);
    assert_false(fs_exists(path));

    /* damage: a flipped byte in the moments is found by the hash, and named */
    snprintf(path, sizeof path, "%s/optimizer.safetensors", where);
    damage_byte(path, 200, 1);
    assert_int_equal(ckpt_load(where, mods, n_mods, &ck, &err), -1);
    printf("flipped byte: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "optimizer.safetensors"));
    assert_non_null(strstr(err.msg, "does not match the SHA-256"));
    free(m);
    free(v);
    lora_adapter_free(&a);
}

static int sh(const char *fmt, const char *a, const char *b) {
    char *cmd;
    if (asprintf(&cmd, fmt, a, b) < 0) return -1;
    int rc = system(cmd);
    free(cmd);
    return rc;
}

/* Writes checkpoint-3 of a fresh adapter under parent; its folder into dir. */
static void write_one(const char *parent, char *dir, size_t size) {
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_attn", 3);
    float *m = calloc(a.n_params, sizeof(float)), *v = calloc(a.n_params, sizeof(float));
    fill(m, a.n_params, 7, 0);
    fill(v, a.n_params, 8, 1);
    ckpt_rank ranks[2];
    ckpt_info info;
    info_for(&info, 3, ranks);
    info.data_id = 0xda7aULL;
    ckpt_write_opts o = {"some/model", 1, 0, NULL};
    lp_err err;
    if (ckpt_write(parent, &a, m, v, &info, &o, dir, size, &err) < 0) fail_msg("%s", err.msg);
    free(m), free(v);
    lora_adapter_free(&a);
}

static void expect_refused(const char *dir, const char *what, const char *needle) {
    ckpt_info info;
    lp_err err;
    assert_int_equal(ckpt_read_state(dir, &info, &err), -1);
    printf("%s: %s\n", what, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("%s: '%s' does not say '%s'", what, err.msg, needle);
    ckpt_verified how;
    assert_int_equal(ckpt_verify(dir, &how, &err), -1);
}

/* SHA256SUMS lists all four files with the hashes sha256sum computes, and sha256sum -c accepts
 * it; any damaged file, the state file included, is refused by name. */
static void test_sha256_sums(void **state) {
    (void)state;
    char parent[128], dir[512], path[700], copy[600];
    snprintf(parent, sizeof parent, "%s/sums", g_dir);
    write_one(parent, dir, sizeof dir);
    ckpt_sums sums;
    lp_err err;
    assert_int_equal(ckpt_sums_read(dir, &sums, &err), 0);
    assert_int_equal(sums.n, 4);
    static const char *files[] = {"adapter_config.json", "adapter_model.safetensors",
                                  CKPT_OPTIMIZER_FILE, CKPT_STATE_FILE};
    for (int i = 0; i < 4; i++) {
        const unsigned char *d = ckpt_sums_find(&sums, files[i]);
        assert_non_null(d);
        /* the same digest as coreutils computes for the file */
        char hex[65], want[80] = "", out[600];
        ckpt_sha256_hex(d, hex);
        snprintf(out, sizeof out, "%s/sha.out", g_dir);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        assert_int_equal(sh("sha256sum '%s' > '%s'", path, out), 0);
        FILE *f = fopen(out, "r");
        assert_non_null(f);
        assert_int_equal(fscanf(f, "%64s", want), 1);
        fclose(f);
        assert_string_equal(hex, want);
    }
    ckpt_sums_free(&sums);
    assert_int_equal(sh("cd '%s' && sha256sum --quiet -c %s", dir, CKPT_SUMS_FILE), 0);
    ckpt_info info;
    if (ckpt_read_state(dir, &info, &err) < 0) fail_msg("%s", err.msg);
    assert_false(info.legacy);
    assert_int_equal(info.data_id, 0xda7aULL);
    ckpt_info_free(&info);
    ckpt_verified how;
    assert_int_equal(ckpt_verify(dir, &how, &err), 0);
    assert_int_equal(how, CKPT_SHA256_VERIFIED);

    /* an edit that keeps trainer_state.json valid JSON: a data position moved by one */
    snprintf(copy, sizeof copy, "%s/edited_state", g_dir);
    assert_int_equal(sh("cp -r '%s' '%s'", dir, copy), 0);
    assert_int_equal(sh("sed -i 's/\"next_sequence\": 28/\"next_sequence\": 29/' '%s/%s'", copy,
                        CKPT_STATE_FILE),
                     0);
    expect_refused(copy, "edited trainer_state.json", "trainer_state.json: its content does not");
    assert_int_equal(sh("cd '%s' && sha256sum --status -c %s", copy, CKPT_SUMS_FILE) != 0, 1);
    /* a flipped byte in the adapter, named */
    snprintf(copy, sizeof copy, "%s/flipped_adapter", g_dir);
    assert_int_equal(sh("cp -r '%s' '%s'", dir, copy), 0);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", copy);
    damage_byte(path, 100, 1);
    expect_refused(copy, "flipped adapter byte", "adapter_model.safetensors: its content");
    /* SHA256SUMS missing, or disagreeing with the state file */
    snprintf(copy, sizeof copy, "%s/no_sums", g_dir);
    assert_int_equal(sh("cp -r '%s' '%s'", dir, copy), 0);
    assert_int_equal(sh("rm '%s/%s'", copy, CKPT_SUMS_FILE), 0);
    expect_refused(copy, "no SHA256SUMS", "SHA256SUMS is missing");
    snprintf(copy, sizeof copy, "%s/bad_sums", g_dir);
    assert_int_equal(sh("cp -r '%s' '%s'", dir, copy), 0);
    assert_int_equal(sh("sed -i '1s/^./0/;1s/^00/11/' '%s/%s'", copy, CKPT_SUMS_FILE), 0);
    expect_refused(copy, "edited SHA256SUMS", "record different SHA-256s");
    assert_int_equal(sh("echo 'not a line' >> '%s/%s'", copy, CKPT_SUMS_FILE), 0);
    expect_refused(copy, "malformed SHA256SUMS", "not a sha256sum line");
}

/* A folder without trainer state: nothing recorded, or its own SHA256SUMS checked. */
static void test_verify_plain_folder(void **state) {
    (void)state;
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_fc", 9);
    char dir[128], path[200];
    snprintf(dir, sizeof dir, "%s/plain", g_dir);
    lp_err err;
    assert_int_equal(peft_save(dir, &a, NULL, 1, &err), 0);
    ckpt_verified how;
    assert_int_equal(ckpt_verify(dir, &how, &err), 0);
    assert_int_equal(how, CKPT_NOTHING_RECORDED);
    assert_int_equal(sh("cd '%s' && sha256sum adapter_*%s > SHA256SUMS", dir, ""), 0);
    assert_int_equal(ckpt_verify(dir, &how, &err), 0);
    assert_int_equal(how, CKPT_SHA256_VERIFIED);
    const lora_module *mods;
    int n_mods = model_lora_modules(g_gpt2, &mods);
    lora_adapter back;
    if (ckpt_load_adapter(dir, mods, n_mods, &back, &how, &err) < 0) fail_msg("%s", err.msg);
    assert_memory_equal(back.params, a.params, a.n_params * sizeof(float));
    lora_adapter_free(&back);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    damage_byte(path, 300, 1);
    assert_int_equal(ckpt_load_adapter(dir, mods, n_mods, &back, &how, &err), -1);
    printf("plain folder with SHA256SUMS, flipped byte: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "adapter_model.safetensors: its content does not match"));
    lora_adapter_free(&a);
}

/* The checkpoint loraps-ps wrote before SHA-256 (golden/peft_roundtrip/ours_checkpoint,
 * format_version 1, hash64 per file): verified with hash64, loaded, flagged legacy, its
 * data id dropped; a flipped byte is still found. */
static void test_legacy_checkpoint(void **state) {
    (void)state;
    char dir[128], path[200];
    snprintf(dir, sizeof dir, "%s/legacy", g_dir);
    assert_int_equal(sh("cp -r '%s' '%s'",
                        LORAPS_TEST_DATA "/reference/golden/peft_roundtrip/ours_checkpoint", dir),
                     0);
    model *m;
    lp_err err;
    if (model_load(&m, LORAPS_TEST_DATA "/reference/golden/gpt2_tiny", &err) < 0)
        fail_msg("%s", err.msg);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    ckpt_loaded ck;
    if (ckpt_load(dir, mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_true(ck.has_state && ck.has_optimizer && ck.info.legacy);
    assert_int_equal(ck.info.step, 20);
    assert_int_equal(ck.info.base_fingerprint, 0xeda8707d38170a8dULL);
    assert_int_equal(ck.info.data_id, 0);
    ckpt_loaded_free(&ck);
    ckpt_verified how;
    assert_int_equal(ckpt_verify(dir, &how, &err), 0);
    assert_int_equal(how, CKPT_LEGACY_VERIFIED);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    damage_byte(path, 5000, 1);
    assert_int_equal(ckpt_load(dir, mods, n_mods, &ck, &err), -1);
    printf("legacy checkpoint, flipped byte: %s\n", err.msg);
    assert_non_null(
        strstr(err.msg, "optimizer.safetensors: its content does not match the hash64"));
    /* a format this loraps does not know */
    damage_byte(path, 5000, 1);
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    assert_int_equal(sh("sed -i 's/\"format_version\": 1/\"format_version\": 9/' '%s'%s", path, ""),
                     0);
    expect_refused(dir, "format_version 9", "format_version 9 is not one this loraps reads");
    model_free(m);
}

static void test_adapter_only_folder(void **state) {
    (void)state;
    /* a PEFT folder without trainer state: has_state 0, no moments */
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_proj", 5);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/peft_only", g_dir);
    lp_err err;
    assert_int_equal(peft_save(dir, &a, NULL, 1, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(g_gpt2, &mods);
    ckpt_loaded ck;
    if (ckpt_load(dir, mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_false(ck.has_state);
    assert_false(ck.has_optimizer);
    assert_null(ck.m);
    assert_memory_equal(ck.adapter.params, a.params, a.n_params * sizeof(float));
    ckpt_loaded_free(&ck);
    lora_adapter_free(&a);
}

/* The merged model's logits vs base + adapter, max |diff| / max |logit|. */
static double merged_vs_adapter(const char *base_dir, const char *adapter_dir,
                                const char *merged_dir) {
    lp_err err;
    model *mb, *mm;
    if (model_load(&mb, base_dir, &err) < 0 || model_load(&mm, merged_dir, &err) < 0)
        fail_msg("%s", err.msg);
    const lora_module *mods;
    int n_mods = model_lora_modules(mb, &mods);
    lora_adapter a, none;
    if (peft_load(adapter_dir, mods, n_mods, &a, &err) < 0) fail_msg("%s", err.msg);
    lora_config c;
    lora_config_defaults(&c);
    c.r = 1;
    assert_int_equal(lora_config_set_targets(&c, "re:.*", &err), 0);
    int n_mods_m = model_lora_modules(mm, &mods);
    assert_int_equal(lora_adapter_build(&none, &c, mods, n_mods_m, &err), 0);
    lora_config_free(&c);
    memset(none.params, 0, none.n_params * sizeof(float));
    enum { B = 2, T = 12 };
    int V = model_vocab_size(mb), inputs[B * T];
    for (int i = 0; i < B * T; i++) inputs[i] = (i * 53 + 11) % V;
    size_t n = (size_t)B * T * (size_t)V;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    model_trainer *t1, *t2;
    assert_int_equal(model_trainer_new(&t1, mb, &a, B, T, &err), 0);
    assert_int_equal(model_trainer_new(&t2, mm, &none, B, T, &err), 0);
    assert_int_equal(model_trainer_logits(t1, inputs, x, &err), 0);
    assert_int_equal(model_trainer_logits(t2, inputs, y, &err), 0);
    double d = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)x[i] - y[i]) > d) d = fabs((double)x[i] - y[i]);
        if (fabs((double)x[i]) > mr) mr = fabs((double)x[i]);
    }
    model_trainer_free(t1);
    model_trainer_free(t2);
    free(x);
    free(y);
    lora_adapter_free(&a);
    lora_adapter_free(&none);
    model_free(mb);
    model_free(mm);
    return d / mr;
}

static void merge_llama(dtype stored, double tol) {
    char base[128], adapter[128], merged[128];
    snprintf(base, sizeof base, "%s/llama_%s", g_dir, dtype_name(stored));
    snprintf(adapter, sizeof adapter, "%s/llama_adapter_%s", g_dir, dtype_name(stored));
    snprintf(merged, sizeof merged, "%s/llama_merged_%s", g_dir, dtype_name(stored));
    lp_err err;
    llama_config c;
    assert_int_equal(llama_preset("tiny", &c, &err), 0);
    if (llama_init_write_as(base, &c, 3, stored, 0.1f, &err) < 0) fail_msg("%s", err.msg);
    model *m;
    if (model_load(&m, base, &err) < 0) fail_msg("%s", err.msg);
    lora_adapter a;
    make_adapter(&a, m, "q_proj,v_proj,down_proj,gate_proj", 11);
    assert_int_equal(peft_save(adapter, &a, base, 0, &err), 0);
    lora_adapter_free(&a);
    model_free(m);
    if (peft_merge(base, adapter, merged, &err) < 0) fail_msg("%s", err.msg);
    double rel = merged_vs_adapter(base, adapter, merged);
    printf("llama %s: merged vs base + adapter: %.3e relative\n", dtype_name(stored), rel);
    assert_true(rel <= tol);
    /* every tensor keeps its dtype */
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", merged);
    st_file f;
    assert_int_equal(st_open(&f, path, &err), 0);
    const st_tensor *q = st_find(&f, "model.layers.0.self_attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->dtype, stored);
    st_close(&f);
}

static void test_merge_linear_family(void **state) {
    (void)state;
    merge_llama(DT_F32, 1e-5);
    /* BF16 weights: the merged ones are rounded to BF16 again, so only close */
    merge_llama(DT_BF16, 2e-2);
}

static char *read_text(const char *path) {
    char *text;
    size_t n;
    lp_err err;
    if (fs_read_all(path, &text, &n, &err) < 0) fail_msg("%s", err.msg);
    return text;
}

static void assert_has(const char *text, const char *want) {
    if (!strstr(text, want)) fail_msg("the card lacks \"%s\":\n%s", want, text);
}

/* peft_save alone: the card has the front matter, the LoRA settings as adapter_config.json has
 * them (patterns included) and says the training is not recorded; peft_save_card says it all. */
static void test_model_card_adapter(void **state) {
    (void)state;
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_attn,c_fc", 3);
    lp_err err;
    assert_int_equal(lora_config_set_patterns(&a.cfg, 0, "h.1.mlp.c_fc=2", &err), 0);
    char dir[128], path[256];
    snprintf(dir, sizeof dir, "%s/plain", g_dir);
    if (peft_save(dir, &a, "org/base-model", 1, &err) < 0) fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/README.md", dir);
    char *card = read_text(path);
    assert_true(!strncmp(card, "---\nbase_model: org/base-model\nlibrary_name: peft\n", 48));
    assert_has(card, "# LoRA adapter for base-model\n");
    assert_has(card, "| r | 4 |\n| lora_alpha | 8 |\n");
    assert_has(card, "| target_modules | `c_attn`, `c_fc` |\n");
    assert_has(card, "| rank_pattern | `h.1.mlp.c_fc`: 2 |\n");
    char want[256];
    snprintf(want, sizeof want, "| adapted modules | %d |\n", a.n_sites);
    assert_has(card, want);
    assert_has(card, "Not recorded");
    snprintf(want, sizeof want, "PeftModel.from_pretrained(base, \"%s\")", dir);
    assert_has(card, want);
    free(card);

    model_card c = model_card_unknown();
    c.data = "days.jsonl";
    c.step = 300;
    c.max_steps = 300;
    c.tokens = 1228800;
    c.train_loss = 0.46244;
    c.val_loss = log(1.61);
    c.val_step = 300;
    c.workers = 2;
    c.mode = "sync";
    c.job_settings = "r 4\nlr 0.01";
    if (peft_save_card(dir, &a, "org/base-model", 1, &c, &err) < 0) fail_msg("%s", err.msg);
    card = read_text(path);
    assert_has(card, "| data | days.jsonl |\n| steps | 300 of 300 |\n| tokens | 1,228,800 |\n");
    assert_has(card, "| workers | 2, sync mode (loraps parameter server) |\n");
    assert_has(card, "| final training loss | 0.4624 |\n");
    assert_has(card, "| final validation loss | 0.4762 (perplexity 1.61) at step 300 |\n");
    assert_has(card, "```\nr 4\nlr 0.01\n```");
    assert_null(strstr(card, "Not recorded"));
    free(card);
    lora_adapter_free(&a);
}

/* A checkpoint's card names the final folder (not the partial one it was written in), records
 * the step and the job; it is not among the hashed files, so an edited card still loads. */
static void test_model_card_checkpoint(void **state) {
    (void)state;
    lora_adapter a;
    make_adapter(&a, g_gpt2, "c_attn", 4);
    char parent[128], where[512], path[700];
    snprintf(parent, sizeof parent, "%s/carded", g_dir);
    ckpt_write_opts o = {"some/model", 1, 0, NULL};
    ckpt_rank ranks[2];
    ckpt_info info;
    info_for(&info, 8, ranks);
    lp_err err;
    if (ckpt_write(parent, &a, NULL, NULL, &info, &o, where, sizeof where, &err) < 0)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/README.md", where);
    char *card = read_text(path);
    char want[700];
    snprintf(want, sizeof want, "PeftModel.from_pretrained(base, \"%s\")", where);
    assert_has(card, want);
    assert_null(strstr(card, ".partial"));
    assert_has(card, "| steps | 8 |\n");
    assert_has(card, "| workers | 2, sync mode");
    assert_has(card, "target_modules c_attn,c_fc\n");
    free(card);
    snprintf(path, sizeof path, "%s/trainer_state.json", where);
    char *state_text = read_text(path);
    assert_null(strstr(state_text, "README"));
    free(state_text);
    snprintf(path, sizeof path, "%s/README.md", where);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("\nEdited by a person.\n", f);
    fclose(f);
    const lora_module *mods;
    int n_mods = model_lora_modules(g_gpt2, &mods);
    ckpt_loaded ck;
    if (ckpt_load(where, mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_memory_equal(ck.adapter.params, a.params, a.n_params * sizeof(float));
    ckpt_loaded_free(&ck);
    lora_adapter_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_load_keep_latest),
        cmocka_unit_test(test_adapter_only_folder),
        cmocka_unit_test(test_sha256_sums),
        cmocka_unit_test(test_verify_plain_folder),
        cmocka_unit_test(test_legacy_checkpoint),
        cmocka_unit_test(test_model_card_adapter),
        cmocka_unit_test(test_model_card_checkpoint),
        cmocka_unit_test(test_merge_linear_family),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
