#!/usr/bin/env bash
# loraps generate and loraps eval end to end: a tiny model with its tokenizer, an adapter
# trained by loraps train, deterministic greedy generation, eval with and without the adapter
# on the demo task's own text, prompt masking, and clear errors for bad input.
source "$(dirname "$0")/lib.sh"

make_model tiny "$TMP/model"
[ -f "$TMP/model/tokenizer.json" ] || fail "init-model wrote no tokenizer.json"

# greedy generation is deterministic and only as long as asked
g1=$("$B/loraps" generate --model "$TMP/model" --prompt "The cat" --temperature 0 --max-new 12)
g2=$("$B/loraps" generate --model "$TMP/model" --prompt "The cat" --temperature 0 --max-new 12)
[ "$g1" = "$g2" ] || fail "greedy generation differs between runs: '$g1' vs '$g2'"
case "$g1" in "The cat"*) ;; *) fail "output does not start with the prompt: '$g1'" ;; esac
# sampling: the same seed gives the same text, another seed (almost surely) another
s1=$("$B/loraps" generate --model "$TMP/model" --prompt "A" --seed 5 --max-new 30)
s2=$("$B/loraps" generate --model "$TMP/model" --prompt "A" --seed 5 --max-new 30)
s3=$("$B/loraps" generate --model "$TMP/model" --prompt "A" --seed 6 --max-new 30)
[ "$s1" = "$s2" ] || fail "same seed, different samples"
[ "$s1" != "$s3" ] || fail "seeds 5 and 6 gave the same 30 sampled tokens"

# an adapter trained in one process; generation with it differs from the base model
"$B/loraps" train --model "$TMP/model" --max-steps 30 --seq-len 32 --out "$TMP/adapter" \
    >"$TMP/train.out" 2>"$TMP/train.err"
# (sampled with the same seed: the adapter moves the distribution even where the argmax stays)
sa=$("$B/loraps" generate --model "$TMP/model" --adapter "$TMP/adapter" --prompt "A" --seed 5 \
    --max-new 30)
[ "$sa" != "$s1" ] || fail "the trained adapter does not change sampled generation"

# eval: text with documents, and jsonl where only completions count
printf 'The quick brown fox jumps over the lazy dog.\n\nPack my box with five dozen jugs.\n' \
    >"$TMP/text.txt"
"$B/loraps" eval --model "$TMP/model" --data "$TMP/text.txt" --seq-len 16 >"$TMP/eval.out"
grep -Eq "^loss [0-9.]+  perplexity [0-9.]+$" "$TMP/eval.out" || fail "no loss line: $(cat "$TMP/eval.out")"
"$B/loraps" eval --model "$TMP/model" --adapter "$TMP/adapter" --data "$TMP/text.txt" \
    --seq-len 16 >"$TMP/eval_adapter.out"
base=$(awk '/^loss/ {print $2}' "$TMP/eval.out")
adapted=$(awk '/^loss/ {print $2}' "$TMP/eval_adapter.out")
[ "$base" != "$adapted" ] || fail "the adapter does not change the eval loss ($base)"
printf '%s\n' '{"prompt": "Question: two plus two?", "completion": " Four."}' \
    '{"prompt": "Question: the sky?", "completion": " Blue."}' >"$TMP/qa.jsonl"
"$B/loraps" eval --model "$TMP/model" --data "$TMP/qa.jsonl" --seq-len 16 --layout pad \
    >"$TMP/qa.out"
counted=$(awk '/counted tokens/ {print $(NF-2)}' "$TMP/qa.out")
total=$(printf ' Four. Blue.' | "$B/loraps" tokenize --model "$TMP/model" | tr -cd ',' | wc -c)
# only the completion tokens (and their end-of-text) are counted, never the prompts
[ "$counted" -gt 0 ] && [ "$counted" -le $((total + 1 + 2)) ] ||
    fail "jsonl eval counted $counted tokens; completions are about $((total + 1))"

# bad input: each a clear error, non-zero exit
expect_error() { # pattern command...
    local pattern=$1
    shift
    if "$@" >"$TMP/bad.out" 2>"$TMP/bad.err"; then fail "accepted: $*"; fi
    grep -q "$pattern" "$TMP/bad.err" || fail "error for '$*' lacks '$pattern': $(cat "$TMP/bad.err")"
}
expect_error "top-p" "$B/loraps" generate --model "$TMP/model" --prompt x --top-p 2
expect_error "required" "$B/loraps" generate --model "$TMP/model"
expect_error "adapter" "$B/loraps" generate --model "$TMP/model" --adapter "$TMP/nothing" --prompt x
expect_error "data" "$B/loraps" eval --model "$TMP/model" --data "$TMP/missing.txt"
echo '{"text": broken' >"$TMP/bad.jsonl"
expect_error "bad.jsonl:1" "$B/loraps" eval --model "$TMP/model" --data "$TMP/bad.jsonl" --seq-len 8
echo "ok: generate and eval"
