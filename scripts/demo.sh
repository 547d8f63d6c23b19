#!/usr/bin/env bash
# make demo: Leafwatch as a grower meets it. A model trained on
# PlantVillage-like leaves and on labelled leaves of a synthetic
# greenhouse (as a grower's earlier labelling would give), then leafwatchd
# on a video of a bench where one plant falls ill and recovers, with its
# embedded MQTT broker; a subscriber prints what arrives. At the end, the
# samples leafwatchd kept for labelling and the labelling page's address
# (kept open while you look, on a terminal). The model and video are
# cached in .cache/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_DIR:-.cache/demo}
mkdir -p "$OUT"
BIN=bin
start=$(date +%s)
CLASSES=Tomato___Early_blight,Tomato___Late_blight,Tomato___Leaf_Mold,Tomato___Septoria_leaf_spot,Tomato___Target_Spot,Tomato___healthy

# Bumped whenever what the cache holds is made differently.
STAMP="greenhouse-5"
if [[ ! -f $OUT/model/best.safetensors || "$(cat "$OUT/stamp" 2>/dev/null)" != "$STAMP" ]]; then
  rm -rf "$OUT"/{pv,crops,model,features,greenhouse.avi,greenhouse.json}
  echo "== demo: drawing PlantVillage-like leaves (6 tomato classes × 120) and labelled greenhouse leaves"
  "$BIN/finetune" synth --out "$OUT/pv" --labels "$CLASSES" --per-class 120 --seed 3 >/dev/null
  "$BIN/fieldlab" crops --out "$OUT/crops" --benches 16 --demo-seed 4
  echo "== demo: training the model (the last layer, on cached features; cached after the first run)"
  # No ImageNet weights can be downloaded on the build machines: the
  # convolutions are a seeded random AlexNet's. With real ImageNet weights
  # (finetune import, then --base) the same recipe does far better.
  "$BIN/finetune" train --data "$OUT/pv" --field "$OUT/crops" --field-val 0 --out "$OUT/model" --seed 3 \
    --train-from fc8 --cache-features --feature-cache "$OUT/features" --epochs 20 --lr 3e-4 --batch 32 --schedule cosine 2>&1 |
    grep -E '^best epoch' || true
  echo "$STAMP" >"$OUT/stamp"
fi
test -f "$OUT/model/best.safetensors"
if [[ ! -f $OUT/greenhouse.avi ]]; then
  echo "== demo: making a greenhouse video (a plant looks healthy, falls ill, recovers)"
  "$BIN/fieldlab" video --out "$OUT/greenhouse.avi" --seed 4 --seconds 6,10,6
fi

cat >"$OUT/leafwatchd.yaml" <<YAML
device: demo
model: $OUT/model/best.safetensors
state_dir: $OUT/state
listen: 127.0.0.1:8089
broker: embedded
embedded_broker: {address: 127.0.0.1:18830}
mqtt: {discovery: {enabled: true, prefix: homeassistant}}
stats_interval: 5s
cameras:
  - name: bench1
    source: file://$OUT/greenhouse.avi
    interval: 500ms
    regions: leaves
    # The default threshold (0.7) and alert rule (3 of the last 5 samples).
    keep: {baseline_every: 5s}
YAML
rm -rf "$OUT/state"
"$BIN/leafwatchd" check-config "$OUT/leafwatchd.yaml"

echo "== demo: running leafwatchd (status page: http://127.0.0.1:8089/)"
"$BIN/leafwatchd" -config "$OUT/leafwatchd.yaml" 2>"$OUT/leafwatchd.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
# Wait for the embedded broker (model loading takes a moment).
for _ in $(seq 1 120); do
  if (exec 3<>/dev/tcp/127.0.0.1/18830) 2>/dev/null; then break; fi
  if ! kill -0 $pid 2>/dev/null; then echo "demo: leafwatchd exited; see $OUT/leafwatchd.log" >&2; exit 1; fi
  sleep 0.25
done
# The video is over when the camera says "ended" (curl: Debian's, or Python).
ended() { python3 -c 'import json,sys,urllib.request as u
try: d=json.load(u.urlopen("http://127.0.0.1:8089/readyz"))
except u.HTTPError as e: d=json.load(e)
except Exception: sys.exit(1)
sys.exit(0 if d["cameras"]["bench1"]["state"]=="ended" else 1)'; }
{ mosquitto_sub -h 127.0.0.1 -p 18830 -v -t 'leafwatch/demo/+/alert' -t 'leafwatch/demo/bench1/state' -W 40 2>/dev/null || true; } |
  python3 -u -c '
import sys, json
last = None
alerts = labels = 0
for line in sys.stdin:
    topic, _, payload = line.rstrip("\n").partition(" ")
    if topic.endswith("/alert"):
        a = json.loads(payload); alerts += 1; print("ALERT %-5s %-28s conf %.2f  event %s" % (a["phase"], a["display"], a["confidence"], a["event_id"]), flush=True)
    else:
        s = json.loads(payload)
        leaves = s.get("regions") or []
        if s["label"] != last:
            labels += 1
            print("label %-30s conf %.2f  (%d leaves)" % (s["display"], s["confidence"], len(leaves)), flush=True)
            last = s["label"]
print("subscriber saw %d label changes and %d alert events" % (labels, alerts))
' &
sub=$!
for _ in $(seq 1 160); do ended && break; sleep 0.25; done
sleep 1.5 # the last sample and the keeper's writes
kill $sub 2>/dev/null || true
pkill -f "mosquitto_sub -h 127.0.0.1 -p 18830" 2>/dev/null || true
wait $sub 2>/dev/null || true
echo "== demo: samples kept for labelling:"
"$BIN/leafwatchd" samples --state-dir "$OUT/state" summary | sed 's/^/   /'
waiting=$("$BIN/leafwatchd" samples --state-dir "$OUT/state" summary --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["unlabelled"])')
echo "== demo: $waiting samples wait for a label at http://127.0.0.1:8089/label (status page http://127.0.0.1:8089/)"
if [[ -t 0 ]]; then
  read -r -p "   the page stays up while you look; press Enter to stop the demo " _ || true
fi
kill -TERM $pid
wait $pid || true
trap - EXIT
echo "== demo: done in $(( $(date +%s) - start ))s; daemon log: $OUT/leafwatchd.log"
