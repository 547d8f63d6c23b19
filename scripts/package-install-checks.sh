#!/bin/sh
# Runs inside a throw-away Debian root where a Leafwatch .deb was just
# installed (scripts/test-package-install.sh): checks what the package set
# up, upgrades it over an edited config, and purges it.
set -eu
pkg=$1 upgrade=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
getent passwd leafwatch >/dev/null || fail "no leafwatch user"
[ "$(getent passwd leafwatch | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the leafwatch user has a login shell"
id -nG leafwatch | grep -qw video || fail "leafwatch is not in the video group"
[ "$(stat -c %U:%G:%a /var/lib/leafwatch)" = leafwatch:leafwatch:750 ] || fail "state folder: $(stat -c %U:%G:%a /var/lib/leafwatch)"
[ "$(stat -c %U:%G:%a /etc/leafwatch/leafwatchd.yaml)" = root:leafwatch:640 ] || fail "config mode: $(stat -c %U:%G:%a /etc/leafwatch/leafwatchd.yaml)"
[ -L /etc/systemd/system/multi-user.target.wants/leafwatchd.service ] || fail "the service is not enabled"
[ -L /etc/systemd/system/multi-user.target.wants/leafwatchd.path ] || fail "the path unit is not enabled"
grep -qx /etc/leafwatch/leafwatchd.yaml "/var/lib/dpkg/info/$pkg.conffiles" || fail "the config is not a conffile"
if ldd /usr/bin/leafwatchd | grep "not found"; then fail "missing libraries"; fi
leafwatchd print-default-config | grep -q '^device:' || fail "leafwatchd does not run"
leafwatchd check-config /etc/leafwatch/leafwatchd.yaml >/dev/null || fail "the installed config does not check"
finetune help >/dev/null || fail "finetune does not run"
echo "installed: user, group video, state folder, conffile, units enabled, binaries run"

sed -i 's/^device: greenhouse1$/device: edited-by-user/' /etc/leafwatch/leafwatchd.yaml
dpkg -i "$upgrade" >/dev/null
grep -q '^device: edited-by-user$' /etc/leafwatch/leafwatchd.yaml || fail "the upgrade overwrote the edited config"
echo "upgraded to $(dpkg-query -W -f '${Version}' "$pkg"); the edited config was kept"

# Samples someone may have labelled survive a purge (with a note); the
# rest of the state goes.
mkdir -p /var/lib/leafwatch/samples /var/lib/leafwatch/outbox
echo db >/var/lib/leafwatch/samples/samples.db
dpkg --purge "$pkg" >/dev/null 2>"/tmp/purge.err"
[ -f /var/lib/leafwatch/samples/samples.db ] || fail "purge deleted the labelled samples"
grep -q "kept /var/lib/leafwatch/samples" /tmp/purge.err || fail "purge did not say it kept the samples"
[ ! -e /var/lib/leafwatch/outbox ] || fail "purge left the outbox"
rm -rf /var/lib/leafwatch
dpkg -i "$upgrade" >/dev/null && dpkg --purge "$pkg" >/dev/null
[ ! -e /var/lib/leafwatch ] || fail "purge left /var/lib/leafwatch"
[ ! -e /etc/leafwatch/leafwatchd.yaml ] || fail "purge left the config"
[ ! -e /usr/bin/leafwatchd ] || fail "purge left the binary"
echo "purged: binaries, config and state removed"
echo PASS
