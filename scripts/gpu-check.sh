#!/usr/bin/env bash
# The one command run on a GPU machine (issue 12): every check of the CUDA path, with a verdict
# that survives a hang or a kill.
#
#     bash scripts/gpu-check.sh [--rehearse] OUT
#
# Stages, in order, each under its own budget (`timeout`), each step inside it under its own
# timeout (clipped to what is left of the stage's budget), the whole run under 8 minutes on an H200:
#   env          nvidia-smi, `tomodiff info --kernels`, the commit, the date, python/torch/ncu/astra
#   correctness  every test binary in $TOMODIFF_TEST_BINS with TOMODIFF_REQUIRE_GPU=1 and
#                TOMODIFF_GPU_ONLY=1 (cuda against the CPU references, the emulator left out), each under
#                its own timeout (several at once); per line: kernel, device, max |diff|
#   bench        GEMM 4096^3, U-Net forward (paper preset, batch 8), the cone projector, each against
#                its peer (torch.matmul, the PyTorch U-Net, torch conv3d bf16 at the paper's conv
#                shapes, ASTRA's GPU projector when installed): time, rate, floor, peer ratio
#   recon        `tomodiff demo` (PSNR within 0.3 dB of the CPU's 27.90 dB) and `bench recon` on the
#                paper preset at 512x512x256, with and without graph replay (nvidia-smi's memory)
#   train        one training step of the paper preset (batch 8) against PyTorch's
#   ncu          one Nsight Compute report of a conv3d kernel, when ncu is on PATH
# When a step or stage ends, scripts/gpu_report.py merges its result into OUT/report.json and
# rewrites OUT/report.md; raw logs are in OUT/logs/. A stage fails only when tomodiff fails (or a
# test fails, or the demo's PSNR is off): missing peers, astra or ncu never fail the run.
# Exit 0 when no stage failed or timed out, else 1.
#
# --rehearse: the same stages and report on a machine without a GPU (emu and cpu, tiny sizes, the
# test binaries without TOMODIFF_REQUIRE_GPU; peers only if python3 has torch; ncu skipped), in
# well under a minute on 2 cores; tests/gpu_check.rs runs it.
#
# Environment:
#   TOMODIFF_BIN        the tomodiff binary (default: the bundle's payload beside this script,
#                       unpacked, else <repo>/target/release/tomodiff)
#   TOMODIFF_TEST_BINS  a folder of test binaries (default: the unpacked payload's tests/)
#   TOMODIFF_REPO       the repository root (fixtures; default: this script's folder's parent)
#   GPU_CHECK_MIRROR    a folder that also gets report.json, report.md and logs.tar.gz after every
#                       stage (the device tool brings back only a few files: point OUT elsewhere)
#   GPU_CHECK_TOTAL_S, GPU_CHECK_BUDGET_<STAGE> (e.g. GPU_CHECK_BUDGET_CORRECTNESS=200),
#   GPU_CHECK_TEST_TIMEOUT_S, GPU_CHECK_JOBS: budgets, per-binary timeout, binaries run at once
#   GPU_CHECK_FAKE_FAIL=STAGE  (--rehearse only) run that stage with a tomodiff that does not
#                       exist, to check that a failed stage is recorded and the later ones still run
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/gpu-check.sh"
report="$here/gpu_report.py"
STAGES=(env correctness bench recon train ncu)

now_ms() {
  local t=${EPOCHREALTIME:-}
  if [[ -n $t ]]; then t=${t/[.,]/}; echo $((10#$t / 1000)); else echo $(($(date +%s%N) / 1000000)); fi
}
secs_since() { # seconds since $1 (ms), with a decimal
  local d=$(($(now_ms) - $1))
  printf '%d.%03d' $((d / 1000)) $((d % 1000))
}

# ----------------------------------------------------------------------------------------------
# Inside a stage (the script calls itself per stage, under the stage's timeout).

# run_step NAME KIND CRITICAL TIMEOUT_S [report options...] -- COMMAND...
run_step() {
  local name=$1 kind=$2 crit=$3 want=$4
  shift 4
  local extra=()
  while [[ $# -gt 0 && $1 != -- ]]; do extra+=("$1"); shift; done
  shift
  local log="$LOGS/$STAGE-$name.log"
  local left=$(((STAGE_DEADLINE_MS - $(now_ms)) / 1000))
  local t=$want clipped=()
  if ((left < t)); then t=$left; clipped=(--clipped); fi
  if ((t < 1)); then
    echo "# not run: the stage's budget was spent" > "$log"
    python3 "$report" step "$OUT" "$STAGE" "$name" --kind "$kind" --critical "$crit" --rc 124 --seconds 0 --timeout 0 --not-started --log "$log"
    return
  fi
  { printf '$'; printf ' %q' "$@"; printf '\n# timeout %s s\n' "$t"; } > "$log"
  echo "[gpu-check] $STAGE/$name (timeout ${t}s)" >&2
  local t0
  t0=$(now_ms)
  timeout -k 5 "$t" "$@" >> "$log" 2>&1
  local rc=$?
  python3 "$report" step "$OUT" "$STAGE" "$name" --kind "$kind" --critical "$crit" --rc "$rc" --seconds "$(secs_since "$t0")" \
    --timeout "$t" ${clipped[@]+"${clipped[@]}"} --log "$log" ${extra[@]+"${extra[@]}"}
}

# skip_step NAME KIND CRITICAL WHY
skip_step() {
  echo "[gpu-check] $STAGE/$1 skipped: $4" >&2
  python3 "$report" step "$OUT" "$STAGE" "$1" --kind "$2" --critical "$3" --skip "$4"
}

# has_py MODULE: python3 can import it (cached per run in OUT/logs).
has_py() {
  local f="$LOGS/.py-$1"
  if [[ ! -f $f ]]; then
    if timeout 60 python3 -c "import $1" > /dev/null 2>&1; then echo yes > "$f"; else echo no > "$f"; fi
  fi
  [[ $(cat "$f") == yes ]]
}

stage_env() {
  if command -v nvidia-smi > /dev/null; then
    run_step nvidia-smi nvidia_smi 0 10 -- bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader; nvidia-smi'
  else
    skip_step nvidia-smi nvidia_smi 0 "nvidia-smi not found"
  fi
  run_step info info 1 10 -- "$TD" info --kernels
  run_step versions versions 0 30 -- bash "$self" --versions "$LOGS"
}

# Prints key=value lines for the env stage; caches python3's torch and astra for later stages.
versions() {
  local logs=$1 g b
  g=$(git -C "$TOMODIFF_REPO" rev-parse HEAD 2> /dev/null) || g=
  [[ -f $here/COMMIT ]] && b=$(head -1 "$here/COMMIT") || b=
  echo "commit=${b:-${g:-unknown}}"
  [[ -n $g ]] && echo "commit_git=$g" && echo "commit_git_dirty=$([[ -n $(git -C "$TOMODIFF_REPO" status --porcelain --untracked-files=no 2> /dev/null) ]] && echo yes || echo no)"
  [[ -n $b ]] && echo "commit_bundle=$(tr '\n' ' ' < "$here/COMMIT")"
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host=$(hostname 2> /dev/null || cat /etc/hostname 2> /dev/null)"
  echo "python=$(python3 --version 2>&1)"
  if timeout 40 python3 -c 'import torch; print("torch=" + torch.__version__); print("torch_cuda=%s" % torch.version.cuda); print("torch_cuda_available=%s" % torch.cuda.is_available())' 2> /dev/null; then
    echo yes > "$logs/.py-torch"
  else
    echo "torch=not installed" && echo no > "$logs/.py-torch"
  fi
  if timeout 30 python3 -c 'import astra; print("astra=" + astra.__version__)' 2> /dev/null; then echo yes > "$logs/.py-astra"; else echo "astra=not installed" && echo no > "$logs/.py-astra"; fi
  if command -v ncu > /dev/null; then echo "ncu=$(timeout 20 ncu --version 2>&1 | tail -1)"; else echo "ncu=not found"; fi
}

# The test binaries of a folder, the kernel tests first.
list_bins() {
  local dir=$1 first=(kernels nn_kernels emulator sampler_kernels projector tiling graph train gradients unet_fixture iterative recon sampler tensor) f n
  local all=()
  for f in "$dir"/*; do
    [[ -f $f && -x $f && $f != *.d ]] && all+=("$f")
  done
  local done_=" "
  for n in "${first[@]}"; do
    for f in ${all[@]+"${all[@]}"}; do
      if [[ $(bin_name "$f") == "$n" && $done_ != *" $f "* ]]; then echo "$f"; done_+="$f "; fi
    done
  done
  for f in ${all[@]+"${all[@]}"}; do [[ $done_ != *" $f "* ]] && echo "$f"; done
  return 0
}
bin_name() { # cargo's deps/<name>-<16 hex> or a bundle's tests/<name>
  local n
  n=$(basename "$1")
  [[ $n =~ ^(.+)-[0-9a-f]{16}$ ]] && n=${BASH_REMATCH[1]}
  echo "$n"
}

stage_correctness() {
  local dir=${TOMODIFF_TEST_BINS:-}
  if [[ -z $dir ]]; then
    skip_step tests test 1 "no test binaries: TOMODIFF_TEST_BINS is not set"
    return
  fi
  if [[ ! -d $dir ]]; then
    run_step tests test 1 5 -- bash -c "echo 'error: TOMODIFF_TEST_BINS=$dir is not a folder'; exit 2"
    return
  fi
  local bins=()
  mapfile -t bins < <(list_bins "$dir")
  if ((${#bins[@]} == 0)); then
    run_step tests test 1 5 -- bash -c "echo 'error: no test binaries in $dir'; exit 2"
    return
  fi
  local per jobs gpu_env
  if [[ $MODE == gpu ]]; then
    per=${GPU_CHECK_TEST_TIMEOUT_S:-90} jobs=${GPU_CHECK_JOBS:-4} gpu_env=(env TOMODIFF_REQUIRE_GPU=1 TOMODIFF_GPU_ONLY=1)
  else
    per=${GPU_CHECK_TEST_TIMEOUT_S:-60} jobs=${GPU_CHECK_JOBS:-1} gpu_env=(env -u TOMODIFF_REQUIRE_GPU)
  fi
  local b name exe seen=" "
  for b in "${bins[@]}"; do
    name=$(bin_name "$b")
    while [[ $seen == *" $name "* ]]; do name="$name-2"; done
    seen+="$name "
    exe=$b
    [[ $FAKE == 1 ]] && exe=/nonexistent/test-binary-fake-fail
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
    run_step "$name" test 1 "$per" -- "${gpu_env[@]}" "$exe" --test-threads=4 --nocapture &
  done
  wait
}

stage_bench() {
  local torch=0 astra=0
  has_py torch && torch=1
  if [[ $MODE == gpu ]]; then
    run_step gemm row 1 30 -- "$TD" bench gemm --device cuda --size 4096
    run_step unet row 1 40 -- "$TD" bench unet --device cuda --config paper --batch 8
    skip_step conv3d row 1 "not available: tomodiff has no single-conv3d benchmark (conv3d's time is inside bench unet; see the ncu stage)"
    run_step projector projector 1 50 -- "$TD" bench projector --device cuda --case cone
    if ((torch)); then
      run_step gemm-peer torch_gemm 0 30 -- python3 "$here/peer_gemm.py" 4096
      run_step unet-peer torch_net 0 45 -- python3 "$here/peer_unet_torch.py" --config paper --batch 8 --device cuda
      run_step conv3d-peer torch_conv3d 0 45 -- python3 "$here/peer_conv3d_torch.py" --config paper --batch 8 --device cuda
    else
      for s in gemm-peer:torch_gemm unet-peer:torch_net conv3d-peer:torch_conv3d; do skip_step "${s%%:*}" "${s#*:}" 0 "torch not installed"; done
    fi
    has_py astra && astra=1
    if ((astra)); then
      run_step astra-peer astra 0 60 -- python3 "$here/peer_astra_cuda.py"
    else
      skip_step astra-peer astra 0 "astra not installed"
    fi
  else
    run_step gemm row 1 30 -- "$TD" bench gemm --device emu --size 64
    run_step unet row 1 30 -- "$TD" bench unet --device cpu --config tiny --batch 1
    skip_step conv3d row 1 "not available: tomodiff has no single-conv3d benchmark (conv3d's time is inside bench unet)"
    run_step projector projector 1 40 -- "$TD" bench projector --device cpu --case parallel2d
    skip_step gemm-peer torch_gemm 0 "rehearsal: peer_gemm.py runs on CUDA only"
    if ((torch)); then
      run_step unet-peer torch_net 0 30 -- python3 "$here/peer_unet_torch.py" --config tiny --batch 1 --device cpu --threads 2
      run_step conv3d-peer torch_conv3d 0 30 -- python3 "$here/peer_conv3d_torch.py" --config tiny --batch 1 --device cpu
    else
      skip_step unet-peer torch_net 0 "torch not installed"
      skip_step conv3d-peer torch_conv3d 0 "torch not installed"
    fi
    skip_step astra-peer astra 0 "rehearsal: ASTRA's projector here is the CUDA one"
  fi
}

# Samples nvidia-smi's memory.used (MiB) into $1 while the caller runs something; stop with stop_mem.
MEM_PID=
start_mem() {
  MEM_PID=
  command -v nvidia-smi > /dev/null || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$1" 2> /dev/null &
  MEM_PID=$!
}
stop_mem() {
  [[ -n $MEM_PID ]] && kill "$MEM_PID" 2> /dev/null && wait "$MEM_PID" 2> /dev/null
  MEM_PID=
  return 0
}

stage_recon() {
  rm -rf "$OUT/demo"
  local m1="$LOGS/recon-bench-recon.mem" m2="$LOGS/recon-bench-recon-no-graph.mem"
  if [[ $MODE == gpu ]]; then
    run_step demo demo 1 30 --data "$OUT/demo/metrics.json" --expect-psnr 27.90 --tol 0.3 -- "$TD" demo --device cuda --out "$OUT/demo"
    local args=(bench recon --device cuda --config paper --shape 512,512,256 --steps 5 --rounds 1 --batch 32)
    start_mem "$m1"
    run_step bench-recon recon 1 45 --data "$m1" -- "$TD" "${args[@]}"
    stop_mem
    start_mem "$m2"
    run_step bench-recon-no-graph recon 1 45 --data "$m2" -- "$TD" "${args[@]}" --no-graph
    stop_mem
  else
    run_step demo demo 1 40 --data "$OUT/demo/metrics.json" -- "$TD" demo --device cpu --steps 1 --rounds 1 --cgls-iters 2 --out "$OUT/demo"
    local args=(bench recon --device cpu --config tiny --shape 16,16,16 --steps 1 --rounds 1 --batch 8)
    run_step bench-recon recon 1 30 --data "$m1" -- "$TD" "${args[@]}"
    run_step bench-recon-no-graph recon 1 30 --data "$m2" -- "$TD" "${args[@]}" --no-graph
  fi
}

stage_train() {
  local torch=0
  has_py torch && torch=1
  if [[ $MODE == gpu ]]; then
    run_step train row 1 25 -- "$TD" bench train --device cuda --config paper --batch 8
    if ((torch)); then
      run_step train-peer torch_net 0 45 -- python3 "$here/peer_train_torch.py" --config paper --batch 8 --device cuda
    else
      skip_step train-peer torch_net 0 "torch not installed"
    fi
  else
    run_step train row 1 30 -- "$TD" bench train --device cpu --config tiny --batch 1
    if ((torch)); then
      run_step train-peer torch_net 0 30 -- python3 "$here/peer_train_torch.py" --config tiny --batch 1 --device cpu --threads 2
    else
      skip_step train-peer torch_net 0 "torch not installed"
    fi
  fi
}

stage_ncu() {
  if [[ $MODE != gpu ]]; then
    skip_step ncu-profile ncu 1 "rehearsal: no GPU"
  elif ! command -v ncu > /dev/null; then
    skip_step ncu-profile ncu 1 "ncu not found"
  else
    # The first conv3d launch is the input convolution (5 channels in); the second is a 64 -> 64
    # convolution at 32^3, among the hottest of the forward (`tomodiff model info --config paper`).
    run_step ncu-profile ncu 1 30 -- ncu --clock-control none --csv --kernel-name regex:conv3d_bf16 --launch-skip 1 --launch-count 1 \
      --metrics sm__warps_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum \
      "$TD" bench unet --device cuda --config paper --batch 1
  fi
}

in_stage() {
  STAGE=$1
  OUT=$GC_OUT LOGS=$GC_OUT/logs MODE=$GC_MODE TD=$TOMODIFF_BIN REPO=$TOMODIFF_REPO STAGE_DEADLINE_MS=$GC_STAGE_DEADLINE_MS FAKE=0
  if [[ $MODE == rehearse && ${GPU_CHECK_FAKE_FAIL:-} == "$STAGE" ]]; then
    FAKE=1 TD=/nonexistent/tomodiff-fake-fail
    echo "[gpu-check] $STAGE: GPU_CHECK_FAKE_FAIL: running it with $TD" >&2
  fi
  "stage_$STAGE"
}

# ----------------------------------------------------------------------------------------------
# The run.

main() {
  local mode=gpu
  if [[ ${1:-} == --rehearse ]]; then mode=rehearse; shift; fi
  if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: bash gpu-check.sh [--rehearse] OUT" >&2
    exit 2
  fi
  local start
  start=$(now_ms)
  mkdir -p "$1/logs" || exit 2
  local out
  out=$(cd "$1" && pwd)
  rm -f "$out"/logs/* "$out"/logs/.py-* 2> /dev/null
  export TOMODIFF_REPO=${TOMODIFF_REPO:-$(cd "$here/.." && pwd)}
  if [[ -z ${TOMODIFF_BIN:-} ]]; then
    if [[ -f $here/payload.tar.xz ]]; then
      local u
      u=$(mktemp -d)
      python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$here/payload.tar.xz" "$u" || exit 2
      export TOMODIFF_BIN=$u/tomodiff TOMODIFF_TEST_BINS=${TOMODIFF_TEST_BINS:-$u/tests}
    else
      export TOMODIFF_BIN=$TOMODIFF_REPO/target/release/tomodiff
    fi
  fi
  export TOMODIFF_BIN TOMODIFF_TEST_BINS=${TOMODIFF_TEST_BINS:-}
  # Test binaries run from here see it and do not rehearse this script again (tests/gpu_check.rs).
  export GPU_CHECK_ACTIVE=1
  local -A budget
  local total
  if [[ $mode == gpu ]]; then
    budget=([env]=25 [correctness]=160 [bench]=110 [recon]=95 [train]=50 [ncu]=30)
    total=${GPU_CHECK_TOTAL_S:-470}
  else
    budget=([env]=30 [correctness]=120 [bench]=90 [recon]=90 [train]=60 [ncu]=10)
    total=${GPU_CHECK_TOTAL_S:-400}
  fi
  local s v list=
  for s in "${STAGES[@]}"; do
    v=GPU_CHECK_BUDGET_${s^^}
    [[ -n ${!v:-} ]] && budget[$s]=${!v}
    list+="$s=${budget[$s]},"
  done
  python3 "$report" init "$out" --mode "$mode" --budgets "$list" || exit 2
  echo "[gpu-check] $mode run into $out (tomodiff: $TOMODIFF_BIN; tests: ${TOMODIFF_TEST_BINS:-none}; total budget ${total}s)" >&2
  local deadline=$((start + total * 1000)) b left t0 rc
  for s in "${STAGES[@]}"; do
    left=$(((deadline - $(now_ms)) / 1000))
    b=${budget[$s]}
    ((left < b)) && b=$left
    if ((b < 3)); then
      python3 "$report" finish "$out" "$s" --rc 124 --seconds 0 --budget "$b" --status timeout --why "not started: the run's total budget of ${total} s was spent"
      continue
    fi
    echo "[gpu-check] stage $s (budget ${b}s)" >&2
    t0=$(now_ms)
    GC_OUT=$out GC_MODE=$mode GC_STAGE_DEADLINE_MS=$((t0 + b * 1000)) timeout -k 5 $((b + 10)) bash "$self" --stage "$s"
    rc=$?
    python3 "$report" finish "$out" "$s" --rc "$rc" --seconds "$(secs_since "$t0")" --budget "$b"
  done
  python3 - "$out/report.json" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["stages"]:
    print(f"[gpu-check] {s['name']:<12} {s['status']:<8} {s['seconds'] if s['seconds'] is not None else '-':>8} s  {s.get('why', '')}"[:240], file=sys.stderr)
sys.exit(0 if r["verdict"]["ok"] else 1)
PY
  rc=$?
  echo "[gpu-check] $(secs_since "$start") s; report: $out/report.md" >&2
  exit $rc
}

case ${1:-} in
--stage) in_stage "$2" ;;
--versions) versions "$2" ;;
*) main "$@" ;;
esac
