#!/usr/bin/env bash
# Leafwatch's first check on a real GPU (the bundle `make devcheck` builds).
# Run it on a new Jetson or GPU machine, from the bundle folder:
#   bash run.sh            # logs to $OUT (or ./devcheck-out)
# It needs the NVIDIA driver (libcuda.so.1); cuBLAS and NVRTC of any CUDA
# release from 11.4 to 13 (found below); optionally compute-sanitizer and
# PyTorch with torchvision. No Go, no network. Finishes within 10 minutes.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-$PWD/devcheck-out}
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

say "== Leafwatch devcheck $(cat VERSION 2>/dev/null) on $(uname -m), $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/   GPU: /' | tee -a "$SUMMARY"

# The driver library: the loader path, or where containers mount it.
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/aarch64-linux-gnu/tegra /usr/lib/aarch64-linux-gnu/nvidia; do
  [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

# cuBLAS and NVRTC: every folder holding either, CUDA toolkits and the
# nvidia-* Python wheels included; the engine picks the newest release the
# driver runs and logs the files it bound.
dirs=()
add_dir() { case ":${dirs[*]-}:" in *" $1 "*) ;; *) dirs+=("$1") ;; esac; }
cands=$( { ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null
           python3 - <<'PY' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for p in glob.glob(os.path.join(r, "nvidia", "**", "lib*"), recursive=True):
        if os.path.isdir(p): print(p)
PY
         } | sort -u)
for d in $cands; do
  ls "$d"/libcublas.so.1[0-9]* "$d"/libnvrtc.so.1[0-9]* >/dev/null 2>&1 && add_dir "$d"
done
if [ ${#dirs[@]} -gt 0 ]; then
  LEAFWATCH_CUDA_LIBS=$(IFS=:; echo "${dirs[*]}")
  export LEAFWATCH_CUDA_LIBS
  # cuBLAS needs cuBLASLt from its own folder or the loader path.
  export LD_LIBRARY_PATH="$LEAFWATCH_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
say "   library folders searched: ${LEAFWATCH_CUDA_LIBS:-(loader path and /usr/local/cuda only)}"

status=0
step() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  say "-- $name: exit $rc in $(( $(date +%s) - t0 )) s (log: $name.log)"
  return $rc
}

# 1. The engine's own tests: CUDA equals CPU per layer and per batch,
#    training steps, determinism, memory, close/reopen.
step cuda-tests 150 ./gpu.test -test.v -test.timeout 140s || status=1
grep -E '^(--- |ok|FAIL|PASS)|max \|cuda|updates:' "$OUT/cuda-tests.log" | tee -a "$SUMMARY"
if grep -q -- '--- SKIP: TestCUDAMatchesCPU' "$OUT/cuda-tests.log"; then
  say "   the CUDA tests skipped: no usable device (see cuda-tests.log)"; status=1
fi

# 2. gpucheck: device, libraries bound; fp32 and fp16 against the CPU
#    engine, ms/image at batch 1, 8, 32 and device memory of each.
step gpucheck 150 ./gpucheck -batches 1,8,32 -reps 20 -out "$OUT" -save-model "$TMP/torchvision.safetensors" || status=1
grep -E 'on cuda|batch|PASS|FAIL|CUDA device opened|computes in' "$OUT/gpucheck.log" | tee -a "$SUMMARY"

# 3. compute-sanitizer memcheck on one small case.
if command -v compute-sanitizer >/dev/null; then
  step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu.test -test.run 'TestCUDAMatchesCPU/torchvision/batch1$' -test.v || status=1
  grep -E 'ERROR SUMMARY|--- ' "$OUT/memcheck.log" | tee -a "$SUMMARY"
else
  say "-- memcheck: compute-sanitizer not installed; skipped"
fi

# 3b. The same check with writable-and-executable memory refused (the
#     kernel's W^X, what systemd's MemoryDenyWriteExecute=yes enforces):
#     whether the CUDA unit can keep that setting (systemd/cuda.conf turns
#     it off until this says PASS on real GPUs).
step gpucheck-wx 90 ./gpucheck -deny-write-execute -batches 1 -reps 3
case $? in
  0) say "   CUDA works with W^X memory refused: MemoryDenyWriteExecute=yes is possible on this GPU" ;;
  3) say "   W^X check skipped: $(grep SKIP "$OUT/gpucheck-wx.log")" ;;
  *) say "   CUDA fails with W^X memory refused (gpucheck-wx.log): CUDA builds need MemoryDenyWriteExecute=no" ;;
esac

# 4. PyTorch eager with the same torchvision weights on the same card, in
#    fp32 and fp16, with the ratios and device memory.
if [ -s "$TMP/torchvision.safetensors" ] && python3 -c 'import torch, torchvision' 2>/dev/null; then
  step torch 90 python3 torch_compare.py "$TMP/torchvision.safetensors" "$OUT/gpucheck.json" || status=1
  tee -a "$SUMMARY" <"$OUT/torch.log" >/dev/null
  grep -E 'ms/image|ratio|agree|max|memory|==' "$OUT/torch.log"
else
  say "-- torch: PyTorch with torchvision (or the saved model) not available; skipped"
fi

say "== devcheck $( [ $status -eq 0 ] && echo PASS || echo FAIL )"
exit $status
