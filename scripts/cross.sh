#!/usr/bin/env bash
# Runs a command (go build, go test -c, go vet …) with the environment for
# cgo cross builds against a Debian sysroot (scripts/sysroot.sh):
#
#   scripts/cross.sh bookworm arm64 go build -o bin/arm64/ ./daemon/cmd/leafwatchd
#
# The C and C++ compilers are this machine's (crossbuild-essential-arm64
# for arm64) but every header and library comes from the sysroot,
# libstdc++ included: a binary built against bullseye needs at most
# glibc 2.31 and GLIBCXX_3.4.28, as on JetPack 5.
set -euo pipefail
suite=${1:?usage: cross.sh SUITE ARCH COMMAND...}
arch=${2:?usage: cross.sh SUITE ARCH COMMAND...}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
S=$("$here/sysroot.sh" "$suite" "$arch")
case $suite in bullseye) cxx=10 ;; bookworm) cxx=12 ;; trixie) cxx=14 ;; esac
case $arch in arm64) triplet=aarch64-linux-gnu ;; amd64) triplet=x86_64-linux-gnu ;; esac
for tool in "$triplet-gcc" "$triplet-g++"; do
  command -v "$tool" >/dev/null || { echo "cross: $tool is missing (make deps-cross installs it)" >&2; exit 1; }
done
export LEAFWATCH_SYSROOT=$S
export GOOS=linux GOARCH=$arch CGO_ENABLED=1
# --sysroot alone is not enough: Debian's cross compiler searches its own
# target headers (/usr/<triplet>/include, this machine's glibc) before the
# sysroot's, and its own crt1.o: -nostdinc and -B put the release's first.
builtin=$("$triplet-gcc" -print-file-name=include)
cflags="--sysroot=$S -nostdinc -isystem $builtin -isystem $S/usr/include/$triplet -isystem $S/usr/include -B$S/usr/lib/$triplet/"
export CC="$triplet-gcc $cflags"
# -L of the release's /lib first: libgcc_s.so's linker script names
# libgcc_s.so.1 bare, and the cross compiler's own one needs a newer glibc.
rpath="-L$S/lib/$triplet -L$S/usr/lib/$triplet -Wl,-rpath-link,$S/usr/lib/$triplet:$S/lib/$triplet:$S/usr/lib/$triplet/openblas-pthread"
gcc_major=$("$triplet-gcc" -dumpversion | cut -d. -f1)
if [ "$cxx" -le "$gcc_major" ]; then
  # The release's own C++ headers and libstdc++ (older than or as old as
  # the compiler): the binary then asks for no GLIBCXX newer than the
  # release has. User -L paths come before the compiler's own, so the
  # sysroot's libstdc++ satisfies g++'s implicit -lstdc++.
  export CXX="$triplet-g++ -nostdinc++ -isystem $S/usr/include/c++/$cxx -isystem $S/usr/include/$triplet/c++/$cxx -isystem $S/usr/include/c++/$cxx/backward $cflags"
  export CGO_LDFLAGS="-L$S/usr/lib/gcc/$triplet/$cxx $rpath ${CGO_LDFLAGS_EXTRA:-}"
else
  # A release newer than the compiler (trixie's GCC 14 headers do not
  # parse with GCC 12): the compiler's own libstdc++ headers, linked
  # against the release's newer libstdc++.so.6, which its OpenCV needs
  # and which runs code built for older headers (backward compatible).
  gxx=/usr/$triplet/include/c++/$gcc_major
  export CXX="$triplet-g++ -nostdinc++ -isystem $gxx -isystem $gxx/$triplet -isystem $gxx/backward $cflags"
  export CGO_LDFLAGS="-L$S/usr/lib/gcc/$triplet/$cxx $rpath ${CGO_LDFLAGS_EXTRA:-}"
fi
# Go's build cache does not tell one sysroot's cgo objects from another's
# (the standard library's net package compiled against bookworm's
# resolv.h was reused for bullseye): one cache per sysroot.
export GOCACHE=${LEAFWATCH_CROSS_GOCACHE:-$(go env GOCACHE)-cross}/$suite-$arch
export PKG_CONFIG_SYSROOT_DIR=$S PKG_CONFIG_LIBDIR=$S/usr/lib/leafwatch-pkgconfig PKG_CONFIG_PATH=
exec "$@"
