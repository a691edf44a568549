#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, cicc, headers) from PyPI wheels into a
# project-local cache. Idempotent: a second run with the same pins does nothing.
# Why pinned: unpinned wheels pull 13.5 pieces whose PTX the 580 driver on our GPUs rejects.
# Why cccl: cuda_fp16.h / cuda_bf16.h include cccl headers, and nvcc's wheel does not depend on it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${TOMODIFF_CUDA_CACHE:-$root/.cache/cuda-13.0}
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
)
stamp="$dest/.pins"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ] && [ -x "$dest/nvidia/cu13/bin/nvcc" ]; then
  echo "install-nvcc: pinned CUDA 13.0 compiler already in $dest"
  exit 0
fi
py=$(command -v python3 || command -v python) || { echo "install-nvcc: python3 is needed to install the CUDA compiler wheels" >&2; exit 1; }
echo "install-nvcc: installing ${pins[*]} into $dest"
rm -rf "$dest.tmp"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --target "$dest.tmp" "${pins[@]}"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "${pins[*]}" > "$stamp"
"$dest/nvidia/cu13/bin/nvcc" --version | tail -n 2
