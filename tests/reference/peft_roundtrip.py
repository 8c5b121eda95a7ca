#!/usr/bin/env python3
"""loraps adapters and checkpoints against the real consumers: transformers + peft.

Direction 1 (ours -> theirs), inputs committed in golden/peft_roundtrip/, made by loraps:
  ours_checkpoint/       a checkpoint folder written by loraps-ps (2 shards, 2 workers, 20 steps;
                         targets c_attn,c_proj,c_fc, rank_pattern h.1.mlp.c_fc=4, alpha_pattern
                         h.0.attn.c_attn=32): adapter_config.json, adapter_model.safetensors,
                         optimizer.safetensors, trainer_state.json
  base_logits.safetensors, ours_logits.safetensors   the C model's logits (tests/integration/
                         model_logits) on fixed tokens, without and with that adapter
  ours_merged/           `loraps merge --model golden/gpt2_tiny --adapter ours_checkpoint`
  ours_merged_logits.safetensors   the C model's logits of ours_merged (no adapter)
It loads golden/gpt2_tiny with GPT2LMHeadModel.from_pretrained, the checkpoint folder unchanged
with PeftModel.from_pretrained, and compares: the adapter weights PEFT holds with the file
(exact), the logits with ours (max abs <= 1e-4), and merge_and_unload() with our merged folder
(weights and logits).

Direction 2 (theirs -> ours): a tiny GPT-2 (golden/gpt2_tiny) wrapped by get_peft_model with
several targets, a rank_pattern and an alpha_pattern, A from PEFT's init and B random non-zero,
saved with save_pretrained to OUT/peft_made/, and its logits on the same tokens to
OUT/peft_logits.safetensors. tests/unit/test_peft_roundtrip.c loads that folder with peft_load
and compares the C model's logits with them.

  python3 tests/reference/peft_roundtrip.py OUT_DIR     (needs torch, transformers, peft)

Writes OUT_DIR/peft_roundtrip.json with every number; exits 1 if a check fails.
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
BASE = os.path.join(GOLDEN, "gpt2_tiny")
RT = os.path.join(GOLDEN, "peft_roundtrip")
LOGIT_TOL = 1e-4
MERGE_REL_TOL = 1e-5

results = {"checks": {}}
failed = []


def check(name, value, tol):
    ok = value <= tol
    print(f"  {name:58s} {value:.3e}  (<= {tol:g})  {'PASS' if ok else 'FAIL'}", flush=True)
    results["checks"][name] = {"value": value, "tolerance": tol, "pass": ok}
    if not ok:
        failed.append(name)


def load_base():
    from transformers import GPT2LMHeadModel

    try:
        m = GPT2LMHeadModel.from_pretrained(BASE, attn_implementation="eager")
    except TypeError:
        m = GPT2LMHeadModel.from_pretrained(BASE)
    m = m.float()
    m.eval()
    return m


def logits_of(model, inputs):
    with torch.no_grad():
        return model(input_ids=inputs).logits.float()


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def lora_modules(model):
    out = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            out[name] = {
                "r": mod.r["default"],
                "lora_alpha": mod.lora_alpha["default"],
                "scaling": float(mod.scaling["default"]),
            }
    return out


def main():
    import peft
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from transformers import GPT2LMHeadModel

    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(RT, "out")
    os.makedirs(out_dir, exist_ok=True)
    results["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    print("versions:", results["versions"], flush=True)
    torch.set_grad_enabled(False)

    base_ref = load_file(os.path.join(RT, "base_logits.safetensors"))
    inputs = base_ref["inputs"].long()

    print("0. the base model (transformers) vs the C model, no adapter", flush=True)
    check("base logits max abs diff", max_abs(logits_of(load_base(), inputs), base_ref["logits"]),
          LOGIT_TOL)

    print("1. our checkpoint folder with PeftModel.from_pretrained", flush=True)
    ck = os.path.join(RT, "ours_checkpoint")
    pm = PeftModel.from_pretrained(load_base(), ck)
    pm.eval()
    mods = lora_modules(pm)
    results["ours_lora_modules"] = mods
    for n, v in mods.items():
        print(f"    {n}: r={v['r']} alpha={v['lora_alpha']} scaling={v['scaling']:.6g}")
    ours_file = load_file(os.path.join(ck, "adapter_model.safetensors"))
    sd = get_peft_model_state_dict(pm)
    same_keys = sorted(sd.keys()) == sorted(ours_file.keys())
    results["ours_keys_match"] = same_keys
    print(f"    state dict keys equal the file's: {same_keys} ({len(sd)} tensors)")
    if not same_keys:
        failed.append("adapter keys")
        print("    peft:", sorted(sd.keys())[:4], "file:", sorted(ours_file.keys())[:4])
    else:
        check("adapter weights held by PEFT vs the file (max abs)",
              max(max_abs(sd[k], ours_file[k]) for k in sd), 0.0)
    b_norm = max(ours_file[k].abs().max().item() for k in ours_file if "lora_B" in k)
    results["ours_max_abs_B"] = b_norm
    print(f"    max |B| in our adapter: {b_norm:.4g} (non-zero: the adapter changes the output)")
    ours = load_file(os.path.join(RT, "ours_logits.safetensors"))
    peft_logits = logits_of(pm, inputs)
    check("logits: PeftModel(our checkpoint) vs the C model", max_abs(peft_logits, ours["logits"]),
          LOGIT_TOL)
    results["adapter_effect_max_abs"] = max_abs(peft_logits, base_ref["logits"])
    print(f"    (the adapter moves the logits by up to {results['adapter_effect_max_abs']:.3g})")

    print("2. merge_and_unload() vs `loraps merge`", flush=True)
    merged = pm.merge_and_unload()
    merged.eval()
    ours_merged = GPT2LMHeadModel.from_pretrained(os.path.join(RT, "ours_merged")).float()
    ours_merged.eval()
    a, b = merged.state_dict(), ours_merged.state_dict()
    keys = [k for k in a if k in b and a[k].is_floating_point()]
    worst_abs, worst_rel, worst_key = 0.0, 0.0, ""
    for k in keys:
        d = max_abs(a[k], b[k])
        rel = d / max(a[k].double().abs().max().item(), 1e-30)
        if rel > worst_rel:
            worst_abs, worst_rel, worst_key = d, rel, k
    results["merge_worst_tensor"] = worst_key
    print(f"    {len(keys)} tensors compared; worst {worst_key}")
    check("merged weights: PEFT vs loraps merge (max |diff| / max |w|)", worst_rel, MERGE_REL_TOL)
    ml = logits_of(merged, inputs)
    check("logits: PEFT merged vs transformers on our merged folder",
          max_abs(ml, logits_of(ours_merged, inputs)), LOGIT_TOL)
    om = load_file(os.path.join(RT, "ours_merged_logits.safetensors"))
    check("logits: PEFT merged vs the C model on our merged folder", max_abs(ml, om["logits"]),
          LOGIT_TOL)

    print("3. an adapter made by PEFT (save_pretrained) for loraps to load", flush=True)
    torch.manual_seed(20261129)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["c_attn", "c_proj", "c_fc"],
        rank_pattern={"h.0.attn.c_attn": 6, "mlp.c_proj": 2},
        alpha_pattern={"h.1.attn.c_proj": 3.0},
        lora_dropout=0.0,
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
    )
    pm2 = get_peft_model(load_base(), cfg)
    g = torch.Generator().manual_seed(7)
    for name, mod in pm2.named_modules():
        if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
            w = mod.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.2)
    pm2.eval()
    theirs = logits_of(pm2, inputs)
    made = os.path.join(out_dir, "peft_made")
    pm2.save_pretrained(made)
    results["peft_made_lora_modules"] = lora_modules(pm2)
    for n, v in results["peft_made_lora_modules"].items():
        print(f"    {n}: r={v['r']} alpha={v['lora_alpha']} scaling={v['scaling']:.6g}")
    save_file({"inputs": inputs.to(torch.int32).contiguous(), "logits": theirs.contiguous()},
              os.path.join(out_dir, "peft_logits.safetensors"))
    # reloading what was saved gives the same logits (the folder is what PEFT means)
    again = PeftModel.from_pretrained(load_base(), made)
    again.eval()
    check("logits: PEFT reloading its own saved adapter", max_abs(logits_of(again, inputs), theirs),
          0.0)
    results["peft_made_effect_max_abs"] = max_abs(theirs, base_ref["logits"])
    print(f"    (this adapter moves the logits by up to {results['peft_made_effect_max_abs']:.3g})")

    results["pass"] = not failed
    with open(os.path.join(out_dir, "peft_roundtrip.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    print("RESULT:", "PASS" if not failed else "FAIL " + ", ".join(failed), flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
