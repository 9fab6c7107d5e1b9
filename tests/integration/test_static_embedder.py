"""The `static` embedder end to end: `semgate --distill-static` on a tiny
BERT model written here (random weights, Python's standard library only),
then semgate serving with `cache.embedder.provider: "static"` on the table it
made: a near-paraphrase hits, an unrelated prompt misses, /stats reports the
kind; the distiller's refusals; a cache made with another table is refused."""

import json
import math
import os
import random
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CHAT = "/v1/chat/completions"
H, LAYERS, HEADS, INTER, MAX_POS = 32, 2, 4, 64, 40

WORDS = ("the a is of to and in what how why do does can i you it this that for on with my be "
         "are was many much time money learn python code semgate cache gateway model token "
         "question answer best way make get good new use one two three quick brown fox jumps "
         "over lazy dog hello world").split()
PIECES = ["##s", "##ing", "##ed", "##ly", "##er"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
PUNCT = list("?!.,;:'\"()-")
VOCAB = (["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + WORDS + PIECES + LETTERS + PUNCT)

PROMPT = "how do i learn python code"
NEAR = "How do I learn the  Python code"  # case, spacing and a frequent word more
OTHER = "the quick brown fox jumps over the lazy dog"


# --- a tiny model, written with the standard library --------------------------------


def write_safetensors(path, tensors):
    """tensors: name -> (shape, flat list of floats), all F32."""
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        raw = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hdr = json.dumps(header).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(blobs))


def read_safetensors_header(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def make_tiny_model(d, seed=1):
    os.makedirs(d)
    rng = random.Random(seed)
    V = len(VOCAB)

    def r(*shape):
        n = 1
        for s in shape:
            n *= s
        return (shape, [rng.gauss(0, 0.3) for _ in range(n)])

    def ones(n):
        return ((n,), [1 + rng.gauss(0, 0.1) for _ in range(n)])

    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H,
           "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INTER,
           "max_position_embeddings": MAX_POS, "vocab_size": V, "type_vocab_size": 2,
           "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True}, f)
    t = {"embeddings.word_embeddings.weight": r(V, H),
         "embeddings.position_embeddings.weight": r(MAX_POS, H),
         "embeddings.token_type_embeddings.weight": r(2, H),
         "embeddings.LayerNorm.weight": ones(H), "embeddings.LayerNorm.bias": r(H)}
    for l in range(LAYERS):
        p = "encoder.layer.%d." % l
        for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            t[p + n + ".weight"], t[p + n + ".bias"] = r(H, H), r(H)
        t[p + "attention.output.LayerNorm.weight"] = ones(H)
        t[p + "attention.output.LayerNorm.bias"] = r(H)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = r(INTER, H), r(INTER)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = r(H, INTER), r(H)
        t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"] = ones(H), r(H)
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    return d


def distill(model, out, *extra, expect_rc=0):
    rc, so, se = h.run_semgate(["--distill-static", model, out] + list(extra), timeout=120)
    h.expect(rc == expect_rc, "semgate --distill-static %s %s %s: exit %d, want %d\nstdout: %s\n"
             "stderr: %s", model, out, " ".join(extra), rc, expect_rc, so, se)
    return so, se


def no_partial_left(parent):
    left = [n for n in os.listdir(parent) if ".partial-" in n]
    h.expect(not left, "staging directories left behind: %r", left)


# --- serving with the table ----------------------------------------------------------


def static_config(mock, table, **cache):
    cfg = h.base_config(mock)
    cfg["cache"] = dict(threshold=0.9, verifier=False, trust_client_headers=True,
                        embedder={"provider": "static", "static_path": table})
    cfg["cache"].update(cache)
    return cfg


def chat(sg, prompt, headers=None):
    return sg.post_json(CHAT, h.chat_body(prompt), headers=headers)


def expect_state(resp, want, what):
    h.expect_status(resp, 200)
    h.expect_eq(resp.header("X-Semgate-Cache"), want, what)


def similarity(sg, prompt):
    """The nearest entry's similarity (threshold 0, nothing stored)."""
    r = chat(sg, prompt, {"X-Semgate-Threshold": "0", "Cache-Control": "no-store"})
    h.expect_status(r, 200)
    return float(r.header("X-Semgate-Similarity") or "nan")


def test_distill_then_serve():
    base = h.make_temp_dir("sg-it-static-")
    model = make_tiny_model(os.path.join(base, "tiny-bert"))
    table = os.path.join(base, "static-tiny")
    so, se = distill(model, table, "--dim", "16")
    h.expect("static table %s ready" % table in so, "stdout: %r", so)
    no_partial_left(base)

    # the table: F32 [vocabulary, 16], the source named, special rows zero
    files = sorted(os.listdir(table))
    h.expect_eq(files, ["embeddings.safetensors", "tokenizer_config.json", "vocab.txt"], "files")
    hdr, data = read_safetensors_header(os.path.join(table, "embeddings.safetensors"))
    t = hdr["embeddings"]
    h.expect_eq((t["dtype"], t["shape"]), ("F32", [len(VOCAB), 16]), "dtype, shape")
    meta = hdr["__metadata__"]
    h.expect(meta["source"].startswith("model/1:tiny-bert:"), "source %r", meta["source"])
    h.expect_eq((meta["format"], meta["dim"]), ("semgate-static/2", "16"), "format, dim")
    rows = struct.unpack("<%df" % (len(VOCAB) * 16), data[t["data_offsets"][0]:t["data_offsets"][1]])
    norms = []
    for i, tok in enumerate(VOCAB):
        norm = math.sqrt(sum(x * x for x in rows[i * 16:(i + 1) * 16]))
        if tok.startswith("[") and tok.endswith("]"):
            h.expect(norm == 0, "row of %s is not zero", tok)
        else:
            h.expect(norm > 0, "row of %s is zero", tok)
            norms.append(norm)
    # SIF: the first tokens of the vocabulary (frequent, by Zipf's law) weigh
    # far less than the last (~0.04 of them here; ~1 without the weighting)
    first, last = sum(norms[:5]) / 5, sum(norms[-20:]) / 20
    h.expect(first < 0.2 * last, "rows of frequent tokens %.4g, of rare ones %.4g", first, last)

    mock = h.Mock("--quiet")
    sg = h.Semgate(static_config(mock, table))
    h.expect_answer(chat(sg, PROMPT), PROMPT)
    n = mock.stats()["chat"]
    r = chat(sg, NEAR)
    if r.header("X-Semgate-Cache") != "hit-semantic":
        raise h.TestFailure("near-paraphrase: %r, similarity %.4f" % (
            r.header("X-Semgate-Cache"), similarity(sg, NEAR)))
    h.expect_answer(r, PROMPT)  # the stored answer, replayed
    h.expect(float(r.header("X-Semgate-Similarity")) >= 0.9, "similarity %r",
             r.header("X-Semgate-Similarity"))
    r = chat(sg, OTHER)
    if r.header("X-Semgate-Cache") != "miss":
        raise h.TestFailure("unrelated: %r, similarity %.4f" % (
            r.header("X-Semgate-Cache"), similarity(sg, OTHER)))
    h.expect_answer(r, OTHER)
    h.expect_eq(mock.stats()["chat"], n + 1, "upstream chats")

    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    emb = r.json()["embedder"]
    h.expect_eq((emb["kind"], emb["dim"]), ("static", 16), "/stats embedder kind, dim")
    h.expect(emb["embedded"] >= 3, "embedded %r", emb["embedded"])

    # --check loads the table and describes it
    rc, so, se = h.run_semgate(["--check", sg.config_path])
    h.expect(rc == 0 and "static (distilled) static-tiny: %d tokens x 16" % len(VOCAB) in so,
             "--check: rc %d, %r %r", rc, so, se)


def test_distill_refusals():
    base = h.make_temp_dir("sg-it-static-")
    model = make_tiny_model(os.path.join(base, "tiny-bert"), seed=2)
    table = os.path.join(base, "t")

    # usage
    for args in ([], [model], [model, table, "--dim", "8"], [model, table, "--dim", "x"],
                 [model, table, "--sif", "2"], [model, table, "--bogus"]):
        rc, so, se = h.run_semgate(["--distill-static"] + args)
        h.expect(rc == 2 and "usage: semgate --distill-static" in se,
                 "%r: rc %d, stderr %r", args, rc, se)
    # the model cannot give that many dimensions, or is not there
    so, se = distill(model, table, "--dim", "64", expect_rc=1)
    h.expect("--dim 64: the model has only 32 dimensions" in se, "stderr %r", se)
    so, se = distill(os.path.join(base, "nowhere"), table, expect_rc=1)
    h.expect("nowhere" in se, "stderr %r", se)
    h.expect(not os.path.exists(table), "a table was left after failures")
    no_partial_left(base)

    # an existing table is replaced only with --force
    distill(model, table, "--dim", "16")
    before = open(os.path.join(table, "embeddings.safetensors"), "rb").read()
    so, se = distill(model, table, "--dim", "24", expect_rc=1)
    h.expect("exists (pass --force" in se, "stderr %r", se)
    h.expect_eq(open(os.path.join(table, "embeddings.safetensors"), "rb").read(), before,
                "the table after a refusal")
    distill(model, table + "/", "--dim", "24", "--force")
    hdr, _ = read_safetensors_header(os.path.join(table, "embeddings.safetensors"))
    h.expect_eq(hdr["embeddings"]["shape"][1], 24, "dim after --force")
    no_partial_left(base)

    # ... and never a directory that is not a table
    other = os.path.join(base, "precious")
    os.makedirs(other)
    with open(os.path.join(other, "notes.txt"), "w") as f:
        f.write("keep me")
    so, se = distill(model, other, "--dim", "16", "--force", expect_rc=1)
    h.expect("not a table directory" in se, "stderr %r", se)
    h.expect_eq(os.listdir(other), ["notes.txt"], "the other directory's files")
    no_partial_left(base)


def test_table_identity_and_bad_tables():
    base = h.make_temp_dir("sg-it-static-")
    model = make_tiny_model(os.path.join(base, "tiny-bert"), seed=3)
    a, b = os.path.join(base, "a"), os.path.join(base, "b")
    distill(model, a, "--dim", "16")
    distill(model, b, "--dim", "16", "--sif", "0")  # same size, other vectors
    mock = h.Mock("--quiet")
    cfg = static_config(mock, a, path=os.path.join(base, "cache"))
    sg = h.Semgate(cfg)
    expect_state(chat(sg, PROMPT), "miss", "first")
    sg.signal(signal.SIGTERM)
    h.expect_eq(sg.wait_exit(30), 0, "exit code after SIGTERM")

    # a cache made with table a does not open with table b
    other = static_config(mock, b, path=cfg["cache"]["path"])
    sg = h.Semgate(other, wait=False)
    rc = sg.wait_exit(30)
    log = sg.log()
    h.expect(rc == 1 and "embedder" in log and "--rebuild-cache" in log,
             "rc %r, log:\n%s", rc, log)
    # with its own table it still does
    sg = h.Semgate(cfg)
    expect_state(chat(sg, PROMPT), "hit-exact", "with table a again")
    sg.stop()

    # a damaged table is refused at start, naming the file
    bad = os.path.join(base, "bad")
    distill(model, bad, "--dim", "16")
    path = os.path.join(bad, "embeddings.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 8)
    sg = h.Semgate(static_config(mock, bad), wait=False)
    rc = sg.wait_exit(30)
    log = sg.log()
    h.expect(rc == 1 and "cache.embedder (static)" in log and path in log,
             "rc %r, log:\n%s", rc, log)


if __name__ == "__main__":
    h.main()
