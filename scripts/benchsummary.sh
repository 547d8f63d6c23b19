#!/usr/bin/env bash
# Turns `go test -bench` lines into a short table of the custom metrics.
awk '/^Benchmark/ {
  name=$1; line=name;
  for (i=3;i<=NF;i++) if ($i ~ /ms\/image|images\/s|frames\/s|MB|ratio|agree|maxdiff|share|recall|precision|ms\/frame|ms@|floor|GB\/s|GFLOP/) line=line sprintf("  %s=%s", $i, $(i-1));
  print line
}' | sed 's/-[0-9]*  / /' | { echo "== summary =="; cat; }
