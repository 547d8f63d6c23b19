#!/usr/bin/env bash
# Measures finetune's on-disk feature cache on a synthetic set: the time to
# build it and the peak memory of the run, then the same with the cache
# warm (a second run, another --out, the same --feature-cache). Both runs
# train fc6+ for one epoch. Usage: scripts/measure-feature-cache.sh [IMAGES]
# (default 5000). Needs bin/finetune (make build) and /usr/bin/time.
set -euo pipefail
n=${1:-5000}
bin=${FINETUNE:-bin/finetune}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
classes=4
"$bin" synth --out "$work/data" --classes $classes --per-class $(( (n + classes - 1) / classes )) --seed 3
run() { # label out
	/usr/bin/time -f "%e %M" -o "$work/time" "$bin" train --data "$work/data" --out "$2" --feature-cache "$work/cache" \
		--train-from fc6 --cache-features --epochs 1 --batch 32 --lr 0.0001 --workers 2 >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
	read -r secs rss <"$work/time"
	cached=$(sed -n 's/.*features cached.* seconds=\([0-9.]*\).*/\1/p' "$work/log")
	printf '%-10s images=%d  run=%6.1fs  cache_build=%6ss  peak_rss=%5d MB  cache_file=%s MB\n' "$1" "$n" "$secs" "${cached:-0 (reused)}" $((rss / 1024)) \
		"$(du -m "$work"/cache/*.bin | cut -f1)"
}
run cold "$work/out1"
run warm "$work/out2"
