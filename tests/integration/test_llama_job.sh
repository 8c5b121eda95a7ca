#!/usr/bin/env bash
# The Llama family through the whole system, as GPT-2 goes: a distributed job on 2 shards and
# 2 workers with every Llama target, exact resume, the PEFT folder's names and fan_in_fan_out,
# loraps merge (merged logits = base + adapter logits), generate, eval and inspect; and a bf16
# model folder trains too.
source "$(dirname "$0")/lib.sh"

"$B/loraps" init-model --arch llama --preset tiny --seed 3 --out "$TMP/llama" >/dev/null
TARGETS=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
RUN=("$B/loraps" run --model "$TMP/llama" --servers 2 --workers 2 --seq-len 32 --micro-batch 2
    --target-modules "$TARGETS" --rank-pattern "down_proj=4" --lr 0.01 --save-every 4)

"${RUN[@]}" --out "$TMP/full" --max-steps 12 >"$TMP/full.out" 2>"$TMP/full.err" || fail "run failed"
"${RUN[@]}" --out "$TMP/part" --max-steps 12 --resume "$TMP/full/checkpoint-4" \
    >"$TMP/part.out" 2>"$TMP/part.err" || fail "run --resume failed"
cmp "$TMP/full/adapter_model.safetensors" "$TMP/part/adapter_model.safetensors" ||
    fail "Llama: resume from checkpoint-4 differs from the uninterrupted run"
first=$(awk '/^step 1\// {print $4}' "$TMP/full.out")
last=$(awk '/^step 12\// {print $4}' "$TMP/full.out")
awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a)}' || fail "loss did not fall: $first -> $last"
echo "llama run: loss $first -> $last, resume bit-identical"

# the PEFT folder: Linear weights (fan_in_fan_out false), PEFT's key names, the rank pattern
grep -q '"fan_in_fan_out": false' "$TMP/full/adapter_config.json" || fail "fan_in_fan_out not false"
"$B/loraps" inspect "$TMP/full" >"$TMP/inspect.out" || fail "inspect failed"
for key in base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight \
    base_model.model.model.layers.1.mlp.down_proj.lora_B.weight; do
    grep -q "$key" "$TMP/inspect.out" || fail "inspect does not list $key"
done
grep "layers.1.mlp.down_proj.lora_A.weight" "$TMP/inspect.out" | grep -q "\[4, 128\]\|\[4,128\]" ||
    fail "rank_pattern down_proj=4 not applied: $(grep down_proj.lora_A "$TMP/inspect.out" | head -1)"

# merge: the merged folder's logits equal the base model's with the adapter
"$B/loraps" merge --model "$TMP/llama" --adapter "$TMP/full" --out "$TMP/merged" >/dev/null ||
    fail "merge failed"
"$B/model_logits" "$TMP/llama" "$TMP/full" "$TMP/with_adapter.safetensors" || fail "logits failed"
"$B/model_logits" "$TMP/merged" - "$TMP/merged.safetensors" || fail "merged logits failed"
"$B/model_logits" "$TMP/llama" - "$TMP/base.safetensors" || fail "base logits failed"
"$B/adapter_diff" "$TMP/with_adapter.safetensors" "$TMP/merged.safetensors" 1e-5 ||
    fail "merged logits differ from base + adapter"
if "$B/adapter_diff" "$TMP/with_adapter.safetensors" "$TMP/base.safetensors" 1e-5 >/dev/null; then
    fail "the adapter does not change the logits, so the merge check proves nothing"
fi

# generate and eval with the adapter
"$B/loraps" generate --model "$TMP/llama" --adapter "$TMP/full" --prompt "hello" --max-new 8 \
    --seed 1 >"$TMP/gen.out" || fail "generate failed"
grep -q "^hello" "$TMP/gen.out" || fail "generate output: $(cat "$TMP/gen.out")"
printf 'one two three four five six seven eight nine ten\n' >"$TMP/text.txt"
"$B/loraps" eval --model "$TMP/llama" --adapter "$TMP/full" --data "$TMP/text.txt" --seq-len 8 \
    >"$TMP/eval.out" || fail "eval failed"
grep -Eq "^loss [0-9.]+  perplexity" "$TMP/eval.out" || fail "eval output: $(cat "$TMP/eval.out")"

# a bf16 folder (weights kept bf16 in memory) trains through the same job
"$B/loraps" init-model --arch llama --preset tiny --seed 3 --dtype bf16 --out "$TMP/llama16" >/dev/null
"$B/loraps" run --model "$TMP/llama16" --workers 2 --seq-len 32 --micro-batch 2 \
    --target-modules q_proj,v_proj --max-steps 4 --out "$TMP/bf16" >"$TMP/bf16.out" 2>"$TMP/bf16.err" ||
    fail "bf16 run failed"
grep -q "^step 4/4" "$TMP/bf16.out" || fail "bf16 run did not finish"
echo "ok: llama job, resume, merge, generate, eval, bf16"
