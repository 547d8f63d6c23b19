#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Leafwatch builds and tests with, only
# those that are missing. Without root it prints the apt command and stops.
#
#   scripts/deps.sh           build and test (OpenCV, OpenBLAS, mosquitto, …)
#   scripts/deps.sh --cuda    CUDA headers for -tags cuda builds
#   scripts/deps.sh --cross   arm64 cross builds, sysroots and qemu
#   scripts/deps.sh --package Debian's package checkers (lintian), help2man
#                             for the manual pages, systemd-nspawn
set -euo pipefail

MODE=${1:-}
PKGS=(
  pkg-config gcc g++            # cgo
  libopencv-dev                 # gocv (OpenCV 4.6 on bookworm)
  libopenblas-dev               # fast SGEMM for the CPU engine
  mosquitto mosquitto-clients   # MQTT broker the tests start
  ffmpeg                        # test videos
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
  openssl                       # test certificates
  systemd                       # systemd-analyze verify of the unit
  chromium                      # the labelling page's browser test (chromedp)
  minisign                      # bundles verify with the reference tool (test)
  ca-certificates
)
. /etc/os-release
jetson=0
[ -e /etc/nv_tegra_release ] && jetson=1

# Go: distributions' packages are too old on Debian 12 and every JetPack.
# Any Go from 1.21 on fetches the release go.mod names (GOTOOLCHAIN, set
# by the Makefile and scripts/goenv.sh) from the module proxy by itself.
need_go="1.21"
if ! command -v go >/dev/null; then
  echo "deps: Go is not installed. Install Go $need_go or newer from https://go.dev/dl/" >&2
  echo "deps:   (go$need_go.x.linux-$(dpkg --print-architecture 2>/dev/null || echo amd64).tar.gz into /usr/local, PATH=\$PATH:/usr/local/go/bin)" >&2
  exit 1
fi
have_go=$(GOTOOLCHAIN=local go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -1)" != "$need_go" ]; then
  echo "deps: Go $have_go is too old; Leafwatch needs $need_go or newer (https://go.dev/dl/)" >&2
  exit 1
fi

case $MODE in
  --cuda)
    # JetPack and NVIDIA's CUDA toolkit bring cuda.h and libcuda: nothing
    # to install then (Debian's nvidia-cuda-dev would clash with them).
    for h in /usr/local/cuda/include/cuda.h /usr/local/cuda/targets/*/include/cuda.h /usr/include/cuda.h; do
      if [ -e "$h" ]; then
        echo "deps: CUDA headers found at $h"
        exit 0
      fi
    done
    if [ $jetson -eq 1 ]; then
      echo "deps: this is a Jetson without JetPack's CUDA: sudo apt install nvidia-jetpack (or nvidia-cuda)" >&2
      exit 1
    fi
    # CUDA 11.8 headers and stubs from Debian non-free (Ubuntu: multiverse).
    PKGS=(nvidia-cuda-dev) ;;
  --cross)
    PKGS=(mmdebstrap qemu-user-static crossbuild-essential-arm64 binutils-aarch64-linux-gnu) ;;
  --package)
    PKGS=(lintian help2man systemd-container mmdebstrap) ;;
  "") ;;
  *) echo "deps: unknown option $MODE (--cuda, --cross, --package)" >&2; exit 2 ;;
esac
if [[ -n "${LEAFWATCH_EXTRA_PKGS:-}" ]]; then
  read -r -a extra <<<"$LEAFWATCH_EXTRA_PKGS"
  PKGS+=("${extra[@]}")
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all system packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
NONFREE=/etc/apt/sources.list.d/leafwatch-nonfree.sources
add_nonfree() {
  # nvidia-cuda-dev lives in Debian's non-free component.
  if [[ "${ID:-}" == "debian" && ! -f $NONFREE ]] && ! grep -rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deps: adding Debian's contrib/non-free components for nvidia-cuda-dev ($NONFREE)"
    $SUDO tee $NONFREE >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  # Ubuntu ships nvidia-cuda-dev in multiverse.
  if [[ "${ID:-}" == "ubuntu" ]] && command -v add-apt-repository >/dev/null; then
    $SUDO add-apt-repository -y multiverse >/dev/null
  fi
}
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "deps: missing packages: ${missing[*]}" >&2
    [[ $MODE == --cuda ]] && echo "deps: enable Debian's non-free component (or Ubuntu's multiverse) first" >&2
    echo "deps: run as root:  apt-get update && $cmd" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
[[ $MODE == --cuda ]] && add_nonfree
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
