#!/usr/bin/env python3
r"""Golden ids for common/tokenizer.c, made by the real `tokenizers` library, offline.

    python3 tests/reference/tokenizer_reference.py OUTDIR

Builds (trains on golden/tokenizers/train_corpus.txt, the demo tokenizer's own corpus) four kinds
of BPE tokenizer.json the way the model families ship them, and loads a fifth, ours:

  gpt2         byte-level BPE, ByteLevel pre-tokenizer (GPT-2's regex), a special and a
               non-special added token
  gpt2_prefix  the same file with add_prefix_space = true
  llama3       byte-level BPE with a Split regex (Llama 3's) + ByteLevel(use_regex=false),
               ignore_merges, TemplateProcessing adding <|begin_of_text|>
  llama2       SentencePiece-style BPE as HF's Llama 2 / TinyLlama files: normalizer
               Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, byte_fallback with <0xNN>
               tokens, fuse_unk, decoder Replace/ByteFallback/Fuse/Strip, BOS by template
  metaspace    SentencePiece-style with the Metaspace pre-tokenizer (prepend_scheme "first",
               split) and decoders ByteFallback + Metaspace, byte_fallback
  qwen2        Qwen2's shape: NFC normalizer, Split with Qwen2's regex (single digits) +
               ByteLevel, <|im_start|>/<|im_end|>, added tokens with lstrip / rstrip
  digits       normalizers Strip + Replace(regex \s+ -> " "), pre-tokenizers Digits(individual)
               + Split(punctuation, merged_with_previous) + ByteLevel(add_prefix_space)
  demo512      golden/tokenizers/demo512/tokenizer.json as written by bpe_write_demo_tokenizer
  demo4096     (C; 4096: every merge learned from the corpus), loaded unchanged

    python3 tests/reference/tokenizer_reference.py --nfc-tables

needs only Python's own unicodedata (runs anywhere, no `tokenizers`): writes
common/tokenizer_nfc_data.c (the tables tokenizer_nfc.c normalizes with) and
golden/tokenizers/nfc_cases.json (strings and their NFC, for tests/unit/test_tokenizer.c).

For each it encodes the edge-case corpus below and writes OUTDIR/<name>/tokenizer.json and
OUTDIR/<name>.json: per string the ids with special tokens recognised, with them encoded as text
(encode_special_tokens), with the post-processor (add_special_tokens), and both decodes.
"""
import json
import os
import sys
import unicodedata

if __name__ == "__main__" and "--nfc-tables" in sys.argv:
    tokenizers = None
else:
    import tokenizers
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
GOLD = os.path.join(HERE, "golden", "tokenizers")
OUT = sys.argv[1] if len(sys.argv) > 1 else GOLD

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

EDGE = [
    "", " ", "  ", "\t", "\n", "\n\n", " \n ", "\r\n", "a", "Hello world", " Hello world",
    "Hello  world", "Hello   world   ", "hello\tworld\n", "line1\nline2\r\nline3\n\n\nend",
    "  leading", "trailing  ", "   ", "\t\t\tx", " \t \n x",
    "I'm you're we've they'll he'd it's can't", "I'M YOU'RE WE'VE THEY'LL HE'D IT'S",
    "'s 't 're 've 'm 'll 'd", "rock 'n' roll", "don''t", "'tis", "x's",
    "0", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "v1.2.3-rc4",
    "2024-03-15T12:34:56Z", "\u0663\u0664\u0665", "\u00bd \u00b2 \u216b", "a1b22c333d4444",
    "\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F469\u200D\U0001F4BB",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA",
    "\u2764\ufe0f", "I \u2764\ufe0f NY \U0001F5FD!", "emoji\U0001F600in\U0001F680words",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4e2d\u6587\u6d4b\u8bd5\uff0c\u6807\u70b9\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "e\u0301 a\u0300 o\u0308", "\u00c5 A\u030a", "Z\u00fcrich", "\ufb01 ligature",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 hello \u043c\u0438\u0440",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 English", "\u03b1\u03b2\u03b3 \u0391\u0392\u0393",
    "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e44\u0e17\u0e22",
    "<|endoftext|>", "a<|endoftext|>b", "hello <|endoftext|> world", "<|endoftext|><|endoftext|>",
    "<|endoftext", "<|user|>hi<|user|>", " <|user|> x", "<s>hi</s>", "<s> hi </s>",
    "<|begin_of_text|>x<|eot_id|>", "text <unk> more",
    "def f(x):\n    return x**2  # comment\n", "int main(void) { return 0; }",
    "    indented\n\tx", "x=1;y=2", "!!!???...", "--- *** ===", "\"quoted\" 'single'",
    "(a[b]{c})", "@#$%^&*", "a.b.c", "~`|\\/", "a\u00a0b", "a\u3000b", "a\u2003b",
    "\u200b zero width", "a\x0bb\x0cc", "\u2581 literal", "multiple   spaces  here",
    "a" * 100, "ab " * 50, "The year 1999 ended; 2000 began. It's 12:00!",
    "HTTPS://Example.COM/path?q=1&r=two#frag", "snake_case camelCase PascalCase kebab-case",
    "\u00bfQu\u00e9? \u00a1S\u00ed!", "a <|tool|>  b", "x  <|mask|> y", "<|im_start|>user\nhi<|im_end|>",
    "  spaced  out\t\n text  ", "Wait... what?! Yes; no: maybe.", "Call 555-0199, ext. 42.", "\u00a9 \u00ae \u2122 \u00b0 \u00b1 \u00d7 \u00f7 \u2264 \u2265 \u2260 \u221e",
]


def corpus_lines():
    with open(os.path.join(GOLD, "train_corpus.txt"), encoding="utf-8") as f:
        text = f.read()
    return [l for l in text.split("\n")]


def long_cases():
    text = "\n".join(corpus_lines())
    return [text[:3000], text[5000:9000], text[-4000:]]


def train(tok, trainer):
    tok.train_from_iterator(corpus_lines(), trainer)
    return tok


def reload(d):
    return Tokenizer.from_str(json.dumps(d))


def build_gpt2():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train(tok, trainers.BpeTrainer(vocab_size=1200, min_frequency=1, show_progress=False,
                                   special_tokens=["<|endoftext|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_tokens([AddedToken("<|user|>", special=False, normalized=True)])
    return tok


def build_llama3():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train(tok, trainers.BpeTrainer(vocab_size=1200, min_frequency=1, show_progress=False,
                                   special_tokens=["<|begin_of_text|>", "<|end_of_text|>",
                                                   "<|eot_id|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = True
    return reload(d)


def with_byte_fallback(tok, decoder):
    """The trained SentencePiece-style model, renumbered as Llama 2's: <unk> <s> </s>, then
    <0x00>..<0xFF>, then the learned pieces; byte_fallback and fuse_unk on."""
    tok.decoder = decoder
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)])
    d = json.loads(tok.to_str())
    old = d["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for piece, _ in sorted(old.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    d["model"]["vocab"] = vocab
    d["model"]["byte_fallback"] = True
    d["model"]["fuse_unk"] = True
    d["model"]["unk_token"] = "<unk>"
    d["added_tokens"] = [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    return reload(d)


def build_llama2():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    train(tok, trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False,
                                   special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=110))
    return with_byte_fallback(tok, decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)]))


def build_metaspace():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=True)
    train(tok, trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False,
                                   special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=110))
    return with_byte_fallback(tok, decoders.Sequence([
        decoders.ByteFallback(),
        decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)]))


def build_qwen2():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train(tok, trainers.BpeTrainer(vocab_size=1200, min_frequency=1, show_progress=False,
                                   special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_tokens([AddedToken("<|tool|>", special=False, lstrip=True, rstrip=True,
                               normalized=False)])
    tok.add_special_tokens([AddedToken("<|mask|>", special=True, lstrip=True, rstrip=False,
                                       normalized=False)])
    return tok


def build_digits():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Strip(),
                                           normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(Regex(r"[.,;:!?]"), behavior="merged_with_previous"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    train(tok, trainers.BpeTrainer(vocab_size=1000, min_frequency=1, show_progress=False,
                                   special_tokens=["<|endoftext|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def cases(tok):
    out = []
    for text in EDGE + long_cases():
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        post = tok.encode(text, add_special_tokens=True).ids
        tok.encode_special_tokens = True
        nospecial = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        out.append({"text": text, "nfc": unicodedata.is_normalized("NFC", text), "ids": ids, "ids_nospecial": nospecial, "ids_post": post,
                    "decode": tok.decode(ids, skip_special_tokens=False),
                    "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    builders = [("gpt2", build_gpt2), ("llama3", build_llama3), ("llama2", build_llama2),
                ("metaspace", build_metaspace), ("qwen2", build_qwen2), ("digits", build_digits),
                ("demo512", lambda: Tokenizer.from_file(os.path.join(GOLD, "demo512",
                                                                     "tokenizer.json"))),
                ("demo4096", lambda: Tokenizer.from_file(os.path.join(GOLD, "demo4096",
                                                                      "tokenizer.json")))]
    failed = 0
    for name, build in builders:
        try:
            tok = build()
            todo = [(name, tok)]
            if name == "gpt2":
                d = json.loads(tok.to_str())
                d["pre_tokenizer"]["add_prefix_space"] = True
                todo.append(("gpt2_prefix", reload(d)))
            for n, t in todo:
                os.makedirs(os.path.join(OUT, n), exist_ok=True)
                if not n.startswith("demo"):
                    t.save(os.path.join(OUT, n, "tokenizer.json"))
                cs = cases(t)
                rt = sum(c["decode"] == c["text"] for c in cs)
                with open(os.path.join(OUT, n + ".json"), "w") as f:
                    json.dump({"tokenizer": n, "tokenizers_version": tokenizers.__version__,
                               "vocab_size": t.get_vocab_size(with_added_tokens=True),
                               "cases": cs}, f, ensure_ascii=True, indent=0)
                print(f"{n}: vocab {t.get_vocab_size(with_added_tokens=True)}, {len(cs)} cases, "
                      f"decode(encode(s)) == s for {rt}")
        except Exception as e:  # one failure must not cost the others
            failed += 1
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
    try:  # transformers loads the demo folder as a fast tokenizer
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(os.path.join(GOLD, "demo512"))
        ids = at("Hello world<|endoftext|>")["input_ids"]
        print(f"transformers AutoTokenizer on demo512: {type(at).__name__}, eos "
              f"{at.eos_token_id}, 'Hello world<|endoftext|>' -> {ids}")
    except Exception as e:
        print(f"transformers check: {type(e).__name__}: {e}")
    print(f"tokenizers {tokenizers.__version__}; {failed} failed")
    return 1 if failed else 0


def nfc_tables():
    """Canonical decompositions (full NFD of each code point that has one, Hangul syllables
    left to the algorithm), non-zero combining classes, and the primary composites."""
    import random
    root = os.path.dirname(os.path.dirname(HERE))
    nfd, ccc, comp = [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if unicodedata.combining(c):
            ccc.append((cp, unicodedata.combining(c)))
        if 0xAC00 <= cp <= 0xD7A3:
            continue
        d = unicodedata.normalize("NFD", c)
        if d != c:
            nfd.append((cp, [ord(x) for x in d]))
        m = unicodedata.decomposition(c)
        if m and not m.startswith("<"):
            parts = [int(x, 16) for x in m.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", c) == c:
                comp.append((parts[0], parts[1], cp))
    comp.sort()
    flat, index = [], []
    for cp, seq in nfd:
        index.append((cp, len(flat), len(seq)))
        flat.extend(seq)
    out = ["/* Generated by tests/reference/tokenizer_reference.py --nfc-tables from Python's",
           " * unicodedata (Unicode %s): do not edit. See tokenizer_nfc.c. */" %
           unicodedata.unidata_version,
           '#include "tokenizer_nfc.h"', "", "// clang-format off", "",
           "const char nfc_unicode_version[] = \"%s\";" % unicodedata.unidata_version, "",
           "/* code point, start in nfc_decomp_cps, length: its full canonical decomposition */",
           "const nfc_decomp nfc_decomps[%d] = {" % len(index)]
    out += ["    {0x%X, %d, %d}," % e for e in index]
    out += ["};", "", "const uint32_t nfc_decomp_cps[%d] = {" % len(flat)]
    for i in range(0, len(flat), 8):
        out.append("    " + " ".join("0x%X," % x for x in flat[i:i + 8]))
    out += ["};", "", "/* code points with a non-zero canonical combining class */",
            "const nfc_class nfc_classes[%d] = {" % len(ccc)]
    out += ["    {0x%X, %d}," % e for e in ccc]
    out += ["};", "", "/* first, second -> primary composite (sorted by first, then second) */",
            "const nfc_pair nfc_pairs[%d] = {" % len(comp)]
    out += ["    {0x%X, 0x%X, 0x%X}," % e for e in comp]
    out += ["};", "",
            "const size_t nfc_n_decomps = %d, nfc_n_classes = %d, nfc_n_pairs = %d;" %
            (len(index), len(ccc), len(comp)), "", "// clang-format on", ""]
    with open(os.path.join(root, "common", "tokenizer_nfc_data.c"), "w") as f:
        f.write("\n".join(out))
    # test strings: every decomposable or combining code point alone and decomposed, and random
    # starters followed by marks in random order
    rnd = random.Random(5)
    marks = [cp for cp, _ in ccc if cp < 0x10000]
    starters = [cp for cp, _ in nfd if not unicodedata.combining(chr(cp))][:400] + \
        [ord(x) for x in "aeiouAEIOUnNcCsSzZ"] + [0x1100, 0x1161, 0x11A8, 0xAC00, 0xD4DB]
    texts = []
    for cp, _ in nfd[::3]:
        texts.append(chr(cp))
        texts.append(unicodedata.normalize("NFD", chr(cp)))
    for _ in range(1500):
        t = "".join(chr(rnd.choice(starters)) + "".join(chr(rnd.choice(marks))
                                                     for _ in range(rnd.randrange(0, 4)))
                    for _ in range(rnd.randrange(1, 4)))
        texts.append(t)
    for h in ["\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u1100\u1161x",
              "\u0301a", "a\u0301\u0301", "e\u0327\u0301", "e\u0301\u0327", "A\u030a\u0323",
              "\u212b", "\u0344", "\u0958", "\U0001D15E", "ab\u0308c"]:
        texts.append(h)
    cases = [[t, unicodedata.normalize("NFC", t)] for t in texts]
    with open(os.path.join(GOLD, "nfc_cases.json"), "w") as f:
        json.dump({"unicode": unicodedata.unidata_version, "cases": cases}, f, ensure_ascii=True,
                  indent=0)
    print(f"{len(index)} decompositions ({len(flat)} code points), {len(ccc)} classes, "
          f"{len(comp)} pairs; {len(cases)} test strings")


if __name__ == "__main__":
    if "--nfc-tables" in sys.argv:
        nfc_tables()
        sys.exit(0)
    sys.exit(main())
