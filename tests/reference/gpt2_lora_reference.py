#!/usr/bin/python3
"""GPT-2 + LoRA in plain PyTorch, and the golden vectors the C model is checked against.

The model follows Hugging Face's GPT2LMHeadModel exactly (Conv1D weights stored [in, out],
gelu_new, tied output head), and LoRA follows PEFT applied to Conv1D with fan_in_fan_out=True:
    y = x @ W + b + scale * (x @ A.T) @ B.T,   A [r, in], B [out, r],
    scale = alpha / r   (alpha / sqrt(r) with rsLoRA).
Everything is computed in float64 from the float32-rounded stored values, then stored as
float32, so the reference's own rounding error is negligible next to the C model's.

Needs only torch (Debian's python3-torch works: run it with /usr/bin/python3). Writes
tests/reference/golden/gpt2_tiny/{config.json, model.safetensors} and one
tests/reference/golden/<case>.safetensors per case. check_against_hf.py re-checks the output
against real transformers + peft.
"""

import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
MODEL_DIR = os.path.join(GOLDEN, "gpt2_tiny")

CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 64,
    "n_ctx": 64,
    "vocab_size": 512,
    "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new",
    "tie_word_embeddings": True,
    # No dropout anywhere, so HF in train or eval mode computes the same thing.
    "attn_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "resid_pdrop": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

LORA_MODULES = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]

CASES = [
    {
        "name": "all_targets",
        "r": 4,
        "lora_alpha": 8.0,
        "use_rslora": False,
        "target_modules": ["c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
        "B": 2,
        "T": 16,
        "seed": 1001,
    },
    {
        "name": "c_attn_rslora",
        "r": 8,
        "lora_alpha": 16.0,
        "use_rslora": True,
        "target_modules": ["c_attn"],
        "B": 3,
        "T": 24,
        "seed": 1002,
    },
]

# ---------------------------------------------------------------------------------------------
# safetensors: an 8-byte little-endian header length, a JSON header, then the data.

_DTYPES = {
    torch.float32: ("F32", 4),
    torch.float64: ("F64", 8),
    torch.int32: ("I32", 4),
    torch.int64: ("I64", 8),
}
_FROM_CODE = {code: dt for dt, (code, _) in _DTYPES.items()}


def st_write(path, tensors, metadata=None):
    """tensors: an ordered dict name -> tensor (contiguous, CPU). Written atomically."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        code, size = _DTYPES[t.dtype]
        data = t.numpy().tobytes() if hasattr(t, "numpy") else bytes(t.untyped_storage())
        assert len(data) == t.numel() * size
        header[name] = {
            "dtype": code,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def st_read(path):
    """Returns (dict name -> tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, h in header.items():
        dt = _FROM_CODE[h["dtype"]]
        b, e = h["data_offsets"]
        buf = bytearray(raw[base + b : base + e])
        t = torch.frombuffer(buf, dtype=dt) if e > b else torch.empty(0, dtype=dt)
        out[name] = t.reshape(h["shape"]).clone()
    return out, meta


# ---------------------------------------------------------------------------------------------
# The model.


def make_weights(cfg, seed):
    """HF GPT-2 weights, float32, with non-trivial biases and LayerNorm parameters.

    The matrices are drawn wider than GPT-2's init (std 0.02): with 0.02 the attention is
    nearly uniform and GELU nearly linear in this tiny model, so e.g. exact erf-GELU in place
    of gelu_new moved the logits by only 9e-5, inside the C test's 1e-4 tolerance. At these
    stds the same slip moves them by ~1e-3 and a missing 1/sqrt(hs) by ~3."""
    g = torch.Generator().manual_seed(seed)
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]

    def normal(*shape, std=0.1, mean=0.0):
        return (mean + std * torch.randn(*shape, generator=g, dtype=torch.float64)).float()

    w = {}
    w["transformer.wte.weight"] = normal(V, C)
    w["transformer.wpe.weight"] = normal(P, C, std=0.05)
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = normal(C, std=0.1, mean=1.0)
        w[p + "ln_1.bias"] = normal(C, std=0.05)
        w[p + "attn.c_attn.weight"] = normal(C, 3 * C)
        w[p + "attn.c_attn.bias"] = normal(3 * C, std=0.02)
        w[p + "attn.c_proj.weight"] = normal(C, C)
        w[p + "attn.c_proj.bias"] = normal(C, std=0.02)
        w[p + "ln_2.weight"] = normal(C, std=0.1, mean=1.0)
        w[p + "ln_2.bias"] = normal(C, std=0.05)
        w[p + "mlp.c_fc.weight"] = normal(C, 4 * C, std=0.15)
        w[p + "mlp.c_fc.bias"] = normal(4 * C, std=0.02)
        w[p + "mlp.c_proj.weight"] = normal(4 * C, C)
        w[p + "mlp.c_proj.bias"] = normal(C, std=0.02)
    w["transformer.ln_f.weight"] = normal(C, std=0.1, mean=1.0)
    w["transformer.ln_f.bias"] = normal(C, std=0.05)
    return w


def lora_scale(case):
    r = case["r"]
    return case["lora_alpha"] / (math.sqrt(r) if case["use_rslora"] else r)


def peft_matches(module_name, targets):
    """PEFT's list form: the full name equals an entry or ends with "." + entry."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def adapted_modules(cfg, case):
    names = []
    for i in range(cfg["n_layer"]):
        for m in LORA_MODULES:
            name = f"transformer.h.{i}.{m}"
            if peft_matches(name, case["target_modules"]):
                names.append(name)
    return names


def peft_key(module_name, ab):
    return f"base_model.model.{module_name}.lora_{ab}.weight"


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased, as torch's LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * w + b


def forward(cfg, w, lora, scale, inputs):
    """w: name -> float64 tensor; lora: module name -> (A [r,in], B [out,r]) float64.
    Returns logits [B, T, V] (float64)."""
    Bsz, T = inputs.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    eps = cfg["layer_norm_epsilon"]

    def conv1d(name, x):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        if name in lora:
            A, Bm = lora[name]
            y = y + scale * ((x @ A.t()) @ Bm.t())  # dropout 0
        return y

    pos = torch.arange(T)
    h = w["transformer.wte.weight"][inputs] + w["transformer.wpe.weight"][pos][None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        x = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = conv1d(p + "attn.c_attn", x)
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(Bsz, T, nh, hs).transpose(1, 2)
        k = k.view(Bsz, T, nh, hs).transpose(1, 2)
        v = v.view(Bsz, T, nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        att = att.masked_fill(~causal, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(Bsz, T, C)
        h = h + conv1d(p + "attn.c_proj", y)
        x = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = h + conv1d(p + "mlp.c_proj", gelu_new(conv1d(p + "mlp.c_fc", x)))
    h = layer_norm(h, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return h @ w["transformer.wte.weight"].t()


def mean_loss(logits, targets):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=-1, reduction="mean"
    )


def make_case(cfg, w32, case):
    g = torch.Generator().manual_seed(case["seed"])
    Bsz, T, r, V = case["B"], case["T"], case["r"], cfg["vocab_size"]
    assert T <= cfg["n_positions"]
    inputs = torch.randint(0, V, (Bsz, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, V, (Bsz, T), generator=g, dtype=torch.int64)
    # Ignore some tokens: the last of each row (as a shifted LM would) and a few random ones.
    targets[:, -1] = -1
    drop = torch.rand(Bsz, T, generator=g) < 0.2
    targets[drop] = -1
    assert (targets >= 0).sum() > 0

    mods = adapted_modules(cfg, case)
    adapter32 = {}
    for name in mods:
        W = w32[name + ".weight"]
        fan_in, fan_out = W.shape
        bound = 1.0 / math.sqrt(fan_in)
        A = ((torch.rand(r, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * bound).float()
        B = (0.1 * torch.randn(fan_out, r, generator=g, dtype=torch.float64)).float()
        adapter32[peft_key(name, "A")] = A
        adapter32[peft_key(name, "B")] = B

    w64 = {k: v.double() for k, v in w32.items()}
    lora = {}
    params = {}
    for name in mods:
        A = adapter32[peft_key(name, "A")].double().requires_grad_(True)
        B = adapter32[peft_key(name, "B")].double().requires_grad_(True)
        lora[name] = (A, B)
        params[peft_key(name, "A")] = A
        params[peft_key(name, "B")] = B
    logits = forward(cfg, w64, lora, lora_scale(case), inputs)
    loss = mean_loss(logits, targets)
    loss.backward()

    out = {
        "inputs": inputs.to(torch.int32),
        "targets": targets.to(torch.int32),
    }
    out.update(adapter32)
    out["logits"] = logits.detach().float()
    out["loss"] = loss.detach().float().reshape(1)
    for k, p in params.items():
        out["grad." + k] = p.grad.float()
    meta = {
        "r": case["r"],
        "lora_alpha": repr(case["lora_alpha"]),
        "use_rslora": "true" if case["use_rslora"] else "false",
        "target_modules": ",".join(case["target_modules"]),
        "B": Bsz,
        "T": T,
        "n_valid": int((targets >= 0).sum()),
        "scale": repr(lora_scale(case)),
        "generated_by": "tests/reference/gpt2_lora_reference.py (float64)",
    }
    return out, meta


def self_check(cfg, w32):
    """Our LayerNorm and gelu_new agree with torch's own (where torch has tanh-GELU), and the
    adapter is a no-op when B = 0."""
    x = torch.randn(3, 7, dtype=torch.float64)
    lw, lb = torch.rand(7, dtype=torch.float64), torch.rand(7, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(x, (7,), lw, lb, 1e-5)
    assert torch.allclose(layer_norm(x, lw, lb, 1e-5), ref, atol=1e-12)
    if "approximate" in torch.nn.functional.gelu.__doc__:
        ref = torch.nn.functional.gelu(x, approximate="tanh")
        assert torch.allclose(gelu_new(x), ref, atol=1e-12)
    w64 = {k: v.double() for k, v in w32.items()}
    inputs = torch.arange(10).reshape(2, 5)
    name = "transformer.h.0.attn.c_attn"
    zero_b = {name: (torch.randn(4, cfg["n_embd"], dtype=torch.float64),
                     torch.zeros(3 * cfg["n_embd"], 4, dtype=torch.float64))}
    assert torch.equal(forward(cfg, w64, {}, 1.0, inputs), forward(cfg, w64, zero_b, 2.0, inputs))


def main():
    os.makedirs(MODEL_DIR, exist_ok=True)
    cfg = CONFIG
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    w32 = make_weights(cfg, seed=20240601)
    self_check(cfg, w32)
    st_write(os.path.join(MODEL_DIR, "model.safetensors"), w32, {"format": "pt"})
    # Round trip through our own reader.
    back, _ = st_read(os.path.join(MODEL_DIR, "model.safetensors"))
    assert all(torch.equal(back[k], w32[k]) for k in w32)

    for case in CASES:
        out, meta = make_case(cfg, w32, case)
        path = os.path.join(GOLDEN, case["name"] + ".safetensors")
        st_write(path, out, meta)
        back, bmeta = st_read(path)
        assert all(torch.equal(back[k], out[k]) for k in out) and bmeta["r"] == str(case["r"])
        print(f"case {case['name']}: r={case['r']} alpha={case['lora_alpha']} "
              f"rslora={case['use_rslora']} scale={lora_scale(case):.6f} "
              f"targets={meta['target_modules']} B={meta['B']} T={meta['T']} "
              f"valid={meta['n_valid']}")
        print(f"  max|logit| = {out['logits'].abs().max().item():.6f}")
        print(f"  loss       = {out['loss'].item():.8f}")
        gnames = [k for k in out if k.startswith("grad.")]
        for k in gnames[:2] + gnames[-2:]:
            print(f"  |{k}| = {out[k].norm().item():.6e}")
    total = 0
    for root, _, files in os.walk(GOLDEN):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"golden total: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
