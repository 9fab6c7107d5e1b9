"""The cache-replay protocol (../shared/data/README.md) offline, for any model that
sentence-transformers loads (e.g. one semgate's encoder does not): every distinct `a`
stored, every `b` answered by its nearest `a` by cosine (exact search; a `b` equal to an
`a` is an exact hit), no verifier. Prints the best positive hit rate at precision >= 0.90
over every distinct similarity, and precision / positive hit rate at a few thresholds.
Runs in the benchmark's virtualenv (bash bench/setup_embed_bench.sh):
    bench/.venv-bench/bin/python bench/replay_offline.py MODEL_DIR ../shared/data/qqp-dev.jsonl
"""
import json, sys, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer
model_path, data = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
pairs = [json.loads(l) for l in open(data)]
# clusters: label-1 pairs joined transitively
par = {}
def find(x):
    while par.setdefault(x, x) != x:
        par[x] = par[par[x]]; x = par[x]
    return x
for p in pairs:
    find(p['a']); find(p['b'])
    if p['label'] == 1: par[find(p['a'])] = find(p['b'])
A = sorted({p['a'] for p in pairs})
B = [p['b'] for p in pairs]
m = SentenceTransformer(model_path, device='cpu')
t = time.time()
ea = m.encode(A, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
eb = m.encode(B, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
print('embedded %d in %.0f s' % (len(A) + len(B), time.time() - t), file=sys.stderr)
aidx = {a: i for i, a in enumerate(A)}
best_s = np.empty(len(B), dtype=np.float32); best_i = np.empty(len(B), dtype=np.int64)
for s in range(0, len(B), 2048):
    sims = eb[s:s+2048] @ ea.T
    for j, b in enumerate(B[s:s+2048]):
        if b in aidx: sims[j, aidx[b]] = 2.0  # byte-identical: exact hit
    best_i[s:s+2048] = sims.argmax(1); best_s[s:s+2048] = sims.max(1)
correct = np.array([find(A[best_i[k]]) == find(B[k]) for k in range(len(B))])
label = np.array([p['label'] for p in pairs])
npos = int((label == 1).sum())
order = np.argsort(-best_s)
c = np.cumsum(correct[order]); cp = np.cumsum((correct & (label == 1))[order])
hits = np.arange(1, len(B) + 1)
prec = c / hits
best = (0.0, None, None)
for k in range(len(B)):
    if k + 1 < len(B) and best_s[order[k + 1]] == best_s[order[k]]:
        continue
    if prec[k] >= 0.90 and cp[k] / npos > best[0]:
        best = (cp[k] / npos, float(best_s[order[k]]), float(prec[k]))
print('%s %s: best PHR @P>=0.90 = %.3f (threshold %.4f, precision %.3f); label-1 pairs %d' %
      (model_path.rstrip('/').split('/')[-1], data.split('/')[-1], best[0], best[1] or 0, best[2] or 0, npos))
for thr in (0.80, 0.85, 0.90, 0.95, 0.97):
    k = int((best_s >= thr).sum())
    if k: print('  t %.2f: hits %d precision %.3f PHR %.3f' % (thr, k, prec[k-1], cp[k-1] / npos))
