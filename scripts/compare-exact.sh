#!/usr/bin/env bash
# Two attncache binaries' exact SmolLM2 prefill on the same prompt, runs
# alternating (A, B, A, B, …): tokens, attention ms and total ms per run, from
# `run --mode exact --json`. What the README's before/after kernel ratios
# come from (medians of the rounds).
#
#   scripts/compare-exact.sh OLD_BIN NEW_BIN [SENTENCES] [ROUNDS]
#   (52 sentences ≈ 2,081 tokens, 104 ≈ 4,161)
set -euo pipefail
a=$1 b=$2 sentences=${3:-52} rounds=${4:-3}
text=$(python3 -c "import sys; print(('The film follows a retired detective who returns to the small coastal town where he grew up, and the quiet mystery he finds there slowly becomes a story about memory, guilt and the people who stayed behind. ')*int(sys.argv[1]))" "$sentences")
echo "binary tokens attention_ms total_ms"
for _ in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    "$bin" --model smollm2 run --mode exact --json "$text" | python3 -c "
import json, sys
r = json.load(sys.stdin)['runs'][0]
t = r['timings']
print(sys.argv[1], len(r['tokens']), round(t['attention']), round(t['total']))" "$bin"
  done
done
