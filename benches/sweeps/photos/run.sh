#!/usr/bin/env bash
# Issue 15's photo grid with `spinr sweep`: every photo of assets/photos at each size (longer
# side), s = 1000 and 3000 with m = 50 and s = 10 000 with m = 100 (spinr's rule, one neuron
# per 100 nonzeros), seeds 0–2, CPU backend; one sweep folder per photo, size and m under OUT
# (NAME-SIZE-s1000-3000, NAME-SIZE-s10000),
# then the table (`examples/photo_table.rs`). Rerunning resumes the sweeps.
#   benches/sweeps/photos/run.sh [OUT [BASE_OUT]]
#   SPINR=path/to/spinr (default: this checkout's release build), SIZES="128 256",
#   SEEDS=0,1,2, PHOTOS="camera brick" (default: all eight), NEURONS_10K=100 (50 for a build
#   before 0.4.0, whose default it was).
# A baseline: SPINR=old/spinr benches/sweeps/photos/run.sh runs/base, then
# benches/sweeps/photos/run.sh runs/photos runs/base prints base and gain columns.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${1:-runs/photos}
SIZES=${SIZES:-128 256}
SEEDS=${SEEDS:-0,1,2}
NEURONS_10K=${NEURONS_10K:-100}
if [ -z "${SPINR:-}" ]; then
  cargo build --release --quiet
  SPINR=target/release/spinr
fi
if [ -n "${PHOTOS:-}" ]; then
  files=$(for p in $PHOTOS; do echo "assets/photos/$p.png"; done)
else
  files=$(ls assets/photos/*.png)
fi
for f in $files; do
  name=$(basename "$f" .png)
  for n in $SIZES; do
    "$SPINR" sweep --task inr --image "$f" --resize "$n" --neurons 50 --nonzeros 1000,3000 \
      --seeds "$SEEDS" --backend cpu --out "$OUT/$name-$n-s1000-3000"
    "$SPINR" sweep --task inr --image "$f" --resize "$n" --neurons "$NEURONS_10K" \
      --nonzeros 10000 --seeds "$SEEDS" --backend cpu --out "$OUT/$name-$n-s10000"
  done
done
cargo run --release --quiet --example photo_table -- "$OUT" ${2:+"$2"}
