#!/usr/bin/env bash
# Reproduces the README's attention-cache numbers: databases from rt:db (pooled
# and projector features); our policy (exact lengths and crop) and the paper's,
# each calibrated on rt:calib for an accuracy loss of at most 0.5 point and
# evaluated on rt:test; the latency benchmark; look-up quality; the index
# benchmark. Results go to OUT (default ./results); ~20 minutes on 2 cores.
# Run on a quiet machine: the speedups are timing ratios.
set -euo pipefail
out=${1:-results}
mkdir -p "$out"
[ -n "${ATTNCACHE_BIN:-}" ] || cargo build --release
bin=${ATTNCACHE_BIN:-target/release/attncache}
calib_limit=${CALIB_LIMIT:-600}
test_limit=${TEST_LIMIT:-1000}

for feature in pooled projector; do
  db="$out/db-$feature"
  [ -f "$db/manifest.json" ] || $bin build --corpus rt:db --feature "$feature" --out "$db"
  $bin db-info "$db" --json > "$out/db-info-$feature.json"
  $bin retrieval --db "$db" --split rt:test --limit 300 > "$out/retrieval-$feature.txt"
done
$bin bench-index --db "$out/db-pooled" > "$out/bench-index.txt"

# name  database  kind  length policy  extra calibrate flags
runs="ours pooled ours exact
ours-crop pooled ours crop
ours-projector projector ours exact
paper pooled paper exact
paper-projector projector paper exact
ours-keep pooled ours exact --keep-unprofitable
paper-keep pooled paper exact --keep-unprofitable
paper-projector-keep projector paper exact --keep-unprofitable"
while read -r name feature kind lengths extra; do
  db="$out/db-$feature"
  # shellcheck disable=SC2086
  $bin calibrate --db "$db" --split rt:calib --limit "$calib_limit" --budget 0.5 --objective accuracy \
    --kind "$kind" --length-policy "$lengths" $extra --out "$out/policy-$name.json" --json > "$out/calibrate-$name.json"
  $bin eval --db "$db" --split rt:test --limit "$test_limit" --policy "$out/policy-$name.json" \
    --repeats 3 --json > "$out/eval-$name.json"
done <<< "$runs"
# Reusing every map of the nearest same-length entry: what full reuse costs.
$bin eval --db "$out/db-pooled" --split rt:test --limit "$test_limit" --policy global:2 \
  --repeats 3 --json > "$out/eval-reuse-all.json"
$bin bench --db "$out/db-pooled" --policy "$out/policy-ours.json" --limit 40 --repeats 5 > "$out/bench-ours.txt"
$bin bench --db "$out/db-pooled" --policy global:2 --limit 40 --repeats 5 > "$out/bench-reuse-all.txt"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| policy | hit rate | accuracy exact | accuracy cached | loss (pt) | fidelity mean | fidelity p5 | attention × | end-to-end × |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ["ours", "ours-crop", "ours-projector", "paper", "paper-projector",
             "ours-keep", "paper-keep", "paper-projector-keep", "reuse-all"]:
    e = json.load(open(f"{out}/eval-{name}.json"))
    print(f"| {name} | {e['hit_rate']*100:.2f}% | {e['accuracy_exact']*100:.1f}% | {e['accuracy_cached']*100:.1f}% | "
          f"{e['accuracy_loss_pt']:.2f} | {e['fidelity_mean']:.4f} | {e['fidelity_p5']:.4f} | "
          f"{e['attention_speedup']:.3f} | {e['e2e_speedup']:.3f} |")
PY
