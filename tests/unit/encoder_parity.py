#!/usr/bin/env python3
"""Forward-pass parity of semgate's encoder (cache/encoder.c) with a numpy
reference of BERT, and refusal of malformed model directories.

  1. Tiny randomly initialised BERT models that this script writes itself in
     the Hugging Face layout (safetensors F32 / F16 / BF16, with and without
     the "bert." prefix, mean and CLS pooling, a query prefix): every text's
     embedding from semgate (tests/unit/encoder_dump) must match numpy's to
     cosine >= 0.9999, at batch 1 and batch 7, including texts at and past
     the max length; the ids semgate's tokenizer makes must equal
     `tokenizers`' (BertWordPieceTokenizer on the same vocab).
  2. Every malformed model file is refused with a message naming the file,
     and the process exits normally (no crash).
  3. The installed models (models/*/ with a model.safetensors): the same
     parity on real weights over a varied corpus.

Run with the tests' virtual environment (.venv: numpy, tokenizers), which
`bash .ci/setup` makes: .venv/bin/python tests/unit/encoder_parity.py DUMP_BIN
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer
except ImportError as e:  # pragma: no cover
    print(f"encoder_parity: {e}: run `bash .ci/setup` (it makes .venv with numpy and tokenizers)")
    sys.exit(1)

DUMP = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ENCODER_DUMP", "build/tests/encoder_dump")
SRC = os.environ.get("SEMGATE_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MIN_COS = 0.9999
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


# --- safetensors ---------------------------------------------------------------

def write_safetensors(path, tensors, dtype="F32", extra_header=None, pad=True):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        a = np.asarray(arr, dtype=np.float32)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if extra_header:
        header.update(extra_header)
    h = json.dumps(header).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = data[base + b:base + e]
        if t["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4")
        elif t["dtype"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        out[name] = a.reshape(t["shape"]).astype(np.float64)
    return out


# --- the numpy reference ---------------------------------------------------------

_erf = np.vectorize(math.erf)


def layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def reference(w, cfg, ids, pooling):
    """One text's embedding, float64 throughout."""
    pre = next(p for p in ("", "bert.", "model.", "0.auto_model.")
               if p + "embeddings.word_embeddings.weight" in w)
    g = lambda n: w[pre + n]
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = H // nh
    eps = cfg.get("layer_norm_eps", 1e-12)
    L = len(ids)
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[:L] \
        + g("embeddings.token_type_embeddings.weight")[0]
    x = layernorm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        lin = lambda v, n: v @ g(p + n + ".weight").T + g(p + n + ".bias")
        q, k, v = (lin(x, "attention.self." + n).reshape(L, nh, dh).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(L, H)
        x = layernorm(x + lin(ctx, "attention.output.dense"), g(p + "attention.output.LayerNorm.weight"),
                      g(p + "attention.output.LayerNorm.bias"), eps)
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = layernorm(x + lin(h, "output.dense"), g(p + "output.LayerNorm.weight"),
                      g(p + "output.LayerNorm.bias"), eps)
    e = x[0] if pooling == "cls" else x.mean(0)
    return e / np.linalg.norm(e)


# --- the C side ----------------------------------------------------------------

def run_dump(model_dir, lines, batch=1, max_tokens=0):
    args = [DUMP, "--batch", str(batch)]
    if max_tokens:
        args += ["--max-tokens", str(max_tokens)]
    p = subprocess.run(args + [model_dir], input="".join(json.dumps(l) + "\n" for l in lines),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"encoder_dump failed ({p.returncode}): {p.stderr.strip()}")
    return [json.loads(l) for l in p.stdout.splitlines()]


def check_load_error(model_dir, want_file, case):
    p = subprocess.run([DUMP, "--check", model_dir], capture_output=True, text=True, timeout=60)
    msg = p.stdout.strip()
    if p.returncode < 0:
        fail(f"{case}: encoder_dump crashed with signal {-p.returncode}")
    elif p.returncode == 0:
        fail(f"{case}: the model was accepted")
    elif want_file not in msg:
        fail(f"{case}: the message does not name {want_file}: {msg!r}")
    else:
        print(f"  refused as it should: {case}: {msg}")


# --- tiny models -----------------------------------------------------------------

WORDS = ("the a is of to and in what how why do does can i you it this that for on with my be are "
         "was how many much time money learn python code semgate cache gateway model token "
         "question answer best way make get good new use one two three quick brown fox jumps "
         "over lazy dog hello world caf resume naive").split()
PIECES = ["##s", "##ing", "##ed", "##ly", "##er", "##e", "##t", "##a", "##o", "##n", "##i"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
PUNCT = list("?!.,;:'\"()-")


def tiny_vocab():
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES + LETTERS + PUNCT


def make_tiny(d, *, dtype="F32", prefix="", pooling="mean", layers=2, H=32, heads=4, inter=64,
              max_pos=40, seed=1, st_prompt=None, max_seq=None):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = tiny_vocab()
    V = len(vocab) + 3  # a few ids the vocabulary never produces
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H,
           "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": inter,
           "max_position_embeddings": max_pos, "vocab_size": V, "type_vocab_size": 2,
           "hidden_act": "gelu", "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    open(os.path.join(d, "vocab.txt"), "w").write("\n".join(vocab) + "\n")
    json.dump({"do_lower_case": True}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    r = lambda *s: rng.normal(0, 0.3, s)
    t = {"embeddings.word_embeddings.weight": r(V, H), "embeddings.position_embeddings.weight": r(max_pos, H),
         "embeddings.token_type_embeddings.weight": r(2, H),
         "embeddings.LayerNorm.weight": 1 + r(H), "embeddings.LayerNorm.bias": r(H)}
    for l in range(layers):
        p = f"encoder.layer.{l}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + n + ".weight"], t[p + n + ".bias"] = r(H, H), r(H)
        t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"] = 1 + r(H), r(H)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = r(inter, H), r(inter)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = r(H, inter), r(H)
        t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"] = 1 + r(H), r(H)
    t["pooler.dense.weight"], t["pooler.dense.bias"] = r(H, H), r(H)
    write_safetensors(os.path.join(d, "model.safetensors"), {prefix + k: v for k, v in t.items()}, dtype)
    json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
              open(os.path.join(d, "modules.json"), "w"))
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    json.dump({"word_embedding_dimension": H, "pooling_mode_cls_token": pooling == "cls",
               "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False},
              open(os.path.join(d, "1_Pooling", "config.json"), "w"))
    json.dump({"max_seq_length": max_seq or max_pos, "do_lower_case": False},
              open(os.path.join(d, "sentence_bert_config.json"), "w"))
    if st_prompt is not None:
        json.dump({"prompts": {"query": st_prompt, "passage": "passage: "}, "default_prompt_name": None},
                  open(os.path.join(d, "config_sentence_transformers.json"), "w"))
    return cfg


def corpus(rng, n):
    texts = ["", "?", "What is semgate?", "how do i learn python quickly", "The quick brown fox jumps over the lazy dog.",
             "Café résumé naïve", "HELLO WORLD!!!", "xyzzy qwerty", "123 456", "a " * 60, "what " * 19,
             "semgate semgate " * 30, "tokenizing, punctuation; (and) \"quotes\"", "\t\n  spaced   out\t"]
    while len(texts) < n:
        k = rng.randint(1, 30)
        texts.append(" ".join(rng.choice(WORDS + ["zzz", "learning", "coded", "quickly", "cafe", "?", ","])
                              for _ in range(k)))
    return texts


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def parity_tiny(base):
    rng = random.Random(7)
    texts = corpus(rng, 120)
    variants = [
        ("f32-mean", dict()),
        ("f16", dict(dtype="F16", seed=2)),
        ("bf16", dict(dtype="BF16", seed=3)),
        ("bert-prefix-cls", dict(prefix="bert.", pooling="cls", seed=4)),
        ("st-prefix-cls", dict(prefix="0.auto_model.", pooling="cls", seed=5, layers=3)),
        ("query-prompt", dict(seed=6, st_prompt="query: ")),
        ("short-max-seq", dict(seed=8, max_seq=12)),
        # an intermediate size that is not a multiple of 32: on an AMX CPU its
        # batches run the other products on AMX tiles and this one on sgemm
        ("inter-48", dict(seed=9, inter=48)),
        ("hidden-48", dict(seed=10, H=48, heads=4, inter=96)),
    ]
    for name, kw in variants:
        d = os.path.join(base, name)
        cfg = make_tiny(d, **kw)
        w = read_safetensors(os.path.join(d, "model.safetensors"))
        pooling = kw.get("pooling", "mean")
        max_len = kw.get("max_seq") or cfg["max_position_embeddings"]
        tok = BertWordPieceTokenizer(os.path.join(d, "vocab.txt"), lowercase=True)
        tok.enable_truncation(max_len)
        prompt = kw.get("st_prompt") or ""
        want_ids = [tok.encode(prompt + t).ids for t in texts]
        for batch in (1, 7):
            got = run_dump(d, [{"text": t} for t in texts], batch=batch)
            worst = 1.0
            for t, ids, g in zip(texts, want_ids, got):
                if "error" in g:
                    fail(f"{name}: error on {t!r}: {g}")
                    continue
                if g["ids"] != ids:
                    fail(f"{name}: ids of {t!r}: semgate {g['ids']} tokenizers {ids}")
                    continue
                c = cos(g["emb"], reference(w, cfg, ids, pooling))
                worst = min(worst, c)
                if c < MIN_COS:
                    fail(f"{name} batch {batch}: cosine {c:.6f} on {t!r} ({len(ids)} tokens)")
            print(f"  {name}, batch {batch}: {len(texts)} texts, worst cosine {worst:.7f}")
        # ids straight in: random ids, lengths 2..max
        r2 = random.Random(11)
        rows = []
        for _ in range(40):
            L = r2.randint(2, max_len)
            rows.append([2] + [r2.randrange(5, cfg["vocab_size"]) for _ in range(L - 2)] + [3])
        got = run_dump(d, [{"ids": r} for r in rows], batch=5)
        for r, g in zip(rows, got):
            c = cos(g["emb"], reference(w, cfg, r, pooling))
            if c < MIN_COS:
                fail(f"{name}: ids path cosine {c:.6f} for {len(r)} ids")


def malformed(base):
    good = os.path.join(base, "good")
    make_tiny(good)

    def variant(name, mutate):
        d = os.path.join(base, "bad-" + name)
        shutil.copytree(good, d)
        mutate(d)
        return d

    def edit_json(rel, f):
        def m(d):
            p = os.path.join(d, rel)
            j = json.load(open(p))
            f(j)
            json.dump(j, open(p, "w"))
        return m

    def write(rel, data):
        def m(d):
            mode = "wb" if isinstance(data, bytes) else "w"
            open(os.path.join(d, rel), mode).write(data)
        return m

    def remove(rel):
        return lambda d: os.remove(os.path.join(d, rel))

    st = "model.safetensors"
    good_st = open(os.path.join(good, st), "rb").read()
    hlen = struct.unpack("<Q", good_st[:8])[0]
    header = json.loads(good_st[8:8 + hlen])

    def st_header(f):
        def m(d):
            h = json.loads(json.dumps(header))
            f(h)
            hb = json.dumps(h).encode()
            open(os.path.join(d, st), "wb").write(struct.pack("<Q", len(hb)) + hb + good_st[8 + hlen:])
        return m

    first = "embeddings.word_embeddings.weight"
    nan_tensors = read_safetensors(os.path.join(good, st))
    nan_tensors["encoder.layer.1.output.dense.bias"][3] = float("nan")
    cases = [
        ("no config.json", remove("config.json"), "config.json"),
        ("config.json not JSON", write("config.json", "{not json"), "config.json"),
        ("model_type gpt2", edit_json("config.json", lambda j: j.update(model_type="gpt2")), "config.json"),
        ("hidden_act relu", edit_json("config.json", lambda j: j.update(hidden_act="relu")), "config.json"),
        ("relative positions", edit_json("config.json", lambda j: j.update(position_embedding_type="relative_key")), "config.json"),
        ("hidden not a multiple of heads", edit_json("config.json", lambda j: j.update(num_attention_heads=5)), "config.json"),
        ("hidden_size a string", edit_json("config.json", lambda j: j.update(hidden_size="32")), "config.json"),
        ("no layers", edit_json("config.json", lambda j: j.update(num_hidden_layers=0)), "config.json"),
        ("fewer layers than weights", edit_json("config.json", lambda j: j.update(num_hidden_layers=1)), st),
        ("more layers than weights", edit_json("config.json", lambda j: j.update(num_hidden_layers=3)), st),
        ("vocab larger than config", edit_json("config.json", lambda j: j.update(vocab_size=20)), "vocab_size"),
        ("no weights", remove(st), st),
        ("empty weights", write(st, b""), st),
        ("truncated weights", write(st, good_st[: len(good_st) // 2]), st),
        ("header past the end", write(st, struct.pack("<Q", 1 << 40) + good_st[8:]), st),
        ("header not JSON", write(st, struct.pack("<Q", 8) + b"{{{{{{{{" + good_st[8 + hlen:]), st),
        ("tensor missing", st_header(lambda h: h.pop("encoder.layer.1.attention.self.key.weight")), st),
        ("tensor wrong shape", st_header(lambda h: h[first].update(shape=[h[first]["shape"][0] * 2, h[first]["shape"][1] // 2])), st),
        ("tensor dtype I64", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(dtype="I64", shape=[16])), st),
        ("unknown dtype", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(dtype="Q4")), st),
        ("offsets past the data", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(data_offsets=[0, 1 << 40])), st),
        ("offsets reversed", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(data_offsets=[128, 0])), st),
        ("overlapping tensors", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(data_offsets=list(h["embeddings.LayerNorm.weight"]["data_offsets"]))), st),
        ("negative dimension", st_header(lambda h: h["embeddings.LayerNorm.bias"].update(shape=[-32])), st),
        ("NaN in the weights", lambda d: write_safetensors(os.path.join(d, st), nan_tensors), st),
        ("no tokenizer", lambda d: os.remove(os.path.join(d, "vocab.txt")), "vocab.txt"),
        ("empty vocab", write("vocab.txt", ""), "vocab.txt"),
        ("vocab without [UNK]", write("vocab.txt", "\n".join(t for t in tiny_vocab() if t != "[UNK]") + "\n"), "vocab.txt"),
        ("tokenizer.json BPE", write("tokenizer.json", json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []}})), "tokenizer.json"),
        ("tokenizer.json not JSON", write("tokenizer.json", "[1,2"), "tokenizer.json"),
        ("modules.json with Dense", edit_json("modules.json", lambda j: j.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})), "modules.json"),
        ("pooling max", edit_json("1_Pooling/config.json", lambda j: j.update(pooling_mode_max_tokens=True, pooling_mode_mean_tokens=False)), "1_Pooling/config.json"),
        ("pooling none", edit_json("1_Pooling/config.json", lambda j: j.update(pooling_mode_mean_tokens=False)), "1_Pooling/config.json"),
        ("max_seq_length a string", edit_json("sentence_bert_config.json", lambda j: j.update(max_seq_length="x")), "sentence_bert_config.json"),
    ]
    for name, mutate, want in cases:
        check_load_error(variant(name.replace(" ", "_").replace(".", "_"), mutate), want, name)
    check_load_error(os.path.join(base, "does-not-exist"), "does-not-exist", "no such directory")
    check_load_error(os.path.join(good, "config.json"), "config.json", "a file, not a directory")


REAL_TEXTS = [
    "What is semgate?", "Tell me what semgate is", "How do I learn Python quickly?",
    "What's the best way to learn Python fast?", "Café au lait, s'il vous plaît", "naïve résumé coöperate",
    "東京は日本の首都です", "北京欢迎你", "안녕하세요 세계", "emoji 🤖🚀 test 👍🏽", "control\x00chars\x07here",
    "", "   ", "?!...", "unbelievable antidisestablishmentarianism supercalifragilisticexpialidocious",
    "x" * 150, "The quick brown fox jumps over the lazy dog. " * 60,
    "Ünïcödé ÀÉÎÕÜ ß ﬁ ligature İstanbul", "price: $1,299.99 (20% off) — limited!", "C++ vs C# vs F#: which?",
]


def parity_real():
    models_dir = os.path.join(SRC, "models")
    dirs = sorted(os.path.join(models_dir, d) for d in os.listdir(models_dir)) if os.path.isdir(models_dir) else []
    dirs = [d for d in dirs if os.path.isfile(os.path.join(d, "model.safetensors"))]
    if not dirs:
        print("  no installed model under models/: real-weights parity skipped (bash .ci/setup installs one)")
        return
    rng = random.Random(3)
    words = "how what why can does the a of to learn python money make online best way is there any good".split()
    texts = REAL_TEXTS + [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) + "?" for _ in range(40)]
    for d in dirs:
        cfg = json.load(open(os.path.join(d, "config.json")))
        w = read_safetensors(os.path.join(d, "model.safetensors"))
        pool_cfg = os.path.join(d, "1_Pooling", "config.json")
        pooling = "cls" if os.path.exists(pool_cfg) and json.load(open(pool_cfg)).get("pooling_mode_cls_token") else "mean"
        sb = os.path.join(d, "sentence_bert_config.json")
        max_len = json.load(open(sb)).get("max_seq_length", 512) if os.path.exists(sb) else 512
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_len)
        # batch 1: short texts take the in-place small-input kernel; batch 8: sgemm
        got = run_dump(d, [{"text": t} for t in texts], batch=1)
        got += run_dump(d, [{"text": t} for t in texts], batch=8)
        worst = 1.0
        for t, g in zip(texts + texts, got):
            ids = tok.encode(t).ids
            if g.get("ids") != ids:
                fail(f"{os.path.basename(d)}: ids of {t[:60]!r} differ")
                continue
            c = cos(g["emb"], reference(w, cfg, ids, pooling))
            worst = min(worst, c)
            if c < MIN_COS:
                fail(f"{os.path.basename(d)}: cosine {c:.6f} on {t[:60]!r}")
        print(f"  {os.path.basename(d)}: {len(texts)} texts, worst cosine {worst:.7f}")


def main():
    base = tempfile.mkdtemp(prefix="semgate-encoder-")
    try:
        print("tiny models: parity with numpy")
        parity_tiny(base)
        print("malformed models: refused")
        malformed(base)
        print("installed models: parity with numpy")
        parity_real()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
