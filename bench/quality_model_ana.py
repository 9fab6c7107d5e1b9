#!/usr/bin/env python3
"""Analysis of bench/quality_model.sh's results (bench/QUALITY.md, "The model embedder").

  python3 bench/quality_model_ana.py [OUT] [--evidence build-q/verify_evidence]

OUT is quality_model.sh's results directory (default /tmp/semgate-quality-model). Prints:
1. the best positive hit rate at precision >= 0.90 of every server run (every distinct
   similarity tried), on the whole file and on its two halves (pairs split by bit 7 of the
   FNV-1a hash of `a`, as bench/tool_qqp.c does);
2. the verifier's evidence replayed offline on the verifier-off runs of each model: the
   dump's (b, nearest a, cosine) go through bench/verify_evidence.c (sg_verify_explain with
   default knobs), and since the verified score is the cosine minus fixed penalties, any
   other penalty setting is the same arithmetic on those columns. With default knobs this
   reproduces the server's verifier-on run (top-1 lookups) exactly;
3. precision / hit rates at shared thresholds for the default model.
The data is read from ../shared/data (never copied).
"""
import argparse
import json
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(TOP, "..", "shared", "data")
DATASETS = ("qqp-dev", "mrpc-dev")
# cache/verify.c's defaults
DEF = dict(sub=0.04, extra=0.08, num=0.08, neg=0.06, qt=0.04, ant=0.08, order=0.04, ctx=0.10)


def fnv_bit7(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return (h >> 7) & 1


def pairs_halves(ds):
    return [fnv_bit7(json.loads(l)["a"]) for l in open(os.path.join(DATA, ds + ".jsonl"))]


def best(res, p_min=0.90):
    """res: (label, score or None, correct). Best positive hit rate over every
    threshold with precision >= p_min: (threshold, phr, precision, hits) or None."""
    npos = sum(1 for r in res if r[0] == 1)
    s = sorted((r for r in res if r[1] is not None), key=lambda r: -r[1])
    b = None
    h = c = po = 0
    i = 0
    while i < len(s):
        t = s[i][1]
        while i < len(s) and s[i][1] == t:
            lab, _, ok = s[i]
            h += 1
            c += ok
            po += lab == 1 and ok
            i += 1
        if c / h >= p_min and (b is None or po / npos > b[1]):
            b = (t, po / npos, c / h, h)
    return b


def at(res, t):
    npos = sum(1 for r in res if r[0] == 1)
    nneg = len(res) - npos
    h = c = po = nf = 0
    for lab, sim, ok in res:
        if sim is None or sim < t:
            continue
        h += 1
        c += ok
        po += lab == 1 and ok
        nf += lab == 0 and not ok
    return h, c / h if h else 0.0, po / npos, nf / nneg


def read_dump(path):
    out = []
    for l in open(path, encoding="utf-8"):
        f = l.rstrip("\n").split("\t")
        out.append((int(f[0]), float(f[2]) if f[2] else None, int(f[3])))
    return out


def read_evidence(path):
    rows = []
    for l in open(path, encoding="utf-8"):
        f = l.rstrip("\n").split("\t")
        rows.append(dict(lab=int(f[0]), st=f[1], cos=float(f[2]) if f[2] else None,
                         ok=int(f[3]), ma=float(f[4]), mb=float(f[5]), num=int(f[6]),
                         neg=int(f[7]), qt=int(f[8]), ant=int(f[9]), order=int(f[10]),
                         ctx=int(f[11]), same=int(f[15])))
    return rows


def vscore(r, k):
    """The verifier's score with penalties k (None: the cosine alone)."""
    if r["cos"] is None:
        return None
    if r["st"] == "hit-exact":
        return 1.0
    if k is None or r["same"]:
        return min(1.0, max(0.0, r["cos"]))
    lo, hi = min(r["ma"], r["mb"]), max(r["ma"], r["mb"])
    pen = (k["sub"] * lo + k["extra"] * hi + k["num"] * r["num"] + k["neg"] * r["neg"] +
           k["qt"] * r["qt"] + k["ant"] * r["ant"] + k["order"] * r["order"] + k["ctx"] * r["ctx"])
    return min(1.0, max(0.0, r["cos"] - pen))


def split(res, halves):
    return [res] + [[r for r, h in zip(res, halves) if h == x] for x in (0, 1)]


def fmt_best(res, halves):
    b = [best(x) for x in split(res, halves)]
    return "%.3f @ %.4f [halves %.3f / %.3f]" % (b[0][1], b[0][0], b[1][1], b[2][1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="/tmp/semgate-quality-model")
    ap.add_argument("--evidence", default=os.path.join(TOP, "build-q", "verify_evidence"))
    args = ap.parse_args()
    halves = {ds: pairs_halves(ds) for ds in DATASETS}

    print("1. Server runs: best positive hit rate at precision >= 0.90 (any threshold)")
    for ds in DATASETS:
        for run in ("L6-off", "L6-on", "L3-off", "L3-on", "local-on"):
            p = os.path.join(args.out, "%s__%s.dump" % (run, ds))
            if os.path.exists(p):
                print("  %-9s %-9s %s" % (run, ds, fmt_best(read_dump(p), halves[ds])))

    off = {k: 0.0 for k in DEF}
    settings = [
        ("cosine (verifier off)", None),
        ("verifier, default knobs", DEF),
        ("verifier, substitution and extra off", dict(DEF, sub=0, extra=0)),
        ("number only", dict(off, num=DEF["num"])),
        ("number + negation", dict(off, num=DEF["num"], neg=DEF["neg"])),
    ] + [("default without %s" % k, dict(DEF, **{k: 0})) for k in DEF]
    ev = {}
    for m in ("L6", "L3"):
        for ds in DATASETS:
            dump = os.path.join(args.out, "%s-off__%s.dump" % (m, ds))
            if not os.path.exists(dump):
                continue
            path = os.path.join(args.out, "%s-off__%s.ev" % (m, ds))
            with open(dump, "rb") as fi, open(path, "wb") as fo:
                subprocess.run([args.evidence], stdin=fi, stdout=fo, check=True)
            ev[(m, ds)] = read_evidence(path)
    print("\n2. Verifier settings replayed on the verifier-off runs (top-1): best PHR @ P >= 0.90")
    for name, k in settings:
        cells = []
        for (m, ds), rows in ev.items():
            res = [(r["lab"], vscore(r, k), r["ok"]) for r in rows]
            cells.append("%s %s %s" % (m, ds[:4], fmt_best(res, halves[ds])))
        print("  %-38s %s" % (name, " | ".join(cells)))

    print("\n3. Shared thresholds, all-MiniLM-L6-v2: hits, precision, PHR, NFHR (P on halves)")
    for name, k, ts in (("verifier off", None, (0.97, 0.975, 0.98)),
                        ("verifier, default knobs", DEF, (0.93, 0.94, 0.945, 0.95, 0.96)),
                        ("verifier, substitution and extra off", dict(DEF, sub=0, extra=0),
                         (0.96, 0.965, 0.97, 0.975, 0.98))):
        for t in ts:
            cells = []
            for ds in DATASETS:
                rows = ev.get(("L6", ds))
                if rows is None:
                    continue
                res = [(r["lab"], vscore(r, k), r["ok"]) for r in rows]
                w, h0, h1 = (at(x, t) for x in split(res, halves[ds]))
                cells.append("%s %d P %.3f R %.3f N %.3f [P %.3f / %.3f]"
                             % (ds[:4], w[0], w[1], w[2], w[3], h0[1], h1[1]))
            print("  %-38s %.3f  %s" % (name, t, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
