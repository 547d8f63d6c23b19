package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/mqtttest"
	"github.com/leafwatch/leafwatch/model"
)

// writeSeededModel is writeConstantModel with other weights (another
// checkpoint that answers the same).
func writeSeededModel(t *testing.T, path string, idx int, seed uint64) {
	t.Helper()
	m, err := model.NewRandom(model.TorchVision, 4, seed)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = processLabels
	clear(m.Params["classifier.6.weight"].Data)
	b := m.Params["classifier.6.bias"].Data
	clear(b)
	b[idx] = 6
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
}

// labelSamples stores n baseline samples (noise images) labelled label.
func labelSamples(t *testing.T, st *samples.Store, n int, label string) {
	t.Helper()
	ctx := context.Background()
	var ids []string
	t0 := time.Now().Add(-time.Hour).UTC()
	for i := range n {
		img := gocv.NewMatWithSize(96, 96, gocv.MatTypeCV8UC3)
		gocv.RandU(&img, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(255, 255, 255, 0))
		buf, err := gocv.IMEncode(gocv.JPEGFileExt, img)
		img.Close()
		if err != nil {
			t.Fatal(err)
		}
		jpeg := append([]byte(nil), buf.GetBytes()...)
		buf.Close()
		at := t0.Add(time.Duration(i) * time.Second)
		fid := fmt.Sprintf("bench1-%s", at.Format("20060102T150405.000Z"))
		rec := fieldset.Record{ID: fid + "-0", Camera: "bench1", Time: at, FrameID: fid, FrameSize: [2]int{96, 96}, Box: [4]int{0, 0, 96, 96},
			Region: "frame", Model: fieldset.ModelRef{Version: "abc", Engine: "cpu"}, Top: []fieldset.Scored{{Label: processLabels[0], Prob: 0.5}},
			Rules: []string{fieldset.RuleBaseline}}
		if err := st.Add(ctx, samples.NewFrame{ID: fid, Camera: "bench1", Time: at, Width: 96, Height: 96, JPEG: jpeg},
			[]samples.NewSample{{Record: rec, JPEG: jpeg, DHash: uint64(i), Margin: 0.2}}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if _, err := st.Label(ctx, ids, label, "grower", time.Now()); err != nil {
		t.Fatal(err)
	}
}

// fleetRelease is a signed checkpoint on the test's model server.
func fleetRelease(t *testing.T, key *bundle.Signer, srv *httptest.Server, dir, name string, idx int, seed uint64) fleet.Announcement {
	t.Helper()
	ckpt := filepath.Join(dir, name)
	writeSeededModel(t, ckpt, idx, seed)
	if _, err := bundle.SignCheckpoint(key, ckpt, "answers "+processLabels[idx]); err != nil {
		t.Fatal(err)
	}
	a, err := fleet.Announce(ckpt, srv.URL+"/"+name, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func publish(t *testing.T, broker, topic string, payload []byte, retained bool) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", broker, tok.Error())
	}
	defer c.Disconnect(250)
	if tok := c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// lastUpdate is the latest model update state the subscriber saw.
func lastUpdate(s *mqtttest.Subscriber) fleet.State {
	var st fleet.State
	if on := s.On("leafwatch/rig/model/update"); len(on) > 0 {
		json.Unmarshal([]byte(on[len(on)-1]), &st)
	}
	return st
}

// TestFleetUpdates runs a real leafwatchd (AlexNet-sized models) on the
// greenhouse's mosquitto, bridged to the hub mosquitto where models are
// announced: a better model is taken (and Home Assistant's update entity
// says so) while the daemon keeps classifying, rolled back by command,
// taken again by the install command and rolled back by itself when its
// engine fails; a model announced while the device was down is taken when
// it comes back, and a worse one is refused.
func TestFleetUpdates(t *testing.T) {
	if os.Getenv("LEAFWATCH_EMULATED") != "" {
		t.Skip("eight AlexNet loads and evaluations under emulation; the update logic is the host's (daemon/fleet's tests run everywhere)")
	}
	hub := mqtttest.StartMosquitto(t)
	edge := mqtttest.StartMosquitto(t, "connection hub", "address "+hub.Addr(), "topic leafwatch/fleet/# in 1")
	keys, srvDir := t.TempDir(), t.TempDir()
	pub, keyPath, err := bundle.GenerateKey(filepath.Join(keys, "release"), "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.LoadSigner(keyPath, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(srvDir)))
	defer srv.Close()
	r := newRig(t, rigOptions{class: 0, broker: edge.URL(), yaml: "models: {trusted_keys: [" + pub + "], min_samples: 8}\n"})
	original := r.d.engine().Model().Meta.Version
	labelSamples(t, r.d.store, 8, processLabels[3]) // the grower says: healthy
	watch := mqtttest.NewSubscriber(t, edge.URL(), "watch", true, "leafwatch/rig/#", "homeassistant/update/rig/model/config")
	topic := "leafwatch/fleet/default/model"

	// 1. A better model (answers healthy), announced on the hub.
	better := fleetRelease(t, key, srv, srvDir, "better.safetensors", 3, 2)
	start := time.Now()
	publish(t, hub.URL(), topic, better.Marshal(), true)
	mqtttest.WaitFor(t, 90*time.Second, "the better model installed", func() bool { return lastUpdate(watch).State == fleet.StateInstalled })
	took := time.Since(start)
	st := lastUpdate(watch)
	if st.InstalledVersion != better.Version || r.d.engine().Model().Meta.Version != better.Version || st.PreviousVersion != original ||
		st.Acceptance == nil || st.Acceptance.Samples != 8 || st.Acceptance.Candidate != 1 || st.Acceptance.Serving != 0 {
		t.Fatalf("after the better model: %+v %+v", st, st.Acceptance)
	}
	t.Logf("announcement → serving: %v for a %d MB model over loopback (two bridged brokers)", took.Round(10*time.Millisecond), better.Size>>20)
	var ha map[string]any
	if on := watch.On("homeassistant/update/rig/model/config"); len(on) == 0 || json.Unmarshal([]byte(on[0]), &ha) != nil ||
		ha["command_topic"] != "leafwatch/rig/cmd/install" || ha["state_topic"] != "leafwatch/rig/model/update" {
		t.Errorf("Home Assistant update entity: %v", ha)
	}
	classified := func(version string) bool {
		for _, s := range watch.On("leafwatch/rig/bench1/state") {
			if strings.Contains(s, `"model_version":"`+version+`"`) {
				return true
			}
		}
		return false
	}
	mqtttest.WaitFor(t, 20*time.Second, "classification by the new model", func() bool { return classified(better.Version) })
	// The late-blight alert the old model raised ends under the new one:
	// the decision went on across the swap.
	mqtttest.WaitFor(t, 20*time.Second, "the alert's end", func() bool {
		for _, a := range watch.On("leafwatch/rig/bench1/alert") {
			if strings.Contains(a, `"phase":"end"`) && strings.Contains(a, `"model_version":"`+better.Version+`"`) {
				return true
			}
		}
		return false
	})

	// 2. Rollback by command.
	publish(t, edge.URL(), "leafwatch/rig/cmd/rollback", []byte(`{"id":"rb1"}`), false)
	mqtttest.WaitFor(t, 60*time.Second, "rolled back", func() bool { return lastUpdate(watch).State == fleet.StateRolledBack })
	if v := r.d.engine().Model().Meta.Version; v != original {
		t.Fatalf("after rollback %s serves, not %s", v, original)
	}
	if res := watch.On("leafwatch/rig/cmd_result"); len(res) == 0 || !strings.Contains(res[len(res)-1], `"ok":true`) {
		t.Errorf("rollback command result: %v", res)
	}

	// 3. The install command takes it again; its engine then fails (as a
	// lost CUDA context does) and the daemon rolls back by itself, the CPU
	// serving meanwhile.
	var wrapped atomic.Int32
	wrap := func(e model.Engine) model.Engine {
		if wrapped.Add(1) == 1 {
			return &failingEngine{inner: e, after: 6}
		}
		return e
	}
	testWrapEngine.Store(&wrap)
	defer testWrapEngine.Store(nil)
	publish(t, edge.URL(), "leafwatch/rig/cmd/install", []byte("{}"), false)
	mqtttest.WaitFor(t, 90*time.Second, "rolled back after the engine failed", func() bool {
		s := lastUpdate(watch)
		return s.State == fleet.StateRolledBack && strings.Contains(s.Reason, "engine failed")
	})
	if v := r.d.engine().Model().Meta.Version; v != original {
		t.Fatalf("after the automatic rollback %s serves, not %s", v, original)
	}

	// 4. Announced while the device is down: taken when it comes back.
	r.stop(t)
	offline := fleetRelease(t, key, srv, srvDir, "offline.safetensors", 3, 3)
	publish(t, hub.URL(), topic, offline.Marshal(), true)
	r.start(t)
	mqtttest.WaitFor(t, 90*time.Second, "the model announced while down installed", func() bool {
		s := lastUpdate(watch)
		return s.State == fleet.StateInstalled && s.InstalledVersion == offline.Version
	})

	// 5. A worse model (answers late blight) is refused; the serving one
	// stays.
	worse := fleetRelease(t, key, srv, srvDir, "worse.safetensors", 0, 4)
	publish(t, hub.URL(), topic, worse.Marshal(), true)
	mqtttest.WaitFor(t, 90*time.Second, "the worse model refused", func() bool { return lastUpdate(watch).State == fleet.StateRefused })
	st = lastUpdate(watch)
	if r.d.engine().Model().Meta.Version != offline.Version || st.Acceptance == nil || st.Acceptance.Candidate != 0 || st.Acceptance.Serving != 1 {
		t.Errorf("after the worse model: serving %s; %+v", r.d.engine().Model().Meta.Version, st.Acceptance)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, "fleet", "download", worse.SHA256+".part")); err == nil {
		t.Error("the refused model's download was kept")
	}
}

// TestSignedLocalDeployment: with models.local: signed, a checkpoint
// renamed into place needs its signed manifest beside it: without one the
// daemon does not start, and a reload to an unsigned file is refused while
// the signed model keeps serving.
func TestSignedLocalDeployment(t *testing.T) {
	if testing.Short() || os.Getenv("LEAFWATCH_EMULATED") != "" {
		t.Skip("loads AlexNets in -short mode or under emulation (the check is the host's)")
	}
	dir := t.TempDir()
	pub, keyPath, err := bundle.GenerateKey(filepath.Join(dir, "release"), "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := bundle.LoadSigner(keyPath, "")
	ckpt := filepath.Join(dir, "model.safetensors")
	writeConstantModel(t, ckpt, 0)
	video := filepath.Join(dir, "bench.avi")
	writeTestVideo(t, video, 5)
	yaml := fmt.Sprintf("device: signed\nmodel: %s\nstate_dir: %s\nlisten: %s\nbroker: embedded\nembedded_broker: {address: %s}\nreload_min_interval: 0s\n"+
		"models: {local: signed, trusted_keys: [%s]}\ncameras:\n  - name: bench1\n    source: file://%s?loop=true\n",
		ckpt, filepath.Join(dir, "state"), freeAddr(t), freeAddr(t), pub, video)
	cfg, err := ParseConfig("signed.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "models.local is signed") || !strings.Contains(err.Error(), "no manifest") {
		t.Fatalf("an unsigned model started: %v", err)
	}
	if _, err := bundle.SignCheckpoint(key, ckpt, ""); err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeParts()
	signed := d.engine().Model().Meta.Version
	// An operator renames another checkpoint into place, without signing it:
	// the old manifest no longer matches.
	next := filepath.Join(dir, ".next")
	writeConstantModel(t, next, 1)
	os.Rename(next, ckpt)
	if err := d.Reload("test"); err == nil || !strings.Contains(err.Error(), "does not match its manifest") {
		t.Errorf("reload to an unsigned file: %v", err)
	}
	if d.engine().Model().Meta.Version != signed {
		t.Error("the unsigned file replaced the signed model")
	}
	// A manifest signed by an untrusted key is refused too.
	other, _, _ := bundle.GenerateKey(filepath.Join(dir, "other"), "")
	otherKey, _ := bundle.LoadSigner(strings.TrimSuffix(other, ".pub")+".key", "")
	if _, err := bundle.SignCheckpoint(otherKey, ckpt, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload("test"); err == nil || !strings.Contains(err.Error(), "not accepted") {
		t.Errorf("reload signed by an untrusted key: %v", err)
	}
	if _, err := bundle.SignCheckpoint(key, ckpt, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload("test"); err != nil || d.engine().Model().Meta.Version == signed {
		t.Errorf("the newly signed model: %v", err)
	}
}
