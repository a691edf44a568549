#!/usr/bin/env bash
# Gathers what a GPU machine without Rust needs into .gpu-bundle/ (git-ignored through
# .git/info/exclude): the release binary and every test binary, stripped, the commit they were
# built from (COMMIT), scripts/gpu-check.sh with its report writer and the peer scripts, and
# run.sh, the one command to run there:
#     bash .gpu-bundle/run.sh LOGDIR            # = run.sh LOGDIR check
# which runs gpu-check.sh (every check under its own timeout, under 8 minutes on an H200) and
# leaves report.json, report.md and logs.tar.gz in LOGDIR. Its older stages stay available:
#     bash .gpu-bundle/run.sh LOGDIR [check] [tests] [bench] [recon] [train]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-nvcc.sh
out=.gpu-bundle
grep -qx '/.gpu-bundle/' .git/info/exclude 2>/dev/null || echo '/.gpu-bundle/' >> .git/info/exclude
rm -rf "$out" && mkdir -p "$out/tests"
cargo build --release
cp target/release/tomodiff "$out/"
cargo test --release --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"] and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$out/tests/$name"; done
strip "$out/tomodiff" "$out"/tests/*
# The binaries share most of their code: compressed they are a fifth of their size, which keeps
# the carried folder well under the device tool's 64 MiB. run.sh unpacks them on the machine.
tar -C "$out" -cf - tomodiff tests | xz -T0 -6 > "$out/payload.tar.xz"
rm -rf "$out/tomodiff" "$out/tests"
cp scripts/gpu-check.sh scripts/gpu_report.py scripts/peer_gemm.py scripts/peer_unet_torch.py scripts/peer_train_torch.py \
  scripts/peer_conv3d_torch.py scripts/peer_astra_cuda.py "$out/"
# What the binaries were built from: gpu-check.sh reports it (the device's copy has no .git).
{
  git rev-parse HEAD
  [[ -n $(git status --porcelain --untracked-files=no) ]] && echo "with uncommitted changes to tracked files"
  echo "bundled $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/COMMIT"
mkdir -p "$out/tools" && cp tools/unet_reference.py tools/safetensors_io.py tools/peer_common.py "$out/tools/"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine. Logs in $1; then the stages to run (default: check):
#   check  gpu-check.sh: env, correctness, bench, recon, train, ncu, each under its own timeout,
#          under 8 minutes; report.json, report.md and logs.tar.gz land in $1 after every stage
#          (its full output folder stays in a temporary folder: the device tool brings back only
#          a few files)
#   tests  every test binary with GPU tests forced on
#   bench  GEMM, projector, U-Net and training step benchmarks with their PyTorch peers
#   recon  the demo on the GPU and the reconstruction benchmark (paper preset, 512x512x256)
#   train  continue the shipped prior's training run on the GPU for 5 minutes, then sample it
# Each stage stays well inside one 10-minute command; run them in separate commands if needed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
log=${1:?usage: run.sh LOGDIR [check] [tests] [bench] [recon] [train]}
# Unpack the binaries (python's tarfile reads xz wherever python3 runs).
bin=$(mktemp -d)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$here/payload.tar.xz" "$bin" || exit 1
shift
stages=${*:-check}
mkdir -p "$log"
export TOMODIFF_BIN="$bin/tomodiff" TOMODIFF_REPO="$repo"
if [[ $stages != check ]]; then
  nvidia-smi > "$log/nvidia-smi.log" 2>&1
  "$bin/tomodiff" info --kernels > "$log/info.log" 2>&1
fi
fail=0
for stage in $stages; do
  echo "=== stage $stage"
  case $stage in
  check)
    GPU_CHECK_MIRROR="$log" TOMODIFF_TEST_BINS="$bin/tests" bash "$here/gpu-check.sh" "$(mktemp -d)/check" || fail=1 ;;
  tests)
    export TOMODIFF_REQUIRE_GPU=1
    for t in "$bin"/tests/*; do
      echo "== $(basename "$t")"
      "$t" --test-threads=4 --nocapture > "$log/test-$(basename "$t").log" 2>&1 || { fail=1; echo "FAILED: $(basename "$t")"; }
      grep -E "^test result|max \|diff\|" "$log/test-$(basename "$t").log" | grep -v " emu " || true
    done ;;
  bench)
    "$bin/tomodiff" bench gemm --device cuda --size 4096 2>&1 | tee "$log/bench-gemm.log"
    python3 "$here/peer_gemm.py" 4096 2>&1 | tee -a "$log/bench-gemm.log"
    "$bin/tomodiff" bench projector --device cuda --case cone 2>&1 | tee "$log/bench-projector.log"
    "$bin/tomodiff" bench unet --device cuda --config paper --batch 8 2>&1 | tee "$log/bench-unet.log"
    python3 "$here/peer_unet_torch.py" --config paper --batch 8 --device cuda 2>&1 | tee -a "$log/bench-unet.log"
    "$bin/tomodiff" bench train --device cuda --config paper --batch 8 2>&1 | tee "$log/bench-train.log"
    python3 "$here/peer_train_torch.py" --config paper --batch 8 --device cuda 2>&1 | tee -a "$log/bench-train.log" ;;
  recon)
    "$bin/tomodiff" demo --out "$log/demo" --device cuda 2>&1 | tee "$log/demo.log"
    "$bin/tomodiff" bench recon --device cuda --config paper --shape 512,512,256 --steps 5 --rounds 1 --batch 32 2>&1 | tee "$log/bench-recon.log"
    "$bin/tomodiff" bench recon --device cuda --config paper --shape 512,512,256 --steps 5 --rounds 1 --batch 32 --no-graph 2>&1 | tee -a "$log/bench-recon.log"
    timeout 300 "$bin/tomodiff" bench recon --device cuda --config paper --shape 512,512,256 --steps 50 --rounds 2 --batch 32 2>&1 | tee -a "$log/bench-recon.log" ;;
  train)
    rm -rf "$log/tiny-chest-run" && cp -r "$repo/weights/tiny-chest/run" "$log/tiny-chest-run"
    "$bin/tomodiff" train --out "$log/tiny-chest-run" --resume --data phantom:chest --steps 100000000 --minutes 5 \
      --checkpoint-every 2000 --device cuda 2>&1 | tail -3 | tee "$log/train.log"
    "$bin/tomodiff" sample --weights "$log/tiny-chest-run/weights.safetensors" --device cuda -o "$log/tiny-chest-run/sample.npy" \
      --preview "$log/tiny-chest-run/sample.png" 2>&1 | tee -a "$log/train.log" ;;
  *) echo "unknown stage $stage"; fail=1 ;;
  esac
done
exit $fail
RUN
chmod +x "$out/run.sh"
du -sh "$out"
echo "bundle ready: carry .gpu-bundle and run: bash .gpu-bundle/run.sh \$OUT   (gpu-check.sh; or: \$OUT [check] [tests] [bench] [recon] [train])"
