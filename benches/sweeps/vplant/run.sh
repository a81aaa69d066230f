#!/bin/bash
# The vector-output planted grid (the paper's Fig. 2 setting, C = 10 outputs, d = 100):
# m × s × seeds 0–4 for spinr's IHT and --variant paper, one JSON report per line.
# Usage: benches/sweeps/vplant/run.sh [SPINR_BINARY]   (writes results.jsonl beside this file)
set -euo pipefail
bin=${1:-target/release/spinr}
out=$(dirname "$0")/results.jsonl
tmp=$out.tmp
: >"$tmp"
for variant in spinr paper; do
  for m in 5 20 50; do
    for s in 20 50 100 200; do
      for seed in 0 1 2 3 4; do
        "$bin" plant --outputs 10 --inputs 100 --neurons $m --nonzeros $s --samples 2000 \
          --seed $seed --variant $variant --backend cpu --json | tr -d '\n' >>"$tmp"
        echo >>"$tmp"
      done
    done
  done
done
mv "$tmp" "$out"
