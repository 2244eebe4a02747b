#!/usr/bin/env bash
# Reproduces the README's attention-cache numbers: a database from rt:db,
# our policy and the paper's calibrated on rt:calib for an accuracy loss of at
# most 0.5 point, both evaluated on rt:test, the latency benchmark, the
# look-up quality and the index benchmark. Results go to OUT (default
# ./results); takes ~15 minutes on 2 cores. Run on a quiet machine: the
# speedups are timing ratios.
set -euo pipefail
out=${1:-results}
mkdir -p "$out"
cargo build --release
bin=target/release/attncache
db="$out/db-rt"
calib_limit=${CALIB_LIMIT:-600}
test_limit=${TEST_LIMIT:-1000}

[ -f "$db/manifest.json" ] || $bin build --corpus rt:db --out "$db"
$bin db-info "$db" --json > "$out/db-info.json"
for kind in ours paper; do
  $bin calibrate --db "$db" --split rt:calib --limit "$calib_limit" --budget 0.5 \
    --objective accuracy --kind "$kind" --out "$out/policy-$kind.json" --json > "$out/calibrate-$kind.json"
  $bin eval --db "$db" --split rt:test --limit "$test_limit" --policy "$out/policy-$kind.json" \
    --repeats 3 --json > "$out/eval-$kind.json"
done
$bin bench --db "$db" --policy "$out/policy-ours.json" --limit 40 --repeats 5 > "$out/bench-ours.txt"
$bin retrieval --db "$db" --split rt:test --limit 300 > "$out/retrieval.txt"
$bin bench-index --db "$db" > "$out/bench-index.txt"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'policy':<8} {'hit rate':>9} {'acc exact':>10} {'acc cached':>11} {'loss pt':>8} {'fid mean':>9} {'fid p5':>8} {'attn ×':>7} {'e2e ×':>7}")
for kind in ["ours", "paper"]:
    e = json.load(open(f"{out}/eval-{kind}.json"))
    print(f"{kind:<8} {e['hit_rate']*100:>8.2f}% {e['accuracy_exact']*100:>9.2f}% {e['accuracy_cached']*100:>10.2f}% "
          f"{e['accuracy_loss_pt']:>8.2f} {e['fidelity_mean']:>9.5f} {e['fidelity_p5']:>8.5f} "
          f"{e['attention_speedup']:>7.3f} {e['e2e_speedup']:>7.3f}")
PY
