#!/usr/bin/env python3
"""onnx_export.py: the fp32 ONNX export of the model that bench/embed_ref.py --engine ort runs.

  python bench/onnx_export.py [--model DIR] [--out FILE] [--opset 17] [--tol 1e-5]

Loads DIR (default models/all-minilm-l6-v2 of this repository: a sentence-transformers
layout) with sentence-transformers, offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: nothing
is fetched), wraps its transformer (the BertModel) with mean pooling over the attention mask
and L2 normalisation, and exports it with torch.onnx.export (the legacy TorchScript exporter,
dynamo=False), opset 17, dynamic batch and sequence axes:

  inputs  input_ids [batch, seq] int64, attention_mask [batch, seq] int64
  output  emb [batch, hidden] float32 (mean-pooled, L2-normalised)

(token_type_ids is not an input: the BertModel takes zeros, as sentence-transformers passes
for one-segment texts.) Then it checks the export: ONNX Runtime on the file against
SentenceTransformer.encode(..., normalize_embeddings=True) on a few texts, one at a time and
as one padded batch; prints the max abs difference and exits 1 if it is above --tol.

Needs torch, sentence-transformers, onnx and onnxruntime (bench/setup_embed_bench.sh makes a
virtualenv with them and runs this to bench/.onnx/all-MiniLM-L6-v2.onnx).
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXTS = [
    "What is the best way to learn machine learning on my own time?",
    "How do I reset my password?",
    "hi",
    "Why is the sky blue during the day but red and orange at sunset, and what does "
    "Rayleigh scattering have to do with it?",
    "Quelle est la capitale de l'Australie ?",
    "",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(TOP, "models", "all-minilm-l6-v2"))
    ap.add_argument("--out", default=os.path.join(TOP, "bench", ".onnx", "all-MiniLM-L6-v2.onnx"))
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    st = SentenceTransformer(a.model, device="cpu", local_files_only=True)
    st.eval()
    bert = st[0].auto_model
    tokenizer = st.tokenizer
    max_len = st.max_seq_length
    pooling = [m for m in st if type(m).__name__ == "Pooling"]
    if pooling and getattr(pooling[0], "pooling_mode_mean_tokens", True) is not True:
        sys.exit("onnx_export: %s does not use mean pooling" % a.model)

    class MeanPoolNorm(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            s = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(s, p=2.0, dim=1)

    wrap = MeanPoolNorm(bert).eval()
    dummy = tokenizer(TEXTS[:2], padding=True, truncation=True, max_length=max_len,
                      return_tensors="pt")
    args = (dummy["input_ids"].to(torch.int64), dummy["attention_mask"].to(torch.int64))

    out = os.path.abspath(a.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    kw = dict(input_names=["input_ids", "attention_mask"], output_names=["emb"],
              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                            "attention_mask": {0: "batch", 1: "seq"},
                            "emb": {0: "batch"}},
              opset_version=a.opset, do_constant_folding=True)
    with torch.no_grad():
        try:
            torch.onnx.export(wrap, args, tmp, dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo= switch: legacy is its only exporter
            torch.onnx.export(wrap, args, tmp, **kw)
    onnx.checker.check_model(tmp)
    os.replace(tmp, out)

    # Check: ONNX Runtime on the file against sentence-transformers.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(out, so, providers=["CPUExecutionProvider"])
    ref = st.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False)

    def run(group):
        enc = tokenizer(group, padding=True, truncation=True, max_length=max_len,
                        return_tensors="np")
        return sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                               "attention_mask": enc["attention_mask"].astype(np.int64)})[0]

    one = np.concatenate([run([t]) for t in TEXTS])
    batch = run(TEXTS)
    d1 = float(np.abs(one - ref).max())
    d2 = float(np.abs(batch - ref).max())
    print("onnx_export: %s (%.1f MB, opset %d, torch %s, sentence-transformers %s, "
          "onnxruntime %s)" % (out, os.path.getsize(out) / 1e6, a.opset, torch.__version__,
                               __import__("sentence_transformers").__version__,
                               ort.__version__))
    print("onnx_export: %d texts, dim %d: max abs difference from sentence-transformers "
          "%.2e one at a time, %.2e as one padded batch (tolerance %.0e)"
          % (len(TEXTS), ref.shape[1], d1, d2, a.tol))
    if not (max(d1, d2) <= a.tol):
        print("onnx_export: FAILED: the export does not match sentence-transformers",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
