"""semgate --pull-model against a fake Hugging Face hub.

The hub is a Python http.server on a free port, in a thread, serving a tiny
BERT model (2 layers, hidden 32, F32 safetensors) that this file writes
itself. It answers like the real hub: small files directly with the git blob
sha1 as ETag; the LFS file (model.safetensors) with a 302 to a CDN path,
carrying X-Linked-Etag (its sha256) and X-Linked-Size; a missing file with 404
and X-Error-Code EntryNotFound; an unknown repository with 401. Each test
can make the hub misbehave (truncate, lie about a hash or a size, stall,
answer 500...) and checks that a failed pull leaves neither DIR nor a
partial directory behind.
"""

import hashlib
import http.server
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPO = "acme/Tiny-BERT"
RENAMED = "acme/Old-Name"  # redirects to REPO
HIDDEN, LAYERS, HEADS, INTER, MAX_POS = 32, 2, 2, 64, 64
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "what", "is",
         "time", "it", "how", "are", "you", "model", "cache", "fast", "slow", ".", ",", "?",
         "!"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = list(dict.fromkeys(SPECIAL + WORDS + LETTERS + ["##s", "##ing", "##ed", "##er"]))


# --- the tiny model -------------------------------------------------------------


def bert_config(**over):
    cfg = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTER, "vocab_size": len(VOCAB),
        "max_position_embeddings": MAX_POS, "type_vocab_size": 2, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
    }
    cfg.update(over)
    return cfg


def tensor_shapes():
    """BertModel's tensors, with HF's names and shapes (Linear: [out, in])."""
    t = {
        "embeddings.word_embeddings.weight": [len(VOCAB), HIDDEN],
        "embeddings.position_embeddings.weight": [MAX_POS, HIDDEN],
        "embeddings.token_type_embeddings.weight": [2, HIDDEN],
        "embeddings.LayerNorm.weight": [HIDDEN],
        "embeddings.LayerNorm.bias": [HIDDEN],
        "pooler.dense.weight": [HIDDEN, HIDDEN],
        "pooler.dense.bias": [HIDDEN],
    }
    for n in range(LAYERS):
        p = "encoder.layer.%d." % n
        for proj in ("query", "key", "value"):
            t[p + "attention.self.%s.weight" % proj] = [HIDDEN, HIDDEN]
            t[p + "attention.self.%s.bias" % proj] = [HIDDEN]
        t[p + "attention.output.dense.weight"] = [HIDDEN, HIDDEN]
        t[p + "attention.output.dense.bias"] = [HIDDEN]
        t[p + "attention.output.LayerNorm.weight"] = [HIDDEN]
        t[p + "attention.output.LayerNorm.bias"] = [HIDDEN]
        t[p + "intermediate.dense.weight"] = [INTER, HIDDEN]
        t[p + "intermediate.dense.bias"] = [INTER]
        t[p + "output.dense.weight"] = [HIDDEN, INTER]
        t[p + "output.dense.bias"] = [HIDDEN]
        t[p + "output.LayerNorm.weight"] = [HIDDEN]
        t[p + "output.LayerNorm.bias"] = [HIDDEN]
    return t


def safetensors(seed=1):
    """The weights as a safetensors file: 8-byte LE header length, the JSON
    header padded with spaces to a multiple of 8, then F32 LE data."""
    rnd = random.Random(seed)
    header, blobs, off = {}, [], 0
    for name, shape in sorted(tensor_shapes().items()):
        n = 1
        for d in shape:
            n *= d
        if name.endswith("LayerNorm.weight"):
            vals = [1.0] * n
        elif name.endswith("LayerNorm.bias"):
            vals = [0.0] * n
        else:
            vals = [rnd.gauss(0.0, 0.05) for _ in range(n)]
        data = struct.pack("<%df" % n, *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(blobs)


def tokenizer_json():
    """A Hugging Face tokenizer.json of the BERT kind for VOCAB."""
    ids = {t: i for i, t in enumerate(VOCAB)}

    def special(t):
        return {"id": ids[t], "content": t, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(t) for t in SPECIAL],
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]}
                               for t in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    }


def model_files(**config_over):
    """Every file of the repository, path -> bytes. tokenizer.json and
    config_sentence_transformers.json are left out: the hub answers 404, as
    for many real repositories."""
    js = lambda o: json.dumps(o, indent=2).encode()  # noqa: E731
    return {
        "config.json": js(bert_config(**config_over)),
        "model.safetensors": safetensors(),
        "vocab.txt": ("\n".join(VOCAB) + "\n").encode(),
        "tokenizer_config.json": js({"do_lower_case": True, "model_max_length": MAX_POS,
                                     "tokenizer_class": "BertTokenizer"}),
        "special_tokens_map.json": js({"unk_token": "[UNK]", "sep_token": "[SEP]",
                                       "pad_token": "[PAD]", "cls_token": "[CLS]",
                                       "mask_token": "[MASK]"}),
        "modules.json": js([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"}]),
        "sentence_bert_config.json": js({"max_seq_length": MAX_POS, "do_lower_case": False}),
        "1_Pooling/config.json": js({"word_embedding_dimension": HIDDEN,
                                     "pooling_mode_cls_token": False,
                                     "pooling_mode_mean_tokens": True,
                                     "pooling_mode_max_tokens": False,
                                     "pooling_mode_mean_sqrt_len_tokens": False}),
    }


REQUIRED = ("config.json", "model.safetensors")
OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "modules.json",
            "sentence_bert_config.json", "config_sentence_transformers.json",
            "1_Pooling/config.json", "tokenizer.json")


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- the fake hub -----------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        # A client that gives up on a transfer is what several tests are about.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class Hub:
    """The fake hub. files: path -> bytes, served for REPO at any revision.
    lfs: paths served as LFS files (302 to /cdn/...). faults: path -> one of
      "500"          the hub answers 500 (with X-Error-Message)
      "truncate"     the CDN (or the hub, for a small file) sends half the
                     bytes of its Content-Length and closes
      "truncate_nohash"  the same, for a small file served without an ETag:
                     its size is the only check left
      "short_linked" the CDN's answer is whole but shorter than X-Linked-Size
      "bad_sha"      X-Linked-Etag / ETag is the hash of other content
      "huge"         X-Linked-Size (LFS) or Content-Length (small) says 3 GiB
      "stall"        the CDN sends a few bytes, then nothing, connection open
      "ftp"          the hub redirects to an ftp:// URL
    every: a fault for every path (e.g. "500").
    Use as a context manager; requests is the list of (method, path)."""

    def __init__(self, files, lfs=("model.safetensors",), faults=None, every=None):
        self.files = dict(files)
        self.lfs = set(lfs)
        self.faults = dict(faults or {})
        self.every = every
        self.requests = []
        self.user_agents = set()
        self.release = threading.Event()  # ends a "stall"
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in separate writes

            def log_message(self, *a):
                pass

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                hub.user_agents.add(self.headers.get("User-Agent", ""))
                try:
                    hub.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.server = _Server((h.HOST, 0), Handler)
        self.url = "http://%s:%d" % (h.HOST, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self):
        return [p for _, p in self.requests]

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @staticmethod
    def send(req, status, headers=(), body=b"", declared=None):
        req.send_response(status)
        for k, v in headers:
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body) if declared is None else declared))
        req.end_headers()
        req.wfile.write(body)
        req.wfile.flush()

    def answer(self, req):
        path = urllib.parse.urlsplit(req.path).path
        if path.startswith("/cdn/"):
            return self.answer_cdn(req, urllib.parse.unquote(path[len("/cdn/"):]))
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            return self.send(req, 404, body=b"no such route")
        repo, name = "/".join(parts[:2]), parts[4]
        if repo == RENAMED:  # the hub's answer for a renamed repository
            return self.send(req, 307, [("Location", "/%s/resolve/%s/%s"
                                         % (REPO, parts[3], name))], b"Moved")
        if repo != REPO:
            return self.send(req, 401, [("X-Error-Code", "RepositoryNotFound"),
                                        ("X-Error-Message", "Repository not found")],
                             b"Repository not found")
        fault = self.every or self.faults.get(name)
        if fault == "500":
            return self.send(req, 500, [("X-Error-Message", "the hub is on fire")],
                             b"Internal Error")
        if name not in self.files:
            return self.send(req, 404, [("X-Error-Code", "EntryNotFound"),
                                        ("X-Error-Message", "Entry not found")],
                             b"Entry not found")
        data = self.files[name]
        if name in self.lfs:
            sha = hashlib.sha256(b"something else" if fault == "bad_sha" else data).hexdigest()
            size = 3 << 30 if fault == "huge" else len(data)
            location = ("ftp://%s/%s" % (h.HOST, name) if fault == "ftp"
                        else "/cdn/%s" % urllib.parse.quote(name, safe=""))
            return self.send(req, 302, [("Location", location),
                                        ("X-Linked-Etag", '"%s"' % sha),
                                        ("X-Linked-Size", str(size)),
                                        ("ETag", '"%s"' % sha),
                                        ("X-Repo-Commit", "0" * 40)],
                             b"Found. Redirecting to " + location.encode())
        etag = git_sha1(b"something else" if fault == "bad_sha" else data)
        headers = [("ETag", '"%s"' % etag), ("X-Repo-Commit", "0" * 40)]
        if fault == "truncate_nohash":
            headers, fault = headers[1:], "truncate"
        if fault == "truncate":
            return self.send(req, 200, headers + [("Connection", "close")],
                             data[:len(data) // 2], declared=len(data))
        if fault == "huge":
            return self.send(req, 200, headers + [("Connection", "close")], b"",
                             declared=3 << 30)
        return self.send(req, 200, headers, data)

    def answer_cdn(self, req, name):
        if name not in self.files:
            return self.send(req, 404, body=b"NoSuchKey")
        data = self.files[name]
        fault = self.every or self.faults.get(name)
        # An S3-style ETag: an MD5, which is no business of the client's.
        headers = [("ETag", '"%s"' % hashlib.md5(data).hexdigest())]
        if fault == "truncate":
            return self.send(req, 200, headers + [("Connection", "close")],
                             data[:len(data) // 2], declared=len(data))
        if fault == "short_linked":
            return self.send(req, 200, headers, data[:-100])
        if fault == "stall":
            req.send_response(200)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data[:1000])
            req.wfile.flush()
            self.release.wait(30)
            req.close_connection = True
            return
        return self.send(req, 200, headers, data)


# --- helpers ------------------------------------------------------------------------


def pull(hub, *args, cwd=None, name=REPO, env=None, timeout=60):
    """Run `semgate --pull-model NAME --hub URL ARGS...` in cwd (a fresh temp
    dir by default). Returns (rc, stdout, stderr, cwd)."""
    cwd = cwd or h.make_temp_dir("sg-pull-")
    argv = ["--pull-model", name]
    if hub is not None:
        argv += ["--hub", hub.url]
    # The fake hub is on 127.0.0.1: no proxy from the environment in between.
    full_env = {"no_proxy": "*", "NO_PROXY": "*"}
    full_env.update(env or {})
    rc, out, err = h.run_semgate(argv + list(args), cwd=cwd, env=full_env, timeout=timeout)
    return rc, out, err, cwd


def leftovers(parent):
    """Partial directories left in parent."""
    return [n for n in os.listdir(parent) if ".partial-" in n]


def expect_failed_cleanly(rc, out, err, parent, dir_name="m", want=None):
    h.expect(rc == 1, "exit code %r, want 1; stdout %r; stderr:\n%s", rc, out, err)
    h.expect("ready" not in out, "a failed pull printed %r", out)
    h.expect(not os.path.exists(os.path.join(parent, dir_name)),
             "a failed pull left %s/%s: %r", parent, dir_name, os.listdir(parent))
    h.expect(not leftovers(parent), "a failed pull left a partial directory: %r",
             os.listdir(parent))
    for w in ([want] if isinstance(want, str) else want or []):
        h.expect(w in err, "stderr does not mention %r:\n%s", w, err)


def expect_model_dir(path, files):
    for name, data in files.items():
        p = os.path.join(path, name)
        h.expect(os.path.isfile(p), "%s is missing from the pulled model", name)
        with open(p, "rb") as f:
            h.expect(f.read() == data, "%s differs from the hub's", name)
    extra = []
    for root, _, names in os.walk(path):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), path)
            if rel not in files:
                extra.append(rel)
    h.expect(not extra, "the pulled model has files the hub did not serve: %r", extra)


def check_config(tmp, model_path):
    """`semgate --check` on a config whose cache embeds with the pulled model."""
    cfg = {
        "models": [{"name": "m", "deployments": [{"base_url": "http://127.0.0.1:9/v1"}]}],
        "cache": {"path": os.path.join(tmp, "cache"),
                  "embedder": {"provider": "model", "model_path": model_path}},
    }
    path = os.path.join(tmp, "check.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return h.run_semgate(["--check", path], cwd=tmp)


# --- tests --------------------------------------------------------------------------


def test_pull_ok():
    files = model_files()
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    h.expect(rc == 0, "exit %r; stdout %r; stderr:\n%s", rc, out, err)
    dest = os.path.join(tmp, "m")
    expect_model_dir(dest, files)
    h.expect_eq(leftovers(tmp), [], "partial directories")
    line = out.strip()
    h.expect(line.startswith("model %s ready in m (" % REPO) and line.endswith(")"),
             "stdout %r", out)
    # The description is the loader's, for the directory's own name.
    h.expect("m: 2 layers, hidden 32" in line, "description %r", line)
    h.expect("partial" not in out, "the staging directory's name leaks: %r", out)
    # Every file was checked against the hub's hash and said so.
    h.expect("model.safetensors" in err and "sha256 ok" in err, "stderr:\n%s", err)
    h.expect("config.json" in err and "git sha1 ok" in err, "stderr:\n%s", err)
    h.expect("not verified" not in err, "a file was not verified:\n%s", err)
    # The LFS file came through the CDN redirect.
    paths = hub.paths()
    h.expect(any(p.startswith("/cdn/model.safetensors") for p in paths),
             "model.safetensors not fetched from the CDN: %r", paths)
    h.expect(any(p == "/%s/resolve/main/config.json" % REPO for p in paths),
             "config.json not fetched at revision main: %r", paths)
    h.expect(any(ua.startswith("semgate/") for ua in hub.user_agents),
             "User-Agent %r", hub.user_agents)
    # The gateway accepts a configuration that embeds with it.
    # (--check validates the option names; whether it also loads model_path is up to
    # the embedder's configuration code.)
    rc, out, err = check_config(tmp, dest)
    h.expect(rc == 0 and "configuration OK" in out, "--check exit %r; stdout %r; stderr %r",
             rc, out, err)


def test_default_dir_hf_endpoint_and_revision():
    files = model_files()
    with Hub(files) as hub:
        rc, out, err, tmp = pull(None, name=REPO + "@refs/pr/1",
                                 env={"HF_ENDPOINT": hub.url + "/"})
    h.expect(rc == 0, "exit %r; stdout %r; stderr:\n%s", rc, out, err)
    # models/<name lower-cased>, relative to the current directory.
    expect_model_dir(os.path.join(tmp, "models", "tiny-bert"), files)
    h.expect(("ready in models/tiny-bert (") in out, "stdout %r", out)
    # The revision is one URL segment, its '/' encoded as the hub's client does.
    h.expect("/%s/resolve/refs%%2Fpr%%2F1/config.json" % REPO in hub.paths(),
             "requests %r", hub.paths())


def test_renamed_repository():
    # The hub's relative redirect to the new name: its headers behind the redirect
    # still count, so every file is still checked.
    files = model_files()
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m", name=RENAMED)
    h.expect(rc == 0, "exit %r; stdout %r; stderr:\n%s", rc, out, err)
    expect_model_dir(os.path.join(tmp, "m"), files)
    h.expect("not verified" not in err, "a file was not verified:\n%s", err)


def test_optional_404():
    files = model_files()
    for name in OPTIONAL:
        files.pop(name, None)
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    h.expect(rc == 0, "exit %r; stdout %r; stderr:\n%s", rc, out, err)
    expect_model_dir(os.path.join(tmp, "m"), files)
    h.expect("skipped" in err, "stderr does not say what was skipped:\n%s", err)
    h.expect(not os.path.exists(os.path.join(tmp, "m", "1_Pooling")),
             "an empty 1_Pooling/ was left")


def test_tokenizer_json_only():
    files = model_files()
    del files["vocab.txt"]
    files["tokenizer.json"] = json.dumps(tokenizer_json()).encode()
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    h.expect(rc == 0, "exit %r; stdout %r; stderr:\n%s", rc, out, err)
    expect_model_dir(os.path.join(tmp, "m"), files)


def test_no_tokenizer():
    files = model_files()
    del files["vocab.txt"]
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
        paths = hub.paths()
    expect_failed_cleanly(rc, out, err, tmp, want=["tokenizer.json", "vocab.txt"])
    # Known before the big download.
    h.expect(not any("model.safetensors" in p for p in paths),
             "the weights were fetched anyway: %r", paths)


def test_required_404():
    for missing in REQUIRED:
        files = model_files()
        del files[missing]
        with Hub(files) as hub:
            rc, out, err, tmp = pull(hub, "--to", "m")
        expect_failed_cleanly(rc, out, err, tmp,
                              want=["%s/%s/resolve/main/%s" % (hub.url, REPO, missing), "404"])


def test_unknown_repository():
    with Hub(model_files()) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m", name="acme/no-such-model")
    expect_failed_cleanly(rc, out, err, tmp, want=["401", "Repository not found"])


def test_hub_500():
    with Hub(model_files(), every="500") as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp,
                          want=["500", "%s/%s/resolve/main/config.json" % (hub.url, REPO)])


def test_truncated_lfs():
    with Hub(model_files(), faults={"model.safetensors": "truncate"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want="model.safetensors")


def test_truncated_small_file():
    with Hub(model_files(), faults={"vocab.txt": "truncate"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want="vocab.txt")
    # Without a hash to catch it, the size alone must.
    with Hub(model_files(), faults={"vocab.txt": "truncate_nohash"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want="vocab.txt")


def test_shorter_than_linked_size():
    # The CDN's answer is consistent in itself, but shorter than the hub said.
    with Hub(model_files(), faults={"model.safetensors": "short_linked"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp,
                          want=["model.safetensors", "the hub says the file has"])


def test_wrong_sha256():
    with Hub(model_files(), faults={"model.safetensors": "bad_sha"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want=["model.safetensors", "sha256"])


def test_wrong_git_sha1():
    with Hub(model_files(), faults={"config.json": "bad_sha"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want=["config.json", "sha1"])


def test_too_big():
    # An LFS file announced at 3 GiB: refused before the redirect is followed.
    with Hub(model_files(), faults={"model.safetensors": "huge"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
        paths = hub.paths()
    expect_failed_cleanly(rc, out, err, tmp, want=["model.safetensors", "larger than"])
    h.expect(not any(p.startswith("/cdn/") for p in paths), "CDN contacted: %r", paths)
    # A small file with a 3 GiB Content-Length.
    with Hub(model_files(), faults={"config.json": "huge"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want=["config.json", "larger than"])


def test_redirect_to_other_protocol():
    with Hub(model_files(), faults={"model.safetensors": "ftp"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want="model.safetensors")
    h.expect("protocol" in err.lower(), "stderr does not blame the protocol:\n%s", err)


def test_stalled_transfer():
    with Hub(model_files(), faults={"model.safetensors": "stall"}) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m", env={"SEMGATE_TEST_PULL_STALL_S": "1"},
                                 timeout=25)
    expect_failed_cleanly(rc, out, err, tmp, want="model.safetensors")
    h.expect("timeout" in err.lower() or "timed out" in err.lower(),
             "stderr does not say it timed out:\n%s", err)


def test_interrupted():
    # SIGINT in the middle of the big download: the staging directory goes too.
    tmp = h.make_temp_dir("sg-pull-")
    with Hub(model_files(), faults={"model.safetensors": "stall"}) as hub:
        env = dict(os.environ, no_proxy="*", NO_PROXY="*")
        p = h._track_proc(subprocess.Popen(
            [h.semgate_bin(), "--pull-model", REPO, "--hub", hub.url, "--to", "m"], cwd=tmp,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        h.wait_for(lambda: any(q.startswith("/cdn/") for q in hub.paths()), timeout=20,
                   what="the weights' download to start")
        h.expect(leftovers(tmp), "no partial directory during the download: %r",
                 os.listdir(tmp))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    out, err = out.decode(), err.decode()
    expect_failed_cleanly(p.returncode, out, err, tmp, want="interrupted")


def test_bad_names():
    for bad in ("../etc", "acme", "acme/", "/acme/x", "-acme/x", "acme/-x", "acme/x/y",
                "acme/..", "acme/a..b", "acme/x y", "acme/x@", "acme/x@../../etc",
                "acme/x@/main", "acme/x@main/", "acme/x@a//b", ".acme/x"):
        tmp = h.make_temp_dir("sg-pull-")
        rc, out, err = h.run_semgate(["--pull-model", bad, "--hub", "http://127.0.0.1:9"],
                                     cwd=tmp)
        h.expect(rc == 2, "name %r: exit %r, want 2; stderr %r", bad, rc, err)
        h.expect("usage" in err.lower(), "name %r: no usage on stderr: %r", bad, err)
        h.expect_eq(os.listdir(tmp), [], "files made for name %r" % bad)


def test_usage_errors():
    for args in ([], ["--to"], [REPO, "--to"], [REPO, "--bogus"], [REPO, "other/name"],
                 [REPO, "--hub", "ftp://example.com"], [REPO, "--hub", "http://"],
                 [REPO, "--hub", "http://h/x?y"], [REPO, "--to", "."],
                 [REPO, "--to", "a/.."]):
        tmp = h.make_temp_dir("sg-pull-")
        rc, out, err = h.run_semgate(["--pull-model"] + args, cwd=tmp)
        h.expect(rc == 2, "%r: exit %r, want 2; stderr %r", args, rc, err)
        h.expect_eq(os.listdir(tmp), [], "files made for %r" % args)
    tmp = h.make_temp_dir("sg-pull-")
    rc, out, err = h.run_semgate(["--pull-model", REPO], env={"HF_ENDPOINT": "gopher://x"},
                                 cwd=tmp)
    h.expect(rc == 2 and "HF_ENDPOINT" in err, "bad HF_ENDPOINT: exit %r, stderr %r", rc, err)


def test_existing_dir_refused_then_forced():
    files = model_files()
    tmp = h.make_temp_dir("sg-pull-")
    dest = os.path.join(tmp, "m")
    os.mkdir(dest)
    with open(os.path.join(dest, "config.json"), "w") as f:
        f.write('{"old": true}')
    with open(os.path.join(dest, "old-marker"), "w") as f:
        f.write("old")
    with Hub(files) as hub:
        rc, out, err, _ = pull(hub, "--to", "m", cwd=tmp)
        h.expect(rc == 1, "exit %r, want 1; stderr:\n%s", rc, err)
        h.expect("--force" in err, "the refusal does not mention --force:\n%s", err)
        h.expect(os.path.exists(os.path.join(dest, "old-marker")), "the old DIR was touched")
        h.expect_eq(leftovers(tmp), [], "partial directories")
        h.expect(not hub.requests, "downloaded although DIR exists: %r", hub.requests)

        rc, out, err, _ = pull(hub, "--to", "m", "--force", cwd=tmp)
    h.expect(rc == 0, "--force: exit %r; stdout %r; stderr:\n%s", rc, out, err)
    expect_model_dir(dest, files)  # the old files are gone, marker included
    h.expect_eq(sorted(os.listdir(tmp)), ["m"], "what is left beside DIR")


def test_force_refuses_a_non_model_dir():
    tmp = h.make_temp_dir("sg-pull-")
    dest = os.path.join(tmp, "m")
    os.mkdir(dest)
    with open(os.path.join(dest, "precious.txt"), "w") as f:
        f.write("not a model")
    with Hub(model_files()) as hub:
        rc, out, err, _ = pull(hub, "--to", "m", "--force", cwd=tmp)
    h.expect(rc == 1, "exit %r, want 1; stderr:\n%s", rc, err)
    h.expect("not replacing" in err, "stderr:\n%s", err)
    h.expect(os.path.exists(os.path.join(dest, "precious.txt")), "a non-model DIR was replaced")
    h.expect_eq(leftovers(tmp), [], "partial directories")


def test_failed_force_keeps_old_model():
    tmp = h.make_temp_dir("sg-pull-")
    with Hub(model_files()) as hub:
        rc, out, err, _ = pull(hub, "--to", "m", cwd=tmp)
    h.expect(rc == 0, "first pull: exit %r; stderr:\n%s", rc, err)
    with Hub(model_files(), faults={"model.safetensors": "bad_sha"}) as hub:
        rc, out, err, _ = pull(hub, "--to", "m", "--force", cwd=tmp)
    h.expect(rc == 1, "exit %r, want 1; stderr:\n%s", rc, err)
    expect_model_dir(os.path.join(tmp, "m"), model_files())
    h.expect_eq(leftovers(tmp), [], "partial directories")


def test_not_a_model():
    # Downloads fine, every hash right: the loader refuses it, nothing is installed.
    files = model_files(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
        paths = hub.paths()
    expect_failed_cleanly(rc, out, err, tmp, want=["config.json", "gpt2", "not a model"])
    h.expect(any(p.startswith("/cdn/") for p in paths), "the weights were not even fetched")


def test_not_a_model_bad_weights():
    # A tensor missing from the weights: the loader names it.
    files = model_files()
    files["model.safetensors"] = safetensors()
    hdr_len = struct.unpack("<Q", files["model.safetensors"][:8])[0]
    header = json.loads(files["model.safetensors"][8:8 + hdr_len])
    del header["encoder.layer.1.output.dense.weight"]
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    files["model.safetensors"] = (struct.pack("<Q", len(hj)) + hj
                                  + files["model.safetensors"][8 + hdr_len:])
    with Hub(files) as hub:
        rc, out, err, tmp = pull(hub, "--to", "m")
    expect_failed_cleanly(rc, out, err, tmp, want=["model.safetensors", "not a model"])


if __name__ == "__main__":
    h.main()
