#!/usr/bin/env python3
"""The README's modular-reuse table from the eval JSON that
scripts/reproduce-modules.sh writes (one row per workload and run)."""
import glob
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "results-modules"
print("| workload | positions | recovery | tokens | cached | recomputed | TTFT exact / prefix / modular (ms) "
      "| × exact | × prefix | top-1 | KL | NLL Δ | accuracy exact → modular |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "*", "eval-*.json"))):
    e = json.load(open(path))
    t = e["ttft_ms"]
    acc = e["task_accuracy"]
    pct = lambda v: "–" if v is None else f"{v * 100:.1f} %"
    print(f"| {os.path.basename(os.path.dirname(path))} | {e['positions']} | `{e['recovery']}` "
          f"| {e['tokens_mean']:.0f} | {e['cached_fraction'] * 100:.1f} % | {e['recomputed_fraction'] * 100:.1f} % "
          f"| {t['exact']['median']:.0f} / {t['prefix']['median']:.0f} / {t['modular']['median']:.0f} "
          f"| {e['speedup_vs_exact']:.2f} | {e['speedup_vs_prefix']:.2f} | {e['top1_agreement'] * 100:.1f} % "
          f"| {e['kl_mean']:.4f} | {e['nll_delta']:+.3f} | {pct(acc['exact'])} → {pct(acc['modular'])} |")
print()
print("| workload | kind | chosen | top-1 of each setting (cheapest first) |")
print("|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "*", "calibrate-*.json"))):
    c = json.load(open(path))
    points = ", ".join(f"{p['recovery']} {p['top1_agreement'] * 100:.0f} %" for p in c["points"])
    met = "" if c["met"] else " (budget not met)"
    print(f"| {os.path.basename(os.path.dirname(path))} | {c['points'][0]['recovery'].split(':')[0]} "
          f"| `{c['chosen']}`{met} | {points} |")
