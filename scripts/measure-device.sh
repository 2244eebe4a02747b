#!/usr/bin/env bash
# Measures attncache on a device (default cuda) and on the CPU of the same
# machine, in one run sized for one device call (~8 minutes on an H200):
#
#  1. check-device for the encoder (MiniLM) and the decoder (SmolLM2):
#     hidden states, maps, reuse; every row-wise prefill and greedy decoding.
#  2. Modular reuse on SmolLM2, multi-document prompts at ~2K, ~4K and ~8K
#     tokens (workloads from `modules workload multidoc`, stores built on the
#     CPU there): exact vs prefix cache vs modular, naive and the recovery
#     calibrated on the device at 2K (KL <= 0.02 at the 95 % bound), with
#     the store copied from host memory per prompt and resident in device
#     memory (`--resident`).
#  3. The map cache on MiniLM: a database built from rt:db on the device,
#     our policy calibrated there (accuracy loss <= 0.5 pt, with and without
#     the cost check), the latency benchmark for short reviews and long plot
#     texts, and where the cached path's time goes.
#  4. The same binary's CPU rows (the machine's own cores) for both.
#
#   scripts/measure-device.sh BIN [DEVICE] [OUT]
#
# BIN is a binary built with scripts/build-cuda.sh; the models and data must
# be under $ATTNCACHE_HOME (or fetchable). $WORKLOADS holds multidoc-2k,
# multidoc-4k and multidoc-8k (schema.toml, calib.jsonl, test.jsonl); they
# are generated when absent (needs the rt data). Every step has its own time
# limit and the run goes on when one fails, so one call always brings back
# what finished. Results go to OUT (JSON files, a log).
set -uo pipefail
bin=${1:?usage: scripts/measure-device.sh BIN [DEVICE] [OUT]}
device=${2:-cuda}
out=${3:-results-$device}
workloads=${WORKLOADS:-$out/workloads}
mkdir -p "$out" "$workloads"
step() { echo "[$(date +%T)] $*" >&2; }
# run SECONDS NAME CMD...: stdout to OUT/NAME.json, stderr to OUT/NAME.err.
run() {
  local limit=$1 name=$2
  shift 2
  step "$name"
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.err" || step "$name failed ($?)"
}
smol="$bin --model smollm2"

step "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
run 60 check-device-minilm "$bin" --device "$device" check-device --json
run 90 check-device-smollm2 $smol --device "$device" check-device --json

# Workloads: D plot summaries per prompt (~140 tokens each) out of one pool
# of 64 (one schema, so one store serves every size): ~2.1K, ~4K, ~7.9K tokens.
read -r d2 d4 d8 <<< "${MULTIDOC_DOCS:-15 27 55}"
declare -A docs=([2k]=$d2 [4k]=$d4 [8k]=$d8)
for size in 2k 4k 8k; do
  dir="$workloads/multidoc-$size"
  if [ ! -f "$dir/test.jsonl" ]; then
    mkdir -p "$dir"
    $smol modules workload multidoc --per-prompt "${docs[$size]}" --pool 64 --prompts 10 \
      --seed 1 --out "$dir" > /dev/null
    head -n 6 "$dir/prompts.jsonl" > "$dir/calib.jsonl"
    tail -n 4 "$dir/prompts.jsonl" > "$dir/test.jsonl"
  fi
  store="$out/store-$size"
  if [ "$size" != 2k ] && cmp -s "$dir/schema.toml" "$workloads/multidoc-2k/schema.toml"; then
    ln -sfn store-2k "$store"
  elif [ ! -f "$store/manifest.json" ]; then
    run 60 "build-$size" $smol --device "$device" modules build --schema "$dir/schema.toml" \
      --out "$store" --json
  fi
done

run 90 calibrate-2k $smol --device "$device" modules calibrate --store "$out/store-2k" \
  --prompts "$workloads/multidoc-2k/calib.jsonl" --kind select --objective kl --budget 0.02 \
  --no-save --json
chosen=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'])" \
  "$out/calibrate-2k.json" 2>/dev/null || echo select:75)
step "calibrated recovery: $chosen"

# eval NAME DEVICE SIZE RECOVERY REPEATS PROMPTS [--resident]
modular() {
  local name=$1 dev=$2 size=$3 recovery=$4 repeats=$5 limit=$6
  shift 6
  run 120 "$name" $smol --device "$dev" modules eval --store "$out/store-$size" \
    --prompts "$workloads/multidoc-$size/test.jsonl" --limit "$limit" --recovery "$recovery" \
    --repeats "$repeats" --json "$@"
}
for size in 2k 4k 8k; do
  for recovery in none "$chosen"; do
    tag=${recovery/:/}
    modular "modular-$size-$tag-host" "$device" "$size" "$recovery" 3 4
    modular "modular-$size-$tag-resident" "$device" "$size" "$recovery" 3 4 --resident
  done
done

# The map cache.
db="$out/db"
run 90 build-db "$bin" --device "$device" build --corpus rt:db --out "$db" --json
for variant in ours ours-keep; do
  extra=""
  [ "$variant" = ours-keep ] && extra=--keep-unprofitable
  # shellcheck disable=SC2086
  run 90 "calibrate-$variant" "$bin" --device "$device" calibrate --db "$db" --split rt:calib \
    --limit "${CALIB_LIMIT:-150}" --budget 0.5 --objective accuracy $extra \
    --out "$out/policy-$variant.json" --json
done
for variant in ours ours-keep reuse-all; do
  policy="$out/policy-$variant.json"
  [ "$variant" = reuse-all ] && policy=global:2
  for dev in "$device" cpu; do
    run 60 "bench-$variant-$dev" "$bin" --device "$dev" bench --db "$db" --policy "$policy" \
      --limit "${BENCH_LIMIT:-30}" --repeats "${REPEATS:-3}" --json
  done
done
# Where the cached path spends its time (feature, search, map load = moving
# stored maps from the host mmap to the device), reusing every map.
for dev in "$device" cpu; do
  run 60 "eval-reuse-all-$dev" "$bin" --device "$dev" eval --db "$db" --split rt:test \
    --limit "${EVAL_LIMIT:-100}" --policy global:2 --repeats 3 --json
done

# The CPU's modular rows (an exact prefill of 4K tokens takes seconds there).
modular modular-2k-none-cpu cpu 2k none 1 2
modular "modular-2k-${chosen/:/}-cpu" cpu 2k "$chosen" 1 2
modular modular-4k-none-cpu cpu 4k none 1 2
step done
