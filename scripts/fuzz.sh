#!/usr/bin/env bash
# The fuzzers of every parser that reads outside input: checkpoints, ONNX
# files, the config, MQTT commands, image files, camera URIs, Label Studio
# imports and exported samples.jsonl files.
#
#   scripts/fuzz.sh [SECONDS]        run each for SECONDS (default 5; CI)
#   scripts/fuzz.sh keep [SECONDS]   the same, then copy what each found
#                                    into its testdata/fuzz/ corpus
#
# `go test` (every `make test`) replays the corpora in testdata/fuzz/ as
# ordinary tests; a crash found here lands there too, as a failing test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/goenv.sh
keep=0
if [[ ${1:-} == keep ]]; then keep=1; shift; fi
secs=${1:-5}
targets=(
  "FuzzDecode ./model/"
  "FuzzDecodeONNX ./model/"
  "FuzzParseConfig ./daemon/"
  "FuzzParseCommand ./mqtt/"
  "FuzzCheckImage ./vision/"
  "FuzzParseSource ./vision/"
  "FuzzImportLabelStudio ./daemon/samples/"
  "FuzzReadRecords ./internal/fieldset/"
)
if [[ -n ${LEAFWATCH_EXTRA_FUZZ:-} ]]; then
  IFS=';' read -r -a extra <<<"$LEAFWATCH_EXTRA_FUZZ"
  targets+=("${extra[@]}")
fi
module=$(go list -m)
cache=$(go env GOCACHE)/fuzz
for t in "${targets[@]}"; do
  read -r name pkg <<<"$t"
  echo "== fuzz $name ($pkg, ${secs}s)"
  go test -run XXX -fuzz "^$name\$" -fuzztime "${secs}s" "$pkg" 2>&1 | grep -vE '^fuzz: elapsed' || {
    echo "fuzz: $name found a failing input; it is in ${pkg#./}testdata/fuzz/$name/ (run: go test -run $name $pkg)" >&2
    exit 1
  }
  if [[ $keep == 1 ]]; then
    found=$cache/$module/${pkg#./}
    found=${found%/}/$name
    mkdir -p "${pkg#./}testdata/fuzz/$name"
    [[ -d $found ]] && cp -n "$found"/* "${pkg#./}testdata/fuzz/$name/" 2>/dev/null || true
  fi
done
