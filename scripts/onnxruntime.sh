#!/usr/bin/env bash
# Installs onnxruntime's shared library for the peer benchmark
# (model/ortcheck) and prints its path. The library comes inside the npm
# package onnxruntime-node (x64 and arm64); ONNXRUNTIME_NODE_INSTALL=skip
# keeps its install script from downloading anything else. Nothing
# Leafwatch ships uses it.
set -euo pipefail
version=1.30.0
dir=${XDG_CACHE_HOME:-$HOME/.cache}/leafwatch/onnxruntime-node-$version
case $(uname -m) in
x86_64) arch=x64 ;;
aarch64) arch=arm64 ;;
*) echo "onnxruntime.sh: no onnxruntime-node build for $(uname -m)" >&2; exit 1 ;;
esac
lib=$dir/node_modules/onnxruntime-node/bin/napi-v6/linux/$arch/libonnxruntime.so.1
if [ ! -f "$lib" ]; then
	if ! command -v npm >/dev/null; then
		echo "onnxruntime.sh: installing npm (apt)" >&2
		sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get install -y --no-install-recommends npm >&2
	fi
	mkdir -p "$dir"
	(cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --ignore-scripts \
		"onnxruntime-node@$version" >&2)
	[ -f "$lib" ] || { echo "onnxruntime.sh: $lib missing after the install" >&2; exit 1; }
fi
echo "$lib"
