"""Drain3 (the Python reference miner, `pip install drain3==0.9.11`) on the same LogHub 2k sets
as insights/benches/miner.rs: grouping accuracy per set and lines/s on one core, for the
comparison in BENCHMARKS.md ("Template mining").

usage: python drain3_baseline.py [DIR]   (default: tests/data/loghub beside this repo)
Two configurations: Drain3's defaults (sim_th 0.4, depth 4, no masking) and Drain3 with masking
instructions close to loglake's (tokens holding a digit, absolute paths, URLs -> one mask).
"""
import collections
import glob
import os
import sys
import time

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "loghub")


def accuracy(truth, pred):
    sizes = collections.Counter(truth)
    groups = {}
    for t, p in zip(truth, pred):
        g = groups.setdefault(p, [0, t, True])
        g[0] += 1
        if g[1] != t:
            g[2] = False
    ok = sum(n for n, t, pure in groups.values() if pure and sizes[t] == n)
    return ok / len(truth)


def miner(masked):
    c = TemplateMinerConfig()
    c.profiling_enabled = False
    if masked:
        c.masking_instructions = [
            MaskingInstruction(r"[a-z][a-z0-9+.-]*://\S+", "*"),
            MaskingInstruction(r"(?<![^\s=:\"'(\[])/[^\s,;\"')\]]+", "*"),
            MaskingInstruction(r"[^\s=,;:\"'()\[\]{}<>]*\d[^\s=,;:\"'()\[\]{}<>]*", "*"),
        ]
    return TemplateMiner(config=c)


sets = sorted(glob.glob(os.path.join(root, "*_2k.tsv")))
configs = [("drain3 defaults", False), ("drain3 + masking", True)]
sums = [0.0, 0.0]
all_lines = []
print("| set | " + " | ".join(n for n, _ in configs) + " |")
for path in sets:
    rows = [l.rstrip("\n").split("\t", 1) for l in open(path, encoding="utf-8")]
    truth = [r[0] for r in rows]
    msgs = [r[1] for r in rows]
    all_lines.extend(msgs)
    accs = []
    for i, (_, masked) in enumerate(configs):
        m = miner(masked)
        ids = [m.add_log_message(x)["cluster_id"] for x in msgs]
        # group by final template, as the Rust side does
        final = {c.cluster_id: c.get_template() for c in m.drain.clusters}
        acc = accuracy(truth, [final[i] for i in ids])
        sums[i] += acc
        accs.append(acc)
    print(f"| {os.path.basename(path)[:-7]} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
print("| average | " + " | ".join(f"{s / len(sets):.3f}" for s in sums) + " |")
for name, masked in configs:
    m = miner(masked)
    t = time.perf_counter()
    for x in all_lines:
        m.add_log_message(x)
    dt = time.perf_counter() - t
    print(f"{name}: {len(all_lines) / dt:.0f} lines/s ({len(all_lines)} lines, one thread)")
