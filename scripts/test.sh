#!/usr/bin/env bash
# The test command of the README (and of CI): installs the pinned CUDA compiler into .cache/,
# builds (every kernels/*.cu to PTX, checked by ptxas; the emulator library), and runs every test.
# Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${TOMODIFF_NO_NVCC:-}" = "1" ]; then
  echo "test.sh: TOMODIFF_NO_NVCC=1: building without nvcc (CUDA sources embedded for NVRTC)"
else
  bash scripts/install-nvcc.sh
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace "$@" 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
