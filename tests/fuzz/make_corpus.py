#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/ (the golden files are copied by hand; see
README.md). Run from anywhere: python3 tests/fuzz/make_corpus.py. Deterministic, so the committed
files are exactly its output.

Wire seeds are protobuf written by hand here (no protobuf module needed): field numbers from
proto/loraps.proto. Each seed is the fuzz_wire input format: records of [u16 LE length][bytes],
header first."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- protobuf by hand ------------------------------------------------------------------------

def varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wt):
    return varint(field << 3 | wt)


def f_varint(field, v):
    return key(field, 0) + varint(v)


def f_fixed64(field, v):
    return key(field, 1) + struct.pack("<Q", v)


def f_double(field, v):
    return key(field, 1) + struct.pack("<d", v)


def f_float(field, v):
    return key(field, 5) + struct.pack("<f", v)


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


def frame(index, dtype, offset, numel):
    return f_bytes(3, f_varint(1, index) + f_varint(2, dtype) + f_varint(3, offset) +
                   f_varint(4, numel))


def header(body_field, body, frames=b"", protocol=1, job_id=0x1234):
    return f_varint(1, protocol) + f_fixed64(2, job_id) + frames + f_bytes(body_field, body)


def records(parts):
    return b"".join(struct.pack("<H", len(p)) + p for p in parts)


HELLO, WELCOME, PULL, PARAMS, PUSH, ACK, HEARTBEAT, BYE, ERROR, NORM, SHARD_STATE = range(10, 21)
F32, BF16, F16 = 0, 1, 2
DSIZE = {F32: 4, BF16: 2, F16: 2}

# The fixed spec of fuzz_wire.c: 4 sites at r=2 (c_attn 4->12, c_proj 4->4, two layers):
# tensor numels, and their placement on 2 shards by the bin-packing of common/shard_map.c.
NUMEL = [8, 24, 8, 8, 8, 24, 8, 8]
SHARD = {0: [0, 1, 3, 6], 1: [2, 4, 5, 7]}


def tensor_bytes(numel, dtype, value=0.25):
    if dtype == F32:
        return struct.pack("<%df" % numel, *([value] * numel))
    if dtype == BF16:
        return struct.pack("<%dH" % numel, *([struct.unpack("<I", struct.pack("<f", value))[0] >> 16] * numel))
    return struct.pack("<%de" % numel, *([value] * numel))


def push_message(shard, dtype, chunk=None, value=0.25, body=None):
    frames, parts = b"", []
    for t in SHARD[shard]:
        n = NUMEL[t]
        c = chunk or n
        for off in range(0, n, c):
            m = min(c, n - off)
            frames += frame(t, dtype, off, m)
            parts.append(tensor_bytes(m, dtype, value))
    if body is None:
        body = (f_varint(1, 7) + f_varint(2, 3) + f_varint(3, 3) + f_varint(4, 64) +
                f_double(5, 123.5) + f_double(7, 0.5))
    return [header(PUSH, body, frames)] + parts


def jobspec():
    return (f_varint(1, 8) + f_float(2, 16.0) + f_float(3, 0.0) + f_bytes(5, "c_attn,c_proj") +
            f_bytes(6, "h.0.attn.c_attn=4") + f_bytes(7, "c_proj=8") + f_float(8, 1e-3) +
            f_float(9, 0.9) + f_float(10, 0.999) + f_float(11, 1e-8) + f_float(12, 0.01) +
            f_bytes(13, "cosine") + f_varint(14, 2) + f_float(15, 1.0) + f_varint(16, 2) +
            f_varint(17, 32) + f_varint(18, 1) + f_varint(19, 10) + f_varint(20, 42) +
            f_varint(21, 1) + f_bytes(22, "sync") + f_varint(24, 2) + f_varint(25, BF16) +
            f_varint(26, 500) + f_varint(27, 5000))


def welcome():
    spec = b""
    for i, n in enumerate(NUMEL):
        spec += f_bytes(6, f_bytes(1, "base_model.model.h.%d.lora_%s.weight" % (i // 2, "AB"[i % 2])) +
                        f_varint(2, 2) + f_varint(3, n // 2))
    placement = b"".join(varint(0 if i in SHARD[0] else 1) for i in range(len(NUMEL)))
    body = (f_varint(1, 1) + f_varint(2, 99) + f_varint(3, 0xABCDEF) + f_varint(4, 0) +
            f_varint(5, 2) + spec + f_bytes(7, placement) + f_bytes(8, jobspec()) +
            f_varint(9, 0) + f_varint(10, 0) + f_varint(11, 0))
    return [header(WELCOME, body)]


def wire_seeds():
    w = "fuzz_wire"
    put(w, "hello", records([header(HELLO, f_varint(1, 0xABCDEF) + f_varint(2, 1) +
                                    f_bytes(3, "host") + f_varint(4, 4242), job_id=0)]))
    put(w, "welcome", records(welcome()))
    put(w, "pull", records([header(PULL, f_varint(1, 7) + f_varint(2, 3) + f_varint(3, 3))]))
    put(w, "heartbeat", records([header(HEARTBEAT, f_varint(1, 7) + f_varint(2, 3))]))
    put(w, "bye", records([header(BYE, f_varint(1, 7))]))
    put(w, "error", records([header(ERROR, f_varint(1, 6) + f_bytes(2, "frame 0: bad"))]))
    put(w, "ack", records([header(ACK, f_varint(1, 3) + f_varint(2, 1) + f_varint(3, 4))]))
    put(w, "norm_share", records([header(NORM, f_varint(1, 1) + f_varint(2, 3) +
                                         f_double(3, 2.5) + f_varint(4, 99))]))
    put(w, "push_f32_shard0", records(push_message(0, F32)))
    put(w, "push_f32_shard1", records(push_message(1, F32)))
    put(w, "push_bf16_shard0", records(push_message(0, BF16)))
    put(w, "push_f16_shard1_chunked", records(push_message(1, F16, chunk=5)))
    put(w, "push_nan", records(push_message(0, F32, value=float("nan"))))
    # Params: the same frames as a push to shard 1, under a Params body.
    frames = b"".join(frame(t, F32, 0, NUMEL[t]) for t in SHARD[1])
    put(w, "params", records([header(PARAMS, f_varint(1, 4), frames)] +
                             [tensor_bytes(NUMEL[t], F32) for t in SHARD[1]]))
    shard_state = push_message(0, F32, body=f_varint(1, 0) + f_varint(2, 5) + f_varint(3, 5) +
                               f_varint(4, 99) + f_varint(5, 1))
    shard_state[0] = shard_state[0].replace(key(PUSH, 2), key(SHARD_STATE, 2), 1)
    put(w, "shard_state", records(shard_state))
    # Declared and sent frame counts disagree; a header with no body; a wrong size.
    p = push_message(0, F32)
    put(w, "push_missing_frame", records(p[:-1]))
    put(w, "push_extra_frame", records(p + [b"\0\0\0\0"]))
    put(w, "push_short_frame", records(p[:-1] + [p[-1][:-4]]))
    put(w, "no_body", records([f_varint(1, 1) + f_fixed64(2, 1)]))
    put(w, "empty", b"")
    put(w, "not_protobuf", records([b"\xff\xff\xff\xff\x0f"]))


# ---- text formats: hand-written edge cases ---------------------------------------------------

def text_seeds():
    g = "fuzz_gpt2_config"
    put(g, "minimal", '{"n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 4, "vocab_size": 3}')
    put(g, "bad_types", '{"model_type": "gpt2", "n_embd": "64", "n_layer": 2.5, "n_head": 0, '
        '"n_positions": -1, "vocab_size": 1e99, "activation_function": "relu"}')
    put(g, "huge", '{"n_embd": 2147483647, "n_layer": 2147483647, "n_head": 1, '
        '"n_positions": 2147483647, "vocab_size": 2147483647, "layer_norm_epsilon": 1e-300, '
        '"tie_word_embeddings": false, "activation_function": "gelu_pytorch_tanh"}')
    put(g, "not_object", '[1, 2, 3]')

    l = "fuzz_llama_config"
    put(l, "qwen2_gqa", '{"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 48, '
        '"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1, '
        '"vocab_size": 100, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, '
        '"rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": true}')
    put(l, "mistral_linear", '{"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, '
        '"num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 8, '
        '"head_dim": 8, "vocab_size": 50, "max_position_embeddings": 128, "sliding_window": 16, '
        '"rope_scaling": {"type": "linear", "factor": 2.0}, "attention_bias": true, '
        '"mlp_bias": true}')
    put(l, "bad_heads", '{"model_type": "llama", "hidden_size": 30, "intermediate_size": 0, '
        '"num_hidden_layers": 1, "num_attention_heads": 7, "num_key_value_heads": 3, '
        '"head_dim": -4, "vocab_size": 10, "rope_scaling": {"rope_type": "yarn"}}')

    j = "fuzz_job_file"
    put(j, "full", '{"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "use_rslora": true, '
        '"target_modules": ["c_attn", "mlp.c_fc"], "rank_pattern": "h.0.attn.c_attn=4", '
        '"alpha_pattern": "c_fc=32", "lr": 0.0002, "adam_beta1": 0.9, "adam_beta2": 0.999, '
        '"adam_epsilon": 1e-8, "weight_decay": 0.01, "lr_scheduler": "cosine", '
        '"warmup_steps": 10, "max_grad_norm": 1.0, "micro_batch": 4, "seq_len": 256, '
        '"grad_accum": 2, "max_steps": 100, "eval_every": 10, "save_every": 50, '
        '"keep_checkpoints": 2, "seed": 42, "threads": 2, "mode": "async", "staleness": 2, '
        '"workers": 4, "wire_dtype": "bf16", "heartbeat_ms": 500, "heartbeat_timeout_ms": 5000}')
    put(j, "regex_targets", '{"target_modules": "re:.*\\\\.(q|v)_proj", "lr-scheduler": "linear", '
        '"epochs": 2, "max_steps": 0}')
    put(j, "twice", '{"lora_alpha": 16, "lora-alpha": 8}')
    put(j, "bad", '{"r": -1, "lr": "fast", "mode": "sync", "unknown_key": 1, "seed": 1.5}')
    put(j, "long_string", '{"target_modules": "' + "c_attn," * 100 + 'c_proj"}')

    p = "fuzz_peft_config"
    put(p, "list_targets", '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": '
        '["c_proj", "c_fc", "c_attn"], "rank_pattern": {"h.0.attn.c_attn": 6, "mlp.c_proj": 2}, '
        '"alpha_pattern": {"h.1.attn.c_proj": 3.0}, "fan_in_fan_out": true}')
    put(p, "regex_targets", '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": '
        '".*\\\\.(c_attn|c_proj|c_fc)", "rank_pattern": {"^transformer.h.0.attn.c_attn$": 6, '
        '"mlp.c_proj": 2}, "alpha_pattern": {"h.1.attn.c_proj": 3.0}}')
    put(p, "refused", '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true, '
        '"target_modules": ["c_attn"], "layers_to_transform": [0], "bias": "all"}')
    put(p, "alpha_overflows_float", '{"r": 4, "lora_alpha": 1e39, "target_modules": ["c_attn"], '
        '"alpha_pattern": {"h.1.attn.c_proj": 1e300}, "rank_pattern": {"c_attn": 4097}}')
    put(p, "bad_regex", '{"r": 4, "lora_alpha": 8, "target_modules": "([", '
        '"rank_pattern": {"(": 2}}')

    d = "fuzz_dataset"
    # byte 0: format | pad<<2 | by_line<<3 | skip<<4 | long<<5 | special<<7; byte 1: T-1 | val<<5
    put(d, "txt_pack", b"\x00\x07" + b"The quick brown fox.\n\nJumps over\nthe lazy dog.\n")
    put(d, "txt_lines_pad", b"\x0c\x03" + b"one\ntwo two\n\nthree three three three three\n")
    put(d, "jsonl_text", b"\x01\x0f" + b'{"text": "hello world"}\n{"text": "caf\\u00e9 <|endoftext|>"}\n')
    put(d, "jsonl_prompt_pad", b"\x25\x47" + b'{"prompt": "Q: 2+2?", "completion": " 4"}\n'
        b'{"prompt": "Q: a very long prompt that will not fit", "completion": " A"}\n')
    put(d, "jsonl_bad_skip", b"\x11\x03" + b'{"text": 1}\nnot json\n{"text": "\\ud800"}\n'
        b'{"prompt": "p"}\n{"text": "ok"}\n')
    put(d, "txt_invalid_utf8", b"\x10\x03" + b"good line\n\n\xff\xfe bad\n\nmore good\n")
    bin_hdr = b"LPTK" + struct.pack("<IIIQ", 1, 2, 0, 6)
    put(d, "bin_u16", b"\x02\x02" + bin_hdr + struct.pack("<6H", 5, 6, 0, 7, 8, 0))
    put(d, "bin_u32_notok_pad", b"\x07\x62" + b"LPTK" + struct.pack("<IIIQ", 1, 4, 0xFFFFFFFF, 5) +
        struct.pack("<5I", 1, 2, 3, 599, 600))
    put(d, "bin_count_lies", b"\x02\x02" + b"LPTK" + struct.pack("<IIIQ", 1, 2, 0, 1 << 62) +
        struct.pack("<2H", 1, 2))

    t = "fuzz_tokenizer_json"
    put(t, "tiny_bytelevel", '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, '
        '"\\u0120": 3, "\\u0120a": 4}, "merges": ["a b", ["\\u0120", "a"]]}, '
        '"added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": true, '
        '"normalized": false, "lstrip": false, "rstrip": false, "single_word": false}], '
        '"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}, '
        '"decoder": {"type": "ByteLevel"}}')
    put(t, "tiny_fallback", '{"normalizer": {"type": "Sequence", "normalizers": [{"type": '
        '"Prepend", "prepend": "\\u2581"}, {"type": "Replace", "pattern": {"String": " "}, '
        '"content": "\\u2581"}]}, "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, '
        '"unk_token": "<unk>", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, '
        '"\\u2581": 4, "a": 5, "\\u2581a": 6}, "merges": ["\\u2581 a"]}, "added_tokens": '
        '[{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", '
        '"special": true}], "post_processor": {"type": "TemplateProcessing", "single": '
        '[{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], '
        '"special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}, "decoder": '
        '{"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\\u2581"}, '
        '"content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", '
        '"content": " ", "start": 1, "stop": 0}]}}' + "\0" + '{"bos_token": "<s>", "eos_token": '
        '{"content": "</s>"}}')
    put(t, "tiny_split_regex", '{"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": '
        '"Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\\\p{L}+|\\\\d"}, '
        '"behavior": "Isolated", "invert": false}, {"type": "Digits", "individual_digits": true}, '
        '{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}, "model": '
        '{"type": "BPE", "ignore_merges": true, "vocab": {"1": 0, "a": 1}, "merges": []}}')

    put(t, "tiny_normalizers", '{"normalizer": {"type": "Sequence", "normalizers": [{"type": '
        '"NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"}, {"type": "NFKC"}, {"type": '
        '"NFD"}, {"type": "NFC"}]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": '
        'false}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}')

    e = "fuzz_tokenizer_encode"
    for i, s in enumerate([b"Hello world, don't stop 12345!", "caf\u00e9 e\u0301 \u4e2d\u6587 \U0001F44D\U0001F3FD".encode(),
                           b"<|endoftext|> <|user|> <s> </s> <|im_start|>", b"  \t\r\n  x  \n\n",
                           b"\xff\xfe\xc3"]):
        put(e, "text%d" % i, bytes([i]) + s)
        put(e, "text%d_special" % i, bytes([i | 0x30]) + s)


def safetensors(entries, metadata=None, pad=True):
    """entries: (name, dtype, shape, raw bytes); ranges laid out in order."""
    import json
    h, data = {}, b""
    if metadata is not None:
        h["__metadata__"] = metadata
    for name, dt, shape, raw in entries:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(h, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    s = "fuzz_safetensors"
    put(s, "f32_f16_bf16", safetensors([
        ("a", "F32", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 6)),
        ("b.weight", "F16", [4], struct.pack("<4e", 1, -2, 0.5, 65504)),
        ("c", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xFF80)),
    ], {"format": "pt"}))
    put(s, "other_dtypes", safetensors([
        ("i8", "I8", [3], b"\x01\xff\x7f"), ("u8", "U8", [0], b""), ("f64", "F64", [1], struct.pack("<d", 2.5)),
        ("i64", "I64", [], struct.pack("<q", -1)), ("bool", "BOOL", [2], b"\x00\x01"),
    ]))
    put(s, "unaligned", safetensors([("x", "F32", [2], struct.pack("<2f", 1, 2))], pad=False))
    put(s, "empty_header", struct.pack("<Q", 2) + b"{}")
    put(s, "overlap", struct.pack("<Q", 78) + b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' + b"\0" * 4)


# ---- dictionaries: the parsers' own key and value names, and JSON's tokens --------------------

DICT_SOURCES = {  # paths under common/
    "fuzz_gpt2_config": ["formats/gpt2_config_json.c"],
    "fuzz_llama_config": ["formats/llama_config_json.c"],
    "fuzz_job_file": ["train/job.c", "formats/lora_targets.c"],
    "fuzz_peft_config": ["formats/peft.c", "formats/lora_targets.c"],
    "fuzz_tokenizer_json": ["text/tokenizer.c"],
    "fuzz_dataset": ["text/dataset.c"],
    "fuzz_safetensors": ["formats/safetensors.c", "base/dtype.c"],
}
JSON_TOKENS = ["{", "}", "[", "]", ":", ",", "\\\"", "true", "false", "null", "0", "-1", "1e308",
               "0.5", "4294967296", "9223372036854775808", "\\\\u0000", "\\\\ud800"]


def metrics_seeds():
    """metrics.jsonl edge cases for fuzz_run_metrics: a cut-short last line, a malformed and a
    field-less line, a resume repeating steps, CRLF ends, every optional field."""
    line = ('{"step":%d,"loss":%s,"tokens":64,"step_ms":10.5,"lr":0.002,"grad_norm":1.5,'
            '"compute_s":0.004,"time":1700000000.5,"workers":2,"bytes":{"0":{"sent":70,'
            '"received":65000},"1":{"sent":72,"received":65002}}%s}')
    val = ',"val_loss":2.5,"val_ppl":12.18,"val_tokens":512,"val_step":%d'
    full = [line % (s, 3.0 - 0.1 * s, val % (s - 1) if s % 2 else "") for s in range(1, 7)]
    put("fuzz_run_metrics", "steps", "\n".join(full) + "\n")
    put("fuzz_run_metrics", "cut_short", "\n".join(full)[:-17])
    put("fuzz_run_metrics", "bad_lines", full[0] + '\n{"step": 2, "loss": oops}\n{"loss": 1}\n'
        '[]\n\n' + full[3] + "\r\n")
    put("fuzz_run_metrics", "resumed", "\n".join(full + full[2:]) + "\n")


def dicts():
    import re
    src = os.path.join(HERE, "..", "..", "common")
    for target, files in DICT_SOURCES.items():
        words = set()
        for f in files:
            with open(os.path.join(src, f)) as fh:
                words |= set(re.findall(r'"([A-Za-z_][A-Za-z0-9_.\-]{1,40})"', fh.read()))
        words = {w for w in words if not w.endswith((".h", ".c")) and w not in JSON_TOKENS}
        lines = ['"%s"' % t for t in JSON_TOKENS] + ['"%s"' % w for w in sorted(words)]
        os.makedirs(os.path.join(HERE, "dict"), exist_ok=True)
        with open(os.path.join(HERE, "dict", target + ".dict"), "w") as fh:
            fh.write("# made by make_corpus.py from common/%s\n" % ", common/".join(files))
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    dicts()
    safetensors_seeds()
    wire_seeds()
    text_seeds()
    metrics_seeds()
