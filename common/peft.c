#include "peft.h"

#include "fsutil.h"
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *patterns_json(const lora_pattern *p, int n, int as_int) {
    json_t *obj = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(obj, p[i].pattern,
                            as_int ? json_integer((json_int_t)p[i].value) : json_real(p[i].value));
    return obj;
}

static json_t *config_json(const lora_adapter *a, const char *base_model, int fan_in_fan_out) {
    const lora_config *c = &a->cfg;
    json_t *targets;
    if (c->n_targets == 0) {
        targets = json_string(c->target_regex);
    } else {
        targets = json_array();
        for (int i = 0; i < c->n_targets; i++)
            json_array_append_new(targets, json_string(c->targets[i]));
    }
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(j, "base_model_name_or_path",
                        base_model ? json_string(base_model) : json_null());
    json_object_set_new(j, "r", json_integer(c->r));
    json_object_set_new(j, "lora_alpha", json_real(c->alpha));
    json_object_set_new(j, "lora_dropout", json_real(c->dropout));
    json_object_set_new(j, "target_modules", targets);
    json_object_set_new(j, "fan_in_fan_out", json_boolean(fan_in_fan_out));
    json_object_set_new(j, "use_rslora", json_boolean(c->use_rslora));
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "rank_pattern", patterns_json(c->rank_pattern, c->n_rank_pattern, 1));
    json_object_set_new(j, "alpha_pattern", patterns_json(c->alpha_pattern, c->n_alpha_pattern, 0));
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "modules_to_save", json_null());
    json_object_set_new(j, "layers_to_transform", json_null());
    json_object_set_new(j, "use_dora", json_false());
    return j;
}

int peft_save(const char *dir, const lora_adapter *a, const char *base_model, int fan_in_fan_out,
              lp_err *err) {
    if (fs_mkdirs(dir, err) < 0) return -1;
    char path[4096];
    st_writer *w = st_writer_new();
    int rc = st_writer_set_metadata(w, "format", "pt", err);
    for (int i = 0; i < a->n_tensors && rc == 0; i++) {
        const lora_tensor *t = &a->tensors[i];
        int64_t shape[2] = {t->rows, t->cols};
        rc = st_writer_add(w, t->name, DT_F32, 2, shape, a->params + t->offset, err);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (rc == 0) rc = st_writer_write(w, path, err);
    st_writer_free(w);
    if (rc) return -1;
    json_t *j = config_json(a, base_model, fan_in_fan_out);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(j);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}
