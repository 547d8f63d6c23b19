#!/usr/bin/env bash
# staticcheck (pinned), installed into ~/.cache/leafwatch/tools on first
# use. Arguments go to staticcheck (default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/goenv.sh
MODULE_VERSION=v0.8.2
bin=${LEAFWATCH_CACHE:-$HOME/.cache/leafwatch}/tools/staticcheck-$MODULE_VERSION
if [[ ! -x $bin ]]; then
  echo "staticcheck: installing honnef.co/go/tools/cmd/staticcheck@$MODULE_VERSION" >&2
  tmp=$(mktemp -d)
  GOBIN=$tmp go install "honnef.co/go/tools/cmd/staticcheck@$MODULE_VERSION"
  mkdir -p "$(dirname "$bin")" && mv "$tmp/staticcheck" "$bin" && rmdir "$tmp"
fi
[[ $# -gt 0 ]] || set -- ./...
exec "$bin" "$@"
