#!/usr/bin/env python3
"""What PEFT's LoRA actually adapts, for a list of target_modules / rank_pattern / alpha_pattern
configs, on a tiny GPT-2 built from a config (no download).

Needs torch, transformers and peft (it ran on the device machine; see README.md). Writes
golden/peft_matching.json (or the path given as argv[1]); tests/unit/test_lora_config.c builds
the same configs with lora_config_set_targets / lora_config_set_patterns and requires the same
adapted modules, ranks, alphas, scales, tensor names and shapes.

Each case also carries its C spelling: targets as "a,b" (list form) or "re:<regex>" (string
form), patterns as "key=value,key=value". A case PEFT refuses is recorded with its error.
"""
import json
import sys
import traceback

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from transformers import GPT2Config, GPT2LMHeadModel

PREFIX = "base_model.model."

# name, target_modules (list or regex string), r, alpha, use_rslora, rank_pattern, alpha_pattern
CASES = [
    ("list_c_attn", ["c_attn"], 8, 16, False, {}, {}),
    ("list_c_proj_both", ["c_proj"], 8, 16, False, {}, {}),
    ("list_attn_c_proj", ["attn.c_proj"], 8, 16, False, {}, {}),
    ("list_c_attn_mlp_c_fc", ["c_attn", "mlp.c_fc"], 4, 8, False, {}, {}),
    ("list_one_layer", ["h.1.attn.c_attn"], 8, 16, False, {}, {}),
    ("list_full_name", ["transformer.h.0.mlp.c_proj"], 2, 4, False, {}, {}),
    ("list_all_rslora", ["c_attn", "c_proj", "c_fc"], 4, 8, True, {}, {}),
    # A regex that also matches the MLP's activation and dropout modules.
    ("regex_layer1_mlp_any", r".*\.1\.mlp\..*", 8, 16, False, {}, {}),
    ("regex_layer1_mlp_linear", r".*\.1\.mlp\.c_.*", 8, 16, False, {}, {}),
    ("regex_c_attn_suffix", r".*c_attn", 8, 16, False, {}, {}),
    ("regex_alternation", r".*\.(c_attn|c_fc)", 8, 16, False, {}, {}),
    # A string is a whole-name regex: a bare module name matches nothing.
    ("regex_bare_name", "c_attn", 8, 16, False, {}, {}),
    ("list_no_match", ["q_proj"], 8, 16, False, {}, {}),
    # rank_pattern / alpha_pattern keys.
    ("rank_c_attn", ["c_attn", "c_proj", "c_fc"], 8, 16, False, {"c_attn": 4}, {}),
    ("rank_alpha_one_module", ["c_attn", "c_proj", "c_fc"], 8, 16, False,
     {"h.1.mlp.c_fc": 2}, {"h.1.mlp.c_fc": 3}),
    ("rank_regex_anchored", ["c_attn", "c_proj", "c_fc"], 8, 16, False,
     {"^transformer.h.0.*": 16}, {}),
    ("rank_overlap_general_first", ["c_attn"], 8, 16, False,
     {"c_attn": 4, "h.1.attn.c_attn": 2}, {}),
    ("rank_overlap_specific_first", ["c_attn"], 8, 16, False,
     {"h.1.attn.c_attn": 2, "c_attn": 4}, {}),
    ("rank_partial_segment", ["c_attn", "c_proj", "c_fc"], 8, 16, False, {"proj": 2}, {}),
    ("rank_key_alternation", ["c_attn", "c_proj", "c_fc"], 8, 16, False, {"c_attn|c_fc": 2}, {}),
    ("rank_regex_layers", ["c_attn", "c_proj", "c_fc"], 8, 16, False,
     {r"h\.[01]\.attn\.c_attn": 6}, {}),
    ("rank_full_name", ["c_attn", "c_proj", "c_fc"], 8, 16, False,
     {"transformer.h.0.attn.c_attn": 3}, {}),
    ("rank_with_model_prefix", ["c_attn"], 8, 16, False,
     {"base_model.model.transformer.h.0.attn.c_attn": 2}, {}),
    ("alpha_rslora", ["c_attn", "c_proj"], 4, 16, True, {"h.0.attn.c_attn": 16},
     {"attn.c_proj": 32}),
]


def c_targets(t):
    return "re:" + t if isinstance(t, str) else ",".join(t)


def c_patterns(p):
    return ",".join(f"{k}={v}" for k, v in p.items())


def tiny_model():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    return GPT2LMHeadModel(cfg).eval()


def run_case(case):
    name, targets, r, alpha, rslora, rank_pattern, alpha_pattern = case
    out = {
        "name": name,
        "peft": {"target_modules": targets, "r": r, "lora_alpha": alpha, "use_rslora": rslora,
                 "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern},
        "c": {"targets": c_targets(targets), "r": r, "alpha": alpha, "use_rslora": rslora,
              "rank_pattern": c_patterns(rank_pattern), "alpha_pattern": c_patterns(alpha_pattern)},
    }
    try:
        cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora,
                         rank_pattern=dict(rank_pattern), alpha_pattern=dict(alpha_pattern),
                         lora_dropout=0.0, fan_in_fan_out=True, bias="none")
        model = get_peft_model(tiny_model(), cfg)
    except Exception as e:  # recorded, not fatal: some cases are meant to be refused
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    mods = []
    init = {"max_abs_A_times_sqrt_in": 0.0, "max_abs_B": 0.0}
    for mname, m in model.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        assert mname.startswith(PREFIX), mname
        a = m.lora_A["default"].weight.detach()
        b = m.lora_B["default"].weight.detach()
        mods.append({"name": mname[len(PREFIX):], "r": int(m.r["default"]),
                     "lora_alpha": float(m.lora_alpha["default"]),
                     "scaling": float(m.scaling["default"]),
                     "in": int(m.in_features), "out": int(m.out_features)})
        init["max_abs_A_times_sqrt_in"] = max(init["max_abs_A_times_sqrt_in"],
                                              float(a.abs().max()) * m.in_features ** 0.5)
        init["max_abs_B"] = max(init["max_abs_B"], float(b.abs().max()))
    sd = get_peft_model_state_dict(model)
    out["ok"] = True
    out["modules"] = mods
    out["state_dict"] = [{"key": k, "shape": list(v.shape)} for k, v in sd.items()]
    out["init"] = init
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/reference/golden/peft_matching.json"
    base = tiny_model()
    linear = [n for n, m in base.named_modules() if type(m).__name__ in ("Conv1D", "Linear")]
    result = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "model": {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 64, "n_positions": 16},
        "linear_modules": linear,
        "cases": [],
    }
    for case in CASES:
        try:
            res = run_case(case)
        except Exception:
            traceback.print_exc()
            res = {"name": case[0], "ok": False, "error": "script failure"}
        result["cases"].append(res)
        if res["ok"]:
            desc = ", ".join(f"{m['name'][len('transformer.'):]} r{m['r']} a{m['lora_alpha']:g}"
                             f" s{m['scaling']:.4g}" for m in res["modules"])
        else:
            desc = "ERROR " + res["error"][:200]
        print(f"{res['name']}: {desc}", flush=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
