#include "model_card.h"

#include "fsutil.h"
#include "numfmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

model_card model_card_unknown(void) {
    model_card c;
    memset(&c, 0, sizeof c);
    c.train_loss = NAN;
    c.val_loss = NAN;
    return c;
}

static const char *last_component(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *p = path + n;
    while (p > path && p[-1] != '/') p--;
    return p;
}

static void front_matter(FILE *o, const char *base) {
    fprintf(o, "---\n");
    if (base) fprintf(o, "base_model: %s\n", base);
    fprintf(o, "library_name: peft\npipeline_tag: text-generation\ntags:\n");
    if (base) fprintf(o, "- base_model:adapter:%s\n", base);
    fprintf(o, "- lora\n- loraps\n---\n\n");
}

static void patterns(FILE *o, const char *name, const lora_pattern *p, int n) {
    if (!n) return;
    fprintf(o, "| %s | ", name);
    for (int i = 0; i < n; i++) fprintf(o, "%s`%s`: %g", i ? ", " : "", p[i].pattern, p[i].value);
    fprintf(o, " |\n");
}

static void lora_settings(FILE *o, const lora_adapter *a, const char *targets) {
    const lora_config *c = &a->cfg;
    char n1[32];
    fprintf(o, "## LoRA settings\n\n| setting | value |\n|---|---|\n");
    fprintf(o, "| r | %d |\n| lora_alpha | %g |\n", c->r, c->alpha);
    fprintf(o, "| lora_dropout | %g |\n| use_rslora | %s |\n", c->dropout,
            c->use_rslora ? "true" : "false");
    fprintf(o, "| target_modules | %s |\n", targets);
    patterns(o, "rank_pattern", c->rank_pattern, c->n_rank_pattern);
    patterns(o, "alpha_pattern", c->alpha_pattern, c->n_alpha_pattern);
    fprintf(o, "| adapted modules | %d |\n", a->n_sites);
    fprintf(o, "| trainable parameters | %s (%.2f MiB in F32) |\n\n",
            fmt_thousands(n1, sizeof n1, a->n_params), (double)a->n_params * 4.0 / 1048576.0);
}

static void training(FILE *o, const model_card *c) {
    char n1[32], n2[32];
    fprintf(o, "## Training\n\n");
    if (!c->step) {
        fprintf(o, "Not recorded: this folder was written without a training run's figures.\n\n");
        return;
    }
    fprintf(o, "| | |\n|---|---|\n");
    if (c->data) fprintf(o, "| data | %s |\n", c->data);
    if (c->max_steps)
        fprintf(o, "| steps | %s of %s |\n", fmt_thousands(n1, sizeof n1, c->step),
                fmt_thousands(n2, sizeof n2, c->max_steps));
    else
        fprintf(o, "| steps | %s |\n", fmt_thousands(n1, sizeof n1, c->step));
    if (c->tokens) fprintf(o, "| tokens | %s |\n", fmt_thousands(n1, sizeof n1, c->tokens));
    if (c->workers)
        fprintf(o, "| workers | %d%s%s%s (loraps parameter server) |\n", c->workers,
                c->mode ? ", " : "", c->mode ? c->mode : "", c->mode ? " mode" : "");
    else
        fprintf(o, "| workers | one process (loraps train) |\n");
    if (isfinite(c->train_loss)) fprintf(o, "| final training loss | %.4f |\n", c->train_loss);
    if (isfinite(c->val_loss))
        fprintf(o, "| final validation loss | %.4f (perplexity %.2f) at step %llu |\n", c->val_loss,
                exp(c->val_loss), (unsigned long long)c->val_step);
    fprintf(o, "\n");
    if (c->job_settings && c->job_settings[0])
        fprintf(o,
                "<details><summary>The job's settings</summary>\n\n```\n%s%s```\n\n</details>\n\n",
                c->job_settings, c->job_settings[strlen(c->job_settings) - 1] == '\n' ? "" : "\n");
}

static void how_to_load(FILE *o, const char *base, const char *folder) {
    const char *b = base ? base : "BASE_MODEL";
    fprintf(o,
            "## How to load\n\nWith PEFT:\n\n```python\n"
            "from transformers import AutoModelForCausalLM\n"
            "from peft import PeftModel\n\n"
            "base = AutoModelForCausalLM.from_pretrained(\"%s\")\n"
            "model = PeftModel.from_pretrained(base, \"%s\")\n"
            "model = model.merge_and_unload()  # optional: a plain model, no adapter\n```\n\n",
            b, folder);
    fprintf(o,
            "With loraps:\n\n```sh\n"
            "loraps generate --model %s --adapter %s --prompt \"...\"\n"
            "loraps merge --model %s --adapter %s --out merged\n```\n",
            b, folder, b, folder);
}

char *model_card_text(const lora_adapter *a, const char *base_model, const char *targets,
                      const char *folder, const model_card *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o) return NULL;
    model_card none = model_card_unknown();
    if (!c) c = &none;
    const char *name = base_model ? last_component(base_model) : "a causal language model";
    front_matter(o, base_model);
    fprintf(o, "# LoRA adapter for %s\n\n", name);
    fprintf(o,
            "A LoRA adapter in PEFT's format (`adapter_config.json`, "
            "`adapter_model.safetensors`) for `%s`, trained with loraps.\n\n",
            base_model ? base_model : "(base model not recorded)");
    lora_settings(o, a, targets);
    training(o, c);
    how_to_load(o, base_model, c->folder ? c->folder : folder);
    if (fclose(o) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int model_card_write(const char *dir, const lora_adapter *a, const char *base_model,
                     const char *targets, const model_card *c, lp_err *err) {
    char *text = model_card_text(a, base_model, targets, dir, c);
    if (!text) return lp_fail(err, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_CARD_FILE);
    int rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}
