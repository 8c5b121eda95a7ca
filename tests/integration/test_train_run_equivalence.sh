# One training step everywhere: `loraps train` (one process), `loraps run --workers 1` and
# `loraps run --workers 2` (sync) train the same adapter from the same job, with LoRA dropout on
# and gradient accumulation, whenever the global batch is the same: 8 sequences per step as
# 1 x (2 micro-batches of 4) in train and with one worker, and 2 x (2 micro-batches of 2) with
# two. That holds only if each sequence's dropout masks depend on (seed, its global index) and
# not on which micro-batch or worker computes it. Final adapters agree within 1e-5 relative.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
JOB=(--max-steps 20 --seq-len 32 --lr 0.01 --max-grad-norm 0.5 --lr-scheduler cosine
     --warmup-steps 2 --grad-accum 2 --threads 1)
DROPOUT=${EQUIV_DROPOUT:-0.1} # EQUIV_DROPOUT=0 checks the rest alone

train() { # NAME MICRO [job options]
    local name=$1 micro=$2
    "$B/loraps" train --model "$TMP/tiny" --out "$TMP/$name" --micro-batch "$micro" "${JOB[@]}" \
        "${@:3}" >"$TMP/$name.out" 2>"$TMP/$name.err" || fail "loraps train ($name) failed"
    [ -f "$TMP/$name/adapter_model.safetensors" ] || fail "$name wrote no adapter"
}
run() { # NAME WORKERS MICRO
    local name=$1 workers=$2 micro=$3
    "$B/loraps" run --model "$TMP/tiny" --out "$TMP/$name" --workers "$workers" \
        --micro-batch "$micro" --lora-dropout "$DROPOUT" "${JOB[@]}" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" || fail "loraps run ($name) failed"
    grep -q "step 20/20" "$TMP/$name.out" || fail "$name: no progress line for step 20"
    [ -f "$TMP/$name/adapter_model.safetensors" ] || fail "$name wrote no adapter"
}
same() { # A B what
    "$B/adapter_diff" "$TMP/$1/adapter_model.safetensors" "$TMP/$2/adapter_model.safetensors" 1e-5 ||
        fail "$3 differ"
}

train train 4 --lora-dropout "$DROPOUT"
run w1 1 4
run w2 2 2
same train w1 "loraps train and loraps run --workers 1"
same train w2 "loraps train (1 x 2 x 4) and loraps run --workers 2 (2 x 2 x 2)"
same w1 w2 "loraps run --workers 1 and --workers 2"

# Dropout really acts in these runs: without it the adapter is another one.
if [ "$DROPOUT" != 0 ]; then
    train train_nodrop 4 --lora-dropout 0
    if "$B/adapter_diff" "$TMP/train/adapter_model.safetensors" \
        "$TMP/train_nodrop/adapter_model.safetensors" 1e-3; then
        fail "lora_dropout $DROPOUT changed nothing: the test would not see the masks"
    fi
fi
echo PASS
