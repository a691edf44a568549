#!/usr/bin/env bash
# The test command of the README (and of CI): installs the pinned CUDA compiler into .cache/,
# builds (every kernels/*.cu to PTX, checked by ptxas; the emulator library), runs every Rust test
# of the workspace (the library, the C ABI and its C example, the Rust example), checks the API
# docs (cargo doc without warnings), then builds the
# Python package into a virtual environment (.cache/venv) and runs its pytest suite.
# Extra arguments go to `cargo test` (e.g. a test name); TOMODIFF_NO_PYTHON=1 skips the Python part.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${TOMODIFF_NO_NVCC:-}" = "1" ]; then
  echo "test.sh: TOMODIFF_NO_NVCC=1: building without nvcc (CUDA sources embedded for NVRTC)"
else
  bash scripts/install-nvcc.sh
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Everything the tests need first, in one feature resolution with them (so the library compiles
# once): cargo test alone builds the C ABI's rlib but not its cdylib, which the C example links.
cargo build --release --workspace --exclude tomodiff-py --lib --bins --tests --examples
cargo test --release --workspace --exclude tomodiff-py "$@" 2>&1 | tee "$log"
# The API docs: every public item documented (#![deny(missing_docs)]) and no broken links.
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --workspace --exclude tomodiff-py --quiet
echo "test.sh: cargo doc: no warnings"
if [ "${TOMODIFF_NO_PYTHON:-}" != "1" ]; then
  venv=.cache/venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.7,<2" "numpy>=1.23" pytest
  # The extension builds with the workspace's target/ (the library is already compiled there).
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./python
  TOMODIFF_BIN="$PWD/target/release/tomodiff" "$venv/bin/python" -m pytest -q python/tests 2>&1 | tee -a "$log"
fi
# One closing line for the whole run (cargo prints one per test binary, pytest one).
awk '/^test result:/ { p += $4; f += $6 }
     / passed| failed/ && !/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
