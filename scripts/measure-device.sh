#!/usr/bin/env bash
# Measures attncache on a device (default cuda) and on the CPU of the same
# machine, in one run: correctness against the CPU (check-device), a database
# built from rt:db on the device, our policy calibrated there (accuracy loss
# <= 0.5 pt, with and without the cost check), and the latency benchmark
# (look-up and map transfer counted) for short reviews and long plot texts.
#
#   scripts/measure-device.sh BIN [DEVICE] [OUT]
#
# BIN is a binary built with scripts/build-cuda.sh; the model and data must
# be under $ATTNCACHE_HOME (or fetchable). Results go to OUT (JSON files).
set -euo pipefail
bin=${1:?usage: scripts/measure-device.sh BIN [DEVICE] [OUT]}
device=${2:-cuda}
out=${3:-results-$device}
mkdir -p "$out"
step() { echo "[$(date +%T)] $*" >&2; }

step check-device
"$bin" --device "$device" check-device --json > "$out/check-device.json"
db="$out/db"
if [ ! -f "$db/manifest.json" ]; then
  step build
  "$bin" --device "$device" build --corpus rt:db --out "$db" --json > "$out/build.json"
fi
for variant in ours ours-keep; do
  step "calibrate $variant"
  extra=""
  [ "$variant" = ours-keep ] && extra=--keep-unprofitable
  # shellcheck disable=SC2086
  "$bin" --device "$device" calibrate --db "$db" --split rt:calib --limit "${CALIB_LIMIT:-300}" \
    --budget 0.5 --objective accuracy $extra --out "$out/policy-$variant.json" --json \
    > "$out/calibrate-$variant.json"
done
for variant in ours ours-keep reuse-all; do
  policy="$out/policy-$variant.json"
  [ "$variant" = reuse-all ] && policy=global:2
  for dev in "$device" cpu; do
    step "bench $variant on $dev"
    "$bin" --device "$dev" bench --db "$db" --policy "$policy" --limit "${BENCH_LIMIT:-40}" \
      --repeats "${REPEATS:-5}" --json > "$out/bench-$variant-$dev.json"
  done
done
# Where the cached path spends its time (feature, search, map load = moving
# stored maps from the host mmap to the device), reusing every map.
for dev in "$device" cpu; do
  step "eval reuse-all on $dev"
  "$bin" --device "$dev" eval --db "$db" --split rt:test --limit "${EVAL_LIMIT:-200}" --policy global:2 \
    --repeats 3 --json > "$out/eval-reuse-all-$dev.json"
done
step done
