# Leafwatch — build, test, benchmark, demo.
# Every target that needs system packages runs `deps` first, which installs
# only what is missing (or prints the apt command when not root).

GO        ?= go
BIN       ?= bin
GOFLAGS   ?=
PKGS      := ./...
# The Go release go.mod's `go` line names (it has the security fixes the
# project is checked against; scripts/goenv.sh does the same for scripts).
# Machines that default to GOTOOLCHAIN=local fetch it from the module proxy
# once. LEAFWATCH_GOTOOLCHAIN=local builds with the installed Go instead.
export GOTOOLCHAIN := $(or $(LEAFWATCH_GOTOOLCHAIN),go$(shell sed -n 's/^go //p' go.mod))
# Numeric packages are slow under the race detector; their concurrency
# tests run with -race separately below.
# finetune's command tests run AlexNet in child processes: race-instrumented
# im2col would take minutes, and the code they cover is single-threaded.
RACE_PKGS := $(shell GOTOOLCHAIN=$(GOTOOLCHAIN) $(GO) list ./... 2>/dev/null | grep -v -e '/model$$' -e '/model/cpu$$' -e '/model/onnx$$' -e '/model/dnncheck$$' -e '/train$$' -e '/tools/finetune$$')

.PHONY: deps-cuda build-cuda vet-cuda gpu-check test-cuda-emu test-cuda-emu-mutants devcheck
.PHONY: deps-cross deps-package build-arm64 test-arm64 test-opencv-matrix package package-test
.PHONY: all deps build build-purego test test-short vet fmt-check bench demo field-demo precision-agreement keep-day clean fuzz fuzz-ci vulncheck staticcheck

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build $(GOFLAGS) ./...
	@mkdir -p $(BIN)
	@for d in daemon/cmd/leafwatchd tools/finetune tools/gpucheck scripts/demovideo scripts/fieldlab; do \
	  if ls $$d/*.go >/dev/null 2>&1; then echo "go build -o $(BIN)/ ./$$d"; $(GO) build $(GOFLAGS) -o $(BIN)/ ./$$d || exit 1; fi; \
	done

# A pure-Go build of the engine (gonum BLAS instead of OpenBLAS). Programs
# need cgo for OpenCV, so this builds the model package only.
build-purego:
	CGO_ENABLED=0 $(GO) build ./model/ ./model/onnx/ ./model/cpu/ ./model/gpu/
	CGO_ENABLED=0 $(GO) vet ./model/ ./model/onnx/ ./model/cpu/ ./model/gpu/

# CUDA: headers from Debian non-free, or the CUDA toolkit / JetPack's own
# when present (then nothing is installed); compiling needs no GPU.
deps-cuda:
	@bash scripts/deps.sh --cuda

vet-cuda: deps-cuda
	$(GO) vet -tags cuda ./...
	bash scripts/staticcheck.sh -tags cuda ./...
	$(GO) vet -tags 'cuda cudaemu' ./model/gpu/... ./model/engine/ ./tools/finetune/train/ ./tools/gpucheck/

# The CUDA engine on the host emulation harness (internal/cudaemu): the
# real engine code and kernels.cu run on the CPU against a fake driver and
# cuBLAS, with Debian's NVRTC. No GPU needed; CI runs it.
test-cuda-emu: deps deps-cuda
	$(GO) test -count=1 -timeout 10m -tags 'cuda cudaemu' ./model/gpu/ ./model/gpu/cudalib/ ./model/engine/
	$(GO) test -count=1 -timeout 10m -tags 'cuda cudaemu' -run CUDA ./tools/finetune/train/
	$(GO) test -count=1 -timeout 10m -tags 'cuda cudaemu' ./tools/gpucheck/

# Plants known defects in a copy of the tree and checks the harness fails
# on each (a few minutes).
test-cuda-emu-mutants: deps deps-cuda
	bash scripts/cuda-emu-mutants.sh

# The one-shot check for a real GPU: a self-contained folder to copy to the
# device and run with `bash devcheck/run.sh` (pure-Go BLAS, so only the
# NVIDIA driver and a CUDA 11.4–13 cuBLAS/NVRTC are needed there).
DEVCHECK ?= devcheck
devcheck: deps deps-cuda
	rm -rf $(DEVCHECK) && mkdir -p $(DEVCHECK)
	$(GO) test -c -tags 'cuda purego' -o $(DEVCHECK)/gpu.test ./model/gpu/
	$(GO) build -tags 'cuda purego' -o $(DEVCHECK)/gpucheck ./tools/gpucheck
	cp tools/gpucheck/devcheck/run.sh tools/gpucheck/devcheck/torch_compare.py tools/gpucheck/devcheck/README.md $(DEVCHECK)/
	git describe --always --dirty >$(DEVCHECK)/VERSION 2>/dev/null || echo unknown >$(DEVCHECK)/VERSION
	python3 -m py_compile $(DEVCHECK)/torch_compare.py && rm -rf $(DEVCHECK)/__pycache__
	bash -n $(DEVCHECK)/run.sh
	@du -sh $(DEVCHECK); echo "copy $(DEVCHECK)/ to the GPU machine and run: bash $(DEVCHECK)/run.sh"

build-cuda: deps deps-cuda
	@mkdir -p $(BIN)/cuda
	$(GO) build -tags cuda -o $(BIN)/cuda/ ./daemon/cmd/leafwatchd ./tools/finetune ./tools/gpucheck

# Run on a Jetson or a workstation after installing: reports the device,
# checks CUDA against the CPU engine and prints ms/image.
gpu-check: build-cuda
	$(BIN)/cuda/gpucheck

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags onnxruntime ./model/ortcheck/

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Known vulnerabilities the code reaches (govulncheck, offline database
# pinned in the script; accepted findings need a reason in
# scripts/govulncheck.accept).
vulncheck:
	bash scripts/vulncheck.sh

staticcheck:
	bash scripts/staticcheck.sh ./...

DAEMON_RACE_SHARD = ^(TestFleetUpdates|TestDaemonProcessThroughBrokerOutage|TestReloadBookkeeping|TestAlertSurvivesKill9|TestEngineFailureFallsBackToCPU|TestOutboxFailureIsVisible)$$
test: deps fmt-check vet staticcheck vulncheck build-purego
	$(GO) test -count=1 -timeout 15m ./model/... ./tools/finetune/...
	# The race detector on what in model/cpu and the trainer runs goroutines:
	# the work splitter and spinning, batched convolutions, concurrent
	# classifiers, weight release; the trainer's parallel decoders and field
	# batches. Not under it: the whole-network reference, gradient and
	# training runs (minutes per AlexNet pass there, and no goroutines the
	# tests above do not already cover), nor model (checkpoint I/O) and
	# model/dnncheck (OpenCV DNN comparisons), which start no goroutines.
	$(GO) test -count=1 -race -run 'Concurrent|Allocates|SgemmPar|ConvBatch|Spinning|GemmRowStep|ReleaseWeights' ./model/cpu/
	$(GO) test -count=1 -race -run 'FieldShareInEveryBatch|FieldSplit|DatasetLists|ConfigRefuses|TruncatedState|DatasetErrors' ./tools/finetune/train/
	# The daemon's preprocessing-identity test runs one goroutine and
	# ~30 AlexNet passes (3.5 min under -race, 1 without): it runs below.
	# The daemon's race run is the longest (~12 min) and keeps about one
	# core busy: its heaviest tests run beside the rest, in a process of
	# their own.
	@$(GO) test -count=1 -race -timeout 15m -run '$(DAEMON_RACE_SHARD)' ./daemon/ >.race-shard.log 2>&1 & shard=$$!; \
	  echo "$(GO) test -count=1 -race -timeout 15m -skip '$(DAEMON_RACE_SHARD)|FinetuneSeesWhatTheDaemonSees' $(RACE_PKGS)"; \
	  $(GO) test -count=1 -race -timeout 15m -skip '$(DAEMON_RACE_SHARD)|FinetuneSeesWhatTheDaemonSees' $(RACE_PKGS); rc=$$?; \
	  wait $$shard; src=$$?; echo "== the daemon's heaviest tests under -race ($(DAEMON_RACE_SHARD)):"; cat .race-shard.log; rm -f .race-shard.log; \
	  [ $$rc -eq 0 ] && [ $$src -eq 0 ]
	$(GO) test -count=1 -run 'RSSAfterReloads|FinetuneSeesWhatTheDaemonSees' ./daemon/
	$(GO) test -count=1 -run 'EncryptedKey' ./internal/bundle/
	CGO_ENABLED=0 $(GO) test -count=1 -run 'Reference|Gradients' ./model/cpu/
	$(GO) test -count=1 -tags matprofile -run NoLeakedMats ./vision/ ./daemon/

test-short: deps
	$(GO) test -short -count=1 ./...

# Benchmarks run as OpenBLAS detects the CPU; set OPENBLAS_CORETYPE (e.g.
# SkylakeX, Haswell) to compare kernels when it falls back to Prescott.
bench: deps
	@{ $(GO) test -run XXX -bench 'Forward|VsGorgonia|TrainStep|SpinGrace' -benchtime 5x ./model/cpu/ && \
	   $(GO) test -run XXX -bench VsOpenCVDNN -benchtime 5x ./model/dnncheck/ && \
	   LEAFWATCH_ONNXRUNTIME_LIB=$$(scripts/onnxruntime.sh) $(GO) test -tags onnxruntime -run Agrees -bench VsONNXRuntime -benchtime 20x ./model/ortcheck/ && \
	   $(GO) test -run XXX -bench SteadyStateRSS -benchtime 1x ./model/cpu/ && \
	   $(GO) test -run XXX -bench 'Preprocess|CaptureFPS' -benchtime 50x ./vision/ && \
	   $(GO) test -run XXX -bench 'LeafRegions|LeafStageShare' -benchtime 5x ./vision/ && \
	   $(GO) test -run XXX -bench MultiCameraThroughput -benchtime 2x ./daemon/ && \
	   $(GO) test -run XXX -bench KeepOverhead -benchtime 1x ./daemon/ && \
	   $(GO) test -run XXX -bench PrecisionAgreement -benchtime 1x ./tools/finetune/train/; } | tee /dev/stderr | scripts/benchsummary.sh

# Every fuzzer of a parser that reads outside input (scripts/fuzz.sh):
# a minute each here, a few seconds each in CI. `make test` replays the
# corpora kept in testdata/fuzz.
fuzz:
	bash scripts/fuzz.sh keep 60

fuzz-ci:
	bash scripts/fuzz.sh 5

demo: build
	@bash scripts/demo.sh

# The field-data loop end to end on a synthetic greenhouse, measured
# (scripts/field-demo.sh; figures in .cache/field-demo/results.txt).
field-demo: build
	@bash scripts/field-demo.sh

# The CPU engine's reduced precisions against fp32 on harder ground than
# the benchmarks' synthetic leaves: the field demo's greenhouse-tuned model
# on the leaf regions of held-out greenhouse frames and on the samples the
# device kept (runs make field-demo first when its results are missing),
# then synthetic leaves on a He-initialised base and on a base whose
# fc6/fc7 weights have ImageNet AlexNet's value ranges.
precision-agreement: build
	@[ -f .cache/field-demo/run/tuned/best.safetensors ] || bash scripts/field-demo.sh
	$(BIN)/fieldlab precision --model .cache/field-demo/run/tuned/best.safetensors --frames .cache/field-demo/run/held --images .cache/field-demo/run/field-rules
	$(BIN)/fieldlab precision --model .cache/field-demo/run/base/best.safetensors --frames .cache/field-demo/run/held
	$(GO) test -run XXX -bench PrecisionAgreement -benchtime 1x ./tools/finetune/train/ | grep -v '^Benchmark'

# What the default keep rules keep in a (simulated) day of the demo's video.
keep-day: build
	@[ -f .cache/demo/model/best.safetensors ] || bash scripts/demo.sh </dev/null
	$(BIN)/fieldlab keepday --model .cache/demo/model/best.safetensors --video .cache/demo/greenhouse.avi

# ---- arm64 and packages (see the README's "arm64, JetPack and packages") ----
# Cross builds compile against Debian sysroots made by scripts/sysroot.sh
# (kept in ~/.cache/leafwatch/sysroot); arm64 tests run under qemu.
QEMU_TEST = $(CURDIR)/scripts/qemu-run.sh

deps-cross:
	@bash scripts/deps.sh --cross

deps-package:
	@bash scripts/deps.sh --package

build-arm64: deps deps-cross deps-cuda
	@mkdir -p $(BIN)/arm64 $(BIN)/arm64-cuda
	scripts/cross.sh bookworm arm64 $(GO) build -o $(BIN)/arm64/ ./daemon/cmd/leafwatchd ./tools/finetune
	scripts/cross.sh bookworm arm64 $(GO) build -tags cuda -o $(BIN)/arm64-cuda/ ./daemon/cmd/leafwatchd ./tools/finetune ./tools/gpucheck

# Under qemu the daemon runs what can differ on arm64: configuration
# parsing, decisions and payloads, the whole pipeline on the NEON engine,
# the preprocessing identity with finetune (OpenCV's arm64 build), and the
# engine swaps' atomics. The rest of its tests (broker outages, restarts,
# fleet updates, keeping, labelling, HTTP) are host logic, already run on
# amd64, that spend qemu's minutes on AlexNet passes (~16 of them).
ARM64_DAEMON_TESTS = Config|Decider|NotALeaf|ChooseAndPayloads|DaemonEndToEnd|FinetuneSeesWhatTheDaemonSees|EngineBoxConcurrentSwaps
test-arm64: deps deps-cross
	scripts/cross.sh bookworm arm64 $(GO) test -count=1 -timeout 30m -exec $(QEMU_TEST) ./model/ ./model/cpu/ ./model/onnx/ ./vision/ ./mqtt/
	scripts/cross.sh bookworm arm64 $(GO) test -count=1 -timeout 20m -exec $(QEMU_TEST) -run '$(ARM64_DAEMON_TESTS)' ./daemon/
	scripts/cross.sh bookworm arm64 $(GO) test -count=1 -tags cuda -exec $(QEMU_TEST) -run 'Select|ChooseArch' ./model/gpu/ ./model/engine/

# The packages that use gocv against OpenCV 4.5 (bullseye, as JetPack 5)
# and 4.10 (trixie, newer than JetPack 6's 4.8), arm64 under qemu.
test-opencv-matrix: deps deps-cross
	@for suite in bullseye trixie; do \
	  echo "== OpenCV of $$suite"; \
	  scripts/cross.sh $$suite arm64 $(GO) test -count=1 -timeout 20m -exec $(QEMU_TEST) ./vision/ ./model/dnncheck/ || exit 1; \
	  scripts/cross.sh $$suite arm64 $(GO) build -o /dev/null ./daemon/cmd/leafwatchd || exit 1; \
	done

DIST ?= dist
package: deps deps-cross deps-cuda deps-package
	@for t in amd64 arm64 jetpack5; do OUT=$(DIST) scripts/package.sh $$t || exit 1; done

# Inspects every package (control, conffiles, scripts, lintian, manual
# pages, glibc/GLIBCXX and sonames from the ELF), then installs the amd64
# one into a throw-away Debian root, upgrades it over an edited config and
# purges it, and runs it as a service under the unit's sandbox in a booted
# Debian root (systemd-nspawn).
package-test: package
	scripts/check-package.sh $(DIST)/leafwatch_$(shell cat VERSION)_amd64.deb 2.36 3.4.30 'libopencv_core\.so\.406' 'libopenblas\.so\.0'
	scripts/check-package.sh $(DIST)/leafwatch_$(shell cat VERSION)_arm64.deb 2.36 3.4.30 'libopencv_core\.so\.406' 'libopenblas\.so\.0'
	scripts/check-package.sh $(DIST)/leafwatch-jetpack5_$(shell cat VERSION)_arm64.deb 2.31 3.4.28 'libopencv_core\.so\.4\.5' 'libopencv_videoio\.so\.4\.5' 'libcuda\.so\.1' 'libopenblas\.so\.0'
	VERSION=$(shell cat VERSION).1 OUT=$(DIST)/upgrade scripts/package.sh amd64 >/dev/null
	scripts/test-package-install.sh $(DIST)/leafwatch_$(shell cat VERSION)_amd64.deb $(DIST)/upgrade/leafwatch_$(shell cat VERSION).1_amd64.deb
	scripts/test-sandbox.sh $(DIST)/leafwatch_$(shell cat VERSION)_amd64.deb

clean:
	rm -rf $(BIN) $(DIST) $(DEVCHECK)
