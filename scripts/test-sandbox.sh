#!/usr/bin/env bash
# Runs leafwatchd as a real systemd service, under the shipped unit's
# sandbox, in a throw-away Debian 12 root booted with systemd-nspawn: the
# amd64 package is installed there (apt resolves its dependencies), a small
# model is trained there with the package's own finetune, and two cameras
# — a GStreamer test source (videotestsrc and videoconvert use orc's
# run-time code generation, the part W^X could break) and a folder of
# JPEGs (OpenCV) — must be classified with the unit as shipped, then again
# with the Jetson and CUDA drop-ins added. Checks the system-call filter,
# ProcSubset, PrivateMounts, RemoveIPC and MemoryDenyWriteExecute are in
# force and that nothing was refused on the way (journal).
#
#   scripts/test-sandbox.sh PACKAGE.deb
set -euo pipefail
deb=$(realpath "${1:?usage: test-sandbox.sh PACKAGE.deb}")
here=$(cd "$(dirname "$0")" && pwd)
for tool in mmdebstrap systemd-nspawn; do
  command -v $tool >/dev/null || { echo "sandbox: $tool is missing (make deps-package)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root results=$work/results
mkdir -p "$results"

cat >"$work/runner.sh" <<'RUNNER'
#!/bin/sh
# Inside the booted container: run the daemon as a service, twice.
out=/run/sandbox-results
exec >>"$out/runner.log" 2>&1
set -u
cat >/etc/leafwatch/leafwatchd.yaml <<YAML
device: sandbox
listen: 127.0.0.1:8080
stats_interval: 0s
cameras:
  - name: gst
    source: "gst://videotestsrc is-live=true pattern=smpte ! video/x-raw,width=320,height=240,framerate=5/1"
    interval: 500ms
  - name: folder
    source: folder:///opt/lwtest/images?fps=2&loop=true
    interval: 500ms
YAML
ready() { # both cameras classified since the last (re)start
  m=$(curl -sf http://127.0.0.1:8080/metrics) || return 1
  echo "$m" | grep -q 'leafwatch_frames_classified_total{camera="gst"} [1-9]' &&
    echo "$m" | grep -q 'leafwatch_frames_classified_total{camera="folder"} [1-9]'
}
check() { # NAME
  for _ in $(seq 1 120); do ready && break; sleep 1; done
  if ready; then echo "$1: classified both cameras"; else echo "$1: FAIL: the cameras were not classified"; fi
  pid=$(systemctl show -p MainPID --value leafwatchd)
  systemctl show leafwatchd -p ActiveState -p NRestarts -p SystemCallErrorNumber -p ProcSubset -p PrivateMounts \
    -p RemoveIPC -p MemoryDenyWriteExecute -p NoNewPrivileges | sed "s/^/$1: /"
  grep -E '^(Seccomp|NoNewPrivs):' "/proc/$pid/status" | tr -d '\t' | sed "s/^/$1: /"
  journalctl -u leafwatchd --no-pager -o cat >"$out/journal-$1.txt"
}
install -o root -g leafwatch -m 0640 /opt/lwtest/model.safetensors /var/lib/leafwatch/.model.new
mv /var/lib/leafwatch/.model.new /var/lib/leafwatch/model.safetensors # leafwatchd.path starts the service
check unit
mkdir -p /etc/systemd/system/leafwatchd.service.d
cp /opt/lwtest/jetson.conf /opt/lwtest/cuda.conf /etc/systemd/system/leafwatchd.service.d/
systemctl daemon-reload
journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1
systemctl restart leafwatchd
sleep 2
check dropins
echo finished
systemctl poweroff
RUNNER

cat >"$work/runner.service" <<'UNIT'
[Unit]
Description=Leafwatch sandbox test runner
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh /opt/lwtest/runner.sh
[Install]
WantedBy=multi-user.target
UNIT

echo "sandbox: building a Debian 12 root with the package and systemd" >&2
mmdebstrap --quiet --variant=apt --include=systemd,systemd-sysv,dbus,curl \
  --customize-hook="copy-in $deb $work/runner.sh $work/runner.service $here/../systemd/jetson.conf $here/../systemd/cuda.conf /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/$(basename "$deb")" \
  --customize-hook='mkdir -p "$1/opt/lwtest" && mv "$1"/tmp/runner.sh "$1"/tmp/jetson.conf "$1"/tmp/cuda.conf "$1/opt/lwtest/"' \
  --customize-hook='mv "$1/tmp/runner.service" "$1/etc/systemd/system/" && ln -s /etc/systemd/system/runner.service "$1/etc/systemd/system/multi-user.target.wants/runner.service"' \
  --customize-hook='chroot "$1" sh -c "finetune synth --out /opt/lwtest/synth --classes 2 --per-class 3 --seed 1 >/dev/null && ln -s \$(ls -d /opt/lwtest/synth/*/ | head -1) /opt/lwtest/images"' \
  --customize-hook='chroot "$1" sh -c "finetune synth --out /tmp/train --classes 2 --per-class 4 --seed 2 >/dev/null && finetune train --data /tmp/train --out /tmp/run --train-from fc8 --cache-features --epochs 1 --batch 4 --val 0.25 >/dev/null 2>&1 && cp /tmp/run/best.safetensors /opt/lwtest/model.safetensors"' \
  bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

echo "sandbox: booting it (systemd-nspawn) and running leafwatchd as a service" >&2
timeout 400 systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --machine="lwsandbox$$" \
  --bind="$results:/run/sandbox-results" </dev/null >"$work/console.log" 2>&1 || true

problems=()
[ -f "$results/runner.log" ] || { tail -30 "$work/console.log" >&2; echo "sandbox: the runner did not run" >&2; exit 1; }
cat "$results/runner.log"
grep -q '^finished$' "$results/runner.log" || problems+=("the runner did not finish")
for phase in unit dropins; do
  grep -q "^$phase: classified both cameras" "$results/runner.log" || problems+=("$phase: the cameras were not classified")
  grep -q "^$phase: ActiveState=active" "$results/runner.log" || problems+=("$phase: the service is not active")
  grep -q "^$phase: NRestarts=0" "$results/runner.log" || problems+=("$phase: the service restarted")
  grep -q "^$phase: Seccomp:2" "$results/runner.log" || problems+=("$phase: no system-call filter in force")
  grep -q "^$phase: NoNewPrivs:1" "$results/runner.log" || problems+=("$phase: NoNewPrivileges not in force")
  j=$results/journal-$phase.txt
  if grep -iE 'bad system call|SIGSYS|operation not permitted|permission denied|orc.*(fail|error)|level=ERROR' "$j"; then
    problems+=("$phase: the journal shows a refusal or an error (above)")
  fi
done
grep -q '^unit: ProcSubset=pid' "$results/runner.log" || problems+=("ProcSubset=pid not in force")
grep -q '^unit: MemoryDenyWriteExecute=yes' "$results/runner.log" || problems+=("MemoryDenyWriteExecute not in force")
grep -q '^unit: PrivateMounts=yes' "$results/runner.log" || problems+=("PrivateMounts not in force")
grep -q '^unit: RemoveIPC=yes' "$results/runner.log" || problems+=("RemoveIPC not in force")
grep -q '^dropins: MemoryDenyWriteExecute=no' "$results/runner.log" || problems+=("the CUDA drop-in did not apply")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'sandbox: FAIL: %s\n' "${problems[@]}" >&2
  echo "--- journal (unit) ---" >&2; tail -40 "$results/journal-unit.txt" >&2 || true
  exit 1
fi
echo "sandbox: leafwatchd ran under the shipped sandbox (and with the Jetson/CUDA drop-ins): GStreamer, OpenCV and the CPU engine work"
