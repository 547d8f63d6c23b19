#!/usr/bin/env bash
# make demo: a synthetic greenhouse, a short fine-tune (cached), and
# leafwatchd on the video with its embedded MQTT broker; a subscriber
# prints what arrives. Ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_DIR:-.cache/demo}
mkdir -p "$OUT"
BIN=bin
start=$(date +%s)

if [[ ! -f "$OUT/model/best.safetensors" ]]; then
  echo "== demo: drawing synthetic leaves (6 classes × 24 images)"
  rm -rf "$OUT/data"
  "$BIN/finetune" synth --out "$OUT/data" --per-class 24 --classes 6 --seed 3 >/dev/null
  # Keep only six recognisable classes, two of them healthy.
  echo "== demo: fine-tuning the last layer (cached after the first run)"
  "$BIN/finetune" train --data "$OUT/data" --out "$OUT/model" --variant torchvision --seed 3 \
    --train-from fc8 --cache-features --epochs 15 --lr 1e-4 --new-layer-lr-mult 1 --batch 16 2>&1 | grep -vE '^epoch [0-9]+/[0-9]+: batch' || true
fi
test -f "$OUT/model/best.safetensors"

echo "== demo: making a greenhouse video (healthy → blight → healthy)"
go run ./scripts/demovideo -data "$OUT/data" -out "$OUT/greenhouse.avi"

cat > "$OUT/leafwatchd.yaml" <<YAML
device: demo
model: $OUT/model/best.safetensors
state_dir: $OUT/state
listen: 127.0.0.1:8089
broker: embedded
embedded_broker: {address: 127.0.0.1:18830}
mqtt: {discovery: {enabled: true, prefix: homeassistant}}
stats_interval: 5s
exit_when_sources_end: true
cameras:
  - name: bench1
    source: file://$OUT/greenhouse.avi
    interval: 500ms
    # The demo model starts from random weights (no ImageNet weights offline),
    # so its confidences are low: a low threshold for the demo only.
    decision: {threshold: 0.3, k: 3, n: 5, cooldown: 1m}
YAML
rm -rf "$OUT/state"
"$BIN/leafwatchd" check-config "$OUT/leafwatchd.yaml"

echo "== demo: running leafwatchd (status page: http://127.0.0.1:8089/)"
"$BIN/leafwatchd" -config "$OUT/leafwatchd.yaml" 2> "$OUT/leafwatchd.log" &
pid=$!
# Wait for the embedded broker (model loading takes a moment).
for _ in $(seq 1 120); do
  if (exec 3<>/dev/tcp/127.0.0.1/18830) 2>/dev/null; then break; fi
  if ! kill -0 $pid 2>/dev/null; then echo "demo: leafwatchd exited; see $OUT/leafwatchd.log" >&2; exit 1; fi
  sleep 0.25
done
{ mosquitto_sub -h 127.0.0.1 -p 18830 -v -t 'leafwatch/demo/+/alert' -t 'leafwatch/demo/availability' -t 'leafwatch/demo/bench1/state' \
  -W 120 2>/dev/null || true; } | python3 -u -c '
import sys, json
last = None
alerts = labels = 0
for line in sys.stdin:
    topic, _, payload = line.rstrip("\n").partition(" ")
    if topic.endswith("/alert"):
        a = json.loads(payload); alerts += 1; print("ALERT %-5s %-28s conf %.2f  event %s" % (a["phase"], a["display"], a["confidence"], a["event_id"]))
    elif topic.endswith("/state"):
        s = json.loads(payload)
        if s["label"] != last: labels += 1; print("label %-30s conf %.2f" % (s["display"], s["confidence"])); last = s["label"]
    else:
        print("availability:", payload)
        if payload == "offline": break
print("subscriber saw %d label changes and %d alert events" % (labels, alerts))
if alerts == 0: sys.exit(1)
' || echo "demo: no alert reached the subscriber; see $OUT/leafwatchd.log" >&2
wait $pid || true
echo "== demo: samples kept for labelling:"
"$BIN/leafwatchd" samples --state-dir "$OUT/state" summary | sed 's/^/   /'
echo "== demo: done in $(( $(date +%s) - start ))s; the status page was http://127.0.0.1:8089/ ; daemon log: $OUT/leafwatchd.log"
