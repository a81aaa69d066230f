#!/usr/bin/env bash
# Builds spinr and its GPU test binaries here and copies them, stripped, into .dev/ for
# benches/device.sh on a lent x86-64 GPU machine (which has no Rust toolchain or network).
# Also fetches the Vulkan loader packages into .gl/ once. Both folders are git-ignored via
# .git/info/exclude; the device run carries them (`carry: [".gl", ".dev"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo /.dev/ >> .git/info/exclude
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
if [ ! -d .gl ]; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
cargo build --release
cargo test --release --no-run
mkdir -p .dev
for t in shaders_validate gpu_parity gpu_select gpu_memory gpu_fit cli_render_gpu cli_bench; do
  f=$(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -1)
  strip -o .dev/$t "$f"
done
strip -o .dev/spinr target/release/spinr
du -sh .dev .gl
