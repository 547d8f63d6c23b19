#!/usr/bin/env bash
# make field-demo: the field-data loop end to end with the real programs,
# measured on a synthetic greenhouse (scripts/fieldlab draws it; its
# generator knows every leaf's class):
#
#  1. a model trained on a PlantVillage-like set (finetune synth, train):
#     its accuracy there and on greenhouse frames;
#  2. leafwatchd on greenhouse videos (4 cameras) keeps samples with its
#     rules; a scripted labeller that reads the generator's truth stands in
#     for a person and labels them through `leafwatchd samples label`;
#  3. finetune trains with those samples (--field); the new model is renamed
#     into place and the running daemon reloads it;
#  4. on greenhouse frames no device kept: accuracy before and after, the
#     same with as many samples kept at random instead of by the rules, with
#     leaves and with tiles; and the alerts each model raises on a held-out
#     video of one diseased plant among healthy ones.
#
# Everything lands in .cache/field-demo (FIELD_DIR); the figures in
# results.txt there. About 10 minutes on the 2-core reference machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/goenv.sh
W=${FIELD_DIR:-.cache/field-demo}
BIN=bin
start=$(date +%s)
rm -rf "$W/run"
mkdir -p "$W/run"
R=$W/run
results=$W/results.txt
: >"$results"
say() { echo "$*" | tee -a "$results"; }
CLASSES=Tomato___Early_blight,Tomato___Late_blight,Tomato___Leaf_Mold,Tomato___Septoria_leaf_spot,Tomato___Target_Spot,Tomato___healthy
# One recipe for every model: the last layer on cached features of a
# seeded random AlexNet (no ImageNet weights can be downloaded here).
RECIPE=(--seed 3 --train-from fc8 --cache-features --feature-cache "$W/features" --epochs 20 --lr 3e-4 --batch 32 --schedule cosine)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== field-demo: the PlantVillage-like set and the base model"
if [[ ! -d $W/pv ]]; then
  "$BIN/finetune" synth --out "$W/pv.tmp" --labels "$CLASSES" --per-class 120 --seed 3 && mv "$W/pv.tmp" "$W/pv"
fi
"$BIN/finetune" train --data "$W/pv" --out "$R/base" "${RECIPE[@]}" >"$R/base.log" 2>&1
pv_base=$(grep -o 'val accuracy [0-9.]*' "$R/base.log" | tail -1 | awk '{print $3}')

echo "== field-demo: greenhouse benches (videos with their truth, held-out frames, an alerts video)"
"$BIN/fieldlab" bench --out "$R/train" --kind video --cameras 4 --frames 60 --diseased 3 --seed 10
"$BIN/fieldlab" bench --out "$R/held" --kind frames --frames 30 --diseased 3 --seed 50
"$BIN/fieldlab" bench --out "$R/alerts" --kind video --cameras 1 --frames 60 --diseased 1 --plants 5 --seed 77

score() { # MODEL MODE → accuracy
  "$BIN/fieldlab" score --model "$1" --frames "$R/held" --regions "$2" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f %d" % (d["accuracy"], d["leaf_regions"]))'
}

daemon_config() { # FILE STATE MODEL KEEP [REGIONS] [LOOP] [VIDEOS…]
  local file=$1 state=$2 model=$3 keep=$4 regions=$5 loop=$6
  shift 6
  {
    echo "device: lab"
    echo "model: $model"
    echo "state_dir: $state"
    echo "listen: 127.0.0.1:$(port)"
    echo "broker: embedded"
    echo "embedded_broker: {address: 127.0.0.1:$BROKER_PORT}"
    echo "stats_interval: 0s"
    echo "reload_min_interval: 0s"
    [[ $loop == loop ]] || echo "exit_when_sources_end: true"
    echo "cameras:"
    for v in "$@"; do
      echo "  - name: $(basename "$v" .avi)"
      echo "    source: file://$(realpath "$v")$([[ $loop == loop ]] && echo '?loop=true')"
      echo "    interval: 500ms"
      echo "    regions: $regions"
      echo "    tiling: {rows: 2, cols: 3, overlap: 0.2}"
      echo "    keep: $keep"
    done
  } >"$file"
}

echo "== field-demo: leafwatchd keeps samples on the greenhouse videos (the keep rules)"
BROKER_PORT=$(port)
mkdir -p "$R/device"
cp "$R/base/best.safetensors" "$R/device/model.safetensors"
daemon_config "$R/rules.yaml" "$R/device/state" "$(realpath "$R/device/model.safetensors")" "{baseline_every: 5s}" leaves loop "$R"/train/bench*.avi
"$BIN/leafwatchd" check-config "$R/rules.yaml" >/dev/null
"$BIN/leafwatchd" -config "$R/rules.yaml" 2>"$R/rules.log" &
dpid=$!
trap 'kill $dpid 2>/dev/null || true' EXIT
sleep 45 # one and a half passes over each 30 s video
truths=$(ls "$R"/train/bench*.json | paste -sd,)
"$BIN/fieldlab" label --state "$R/device/state" --truth "$truths" --leafwatchd "$BIN/leafwatchd" | tail -1
kept=$("$BIN/leafwatchd" samples --state-dir "$R/device/state" list --labelled --json | wc -l)
baseline=$("$BIN/leafwatchd" samples --state-dir "$R/device/state" list --labelled --rule baseline --json | wc -l)
"$BIN/leafwatchd" samples --state-dir "$R/device/state" export --out "$R/field-rules" --labelled-only >/dev/null 2>&1

echo "== field-demo: finetune with the field samples; the running daemon takes the new model"
"$BIN/finetune" train --data "$W/pv" --field "$R/field-rules" --out "$R/tuned" "${RECIPE[@]}" >"$R/tuned.log" 2>&1
cp "$R/tuned/best.safetensors" "$R/device/.model.new"
mv "$R/device/.model.new" "$R/device/model.safetensors"
for _ in $(seq 1 60); do grep -q "model reloaded" "$R/rules.log" && break; sleep 0.5; done
reloaded=$(grep -c "model reloaded" "$R/rules.log" || true)
kill $dpid; wait $dpid 2>/dev/null || true
trap - EXIT

echo "== field-demo: the same number of samples kept at random"
BROKER_PORT=$(port)
daemon_config "$R/random.yaml" "$R/random/state" "$(realpath "$R/base/best.safetensors")" "{rules: [baseline], baseline_every: 1s, max_per_hour: 3600}" leaves loop "$R"/train/bench*.avi
"$BIN/leafwatchd" check-config "$R/random.yaml" >/dev/null
"$BIN/leafwatchd" -config "$R/random.yaml" 2>"$R/random.log" &
rpid=$!
# Until it has kept at least as many as the rules did (at most 3 minutes).
for _ in $(seq 1 180); do
  sleep 1
  kill -0 $rpid 2>/dev/null || { echo "field-demo: leafwatchd stopped; see $R/random.log" >&2; exit 1; }
  n=$("$BIN/leafwatchd" samples --state-dir "$R/random/state" summary --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])' 2>/dev/null || echo 0)
  [[ $n -ge $kept ]] && break
done
kill $rpid; wait $rpid 2>/dev/null || true
"$BIN/fieldlab" label --state "$R/random/state" --truth "$truths" --leafwatchd "$BIN/leafwatchd" --max "$kept" --seed 5 | tail -1
random_n=$("$BIN/leafwatchd" samples --state-dir "$R/random/state" list --labelled --json | wc -l)
"$BIN/leafwatchd" samples --state-dir "$R/random/state" export --out "$R/field-random" --labelled-only >/dev/null 2>&1
"$BIN/finetune" train --data "$W/pv" --field "$R/field-random" --out "$R/tuned-random" "${RECIPE[@]}" >"$R/tuned-random.log" 2>&1

echo "== field-demo: scoring on the held-out greenhouse frames"
declare -A acc
for m in base tuned tuned-random; do
  for mode in leaves tiles truth; do
    acc[$m,$mode]=$(score "$R/$m/best.safetensors" "$mode")
  done
done

echo "== field-demo: alerts on the held-out video (one diseased plant among healthy ones)"
alerts() { # MODEL REGIONS → "true false"
  BROKER_PORT=$(port)
  daemon_config "$R/alerts-$2.yaml" "$R/alerts-state-$1-$2" "$(realpath "$R/$1/best.safetensors")" "{enabled: false}" "$2" once "$R/alerts/bench1.avi"
  "$BIN/leafwatchd" -config "$R/alerts-$2.yaml" 2>"$R/alerts-$1-$2.log" &
  local pid=$!
  for _ in $(seq 1 80); do (exec 3<>/dev/tcp/127.0.0.1/$BROKER_PORT) 2>/dev/null && break; sleep 0.25; done
  timeout 90 mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -v -t 'leafwatch/lab/+/alert' -t 'leafwatch/lab/availability' -C 1000 -W 80 >"$R/alerts-$1-$2.events" 2>/dev/null &
  local sub=$!
  wait $pid || true
  sleep 1; kill $sub 2>/dev/null || true; wait $sub 2>/dev/null || true
  "$BIN/fieldlab" alerts --events "$R/alerts-$1-$2.events" --truth "$R/alerts/bench1.json" --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["true_alerts"], d["false_alerts"])'
}
declare -A al
for m in base tuned; do
  for mode in leaves tiles; do
    al[$m,$mode]=$(alerts "$m" "$mode")
  done
done

pv_tuned=$(grep -o 'plantvillage validation: accuracy [0-9.]*' "$R/tuned.log" | awk '{print $4}')
field_val=$(grep -o 'field validation: accuracy [0-9.]*' "$R/tuned.log" | awk '{print $4}')
test_line=$(grep 'field test' "$R/tuned.log" || echo "  (no baseline sample on the validation side)")
f1() { echo "$1" | awk '{print $1}'; }
n1() { echo "$1" | awk '{print $2}'; }
say ""
say "Field-data loop on a synthetic greenhouse ($(date -u +%F), $(nproc) cores)"
say "  PlantVillage-like set: 6 tomato classes x 120 (finetune synth); every model: the last layer on cached features of a seeded random AlexNet"
say "  base model: PlantVillage-like validation accuracy $pv_base"
say "  kept by the rules on 4 greenhouse cameras (45 s of video each): $kept samples ($baseline of them baseline), labelled by the scripted labeller"
say "  model after training with them: PlantVillage-like validation $pv_tuned, field validation $field_val"
say "$test_line"
say "  the running daemon reloaded the new model: $([[ $reloaded -gt 0 ]] && echo yes || echo NO)"
say ""
say "  accuracy on $(ls "$R"/held/*.jpg | wc -l) held-out greenhouse frames (regions as leafwatchd cuts them; leaf regions counted):"
say "                              leaves          tiles (2x3)     perfect leaf crops"
for m in base tuned tuned-random; do
  case $m in base) name="base (PlantVillage only)" ;; tuned) name="+ $kept rule-kept samples" ;; *) name="+ $random_n random samples" ;; esac
  printf -v line "  %-27s %s (%s)   %s (%s)   %s (%s)" "$name" "$(f1 "${acc[$m,leaves]}")" "$(n1 "${acc[$m,leaves]}")" \
    "$(f1 "${acc[$m,tiles]}")" "$(n1 "${acc[$m,tiles]}")" "$(f1 "${acc[$m,truth]}")" "$(n1 "${acc[$m,truth]}")"
  say "$line"
done
say ""
say "  alerts on the held-out video (true false):  leaves: base ${al[base,leaves]}, tuned ${al[tuned,leaves]};  tiles: base ${al[base,tiles]}, tuned ${al[tuned,tiles]}"
say "  field-demo ran in $(( $(date +%s) - start )) s"
echo "== field-demo: done; figures in $results"
