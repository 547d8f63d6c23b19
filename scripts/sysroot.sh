#!/usr/bin/env bash
# Builds a sysroot: the Debian packages Leafwatch builds and runs against
# (glibc, libstdc++, OpenBLAS, the OpenCV modules gocv links, GStreamer),
# unpacked for one release and architecture into a folder, without
# installing anything on this machine. Cross builds compile and link
# against it; qemu runs the arm64 test binaries with it as their root.
#
#   scripts/sysroot.sh SUITE ARCH     # bullseye | bookworm | trixie; arm64 | amd64
#
# Prints the sysroot's path. Kept in $LEAFWATCH_SYSROOTS (default
# ~/.cache/leafwatch/sysroot) and reused while its package list is the
# same, so CI machines that keep $HOME download it once.
set -euo pipefail
suite=${1:?usage: sysroot.sh SUITE ARCH}
arch=${2:?usage: sysroot.sh SUITE ARCH}
base=${LEAFWATCH_SYSROOTS:-${XDG_CACHE_HOME:-$HOME/.cache}/leafwatch/sysroot}
dir=$base/$suite-$arch
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

case $suite in
  bullseye) cxx=10 ;; # glibc 2.31, OpenCV 4.5: matches JetPack 5 (Ubuntu 20.04)
  bookworm) cxx=12 ;; # glibc 2.36, OpenCV 4.6: this machine's release
  trixie) cxx=14 ;;   # glibc 2.41, OpenCV 4.10: newer than JetPack 6's 4.8
  *) echo "sysroot: unknown suite $suite (bullseye, bookworm or trixie)" >&2; exit 2 ;;
esac
case $arch in
  arm64) triplet=aarch64-linux-gnu ;;
  amd64) triplet=x86_64-linux-gnu ;;
  *) echo "sysroot: unknown architecture $arch (arm64 or amd64)" >&2; exit 2 ;;
esac

# The OpenCV modules gocv's core package compiles against, not
# libopencv-dev (which adds contrib, viz and VTK: hundreds of MB more).
modules=(core imgproc imgcodecs videoio highgui objdetect calib3d dnn features2d photo video flann)
pkgs=(libc6-dev "libstdc++-$cxx-dev" libopenblas-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav)
# opencv.hpp also includes ml and stitching: their headers are needed,
# their libraries not.
for m in "${modules[@]}" ml stitching; do pkgs+=("libopencv-$m-dev"); done

# Rebuilt when the package list or this script changes.
stamp=$( (printf '%s\n' "$suite" "$arch" "$mirror" "${pkgs[@]}"; cat "$0") | sha256sum | cut -c1-16)
if [ "$(cat "$dir/.leafwatch-sysroot" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi

for tool in mmdebstrap; do
  command -v $tool >/dev/null || { echo "sysroot: $tool is missing (make deps-cross installs it)" >&2; exit 1; }
done
echo "sysroot: building $suite $arch in $dir (about 1 GB)" >&2
mkdir -p "$base"
tmp=$(mktemp -d "$base/.$suite-$arch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# extract: unpack the packages and their dependencies, run no maintainer
# script (nothing of the target architecture can run here).
mmdebstrap --quiet --variant=extract --architectures="$arch" --include="$(IFS=,; echo "${pkgs[*]}")" \
  "$suite" "$tmp" "$mirror" >&2

# Absolute symlinks (libz.so -> /lib/...) would point into this machine's
# root; make them relative so they resolve inside the sysroot.
find "$tmp" -type l -lname '/*' -print0 | while IFS= read -r -d '' l; do
  target=$(readlink "$l")
  rel=$(realpath -m --relative-to="$(dirname "$l")" "$tmp$target")
  ln -sfn "$rel" "$l"
done

# What update-alternatives would have done for OpenBLAS (no maintainer
# scripts ran): libopenblas, libblas and liblapack, and cblas.h.
for f in "$tmp/usr/lib/$triplet/openblas-pthread/"lib*.so*; do
  [ -e "$f" ] && ln -sfn "openblas-pthread/$(basename "$f")" "$tmp/usr/lib/$triplet/$(basename "$f")"
done
for f in "$tmp/usr/include/$triplet/openblas-pthread/"*.h; do
  [ -e "$f" ] && ln -sfn "openblas-pthread/$(basename "$f")" "$tmp/usr/include/$triplet/$(basename "$f")"
done

# CUDA for -tags cuda cross builds: Debian's cuda.h (architecture-neutral)
# and a link stub for libcuda.so.1, generated from cuda.h's declarations —
# every function returns CUDA_ERROR_STUB_LIBRARY, as NVIDIA's own stubs do.
# At run time the board's real libcuda.so.1 is used.
if [ -f /usr/include/cuda.h ] && [ "$arch" = arm64 ]; then
  cp /usr/include/cuda.h "$tmp/usr/include/"
  mkdir -p "$tmp/usr/lib/$triplet/stubs"
  gcc -E -P /usr/include/cuda.h 2>/dev/null |
    grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u |
    awk '{print "int " $1 "(void) { return 34; }"}' >"$tmp/cudastub.c"
  "$triplet-gcc" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tmp/usr/lib/$triplet/stubs/libcuda.so" "$tmp/cudastub.c"
  rm "$tmp/cudastub.c"
  ln -sfn stubs/libcuda.so "$tmp/usr/lib/$triplet/libcuda.so"
  ln -sfn libcuda.so "$tmp/usr/lib/$triplet/stubs/libcuda.so.1" # for qemu runs of cuda builds
fi

# pkg-config for gocv: exactly the modules unpacked above (Debian's own
# opencv4.pc belongs to libopencv-dev and lists every contrib module).
ver=$(awk '/define CV_VERSION_(MAJOR|MINOR|REVISION) /{v=v (v?".":"") $3} END{print v}' \
  "$tmp/usr/include/opencv4/opencv2/core/version.hpp")
mkdir -p "$tmp/usr/lib/leafwatch-pkgconfig"
{
  echo "prefix=/usr"
  echo "libdir=\${prefix}/lib/$triplet"
  echo "includedir=\${prefix}/include/opencv4"
  echo "Name: OpenCV"
  echo "Description: the OpenCV modules gocv links (Leafwatch sysroot)"
  echo "Version: $ver"
  echo "Libs: -L\${libdir} $(for m in "${modules[@]}"; do printf -- '-lopencv_%s ' "$m"; done)"
  echo "Cflags: -I\${includedir}"
} >"$tmp/usr/lib/leafwatch-pkgconfig/opencv4.pc"

# qemu maps absolute paths into the sysroot when they exist there: tests
# must see this machine's /tmp, not the sysroot's.
rm -rf "$tmp/tmp" "$tmp/dev" "$tmp/proc"
echo "$stamp" >"$tmp/.leafwatch-sysroot"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
