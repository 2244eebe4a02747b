#!/usr/bin/env python3
"""The README's modular-reuse tables from the JSON that
scripts/reproduce-modules.sh writes: one row per workload and run, then the
recovery each calibration chose."""
import glob
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "results-modules"
ORDER = ["multidoc-4", "multidoc-8", "multidoc-16", "multidoc-32", "passkey", "fewshot"]


def load(path):
    """A finished result file, or None (one still being written)."""
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def workloads():
    names = [os.path.basename(d) for d in glob.glob(os.path.join(out, "*")) if os.path.isdir(d)]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def pct(v):
    return "–" if v is None else f"{v * 100:.1f} %"


def recovery_key(e):
    kind, _, value = e["recovery"].partition(":")
    return (e["positions"] != "contiguous", kind != "none", kind, float(value or 0))


print("| workload | positions | recovery | tokens | cached | recomputed | TTFT exact / prefix / modular "
      "| × exact | × prefix | top-1 | KL | NLL Δ | accuracy exact → modular |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in workloads():
    runs = [e for e in (load(p) for p in glob.glob(os.path.join(out, name, "eval-*.json"))) if e]
    for e in sorted(runs, key=recovery_key):
        t = e["ttft_ms"]
        acc = e["task_accuracy"]
        print(f"| {name} | {e['positions']} | `{e['recovery']}` | {e['tokens_mean']:,.0f} "
              f"| {e['cached_fraction'] * 100:.1f} % | {e['recomputed_fraction'] * 100:.1f} % "
              f"| {t['exact']['median']:,.0f} / {t['prefix']['median']:,.0f} / {t['modular']['median']:,.0f} ms "
              f"| {e['speedup_vs_exact']:.2f}× | {e['speedup_vs_prefix']:.2f}× "
              f"| {e['top1_agreement'] * 100:.1f} % | {e['kl_mean']:.4f} | {e['nll_delta']:+.3f} "
              f"| {pct(acc['exact'])} → {pct(acc['modular'])} |")
print()
print("| workload | top-1 ≥ 95 %: `select:R` | top-1 ≥ 95 %: `first:K` | KL ≤ 0.02: `select:R` |")
print("|---|---|---|---|")
for name in workloads():
    cells = []
    for kind in ["select", "first", "select-kl"]:
        c = load(os.path.join(out, name, f"calibrate-{kind}.json"))
        if c is None:
            cells.append("–")
            continue
        point = next(p for p in c["points"] if p["recovery"] == c["chosen"])
        met = "" if c["met"] else ", budget not met"
        cells.append(f"`{c['chosen']}` (top-1 {point['top1_agreement'] * 100:.0f} %, "
                     f"KL {point['kl_mean']:.3f}{met})")
    try:
        label = f"{name} (calibrated on {open(os.path.join(out, name, 'calibrated-on')).read().strip()})"
    except OSError:
        label = name
    print(f"| {label} | " + " | ".join(cells) + " |")
