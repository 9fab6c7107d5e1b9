#!/usr/bin/env python3
"""Concatenate two vector files of build/qqp --ext's format, text by text,
with relative weights: [sqrt(w1) v1, sqrt(w2) v2] / sqrt(w1 + w2), so the
cosine of two records is the weighted mean of the two cosines.

    python3 concat_vectors.py A.bin DIM_A W_A B.bin DIM_B W_B OUT.bin"""
import array
import math
import struct
import sys


def load(path, dim):
    out = {}
    with open(path, 'rb') as f:
        while True:
            h = f.read(4)
            if not h:
                return out
            (n,) = struct.unpack('<I', h)
            t = f.read(n)
            v = array.array('f')
            v.frombytes(f.read(4 * dim))
            out[t] = v


if len(sys.argv) != 8:
    sys.exit(__doc__)
pa, da, wa, pb, db, wb, out = sys.argv[1:]
a, b = load(pa, int(da)), load(pb, int(db))
wa, wb = float(wa), float(wb)
sa, sb = math.sqrt(wa / (wa + wb)), math.sqrt(wb / (wa + wb))
with open(out, 'wb') as f:
    for t, v in a.items():
        w = b.get(t)
        if w is None:
            continue
        f.write(struct.pack('<I', len(t)))
        f.write(t)
        f.write(array.array('f', [sa * x for x in v] + [sb * x for x in w]).tobytes())
