#!/usr/bin/env bash
# Proves the CUDA emulation harness can fail: plants known defects in a copy
# of the tree, one at a time, and runs the harness tests that should catch
# each. Exits 1 if any defect goes unnoticed (make test-cuda-emu-mutants).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work")
cd "$work"

missed=0
# mutant NAME FILE PERL-SUBSTITUTION TEST-REGEX
mutant() {
  local name=$1 file=$2 expr=$3 tests=$4
  cp "$file" "$file.orig"
  perl -0pi -e "$expr" "$file"
  if cmp -s "$file" "$file.orig"; then
    echo "mutant $name: the substitution matched nothing in $file (update this script)"; missed=1
  else
    local t0=$SECONDS
    if go test -count=1 -tags 'cuda cudaemu' -run "$tests" ./model/gpu/ >"$work/$name.log" 2>&1; then
      echo "MISSED  $name: the tests passed"; missed=1
    else
      local why=""
      for pat in 'differs|moved|leaked|left for|holds|SIGSEGV|error: .*harness|CUBLAS_STATUS' 'FAIL'; do
        why=$(grep -m1 -E "$pat" "$work/$name.log" | sed 's/^[[:space:]]*//' | cut -c1-160 || true)
        [ -n "$why" ] && break
      done
      echo "caught  $name ($((SECONDS - t0)) s): $why"
    fi
  fi
  mv "$file.orig" "$file"
}

mutant sgemm-operand-swap-dropped model/gpu/device.go \
  's/d\.bl\.Sgemm\(tB, tA, n, m, k, 1, uintptr\(b\), ldb, uintptr\(a\), lda,/d.bl.Sgemm(tA, tB, m, n, k, 1, uintptr(a), lda, uintptr(b), ldb,/' \
  'TestCUDAMatchesCPU/torchvision/batch1$'
mutant conv-wrong-ldb model/gpu/device.go \
  's/kk, col, p, 1, off\(yj/kk, col, kk, 1, off(yj/' \
  'TestCUDALayersMatchCPU/sm_87/torchvision'
mutant undersized-col-buffer model/gpu/net.go \
  's/t\.col, err = d\.alloc\(colLen\)/t.col, err = d.alloc(colLen - 1)/' \
  'TestCUDAMatchesCPU/torchvision/batch1$'
mutant im2col-index model/gpu/kernels.cu \
  's/ix = \(q % ow\) \* stride - pad \+ kx;/ix = (q % ow) * stride - pad + ky;/' \
  'TestCUDALayersMatchCPU/sm_87/torchvision'
mutant fc-bias-index model/gpu/kernels.cu \
  's/y\[i\] = b\[i % out\];/y[i] = b[i \/ out];/' \
  'TestCUDALayersMatchCPU/sm_87/torchvision'
mutant maxpool-backward-window model/gpu/kernels.cu \
  's/ox1 = min\(\(ix \+ pad\) \/ s, ow - 1\)/ox1 = min((ix + pad) \/ s, ow - 2)/' \
  'TestCUDATrainStepMatchesCPU/torchvision'
mutant lr-multiplier-ignored model/gpu/cuda_train.go \
  's/float64\(lr\*mult\)/float64(lr)/' \
  'TestCUDAMomentumSteps'
mutant cublas-handle-leak model/gpu/device.go \
  's/\t\td\.bl\.Close\(\)\n//' \
  'TestEmuCloseReopenNoLeaks'
mutant shared-memory-kernel model/gpu/kernels.cu \
  's/(__global__ void relu\(float\* x, long long n\) \{)/$1 __shared__ float tile[32]; (void)tile;/' \
  'TestCUDAMatchesCPU/torchvision/batch1$'
mutant gemmex-compute-type model/gpu/cudalib/cudalib.go \
  's/ComputeF32  = 68/ComputeF32  = 64/' \
  'TestCUDAFP16MatchesCPU'
mutant half-conv-wrong-ldb model/gpu/device.go \
  's/kk, colH, p, off\(yj/kk, colH, kk, off(yj/' \
  'TestCUDAFP16LayersExact/sm_87/torchvision'
mutant half-rounding-up model/gpu/kernels.cu \
  's/a \+= 0xfffu \+ \(\(a >> 13\) & 1u\);/a += 0x1000u;/' \
  'TestCUDAHalfConversion'
mutant half-scale-index model/gpu/kernels.cu \
  's/long long o = i % out; y\[i\] = s\[o\]/long long o = i % out; y[i] = s[i \/ out]/' \
  'TestCUDAFP16LayersExact/sm_87/torchvision'
exit $missed
