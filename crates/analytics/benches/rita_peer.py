#!/usr/bin/env python3
"""A small RITA-style beacon scorer in plain Python: the peer for the throughput bench.

Reads a Zeek conn.log (TSV, columns from #fields), groups connections by (source, destination),
and scores each pair with >= 5 connections like RITA: Bowley skew and median absolute deviation of
the intervals and of the sizes, connection count. Prints one JSON summary line with its timing.

usage: rita_peer.py conn.log
"""
import json
import sys
import time
from collections import defaultdict


def quartiles(v):
    n = len(v)

    def q(p):
        pos = p * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        f = pos - lo
        return v[lo] * (1 - f) + v[hi] * f

    return q(0.25), q(0.5), q(0.75)


def regularity(values):
    v = sorted(values)
    q1, q2, q3 = quartiles(v)
    den = q3 - q1
    skew = 0.0 if den <= 0 else abs((q1 + q3 - 2 * q2) / den)
    dev = sorted(abs(x - q2) for x in v)
    madm = dev[len(dev) // 2]
    madm_score = max(0.0, 1.0 - madm / q2) if q2 > 0 else 0.0
    return 1.0 - min(skew, 1.0), madm_score, q2


def main(path):
    t0 = time.time()
    c0 = time.process_time()
    pairs = defaultdict(list)
    lines = bad = 0
    cols = None
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#"):
                if line.startswith("#fields"):
                    names = line.rstrip("\n").split("\t")[1:]
                    cols = (names.index("ts"), names.index("id.orig_h"), names.index("id.resp_h"),
                            names.index("orig_bytes"))
                continue
            lines += 1
            p = line.rstrip("\n").split("\t")
            try:
                ts = float(p[cols[0]])
                ob = p[cols[3]]
                pairs[(p[cols[1]], p[cols[2]])].append((ts, 0 if ob == "-" else int(ob)))
            except (ValueError, IndexError, TypeError):
                bad += 1
    t_read = time.time()
    scored = beacons = 0
    for key, evs in pairs.items():
        if len(evs) < 5:
            continue
        evs.sort()
        iv = [b[0] - a[0] for a, b in zip(evs, evs[1:])]
        sk, md, _ = regularity(iv)
        ssk, smd, smed = regularity([e[1] for e in evs])
        count = min(1.0, len(evs) / 36.0)
        small = 1.0 - min(1.0, smed / 65535.0)
        score = ((sk + md + count) / 3.0 + (ssk + smd + small) / 3.0) / 2.0
        scored += 1
        if score >= 0.8:
            beacons += 1
    t1 = time.time()
    print(json.dumps({
        "tool": "rita_peer.py", "lines": lines, "bad": bad, "pairs": len(pairs), "scored": scored,
        "beacons": beacons, "read_seconds": t_read - t0, "seconds": t1 - t0,
        "lines_per_sec": lines / max(t1 - t0, 1e-9), "cpu_seconds": time.process_time() - c0,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
