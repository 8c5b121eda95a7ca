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
  nfkc         byte-level BPE behind an NFKC normalizer
  nfd_lower    byte-level BPE behind Sequence(NFD, Lowercase)
  accents      byte-level BPE behind Sequence(NFKD, StripAccents, Lowercase): BERT-uncased's
               normalization, on a BPE model
  sp_nfkc      SentencePiece-style BPE with byte fallback behind Sequence(Strip(right),
               NFKC, Replace(regex " {2,}" -> " "), Prepend("▁"), Replace(" ", "▁")), as
               T5/SentencePiece-derived tokenizer.json files normalize
  demo512      golden/tokenizers/demo512/tokenizer.json as written by bpe_write_demo_tokenizer
  demo4096     (C; 4096: every merge learned from the corpus), loaded unchanged

For each it encodes the edge-case corpus below (EDGE + UNICODE_EDGE + 3 long slices of the
corpus) and writes OUTDIR/<name>/tokenizer.json and OUTDIR/<name>.json: per string the ids with
special tokens recognised, with them encoded as text (encode_special_tokens), with the
post-processor (add_special_tokens), both decodes, and the normalizer's output. It also writes
OUTDIR/normalizers.json: for each normalizer in NORMALIZERS (its tokenizer.json form) the
`normalize_str` output of every string of unicode_texts() (every code point with a
decomposition or a lowercase mapping alone, Hangul, random starters with marks) and of the
edge cases.

    python3 tests/reference/tokenizer_reference.py --unicode-cases

needs only Python's own unicodedata and Perl's Unicode::UCD (Debian's perl; no `tokenizers`):
writes golden/tokenizers/unicode_cases.json, the same strings with their NFC, NFD, NFKC and
NFKD, their per-character lowercase (what Rust's char::to_lowercase gives) and the string without
its marks (General_Category M), for tests/unit/test_tokenizer.c; and
common/text/tokenizer_unicode9.c, the code points Unicode 9.0 had (DerivedAge: Present_In=9.0).
`tokenizers` normalizes with its unicode-normalization-alignments crate, whose tables are Unicode
9.0's: to it, every later code point has no decomposition, combining class 0 and no mark
category. tokenizer.c does the same with that list.
"""
import json
import os
import sys
import unicodedata

if __name__ == "__main__" and "--unicode-cases" in sys.argv:
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

# What the normalizers change: compatibility forms, case, marks, composition.
UNICODE_EDGE = [
    "\ufb01\ufb02 \ufb00 ligatures", "x\u00b2 + y\u00b3 = z\u2074", "\u2460\u2461\u2462 \u2474",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff11\uff12\uff13\uff01",
    "\u216b \u2163 \u2170", "\u33cf \u338f \u2103 \u2109", "\u2126 \u212b \u212a", "\u210c\u2102\u211d",
    "\u017f\u1e9b\u0323", "\u01c4\u01c5\u01c6 \u01f1", "\u3300\u337b\u32ff", "\ufe69\ufe6a",
    "a\u2002b\u2009c\u200ad\u202fe", "\u2025\u2026", "\u00bd \u2153 \u215e", "\u1d2c\u1d43\u1d47",
    "\ufdfa \ufdfb", "\u0130stanbul I\u0131", "\u03a3\u0391\u03a3 \u03a3", "\u1e9e STRASSE Stra\u00dfe",
    "\u1f88\u1f89 \u1fbc", "\u0555\u0561\u0582 \u0587", "\u10a0\u10d0 \u1c90", "\U00010400\U00010428",
    "\u13a0\u13a1 \uab70", "\u24b6\u24d0", "\uff21\uff41", "I\u0307", "M\u00dcNCHEN \u00c9T\u00c9",
    "\u01c5a", "\U0001e900\U0001e922", "Me llam\u00f3", "\u1ead\u2026",
    "C\u1ee5 th\u1ec3, b\u1ea1n s\u1ebd tham gia m\u1ed9t nh\u00f3m",
    "\u0e33\u0e19\u0e49\u0e333\u0e25\u0e33", "e\u0304\u0304\u0304o", "\u20dd\u20dfx\u0488",
    "\u0915\u094d\u0937", "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd", "\u0627\u064e\u0644\u0652",
    "\u1100\u1161\u11a8 \uac01 \u1112\u1161\u11ab\u1100\u116e\u11a8", "\uc5b4\u0301",
    "a\u0328\u0301\u0323", "A\u030a\u0301", "\U0001d15e\U0001d160", "\u0958\u095f", "\u2adc",
    "  \u00c9t\u00e9   \u00e0  Paris  ", "\ufb03 \u2026  \u00bd ", "\u3000\u00a0x\u00a0\u3000",
]


def all_code_points():
    """Every assigned code point but the big blocks of letters without properties (CJK, Hangul
    syllables, Yi, Tangut, private use), in order, 500 to a string: every mark, every case
    pair, every decomposition, next to its neighbours."""
    skip = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xA000, 0xA48F),
            (0x17000, 0x18AFF), (0x20000, 0x3FFFF), (0xE000, 0xF8FF), (0xF0000, 0x10FFFF)]
    cps = [cp for cp in range(0x20, 0x110000) if not 0xD800 <= cp < 0xE000 and
           unicodedata.category(chr(cp)) not in ("Cn", "Cc", "Cs") and
           not any(a <= cp <= b for a, b in skip)]
    return ["".join(chr(c) for c in cps[i:i + 500]) for i in range(0, len(cps), 500)]


def unicode_texts():
    """Every assigned code point with a decomposition, or whose lowercase differs, alone; Hangul
    syllables and jamo; random starters followed by marks in random order."""
    import random
    rnd = random.Random(5)
    texts, marks, starters = [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        cat = unicodedata.category(c)
        if cat == "Cn":
            continue
        if cat in ("Mn", "Mc", "Me"):
            marks.append(c)
        if unicodedata.decomposition(c) or c.lower() != c:
            texts.append(c)
            if not unicodedata.combining(c):
                starters.append(c)
    texts += ["\uac00", "\ud4db", "\ud7a3", "\u1100\u1161", "\u1100\u1161\u11a8",
              "\uac00\u11a8", "\u1100\u1161x", "\u0301a", "a\u0301\u0301", "e\u0327\u0301",
              "e\u0301\u0327", "A\u030a\u0323", "\u212b", "\u0344", "ab\u0308c"]
    starters += list("aeiouAEIOUnNcCsSzZ") + ["\u1100", "\u1161", "\uac00", "\u3131"]
    for _ in range(1500):
        texts.append("".join(rnd.choice(starters) + "".join(rnd.choice(marks)
                                                            for _ in range(rnd.randrange(0, 4)))
                             for _ in range(rnd.randrange(1, 4))))
    return texts


def lowercase_chars(text):
    """Rust's char::to_lowercase on each character: Python's lower() of one character (full
    mappings, no context, so no final sigma)."""
    return "".join(c.lower() for c in text)


def strip_marks(text):
    return "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Mc", "Me"))


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


def build_sentencepiece(normalizer):
    """SentencePiece-style BPE behind the given normalizer, decoded as Llama 2 decodes."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer
    train(tok, trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False,
                                   special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=110))
    return with_byte_fallback(tok, decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)]))


def build_llama2():
    return build_sentencepiece(normalizers.Sequence([normalizers.Prepend("\u2581"),
                                                     normalizers.Replace(" ", "\u2581")]))


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


def build_byte_level(normalizer):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    train(tok, trainers.BpeTrainer(vocab_size=1100, min_frequency=1, show_progress=False,
                                   special_tokens=["<|endoftext|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def sp_nfkc_normalizer():
    n = normalizers
    return n.Sequence([n.Strip(left=False, right=True), n.NFKC(), n.Replace(Regex(" {2,}"), " "),
                       n.Prepend("\u2581"), n.Replace(" ", "\u2581")])


# Every normalizer tokenizer.c implements, alone and in the sequences real files use.
def normalizer_list():
    n = normalizers
    return [
        ("NFC", n.NFC()), ("NFD", n.NFD()), ("NFKC", n.NFKC()), ("NFKD", n.NFKD()),
        ("Lowercase", n.Lowercase()), ("StripAccents", n.StripAccents()),
        ("Strip", n.Strip()), ("Strip_left", n.Strip(left=True, right=False)),
        ("NFD_StripAccents", n.Sequence([n.NFD(), n.StripAccents()])),
        ("NFKD_StripAccents_Lowercase", n.Sequence([n.NFKD(), n.StripAccents(), n.Lowercase()])),
        ("Lowercase_NFC", n.Sequence([n.Lowercase(), n.NFC()])),
        ("sp_nfkc", sp_nfkc_normalizer()),
    ]


def write_normalizers():
    texts = EDGE + UNICODE_EDGE + unicode_texts() + all_code_points()
    out = []
    for name, norm in normalizer_list():
        tok = Tokenizer(models.BPE())
        tok.normalizer = norm
        spec = json.loads(tok.to_str())["normalizer"]
        out.append({"name": name, "normalizer": spec,
                    "out": [norm.normalize_str(t) for t in texts]})
    with open(os.path.join(OUT, "normalizers.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizers_version": tokenizers.__version__,
                   "python_unicode": unicodedata.unidata_version, "texts": texts,
                   "normalizers": out}, f, ensure_ascii=False, indent=0)
    print(f"normalizers.json: {len(out)} normalizers x {len(texts)} strings")


def cases(tok):
    out = []
    for text in EDGE + UNICODE_EDGE + long_cases():
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        post = tok.encode(text, add_special_tokens=True).ids
        tok.encode_special_tokens = True
        nospecial = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        out.append({"text": text, "nfc": unicodedata.is_normalized("NFC", text), "ids": ids, "ids_nospecial": nospecial, "ids_post": post,
                    "decode": tok.decode(ids, skip_special_tokens=False),
                    "decode_skip": tok.decode(ids, skip_special_tokens=True),
                    "normalized": tok.normalizer.normalize_str(text) if tok.normalizer else text})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    builders = [("gpt2", build_gpt2), ("llama3", build_llama3), ("llama2", build_llama2),
                ("metaspace", build_metaspace), ("qwen2", build_qwen2), ("digits", build_digits),
                ("nfkc", lambda: build_byte_level(normalizers.NFKC())),
                ("nfd_lower", lambda: build_byte_level(normalizers.Sequence([
                    normalizers.NFD(), normalizers.Lowercase()]))),
                ("accents", lambda: build_byte_level(normalizers.Sequence([
                    normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]))),
                ("sp_nfkc", lambda: build_sentencepiece(sp_nfkc_normalizer())),
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
    try:
        write_normalizers()
    except Exception as e:
        failed += 1
        print(f"normalizers: FAILED: {type(e).__name__}: {e}")
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


def unicode_cases():
    """unicode_texts() and the edge cases through Python's unicodedata: the reference for
    tokenizer_unicode.c that needs no `tokenizers`."""
    texts = EDGE + UNICODE_EDGE + unicode_texts()
    cases = [[t, unicodedata.normalize("NFC", t), unicodedata.normalize("NFD", t),
              unicodedata.normalize("NFKC", t), unicodedata.normalize("NFKD", t),
              lowercase_chars(t), strip_marks(t)] for t in texts]
    with open(os.path.join(GOLD, "unicode_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"unicode": unicodedata.unidata_version,
                   "columns": ["text", "NFC", "NFD", "NFKC", "NFKD", "lowercase", "no marks"],
                   "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"unicode_cases.json: {len(cases)} strings (Unicode {unicodedata.unidata_version})")
    write_unicode9()


def write_unicode9():
    import subprocess
    inv = [int(x) for x in subprocess.run(
        ["perl", "-MUnicode::UCD=prop_invlist", "-e",
         'print join(" ", prop_invlist("Present_In=9.0"))'],
        check=True, capture_output=True, text=True).stdout.split()]
    ucd = subprocess.run(["perl", "-MUnicode::UCD", "-e", "print Unicode::UCD::UnicodeVersion()"],
                         check=True, capture_output=True, text=True).stdout
    if len(inv) % 2:
        inv.append(0x110000)
    ranges = [(inv[i], inv[i + 1] - 1) for i in range(0, len(inv), 2)]
    root = os.path.dirname(os.path.dirname(HERE))
    out = ["/* Generated by tests/reference/tokenizer_reference.py --unicode-cases from Perl's",
           " * Unicode::UCD (Unicode %s, DerivedAge): do not edit. The code points Unicode 9.0" % ucd,
           " * had, the only ones `tokenizers`' normalization tables know: see tokenizer_unicode.c. */",
           '#include "tokenizer_unicode.h"', "", "// clang-format off",
           "const uint32_t unicode9_ranges[][2] = {"]
    for i in range(0, len(ranges), 4):
        out.append("    " + " ".join("{0x%X, 0x%X}," % r for r in ranges[i:i + 4]))
    out += ["};", "const size_t unicode9_n_ranges = %d;" % len(ranges), "// clang-format on", ""]
    with open(os.path.join(root, "common", "text", "tokenizer_unicode9.c"), "w") as f:
        f.write("\n".join(out))
    print(f"tokenizer_unicode9.c: {len(ranges)} ranges of code points present in Unicode 9.0")


if __name__ == "__main__":
    if "--unicode-cases" in sys.argv:
        unicode_cases()
        sys.exit(0)
    sys.exit(main())
