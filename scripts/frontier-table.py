#!/usr/bin/env python3
"""The README tables of scripts/reproduce-frontier.sh from its result files."""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "results-frontier"
order = ["multidoc-16", "multidoc-32", "passkey", "facts-6", "facts-13", "facts-26"]


def load(name, file):
    path = os.path.join(out, name, file)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        return json.load(f)


def pct(x):
    return "-" if x is None else f"{x * 100:.1f} %"


def acc(e):
    t = e["task_accuracy"]
    return f"{pct(t['exact'])} → {pct(t['modular'])}"


print("Naive reuse by encoding (test prompts; KL against each prompt's own exact prefill):\n")
print("| workload | tokens | × exact alone / prefixed | KL alone | KL prefixed | KL ratio | top-1 alone / prefixed | accuracy exact → alone / prefixed |")
print("|---|---|---|---|---|---|---|---|")
for name in order:
    a, p = load(name, "eval-alone-none.json"), load(name, "eval-prefixed-none.json")
    if not a or not p:
        continue
    ratio = a["kl_mean"] / p["kl_mean"] if p["kl_mean"] > 0 else float("inf")
    print(
        f"| {name} | {p['tokens_mean']:,.0f} | {a['speedup_vs_exact']:.1f}× / {p['speedup_vs_exact']:.1f}× "
        f"| {a['kl_mean']:.4f} | {p['kl_mean']:.4f} | {ratio:.2f}× "
        f"| {pct(a['top1_agreement'])} / {pct(p['top1_agreement'])} "
        f"| {pct(a['task_accuracy']['exact'])} → {pct(a['task_accuracy']['modular'])} / {pct(p['task_accuracy']['modular'])} |"
    )

print("\nCalibrated (`--kind auto`, mean KL ≤ 0.02 at its 95 % bound, prefixed store), on the test prompts:\n")
print("| workload | tokens | calibrated on | chosen | calibration KL (bound) | × exact | × prefix | KL | top-1 | accuracy exact → modular | modular stages load / rotate / probe / layers ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in order:
    c, e = load(name, "calibrate.json"), load(name, "eval-prefixed-chosen.json")
    if not c or not e:
        continue
    on = open(os.path.join(out, name, "calibrated-on")).read().strip() if os.path.exists(
        os.path.join(out, name, "calibrated-on")) else name
    chosen = next(p for p in c["points"] if p["recovery"] == c["chosen"])
    met = "" if c["met"] else ", budget not met"
    s = e["stages_ms"]["modular"]
    print(
        f"| {name} | {e['tokens_mean']:,.0f} | {on} ({c['prompts']} prompts) | `{c['chosen']}` "
        f"| {chosen['kl_mean']:.4f} ({chosen['kl_bound']:.4f}{met}) "
        f"| {e['speedup_vs_exact']:.2f}× | {e['speedup_vs_prefix']:.2f}× | {e['kl_mean']:.4f} "
        f"| {pct(e['top1_agreement'])} | {acc(e)} "
        f"| {s['load_ms']:.0f} / {s['rotate_ms']:.0f} / {s['probe_ms']:.0f} / {s['forward_ms']:.0f} |"
    )

print("\nWhere the exact attention from module tokens to tokens before their module goes (mean over layers and heads, 2 prompts):\n")
print("| workload | encoding | to the preamble (or first token) | to other modules | question-map similarity, last 10 layers |")
print("|---|---|---|---|---|")
for name in order:
    for enc in ["alone", "prefixed"]:
        e = load(name, f"eval-{enc}-none.json")
        if not e or not e.get("heads"):
            continue
        h = e["heads"]
        mean = lambda m: sum(sum(r) / len(r) for r in m) / len(m)
        deep = h["similarity"][-10:]
        print(
            f"| {name} | {enc} | {mean(h['crossing_to_sink']):.3f} | {mean(h['crossing_to_modules']):.3f} | {mean(deep):.3f} |"
        )
