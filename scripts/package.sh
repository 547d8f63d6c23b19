#!/usr/bin/env bash
# Builds a Debian package with nfpm (pinned below):
#
#   scripts/package.sh amd64     # Debian 12 amd64, CPU engine
#   scripts/package.sh arm64     # Debian 12 arm64 (Raspberry Pi OS 12 …), CPU engine
#   scripts/package.sh jetpack5  # NVIDIA JetPack 5 (Ubuntu 20.04, arm64), CUDA and CPU
#
# Output in $OUT (default dist/). The arm64 packages are cross-built against
# a Debian sysroot (scripts/sysroot.sh): bookworm for arm64, bullseye for
# JetPack 5 (glibc ≤ 2.31 and OpenCV's 4.5 sonames, as JetPack 5 has).
set -euo pipefail
target=${1:?usage: package.sh amd64|arm64|jetpack5}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-dist}
version=${VERSION:-$(cat VERSION)}
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

progs=(./daemon/cmd/leafwatchd ./tools/finetune)
tags=
name=leafwatch
case $target in
  amd64) arch=amd64; build=(env); run=(); triplet=x86_64-linux-gnu
    summary="leaf-disease camera daemon, CPU engine" ;;
  arm64) arch=arm64; build=(scripts/cross.sh bookworm arm64); triplet=aarch64-linux-gnu
    run=("${build[@]}" "$root/scripts/qemu-run.sh")
    summary="leaf-disease camera daemon, CPU engine" ;;
  jetpack5) arch=arm64; build=(scripts/cross.sh bullseye arm64); triplet=aarch64-linux-gnu
    run=("${build[@]}" "$root/scripts/qemu-run.sh")
    name=leafwatch-jetpack5; tags=cuda; progs+=(./tools/gpucheck)
    summary="leaf-disease camera daemon for NVIDIA JetPack 5, CUDA and CPU" ;;
  *) echo "package: unknown target $target (amd64, arm64, jetpack5)" >&2; exit 2 ;;
esac

echo "package: building $name $version for $target" >&2
# PIE: the loader places the binaries at random addresses (ASLR), as
# Debian builds its own.
"${build[@]}" go build -trimpath -buildmode=pie -tags "$tags" \
  -ldflags "-s -w -X github.com/leafwatch/leafwatch/internal/buildinfo.Version=$version -extldflags=-Wl,-z,relro,-z,now" -o "$stage/bin/" "${progs[@]}"

readelf=readelf objdump=objdump
[ "$arch" = arm64 ] && readelf=aarch64-linux-gnu-readelf objdump=aarch64-linux-gnu-objdump
max_version() { # PREFIX FILES...: the newest symbol version a binary asks for
  local p=$1; shift
  "$objdump" -T "$@" | grep -oE "\\b${p}_[0-9.]+" | sed "s/${p}_//" | sort -uV | tail -1
}
glibc=$(max_version GLIBC "$stage"/bin/*)
needed=$("$readelf" -d "$stage"/bin/* | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}' | sort -u)

# Depends: from what the binaries link. Debian 12: each soname's package
# as this (bookworm) machine names it — the same names on arm64. JetPack:
# NVIDIA's own OpenCV and driver packages, checked by postinst instead.
# init-system-helpers: deb-systemd-helper and deb-systemd-invoke as the
# maintainer scripts use them (Debian 10 and Ubuntu 20.04 have 1.56+).
depends=("libc6 (>= $glibc)" "adduser" "init-system-helpers (>= 1.56~)" "gstreamer1.0-tools" "gstreamer1.0-plugins-base" "gstreamer1.0-plugins-good")
recommends=("gstreamer1.0-libav")
for so in $needed; do
  case $so in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libresolv.so.2 | libdl.so.2 | librt.so.1) ;;
    libopenblas.so.0) depends+=("libopenblas0 | libopenblas0-pthread | libopenblas-base") ;;
    libstdc++.so.6) depends+=("libstdc++6") ;;
    libgcc_s.so.1) depends+=("libgcc-s1 | libgcc1") ;;
    libcuda.so.1) ;; # the NVIDIA driver (JetPack's nvidia-l4t-cuda)
    libopencv_*)
      if [ "$target" = jetpack5 ]; then continue; fi
      pkg=$(dpkg -S "/usr/lib/x86_64-linux-gnu/$so" 2>/dev/null | head -1 | cut -d: -f1)
      [ -n "$pkg" ] || { echo "package: no package provides $so on this machine (install libopencv-dev)" >&2; exit 1; }
      depends+=("$pkg") ;;
    *) echo "package: $so: no rule for its package (add one to scripts/package.sh)" >&2; exit 1 ;;
  esac
done
[ "$target" = jetpack5 ] && recommends+=("nvidia-opencv" "nvidia-cuda")

# Manual pages from each binary's own --help (help2man), so they cannot
# drift from the programs; arm64 binaries answer under qemu.
mkdir -p "$stage/man"
declare -A what=([leafwatchd]="watch greenhouse plants for leaf disease and publish alerts over MQTT"
  [finetune]="make and retrain the Leafwatch leaf-disease model"
  [gpucheck]="check a Leafwatch CUDA build on this machine's GPU")
for b in "$stage"/bin/*; do
  n=$(basename "$b")
  wrapper=$stage/run-$n
  printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${run[*]:-}" "$b" >"$wrapper"
  chmod +x "$wrapper"
  help2man --no-info --section=1 --name="${what[$n]}" --version-string="$version" --source=Leafwatch \
    --output="$stage/man/$n.1" "$wrapper" 2>"$stage/help2man.log" || { cat "$stage/help2man.log" >&2; exit 1; }
  # help2man names the program after its path: the wrapper's name.
  sed -i "s/run-$n/$n/g; s/RUN-$(echo "$n" | tr a-z A-Z)/$(echo "$n" | tr a-z A-Z)/g" "$stage/man/$n.1"
  gzip -9n "$stage/man/$n.1"
done
# Debian changelog: packaging/changelog, whose newest entry must be this
# version; a local build of another version (the upgrade test's VERSION.1)
# gets an entry saying so.
top=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' packaging/changelog)
{
  if [ "$top" != "$version" ]; then
    printf '%s (%s) unstable; urgency=medium\n\n  * Local build of %s from the %s sources.\n\n -- %s  %s\n\n' \
      "$name" "$version" "$version" "$top" "Leafwatch developers <leafwatch@example.org>" "$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")"
  fi
  sed "s/^leafwatch (/$name (/" packaging/changelog
} | gzip -9n >"$stage/changelog.gz"

# Files as installed: the unit runs /usr/bin/leafwatchd.
mkdir -p "$stage/units"
sed 's|/usr/local/bin/leafwatchd|/usr/bin/leafwatchd|g' systemd/leafwatchd.service >"$stage/units/leafwatchd.service"
contents="
  - src: $stage/units/leafwatchd.service
    dst: /lib/systemd/system/leafwatchd.service
  - src: systemd/leafwatchd.path
    dst: /lib/systemd/system/leafwatchd.path
  - src: systemd/leafwatchd.yaml
    dst: /etc/leafwatch/leafwatchd.yaml
    type: config|noreplace
    file_info: {mode: 0640}
  - src: README.md
    dst: /usr/share/doc/$name/README.md
    file_info: {mode: 0644}
  - src: docs/architecture.md
    dst: /usr/share/doc/$name/docs/architecture.md
    file_info: {mode: 0644}
  - src: docs/status-page.png
    dst: /usr/share/doc/$name/docs/status-page.png
    file_info: {mode: 0644}
  - src: docs/label-page.png
    dst: /usr/share/doc/$name/docs/label-page.png
    file_info: {mode: 0644}"
# The README links the documents beside the code: install them at the
# same relative paths so the links work in /usr/share/doc too.
for doc in daemon daemon/fleet mqtt vision tools/finetune model model/gpu packaging; do
  contents+="
  - src: $doc/README.md
    dst: /usr/share/doc/$name/$doc/README.md
    file_info: {mode: 0644}"
done
contents+="
  - src: packaging/copyright
    dst: /usr/share/doc/$name/copyright
    file_info: {mode: 0644}
  - src: $stage/changelog.gz
    dst: /usr/share/doc/$name/changelog.gz
    file_info: {mode: 0644}
  - src: packaging/lintian-overrides
    dst: /usr/share/lintian/overrides/$name
    file_info: {mode: 0644}
  - src: THIRD_PARTY_NOTICES.md
    dst: /usr/share/doc/$name/THIRD_PARTY_NOTICES.md"
for b in "$stage"/bin/*; do
  n=$(basename "$b")
  contents+="
  - src: $b
    dst: /usr/bin/$n
    file_info: {mode: 0755}
  - src: $stage/man/$n.1.gz
    dst: /usr/share/man/man1/$n.1.gz
    file_info: {mode: 0644}"
done
relations=
if [ "$target" = jetpack5 ]; then
  contents+="
  - src: systemd/jetson.conf
    dst: /lib/systemd/system/leafwatchd.service.d/jetson.conf
  - src: systemd/cuda.conf
    dst: /lib/systemd/system/leafwatchd.service.d/cuda.conf"
  relations="conflicts: [leafwatch]
replaces: [leafwatch]
provides: [leafwatch]"
fi
list() { local first=1; printf '['; for d in "$@"; do [ $first = 1 ] || printf ', '; printf '"%s"' "$d"; first=0; done; printf ']'; }
cat >"$stage/nfpm.yaml" <<YAML
name: $name
arch: $arch
platform: linux
version: $version
section: misc
priority: optional
maintainer: Leafwatch developers <leafwatch@example.org>
vendor: Leafwatch
homepage: https://github.com/leafwatch/leafwatch
license: Apache-2.0
description: |-
  $summary
  Leafwatch watches greenhouse plants for leaf disease.
  leafwatchd captures camera frames, classifies leaves with a 38-class
  AlexNet (PlantVillage classes) and publishes labels and alerts over MQTT;
  finetune makes and retrains the model.
depends: $(list "${depends[@]}")
recommends: $(list "${recommends[@]}")
$relations
contents:$contents
scripts:
  postinstall: packaging/postinst
  preremove: packaging/prerm
  postremove: packaging/postrm
YAML
mkdir -p "$out"
$NFPM package --config "$stage/nfpm.yaml" --packager deb --target "$out/" >&2
deb=$(ls -t "$out/${name}_${version}"*"_$arch.deb" | head -1)
echo "package: $deb ($(du -h "$deb" | cut -f1)); needs glibc $glibc; links: $(echo $needed | tr '\n' ' ')" >&2
echo "$deb"
