#!/usr/bin/python3
"""Llama-family + LoRA golden vectors for tests/unit/test_llama_golden.c.

Two steps:

  /usr/bin/python3 tests/reference/llama_reference.py make
      (needs only torch; Debian's 1.13 works) writes two tiny random HF folders,
        golden/llama_tiny/   model_type llama: GQA (4 heads, 2 KV heads), untied lm_head,
                             no biases, llama3 rope scaling
        golden/qwen2_tiny/   model_type qwen2: q/k/v biases, 1 KV head, tied head
      and one case file golden/llama_<case>.safetensors per case (inputs, targets, the
      adapter's A and B), with logits, loss and gradients computed by the plain-torch float64
      model below (an independent implementation written from HF's modeling_llama/qwen2).

  python3 tests/reference/llama_reference.py hf OUTDIR
      (needs transformers + peft; ran on the device machine) loads each folder with
      AutoModelForCausalLM in float64 (eager attention), wraps it with peft's get_peft_model
      with the case's LoraConfig (rank_pattern and alpha_pattern too), copies A/B in, runs
      forward and backward, compares with the plain-torch values, and writes the case files
      again with HF's logits, loss and gradients into OUTDIR (these are the committed golden
      files), plus OUTDIR/llama_hf_check.log. It also runs float32 to show the level an fp32
      implementation reaches.

Golden file tensors: inputs/targets [B,T] I32 (targets -1 are ignored), the PEFT adapter tensors
base_model.model.<module>.lora_{A,B}.weight, logits [B,T,V], loss [1] (the mean over counted
targets), grad.<adapter tensor> (the gradient of that mean). Metadata: the LoraConfig (r,
lora_alpha, use_rslora, target_modules comma-separated, rank_pattern / alpha_pattern as
key=value,...), B, T, model (the folder), source (plain-torch or transformers+peft versions).
"""

import json
import math
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gpt2_lora_reference import st_read, st_write  # noqa: E402

GOLDEN = os.path.join(HERE, "golden")

MODELS = {
    "llama_tiny": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 384,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        # original context 32: with head_dim 16 the 8 frequencies fall in all three bands
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    },
    "qwen2_tiny": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "vocab_size": 320,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    },
}

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

CASES = [
    {
        "name": "llama_all_targets",
        "model": "llama_tiny",
        "r": 4,
        "lora_alpha": 8.0,
        "use_rslora": False,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"],
        "rank_pattern": {"k_proj": 2, "layers.1.mlp.down_proj": 6},
        "alpha_pattern": {"o_proj": 3.0},
        "B": 2,
        "T": 16,
        "seed": 2001,
    },
    {
        "name": "qwen2_qv_up_rslora",
        "model": "qwen2_tiny",
        "r": 8,
        "lora_alpha": 16.0,
        "use_rslora": True,
        "target_modules": ["q_proj", "v_proj", "up_proj"],
        "rank_pattern": {"layers.0.self_attn.v_proj": 3},
        "alpha_pattern": {},
        "B": 3,
        "T": 12,
        "seed": 2002,
    },
]


# ---------------------------------------------------------------------------------------------
# folders


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def weight_shapes(cfg):
    """(name, shape, kind) in a fixed order; kind: norm, matrix, bias, embed."""
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    hd = head_dim(cfg)
    QD, KVD = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    qwen2 = cfg["model_type"] == "qwen2"
    out = [("model.embed_tokens.weight", [cfg["vocab_size"], C], "embed")]
    dims = {"q_proj": (QD, C), "k_proj": (KVD, C), "v_proj": (KVD, C), "o_proj": (C, QD),
            "gate_proj": (I, C), "up_proj": (I, C), "down_proj": (C, I)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.append((p + "input_layernorm.weight", [C], "norm"))
        for m in MODULES:
            o, i = dims[m.split(".")[1]]
            out.append((p + m + ".weight", [o, i], "matrix"))
            if qwen2 and m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                out.append((p + m + ".bias", [o], "bias"))
        out.append((p + "post_attention_layernorm.weight", [C], "norm"))
    out.append(("model.norm.weight", [C], "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", [cfg["vocab_size"], C], "embed"))
    return out


def make_weights(cfg, seed):
    """Random weights wide enough that the model is far from linear (std 0.12 matrices, norm
    weights 1 + 0.1 N, embeddings std 0.15): a wrong rope, scale or norm moves the logits by much
    more than the test's tolerance."""
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape, kind in weight_shapes(cfg):
        n = torch.randn(shape, generator=g, dtype=torch.float64)
        if kind == "norm":
            t = 1.0 + 0.1 * n
        elif kind == "matrix":
            t = 0.12 * n
        elif kind == "bias":
            t = 0.1 * n
        else:
            t = 0.15 * n
        w[name] = t.float()
    return w


# ---------------------------------------------------------------------------------------------
# LoRA as PEFT applies it


def peft_matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def pattern_value(name, pattern, default):
    for key, value in pattern.items():
        if re.match(r"(.*\.)?(%s)$" % key, name):
            return value
    return default


def adapted(cfg, case):
    """[(module name, in, out, r, scale)] in forward order."""
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    hd = head_dim(cfg)
    QD, KVD = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    dims = {"q_proj": (C, QD), "k_proj": (C, KVD), "v_proj": (C, KVD), "o_proj": (QD, C),
            "gate_proj": (C, I), "up_proj": (C, I), "down_proj": (I, C)}
    out = []
    for l in range(cfg["num_hidden_layers"]):
        for m in MODULES:
            name = f"model.layers.{l}.{m}"
            if not peft_matches(name, case["target_modules"]):
                continue
            r = pattern_value(name, case["rank_pattern"], case["r"])
            alpha = pattern_value(name, case["alpha_pattern"], case["lora_alpha"])
            scale = alpha / math.sqrt(r) if case["use_rslora"] else alpha / r
            i, o = dims[m.split(".")[1]]
            out.append((name, i, o, r, scale))
    return out


def make_adapter(cfg, case):
    g = torch.Generator().manual_seed(case["seed"])
    tensors = {}
    for name, i, o, r, _ in adapted(cfg, case):
        bound = 1.0 / math.sqrt(i)
        tensors[f"base_model.model.{name}.lora_A.weight"] = (
            (torch.rand([r, i], generator=g, dtype=torch.float64) * 2 - 1) * bound).float()
        tensors[f"base_model.model.{name}.lora_B.weight"] = (
            0.1 * torch.randn([o, r], generator=g, dtype=torch.float64)).float()
    return tensors


def make_batch(cfg, case):
    g = torch.Generator().manual_seed(case["seed"] + 7)
    B, T, V = case["B"], case["T"], cfg["vocab_size"]
    inputs = torch.randint(0, V, [B, T], generator=g, dtype=torch.int64)
    targets = torch.randint(0, V, [B, T], generator=g, dtype=torch.int64)
    drop = torch.rand([B, T], generator=g) < 0.2
    targets[drop] = -1
    targets[:, -1] = -1
    return inputs.to(torch.int32), targets.to(torch.int32)


# ---------------------------------------------------------------------------------------------
# the plain-torch model (float64)


def inv_freq(cfg):
    hd = head_dim(cfg)
    f = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    s = cfg.get("rope_scaling")
    if s and s.get("rope_type", s.get("type")) == "llama3":
        old, lo, hi, factor = (s["original_max_position_embeddings"], s["low_freq_factor"],
                               s["high_freq_factor"], s["factor"])
        wavelen = 2 * math.pi / f
        scaled = torch.where(wavelen > old / lo, f / factor, f)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        f = torch.where(medium, smoothed, scaled)
    return f


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, lora, inputs):
    """lora: name -> (A, B, scale). Returns logits [B,T,V]."""
    B, T = inputs.shape
    NH, NKV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq(cfg)[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        if name in lora:
            A, Bm, s = lora[name]
            y = y + s * (x @ A.T) @ Bm.T
        return y

    h = w["model.embed_tokens.weight"][inputs.long()]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rmsnorm(h, w[p + "input_layernorm.weight"], eps)
        q = lin(x, p + "self_attn.q_proj").view(B, T, NH, hd).transpose(1, 2)
        k = lin(x, p + "self_attn.k_proj").view(B, T, NKV, hd).transpose(1, 2)
        v = lin(x, p + "self_attn.v_proj").view(B, T, NKV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(NH // NKV, dim=1)
        v = v.repeat_interleave(NH // NKV, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, NH * hd)
        h = h + lin(y, p + "self_attn.o_proj")
        x = rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = lin(x, p + "mlp.gate_proj")
        up = lin(x, p + "mlp.up_proj")
        h = h + lin(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj")
    x = rmsnorm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def mean_loss(logits, targets):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(),
                                             ignore_index=-1, reduction="mean")


def metadata(cfg, case, source):
    return {
        "model": case["model"],
        "r": case["r"],
        "lora_alpha": case["lora_alpha"],
        "use_rslora": "true" if case["use_rslora"] else "false",
        "target_modules": ",".join(case["target_modules"]),
        "rank_pattern": ",".join(f"{k}={v}" for k, v in case["rank_pattern"].items()),
        "alpha_pattern": ",".join(f"{k}={v:g}" for k, v in case["alpha_pattern"].items()),
        "B": case["B"],
        "T": case["T"],
        "source": source,
    }


def reference_case(cfg, w32, case):
    """Plain-torch float64 logits, loss and grads."""
    adapter = make_adapter(cfg, case)
    inputs, targets = make_batch(cfg, case)
    w = {k: v.double() for k, v in w32.items()}
    lora, params = {}, {}
    for name, _, _, _, scale in adapted(cfg, case):
        A = adapter[f"base_model.model.{name}.lora_A.weight"].double().requires_grad_()
        Bm = adapter[f"base_model.model.{name}.lora_B.weight"].double().requires_grad_()
        lora[name] = (A, Bm, scale)
        params[f"base_model.model.{name}.lora_A.weight"] = A
        params[f"base_model.model.{name}.lora_B.weight"] = Bm
    logits = forward(cfg, w, lora, inputs)
    loss = mean_loss(logits, targets)
    loss.backward()
    grads = {k: p.grad for k, p in params.items()}
    return adapter, inputs, targets, logits.detach(), loss.detach(), grads


def write_case(path, case, cfg, adapter, inputs, targets, logits, loss, grads, source):
    tensors = {"inputs": inputs, "targets": targets}
    tensors.update(adapter)
    tensors["logits"] = logits.float()
    tensors["loss"] = loss.reshape(1).float()
    for k, g in grads.items():
        tensors["grad." + k] = g.float()
    st_write(path, tensors, metadata(cfg, case, source))


def make():
    for name, cfg in MODELS.items():
        d = os.path.join(GOLDEN, name)
        os.makedirs(d, exist_ok=True)
        w = make_weights(cfg, 1000 + len(name))
        st_write(os.path.join(d, "model.safetensors"), w, {"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    # self-checks of the reference itself
    cfg = MODELS["llama_tiny"]
    x = torch.randn(3, 64, dtype=torch.float64)
    q = torch.randn(2, 4, 5, 16, dtype=torch.float64)
    ang = torch.arange(5, dtype=torch.float64)[:, None] * inv_freq(cfg)[None, :]
    c, s = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    rq = q * c + rotate_half(q) * s
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1)), "rope must be a rotation"
    assert torch.allclose(rmsnorm(x, torch.ones(64, dtype=torch.float64), 0).pow(2).mean(-1),
                          torch.ones(3, dtype=torch.float64))
    for case in CASES:
        cfg = MODELS[case["model"]]
        w32, _ = st_read(os.path.join(GOLDEN, case["model"], "model.safetensors"))
        out = reference_case(cfg, w32, case)
        # B = 0 makes the adapter a no-op
        path = os.path.join(GOLDEN, case["name"] + ".safetensors")
        write_case(path, case, cfg, *out, "plain-torch float64 " + torch.__version__)
        adapter, inputs, targets, logits, loss, grads = out
        print(f"{case['name']}: loss {loss.item():.6f}, max|logit| {logits.abs().max():.3f}, "
              f"{len(adapter)} adapter tensors, max|grad| "
              f"{max(g.abs().max().item() for g in grads.values()):.3e}")


# ---------------------------------------------------------------------------------------------
# transformers + peft


def hf_case(case, dtype, log):
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = MODELS[case["model"]]
    folder = os.path.join(GOLDEN, case["model"])
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype,
                                                     attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype,
                                                     attn_implementation="eager")
    model = model.to(dtype)
    model.eval()
    rot = getattr(model.model, "rotary_emb", None)
    if rot is not None and hasattr(rot, "inv_freq"):
        d = (rot.inv_freq.double().cpu() - inv_freq(cfg)).abs().max().item()
        rel = d / inv_freq(cfg).abs().max().item()
        line = f"{case['model']}: HF inv_freq vs ours: max rel diff {rel:.2e}"
        print(line)
        log.write(line + "\n")
    lc = LoraConfig(r=case["r"], lora_alpha=case["lora_alpha"],
                    target_modules=list(case["target_modules"]),
                    rank_pattern=dict(case["rank_pattern"]),
                    alpha_pattern=dict(case["alpha_pattern"]), use_rslora=case["use_rslora"],
                    lora_dropout=0.0, init_lora_weights=False)
    pm = get_peft_model(model, lc)
    golden, meta = st_read(os.path.join(GOLDEN, case["name"] + ".safetensors"))
    want = {n: (r, s) for n, _, _, r, s in adapted(cfg, case)}
    params = {}
    for name, p in pm.named_parameters():
        if ".lora_" not in name:
            assert not p.requires_grad, name
            continue
        key = name.replace(".default", "")
        assert key in golden, f"PEFT adapted {key}, which the golden file lacks"
        assert tuple(p.shape) == tuple(golden[key].shape), key
        with torch.no_grad():
            p.copy_(golden[key].to(dtype))
        params[key] = p
    n_golden = sum(1 for k in golden if k.startswith("base_model.model."))
    assert len(params) == n_golden, f"PEFT has {len(params)} LoRA tensors, golden {n_golden}"
    for name, mod in pm.named_modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            short = name.replace("base_model.model.", "", 1)
            r, s = want[short]
            assert mod.r["default"] == r, (short, mod.r["default"], r)
            assert abs(mod.scaling["default"] - s) < 1e-9 * s, (short, mod.scaling["default"], s)
    inputs, targets = golden["inputs"].long(), golden["targets"].long()
    logits = pm(input_ids=inputs).logits
    loss = mean_loss(logits, targets)
    loss.backward()
    grads = {k: p.grad.detach() for k, p in params.items()}
    # against the plain-torch reference
    dl = (logits.detach().double() - golden["logits"].double()).abs().max().item()
    lrel = abs(loss.item() - golden["loss"].item()) / abs(golden["loss"].item())
    gw, gname = 0.0, ""
    for k, g in grads.items():
        ref = golden["grad." + k].double()
        rel = (g.double() - ref).abs().max().item() / ref.abs().max().item()
        if rel > gw:
            gw, gname = rel, k
    line = (f"{case['name']:22s} {str(dtype):14s} vs plain-torch: logits max|diff| {dl:.2e} "
            f"loss rel {lrel:.2e} worst grad rel {gw:.2e} ({gname})")
    print(line)
    log.write(line + "\n")
    ok = dl <= 1e-4 and lrel <= 1e-4 and gw <= 1e-4
    source = (f"transformers {transformers.__version__} + peft {peft.__version__} "
              f"+ torch {torch.__version__} ({dtype})")
    adapter = {k: v for k, v in golden.items() if k.startswith("base_model.model.")}
    return ok, (adapter, golden["inputs"], golden["targets"], logits.detach(), loss.detach(),
                grads, source)


def hf(outdir):
    os.makedirs(outdir, exist_ok=True)
    import peft
    import transformers
    with open(os.path.join(outdir, "llama_hf_check.log"), "w") as log:
        log.write(f"torch {torch.__version__}, transformers {transformers.__version__}, "
                  f"peft {peft.__version__}\n")
        all_ok = True
        for case in CASES:
            for dtype in (torch.float64, torch.float32):
                try:
                    ok, out = hf_case(case, dtype, log)
                except Exception as e:  # keep going: one run must say everything
                    import traceback
                    traceback.print_exc()
                    log.write(f"{case['name']} {dtype}: FAILED: {e!r}\n")
                    all_ok = False
                    continue
                all_ok &= ok
                if dtype == torch.float64:
                    cfg = MODELS[case["model"]]
                    adapter, inputs, targets, logits, loss, grads, source = out
                    write_case(os.path.join(outdir, case["name"] + ".safetensors"), case, cfg,
                               adapter, inputs, targets, logits, loss, grads, source)
        log.write("PASS\n" if all_ok else "FAIL\n")
        print("PASS" if all_ok else "FAIL")
    return 0 if all_ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "hf":
        sys.exit(hf(sys.argv[2] if len(sys.argv) > 2 else "/tmp/llama_hf"))
    make()
