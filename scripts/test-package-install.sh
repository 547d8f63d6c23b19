#!/usr/bin/env bash
# Installs an amd64 Leafwatch .deb into a throw-away Debian 12 root made by
# mmdebstrap (apt resolves its dependencies from the Debian mirror, the
# maintainer scripts run as on a real install), then upgrades it with a
# second build over an edited config and purges it
# (scripts/package-install-checks.sh).
#
#   scripts/test-package-install.sh PACKAGE.deb UPGRADE.deb
set -euo pipefail
deb=$(realpath "${1:?usage: test-package-install.sh DEB UPGRADE_DEB}")
upgrade=$(realpath "${2:?}")
pkg=$(dpkg-deb -f "$deb" Package)
here=$(cd "$(dirname "$0")" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# apt installs the package inside the root (mmdebstrap's --include of a
# local .deb cannot reach a path outside it).
mmdebstrap --quiet --variant=apt \
  --customize-hook="copy-in $deb $upgrade $here/package-install-checks.sh /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/$(basename "$deb")" \
  --customize-hook="chroot \"\$1\" sh /tmp/package-install-checks.sh $pkg /tmp/$(basename "$upgrade")" \
  bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
