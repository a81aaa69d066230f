#!/usr/bin/env bash
# Runs spinr's GPU checks and benchmarks on a lent GPU machine (the `device` tool of this
# workplace), from prebuilt x86-64 binaries in .dev/ (made by benches/stage-device.sh).
#   benches/device.sh [setup|tests|bench|profile|tune|order|seqfit|fit|final|epochs|all]...
# Writes logs and JSON under $OUT (or ./device-out).
set -u
OUT=${OUT:-$PWD/device-out}; mkdir -p "$OUT"
B=$PWD/.dev/spinr
setup() {
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
  # Test binaries find the crate (assets, the spinr binary) through compiled-in paths.
  if [ ! -e /work/main ]; then mkdir -p /work; ln -s "$PWD" /work/main; fi
  mkdir -p target/release && cp "$B" target/release/spinr
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
  "$B" devices
}
tests() {
  for t in shaders_validate gpu_parity gpu_select gpu_memory gpu_fit cli_render_gpu cli_bench; do
    echo "== test $t"
    timeout 300 ".dev/$t" 2>&1 | tail -n 4 | tee -a "$OUT/tests.txt"
  done
}
bench() {
  for size in small large; do
    echo "== bench $size"
    timeout 200 "$B" bench --backend gpu --size "$size" --export-json "$OUT/bench-$size.json" 2>&1 | tee "$OUT/bench-$size.txt"
  done
}
profile() {
  for size in small large; do
    echo "== profile $size"
    SPINR_GPU_PROFILE=1 timeout 120 "$B" bench --backend gpu --size "$size" --runs 3 --budget 0 2>&1 | tee "$OUT/profile-$size.txt" | tail -n 40
  done
}
final() {
  echo "== spinr bench --json (large)"
  timeout 200 "$B" bench --backend gpu --size large --json > "$OUT/bench-large-final.json" && python3 -c "import json,sys; r=json.load(open('$OUT/bench-large-final.json')); print(r['adapter'], r['backend'], 'step_seconds', r['step_seconds']); [print(k['name'], k['timer'], round(k['seconds']['median']*1e3,3), 'ms', round(100*k['fraction_of_flops_ceiling'],1), '%') for k in r['kernels']]"
  echo "== spinr bench --size small --compare cpu"
  timeout 200 "$B" bench --backend gpu --size small --compare cpu 2>&1 | tail -n 3
}
seqfit() {
  echo "== sequential planted fits, gpu vs cpu"
  timeout 120 .dev/gpu_fit --nocapture sequential 2>&1 | tail -n 20
  for seed in 0 1 2 3; do
    for be in gpu cpu; do
      echo "seed $seed $be: $(timeout 60 "$B" plant --gates sequential --inputs 50 --neurons 10 --nonzeros 10 --samples 2000 --iters 15 --seed $seed --backend $be --json 2>/dev/null | tr -d ' \n' | grep -o '"train_psnr":[^,]*,"test_psnr":[^,]*')"
    done
  done
}
fit() {
  echo "== fit camera 512x512"
  timeout 150 /usr/bin/time -v "$B" fit assets/camera.png --backend gpu --out "$OUT/camera" --force 2>&1 | tail -n 40 | tee "$OUT/fit.txt" | head -n 8
}
tune() {
  for env in SPINR_SHADER_CHECKS=all SPINR_SHADER_CHECKS=bounds SPINR_SHADER_CHECKS=none; do
    echo "== bench $env"
    for size in small large; do
      env $env timeout 100 "$B" bench --backend gpu --size $size --runs 3 --budget 0.2 2>&1 | grep -E "^(dense_pass_topk|iht_step|forward) "
    done
  done
}
order() {
  # The support passes by neuron (default) and by feature, side by side (benches/NOTES.md).
  for order in neuron feature; do
    for size in small large; do
      echo "== bench $size, SPINR_SUPPORT_ORDER=$order"
      SPINR_SUPPORT_ORDER=$order timeout 150 "$B" bench --backend gpu --size $size --runs 5 2>&1 | grep -E "^(forward|step_size|trial|iht_step) "
    done
    echo "== fit camera 512x512, SPINR_SUPPORT_ORDER=$order"
    SPINR_SUPPORT_ORDER=$order timeout 150 "$B" fit assets/camera.png --backend gpu --out "$OUT/camera-$order" --force 2>&1 | grep -E "epochs in|PSNR"
  done
}
epochs() {
  # Issue 15's open cells, 256² with s = 3000 and 1000: does a GPU make more epochs cheap? The
  # CPU's default (30 epochs, 50 per colour plane), the GPU's default, twice its epochs, and
  # the GPU given the CPU default's seconds (--time-budget), seed 0, PSNR, seconds and epochs
  # side by side on this machine.
  one() {
    timeout 300 "$B" fit assets/photos/$p.png --resize 256 -s $S --out "$OUT/ep-$p-$S-$1" --force --json "${@:2}" 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); print(round(r['psnr'],3), 'dB', round(r['seconds'],2), 's', r['iterations'], 'epochs')"
  }
  for S in 3000 1000; do
    for p in camera brick chelsea coffee; do
      case $p in chelsea|coffee) e=50 ;; *) e=30 ;; esac
      cpu=$(one cpu --backend cpu); echo "$p s=$S cpu default: $cpu"
      echo "$p s=$S gpu default: $(one gpu --backend gpu)"
      echo "$p s=$S gpu $((2 * e)) epochs: $(one gpu2 --backend gpu --iters $((2 * e)))"
      t=$(echo "$cpu" | awk '{print $3}')
      echo "$p s=$S gpu in the cpu's $t s: $(one gpu-budget --backend gpu --time-budget $t)"
    done
  done
}
setup
for job in "${@:-all}"; do
  case $job in
    all) bench; profile; fit; tests ;;
    setup) ;;
    *) "$job" ;;
  esac
done
