#!/usr/bin/env bash
# Known vulnerabilities that Leafwatch's code reaches, checked offline:
# govulncheck (pinned) against the Go vulnerability database as published
# in the Go module golang.org/x/vulndb (pinned; fetched through the module
# proxy like any module), indexed with that module's own cmd/indexdb.
# A reachable finding fails unless scripts/govulncheck.accept accepts it
# with a reason (scripts/vulngate). Tools and the index are cached in
# ~/.cache/leafwatch/vuln (first run ~3 min, later ~20 s).
#
# To move to a newer database: set VULNDB_VERSION to the pseudo-version
# `go list -m golang.org/x/vulndb@master` prints (needs the proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/goenv.sh
GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
cache=${LEAFWATCH_CACHE:-$HOME/.cache/leafwatch}/vuln
mkdir -p "$cache"

gvc=$cache/govulncheck-$GOVULNCHECK_VERSION
if [[ ! -x $gvc ]]; then
  echo "vulncheck: installing govulncheck $GOVULNCHECK_VERSION" >&2
  tmp=$(mktemp -d)
  GOBIN=$tmp go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
  mv "$tmp/govulncheck" "$gvc" && rmdir "$tmp"
fi
# The module's source: its data/osv holds every report as OSV JSON.
dbsrc=$(cd / && GOFLAGS=-mod=mod go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $dbsrc/data/osv ]] || { echo "vulncheck: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv" >&2; exit 1; }
indexdb=$cache/indexdb-$VULNDB_VERSION
if [[ ! -x $indexdb ]]; then
  echo "vulncheck: building the database indexer (golang.org/x/vulndb/cmd/indexdb)" >&2
  (cd "$dbsrc" && GOFLAGS=-mod=mod go build -o "$indexdb" ./cmd/indexdb)
fi
db=$cache/db-$VULNDB_VERSION
if [[ ! -f $db/index/db.json ]]; then
  rm -rf "$db.tmp"
  "$indexdb" -vulns "$dbsrc/data/osv" -out "$db.tmp"
  mv "$db.tmp" "$db"
fi
out=$cache/last-scan.json
rc=0
"$gvc" -db "file://$db" -format json ./... >"$out" || rc=$?
# With -format json, 0 whatever it finds; anything else is a failure to scan.
if [[ $rc -ne 0 ]]; then
  echo "vulncheck: govulncheck failed (exit $rc)" >&2
  exit 1
fi
go run ./scripts/vulngate -accept scripts/govulncheck.accept <"$out"
