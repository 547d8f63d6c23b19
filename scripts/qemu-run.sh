#!/usr/bin/env bash
# go test -exec helper: runs an arm64 test binary under qemu user-mode
# emulation with the sysroot (LEAFWATCH_SYSROOT, set by scripts/cross.sh)
# as its root for libraries and data (qemu maps absolute paths that exist
# there). No binfmt registration needed.
set -euo pipefail
: "${LEAFWATCH_SYSROOT:?run through scripts/cross.sh}"
# GStreamer scans plugins in a helper process it cannot exec here, and its
# registry cache must be one per sysroot (each release has its own
# plugins; a shared cache is rebuilt, slowly under emulation, every run).
export GST_REGISTRY_FORK=no
export GST_REGISTRY=${XDG_CACHE_HOME:-$HOME/.cache}/leafwatch/gst-registry-$(basename "$LEAFWATCH_SYSROOT").bin
# -tags cuda binaries find the sysroot's link stub of libcuda.so.1, whose
# cuInit fails as on a board without a GPU (engine auto picks the CPU).
export LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu/stubs
# Tests that repeat host-checked work with many full AlexNet passes run a
# smaller set under emulation (qemu is 10–30× slower).
export LEAFWATCH_EMULATED=qemu
# Tests that start their own binary again (kill -9 tests) go through qemu too.
export LEAFWATCH_SELF_EXEC="qemu-aarch64-static -L $LEAFWATCH_SYSROOT"
exec qemu-aarch64-static -L "$LEAFWATCH_SYSROOT" "$@"
