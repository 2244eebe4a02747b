#!/usr/bin/env bash
# Reproduces the README's modular attention reuse (Prompt Cache) numbers on
# SmolLM2-135M-Instruct: generated workloads (multi-document at 4, 8 and 16
# documents, passkey, few-shot sentiment), one module store each, the
# recovery calibrated on the first prompts of each workload for top-1
# agreement >= 95 %, then exact vs prefix cache vs modular on the other
# prompts (naive and calibrated, contiguous and schema positions). Results go
# to OUT (default ./results-modules); ~110 minutes on 2 cores. Finished steps
# (non-empty result files) are skipped when it is run again.
# Run on a quiet machine: the speedups are timing ratios.
set -euo pipefail
out=${1:-results-modules}
mkdir -p "$out"
# ATTNCACHE_BIN runs a copy of the binary (so the tree can be rebuilt meanwhile).
[ -n "${ATTNCACHE_BIN:-}" ] || cargo build --release
# MODEL picks the decoder (smollm2, qwen2.5-0.5b or a GGUF file).
bin="${ATTNCACHE_BIN:-target/release/attncache} --model ${MODEL:-smollm2}"

# Calibration for top-1 agreement >= 95 % (the issue's target) and, because
# top-1 flips on near-tied answers (multidoc: the document's first digit),
# also for a mean next-token KL <= 0.02 nats.
# The 4K-token multidoc workload (an exact prefill takes ~40 s here) is not
# calibrated itself: it runs the recovery calibrated on multidoc-16, as a
# deployment calibrated on shorter prompts would (calibration column "from:").
# name kind per-prompt pool calibration test-prompts repeats
workloads=(
  "multidoc-4 multidoc 4 40 8 12 2"
  "multidoc-8 multidoc 8 40 8 12 2"
  "multidoc-16 multidoc 16 40 8 8 2"
  "multidoc-32 multidoc 32 40 from:multidoc-16 6 1"
  "passkey passkey 7 30 10 30 1"
  "fewshot fewshot 5 32 20 60 1"
)
for w in "${workloads[@]}"; do
  read -r name kind per pool ncal ntest repeats <<< "$w"
  from=""
  if [[ "$ncal" == from:* ]]; then
    from="$out/${ncal#from:}"
    ncal=0
  fi
  dir="$out/$name"
  mkdir -p "$dir"
  $bin modules workload "$kind" --per-prompt "$per" --pool "$pool" --prompts $((ncal + ntest)) \
    --seed 1 --out "$dir" > /dev/null
  head -n "$ncal" "$dir/prompts.jsonl" > "$dir/calib.jsonl"
  tail -n "$ntest" "$dir/prompts.jsonl" > "$dir/test.jsonl"
  # The paper's encoding, as these tables were measured (reproduce-frontier.sh
  # compares it with the prefixed one).
  [ -f "$dir/store/manifest.json" ] || $bin modules build --schema "$dir/schema.toml" --out "$dir/store" \
    --encode alone > /dev/null
  if [ -n "$from" ]; then
    cp "$from"/calibrate-*.json "$dir/"
    basename "$from" > "$dir/calibrated-on"
  fi
  for kindk in select first; do
    [ -s "$dir/calibrate-$kindk.json" ] && continue
    $bin modules calibrate --store "$dir/store" --prompts "$dir/calib.jsonl" --kind "$kindk" \
      --objective top1 --budget 0.95 --no-save --json > "$dir/calibrate-$kindk.json"
  done
  [ -s "$dir/calibrate-select-kl.json" ] || $bin modules calibrate --store "$dir/store" --prompts "$dir/calib.jsonl" --kind select \
    --objective kl --budget 0.02 --no-save --json > "$dir/calibrate-select-kl.json"
  chosen() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'])" "$1"; }
  select=$(chosen "$dir/calibrate-select.json")
  first=$(chosen "$dir/calibrate-first.json")
  select_kl=$(chosen "$dir/calibrate-select-kl.json")
  runs=("contiguous none" "contiguous $select")
  [ -z "$from" ] && runs+=("schema none")
  [ "$name" = multidoc-16 ] && runs+=("contiguous $first")
  [ "$select_kl" != "$select" ] && runs+=("contiguous $select_kl")
  for run in "${runs[@]}"; do
    read -r positions recovery <<< "$run"
    tag="$positions-${recovery/:/}"
    [ -s "$dir/eval-$tag.json" ] && continue
    $bin modules eval --store "$dir/store" --prompts "$dir/test.jsonl" --positions "$positions" \
      --recovery "$recovery" --repeats "$repeats" --heads 2 --json > "$dir/eval-$tag.json"
  done
done
python3 scripts/modules-table.py "$out" | tee "$out/table.md"
