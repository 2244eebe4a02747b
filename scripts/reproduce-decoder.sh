#!/usr/bin/env bash
# Reproduces the README's SmolLM2 (decoder) numbers: a map database from rt:db
# reviews asked as our sentiment prompt; our policy calibrated on rt:calib for
# an accuracy loss of at most 0.5 point (with and without the cost check);
# evaluation on rt:test; exact vs prefix cache vs map reuse vs both; the same
# on the long rt-plot texts (unlabelled: agreement with the exact model's
# answer stands in for accuracy). Results go to OUT (default
# ./results-smollm2); ~40 minutes on 2 cores, ~7.5 GB of databases. Finished
# steps (non-empty result files) are skipped when it is run again; MODEL picks
# another decoder.
# Run on a quiet machine: the speedups are timing ratios.
set -euo pipefail
out=${1:-results-smollm2}
mkdir -p "$out"
[ -n "${ATTNCACHE_BIN:-}" ] || cargo build --release
# MODEL picks the decoder (smollm2, qwen2.5-0.5b or a GGUF file).
bin="${ATTNCACHE_BIN:-target/release/attncache} --model ${MODEL:-smollm2}"
db_limit=${DB_LIMIT:-1000}
calib_limit=${CALIB_LIMIT:-200}
test_limit=${TEST_LIMIT:-200}
plot_db_limit=${PLOT_DB_LIMIT:-200}
plot_limit=${PLOT_LIMIT:-40}

# Runs "$@" into the result file $1 unless it already holds one (a rerun
# resumes where the last one stopped).
step() {
  local file=$1
  shift
  [ -s "$file" ] && return 0
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}

# Short reviews.
db="$out/db-reviews"
[ -f "$db/manifest.json" ] || $bin build --corpus rt:db --limit "$db_limit" --out "$db"
for variant in ours ours-keep; do
  extra=""
  [ "$variant" = ours-keep ] && extra="--keep-unprofitable"
  # shellcheck disable=SC2086
  step "$out/calibrate-$variant.json" $bin calibrate --db "$db" --split rt:calib \
    --limit "$calib_limit" --budget 0.5 --objective accuracy $extra \
    --out "$out/policy-$variant.json" --json
done
for policy in ours ours-keep; do
  step "$out/eval-$policy.json" $bin eval --db "$db" --split rt:test --limit "$test_limit" \
    --policy "$out/policy-$policy.json" --repeats 2 --json
  step "$out/prefix-$policy.json" $bin prefix --db "$db" --split rt:test --limit "$test_limit" \
    --policy "$out/policy-$policy.json" --repeats 2 --json
done
# Every map of the nearest same-length entry: what full reuse costs and saves.
step "$out/eval-reuse-all.json" $bin eval --db "$db" --split rt:test --limit "$test_limit" \
  --policy global:2 --repeats 2 --json
step "$out/prefix-reuse-all.json" $bin prefix --db "$db" --split rt:test --limit "$test_limit" \
  --policy global:2 --repeats 2 --json

# Long texts: plot summaries, same prompt, the reviews' calibrated thresholds.
pdb="$out/db-plots"
[ -f "$pdb/manifest.json" ] || $bin build --corpus rt-plot:db --limit "$plot_db_limit" --out "$pdb"
for policy in "$out/policy-ours-keep.json" global:2; do
  name=$(basename "$policy" .json)
  [ "$policy" = global:2 ] && name=reuse-all
  step "$out/eval-plots-${name#policy-}.json" $bin eval --db "$pdb" --split rt-plot:test \
    --limit "$plot_limit" --policy "$policy" --repeats 2 --json
  step "$out/prefix-plots-${name#policy-}.json" $bin prefix --db "$pdb" --split rt-plot:test \
    --limit "$plot_limit" --policy "$policy" --repeats 2 --json
done

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def pct(x): return "–" if x is None else f"{x*100:.1f} %"
print("| workload | policy | hit rate | accuracy exact → cached | agreement | KL | attention × | end-to-end × |")
print("|---|---|---|---|---|---|---|---|")
for name in ["ours", "ours-keep", "reuse-all", "plots-ours-keep", "plots-reuse-all"]:
    path = f"{out}/eval-{name}.json"
    if not os.path.exists(path): continue
    e = json.load(open(path))
    acc = "–" if e.get("accuracy_exact") is None else f"{pct(e['accuracy_exact'])} → {pct(e['accuracy_cached'])}"
    print(f"| {e['split']} | {name} | {pct(e['hit_rate'])} | {acc} | {pct(e.get('agreement'))} | "
          f"{e.get('kl_mean', 0):.4f} | {e['attention_speedup']:.3f} | {e['e2e_speedup']:.3f} |")
print()
print("| workload | policy | run | e2e × vs exact | attention × vs exact | hit rate | agreement | KL |")
print("|---|---|---|---|---|---|---|---|")
for name in ["ours", "ours-keep", "reuse-all", "plots-ours-keep", "plots-reuse-all"]:
    path = f"{out}/prefix-{name}.json"
    if not os.path.exists(path): continue
    p = json.load(open(path))
    for r in p["runs"]:
        print(f"| {p['split']} | {name} | {r['run']} | {r['e2e_speedup']:.3f} | {r['attention_speedup']:.3f} | "
              f"{pct(r['hit_rate'])} | {pct(r.get('agreement'))} | {r['kl_mean']:.4f} |")
    print(f"| {p['split']} | {name} | **both ÷ prefix** | **{p['reuse_over_prefix_e2e']:.3f}** | "
          f"**{p['reuse_over_prefix_attention']:.3f}** | | | |")
PY
