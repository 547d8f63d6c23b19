#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Leafwatch builds and tests with, only
# those that are missing. Without root it prints the apt command and stops.
set -euo pipefail

PKGS=(
  pkg-config gcc g++            # cgo
  libopencv-dev                 # gocv (OpenCV 4.6 on bookworm)
  libopenblas-dev               # fast SGEMM for the CPU engine
  mosquitto mosquitto-clients   # MQTT broker the tests start
  ffmpeg                        # test videos
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
  openssl                       # test certificates
  systemd                       # systemd-analyze verify of the unit
  ca-certificates
)
# --cuda: CUDA 11.8 headers and stub libraries (Debian non-free
# nvidia-cuda-dev) to build with -tags cuda; no GPU needed to compile.
CUDA=0
[[ "${1:-}" == "--cuda" ]] && CUDA=1
if [[ $CUDA -eq 1 ]]; then
  PKGS=(nvidia-cuda-dev)
fi
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

if ! command -v go >/dev/null; then
  echo "deps: Go is not installed; install Go 1.26 or newer from your distribution or go.dev" >&2
  exit 1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all system packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
NONFREE=/etc/apt/sources.list.d/leafwatch-nonfree.sources
add_nonfree() {
  # nvidia-cuda-dev lives in Debian's non-free component.
  . /etc/os-release
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
    [[ $CUDA -eq 1 ]] && echo "deps: enable Debian's non-free component (or Ubuntu's multiverse) first" >&2
    echo "deps: run as root:  apt-get update && $cmd" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
[[ $CUDA -eq 1 ]] && add_nonfree
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
