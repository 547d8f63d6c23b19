#!/usr/bin/env bash
# Inspects a Leafwatch .deb without installing it: control fields,
# conffiles, file list, maintainer scripts, manual pages, lintian (no error
# or warning without an override that says why), and what its binaries
# need from the target (newest glibc and libstdc++ symbol versions,
# sonames).
#
#   scripts/check-package.sh DEB MAX_GLIBC MAX_GLIBCXX [SONAME_PATTERN...]
#
# Each SONAME_PATTERN (an extended regex) must match a library the binaries
# link. Exits 1 listing every problem.
set -euo pipefail
deb=${1:?usage: check-package.sh DEB MAX_GLIBC MAX_GLIBCXX [SONAME...]}
max_glibc=${2:?} max_glibcxx=${3:?}
shift 3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
problems=()
bad() { problems+=("$*"); }

field() { dpkg-deb -f "$deb" "$1"; }
pkg=$(field Package) arch=$(field Architecture)
for f in Package Version Architecture Maintainer Description Depends; do
  [ -n "$(field $f)" ] || bad "control field $f is empty"
done
for d in adduser 'init-system-helpers (>= ' gstreamer1.0-tools; do
  field Depends | grep -qF "$d" || bad "Depends lacks $d"
done

dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/leafwatch/leafwatchd.yaml "$tmp/control/conffiles" 2>/dev/null || bad "/etc/leafwatch/leafwatchd.yaml is not a conffile"
for s in postinst prerm postrm; do
  [ -x "$tmp/control/$s" ] || { bad "maintainer script $s missing or not executable"; continue; }
  sh -n "$tmp/control/$s" || bad "$s does not parse"
done
grep -q 'adduser .*--system' "$tmp/control/postinst" || bad "postinst creates no system user"
grep -q 'leafwatch video' "$tmp/control/postinst" || bad "postinst does not add the user to video"
grep -q 'deb-systemd-helper enable' "$tmp/control/postinst" || bad "postinst does not enable the service"
if grep -qE 'deb-systemd-invoke (re)?start leafwatchd.service' "$tmp/control/postinst"; then bad "postinst starts the service before a model exists"; fi

dpkg-deb -x "$deb" "$tmp/root"
for f in usr/bin/leafwatchd usr/bin/finetune lib/systemd/system/leafwatchd.service lib/systemd/system/leafwatchd.path etc/leafwatch/leafwatchd.yaml "usr/share/doc/$pkg/copyright"; do
  [ -e "$tmp/root/$f" ] || bad "/$f is not in the package"
done
grep -q '^ExecStart=/usr/bin/leafwatchd ' "$tmp/root/lib/systemd/system/leafwatchd.service" || bad "the unit does not run /usr/bin/leafwatchd"
grep -q '^ConditionPathExists=/var/lib/leafwatch/model.safetensors' "$tmp/root/lib/systemd/system/leafwatchd.service" || bad "the unit starts without a model"

objdump=objdump readelf=readelf
[ "$arch" = arm64 ] && objdump=aarch64-linux-gnu-objdump readelf=aarch64-linux-gnu-readelf
newest() { "$objdump" -T "$tmp"/root/usr/bin/* | grep -oE "\\b$1_[0-9.]+" | sed "s/$1_//" | sort -uV | tail -1; }
glibc=$(newest GLIBC) glibcxx=$(newest GLIBCXX)
[ "$(printf '%s\n%s\n' "$glibc" "$max_glibc" | sort -V | tail -1)" = "$max_glibc" ] || bad "binaries need glibc $glibc, the target has $max_glibc"
[ "$(printf '%s\n%s\n' "$glibcxx" "$max_glibcxx" | sort -V | tail -1)" = "$max_glibcxx" ] || bad "binaries need GLIBCXX_$glibcxx, the target has $max_glibcxx"
needed=$("$readelf" -d "$tmp"/root/usr/bin/* | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}' | sort -u | tr '\n' ' ')
for pat in "$@"; do
  echo " $needed" | grep -qE " $pat( |$)" || bad "no linked library matches $pat (links: $needed)"
done
# lintian, Debian's own checker: no error or warning without an override,
# and every override says why (a comment line right above it).
if command -v lintian >/dev/null; then
  lint=$(lintian --fail-on none "$deb" 2>&1 | grep -v 'running with root privileges' || true)
  if grep -qE '^[EW]: ' <<<"$lint"; then
    bad "lintian: $(grep -E '^[EW]: ' <<<"$lint" | tr '\n' ';')"
  fi
  ov=$tmp/root/usr/share/lintian/overrides/$pkg
  if [ -f "$ov" ]; then
    awk '/^#/ {c=1; next} /^[[:space:]]*$/ {c=0; next} { if (!c) { print "override without a reason: " $0; bad=1 } c=0 } END {exit bad}' "$ov" >"$tmp/ov.txt" || bad "$(cat "$tmp/ov.txt")"
  fi
  echo "lintian $pkg: $(grep -cE '^[EW]: ' <<<"$lint") errors and warnings, $(grep -cE '^[^#[:space:]]' "$ov" 2>/dev/null || echo 0) overridden with a reason"
else
  bad "lintian is not installed (make deps-package)"
fi
for m in $(ls "$tmp/root/usr/bin"); do
  [ -e "$tmp/root/usr/share/man/man1/$m.1.gz" ] || bad "no manual page for $m"
done
echo "$pkg $(field Version) $arch: $(du -h "$deb" | cut -f1); newest glibc $glibc, GLIBCXX $glibcxx; links $needed"
if [ ${#problems[@]} -gt 0 ]; then
  printf '  problem: %s\n' "${problems[@]}" >&2
  exit 1
fi
