#!/usr/bin/env python3
"""Checks the golden vectors made by gpt2_lora_reference.py against real Hugging Face
transformers (GPT2LMHeadModel) + peft (LoraConfig, get_peft_model).

For each golden case: load tests/reference/golden/gpt2_tiny with from_pretrained, wrap it with
PEFT using the case's LoRA settings, copy the golden A/B into the LoRA modules, run forward,
compute the mean cross-entropy over targets != -1 ourselves (HF would shift labels), backward,
and compare logits, loss and every A/B gradient with the golden file. Runs once in float64 and
once in float32, on the CPU. Exits non-zero if logits differ by more than 1e-4 (abs), the loss
by more than 1e-4 (relative), or any gradient by more than 1e-4 (max|diff| / max|ref|).

Needs torch, transformers and peft (not installed locally: run it on the device machine).
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gpt2_lora_reference import GOLDEN, MODEL_DIR, st_read  # noqa: E402

LOGIT_TOL = 1e-4
LOSS_TOL = 1e-4
GRAD_TOL = 1e-4
CASES = ["all_targets", "c_attn_rslora"]


def load_model(dtype):
    from transformers import GPT2LMHeadModel

    try:
        model, info = GPT2LMHeadModel.from_pretrained(
            MODEL_DIR, attn_implementation="eager", output_loading_info=True
        )
    except TypeError:
        model, info = GPT2LMHeadModel.from_pretrained(MODEL_DIR, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    unexpected = list(info.get("unexpected_keys", []))
    if missing or unexpected:
        print(f"WARNING: loading mismatch: missing={missing} unexpected={unexpected}")
    model = model.to(dtype)
    model.eval()  # config has all dropouts 0 anyway
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        print("WARNING: lm_head is not tied to wte (the logits comparison will tell)")
    return model


def check_case(name, dtype):
    from peft import LoraConfig, get_peft_model

    golden, meta = st_read(os.path.join(GOLDEN, name + ".safetensors"))
    r = int(meta["r"])
    alpha = float(meta["lora_alpha"])
    rslora = meta["use_rslora"] == "true"
    targets_list = meta["target_modules"].split(",")

    model = load_model(dtype)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets_list,
        lora_dropout=0.0,
        fan_in_fan_out=True,
        init_lora_weights=False,
        use_rslora=rslora,
        bias="none",
    )
    pm = get_peft_model(model, cfg)

    # Copy golden A/B into the LoRA params; PEFT's names carry the adapter name ".default".
    lora_params = {}
    for pname, p in pm.named_parameters():
        if "lora_" in pname:
            key = pname.replace(".default.", ".")
            lora_params[key] = p
    golden_ab = {k for k in golden if k.startswith("base_model.model.")}
    if set(lora_params) != golden_ab:
        raise SystemExit(
            f"{name}: PEFT adapted other modules than the golden file:\n"
            f"  only PEFT: {sorted(set(lora_params) - golden_ab)}\n"
            f"  only golden: {sorted(golden_ab - set(lora_params))}"
        )
    with torch.no_grad():
        for k, p in lora_params.items():
            if tuple(p.shape) != tuple(golden[k].shape):
                raise SystemExit(f"{k}: PEFT shape {tuple(p.shape)} != {tuple(golden[k].shape)}")
            p.copy_(golden[k].to(dtype))
    for pname, p in pm.named_parameters():
        if p.requires_grad != ("lora_" in pname):
            raise SystemExit(f"{pname}: unexpected requires_grad={p.requires_grad}")

    ok = True
    scalings = set()
    for mod in pm.modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            scalings.add(float(mod.scaling["default"]))
    expect = float(meta["scale"])
    if len(scalings) != 1 or abs(next(iter(scalings)) - expect) > 1e-9 * expect:
        print(f"{name}: PEFT scaling {sorted(scalings)} differs from ours, {expect}")
        ok = False

    inputs = golden["inputs"].long()
    tgt = golden["targets"].long()
    pm.zero_grad(set_to_none=True)
    logits = pm(input_ids=inputs).logits
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-1, reduction="mean"
    )
    loss.backward()

    rows = []
    d = (logits.detach().double() - golden["logits"].double()).abs().max().item()
    rows.append(("logits", d, d / golden["logits"].abs().max().item(), d <= LOGIT_TOL))
    ref_loss = golden["loss"].double().item()
    d = abs(loss.item() - ref_loss)
    rows.append(("loss", d, d / abs(ref_loss), d / abs(ref_loss) <= LOSS_TOL))
    for k in sorted(lora_params):
        g = lora_params[k].grad
        ref = golden["grad." + k].double()
        d = (g.double() - ref).abs().max().item()
        rel = d / ref.abs().max().item()
        rows.append(("grad " + k.replace("base_model.model.transformer.", ""), d, rel,
                     rel <= GRAD_TOL))
    print(f"\n== {name} ({str(dtype).replace('torch.', '')}): r={r} alpha={alpha} "
          f"rslora={rslora} targets={targets_list} loss HF={loss.item():.8f} "
          f"golden={ref_loss:.8f}")
    print(f"  {'quantity':<40} {'max abs diff':>13} {'rel':>11}  ok")
    for q, d, rel, good in rows:
        print(f"  {q:<40} {d:13.3e} {rel:11.3e}  {'yes' if good else 'NO'}")
        ok &= good
    return ok


def main():
    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}")
    torch.manual_seed(0)
    ok = True
    for dtype in (torch.float64, torch.float32):
        for name in CASES:
            try:
                ok &= check_case(name, dtype)
            except Exception as e:  # report the other cases too
                import traceback

                traceback.print_exc()
                print(f"{name} ({dtype}): ERROR {e!r}")
                ok = False
    print("\nRESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
