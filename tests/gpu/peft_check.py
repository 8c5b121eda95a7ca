#!/usr/bin/env python3
"""A PEFT folder written by a GPU job, loaded by the real consumers (transformers + peft), must
give the logits loraps computes with it.

  python3 tests/gpu/peft_check.py MODEL_DIR ADAPTER_DIR LORAPS_LOGITS.safetensors

LORAPS_LOGITS is tests/integration/model_logits' output for the same model and adapter (the C
model on the CPU, f32): "inputs" I32 [B,T] and "logits" F32 [B,T,V]. Loads MODEL_DIR with
AutoModelForCausalLM (float32, CPU), the adapter folder unchanged with PeftModel.from_pretrained,
runs the same inputs and prints the largest difference; exits 1 past 1e-4 (f32 against f32: only
summation order differs) or if the adapter changes nothing (a check that cannot fail otherwise).
"""

import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOL = 1e-4


def main():
    model_dir, adapter_dir, logits_path = sys.argv[1:4]
    ours = load_file(logits_path)
    inputs, want = ours["inputs"].long(), ours["logits"].float()
    base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    base.eval()
    with torch.no_grad():
        base_logits = base(input_ids=inputs).logits.float()
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        got = model(input_ids=inputs).logits.float()
    diff = (got - want).abs().max().item()
    moved = (got - base_logits).abs().max().item()
    print(f"peft_check: {adapter_dir}: logits max|peft - loraps| {diff:.3e} (tol {TOL:.0e}); "
          f"the adapter moves the logits by up to {moved:.3e}")
    if not diff <= TOL:
        print("peft_check: FAIL: PEFT's logits differ from loraps'")
        return 1
    if not moved > 100 * TOL:
        print("peft_check: FAIL: the adapter changes nothing (an untrained adapter proves nothing)")
        return 1
    print("peft_check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
