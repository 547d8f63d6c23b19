package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/mqtttest"
)

// TestReconnectIsPromptAfterOutages: ten broker outages of 0.5–6 s, the
// broker up 5.5 s in between (longer than the 5 s backoff cap), while
// alerts are decided every 200 ms: every alert arrives, and none later than
// 15 s after it was decided (with paho's own backoff, after a 5.8 s outage
// the device came back 54 s after the broker).
func TestReconnectIsPromptAfterOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("ten broker outages")
	}
	b := mqtttest.StartMosquitto(t)
	cfg := cfgFor(b.URL(), "outages")
	cfg.MaxReconnectInterval = DefaultConfig("x").MaxReconnectInterval // the shipped default
	p, _ := testPublisher(t, cfg, Options{})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	topic := p.Topics().Alert("c")
	sub := mqtttest.NewSubscriber(t, b.URL(), "outage-sub", false, topic)
	ctx, stop := context.WithCancel(context.Background())
	decided := map[string]time.Time{}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			id := fmt.Sprintf("e%04d", n.Add(1))
			decided[id] = time.Now()
			p.Alert(Alert{EventID: id, Phase: AlertStart, Camera: "c", Label: "x", Start: time.Now()})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	downs := []time.Duration{500, 3000, 800, 5800, 1200, 2500, 600, 4000, 3000, 1000}
	for _, d := range downs {
		time.Sleep(5500 * time.Millisecond)
		b.Stop()
		time.Sleep(d * time.Millisecond)
		b.Start()
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	<-done
	total := int(n.Load())
	mqtttest.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d alerts", total), func() bool {
		seen := map[string]bool{}
		for _, m := range sub.Received(topic) {
			var a Alert
			json.Unmarshal([]byte(m.Payload), &a)
			seen[a.EventID] = true
		}
		return len(seen) >= total
	})
	worst := time.Duration(0)
	first := map[string]bool{}
	for _, m := range sub.Received(topic) {
		var a Alert
		json.Unmarshal([]byte(m.Payload), &a)
		if first[a.EventID] {
			continue
		}
		first[a.EventID] = true
		worst = max(worst, m.At.Sub(decided[a.EventID]))
	}
	t.Logf("%d alerts over 10 outages; worst delivery delay %v; %d reconnects", total, worst.Round(time.Millisecond), p.Reconnects())
	if worst > 15*time.Second {
		t.Errorf("worst delivery delay %v, want ≤ 15 s", worst)
	}
}

// TestChangedStateIsNotOverwrittenByOlderFoldedState: while offline, a
// state folded for later must not be published after a newer label change.
func TestChangedStateIsNotOverwrittenByOlderFoldedState(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	b.Stop()
	p, _ := testPublisher(t, cfgFor(b.URL(), "fold"), Options{})
	p.State(Classification{Camera: "c", Label: "old"}, false) // folded
	p.State(Classification{Camera: "c", Label: "new"}, true)  // durable change
	b.Start()
	mqtttest.WaitFor(t, 20*time.Second, "connect", p.Connected)
	mqtttest.WaitFor(t, 10*time.Second, "outbox drained", func() bool { return p.Outbox().Len() == 0 })
	time.Sleep(1500 * time.Millisecond) // a flush of folded states would come now
	late := mqtttest.NewSubscriber(t, b.URL(), "late", true, p.Topics().State("c"))
	mqtttest.WaitFor(t, 5*time.Second, "the retained state", func() bool { return len(late.On(p.Topics().State("c"))) > 0 })
	var c Classification
	json.Unmarshal([]byte(late.On(p.Topics().State("c"))[0]), &c)
	if c.Label != "new" {
		t.Fatalf("retained state %q after reconnect, want the newer change", c.Label)
	}
}

// TestOutboxWriteFailureStillDelivers: when the outbox cannot be written
// (a full disk), alerts wait in memory, go out directly while connected,
// and the failure is visible; once the disk recovers they are durable again.
func TestOutboxWriteFailureStillDelivers(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	dir := filepath.Join(t.TempDir(), "outbox")
	ob, err := OpenOutbox(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := testPublisher(t, cfgFor(b.URL(), "disk"), Options{Outbox: ob})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	sub := mqtttest.NewSubscriber(t, b.URL(), "disk-sub", true, p.Topics().Alert("c"))
	// Break the outbox: its folder becomes a file, so every write fails
	// (as root, permissions would not stop it).
	os.RemoveAll(dir)
	os.WriteFile(dir, []byte("not a folder"), 0o600)
	for i := 0; i < 3; i++ {
		if err := p.Alert(Alert{EventID: fmt.Sprint("d", i), Phase: AlertStart, Camera: "c", Label: "x"}); err != nil {
			t.Fatalf("alert %d refused: %v", i, err)
		}
	}
	if p.OutboxError() == "" || p.OutboxWriteFailures() == 0 {
		t.Error("the outbox failure is not reported")
	}
	mqtttest.WaitFor(t, 10*time.Second, "3 alerts delivered without the outbox", func() bool { return len(sub.On(p.Topics().Alert("c"))) >= 3 })
	var order []string
	for _, s := range sub.On(p.Topics().Alert("c")) {
		var a Alert
		json.Unmarshal([]byte(s), &a)
		order = append(order, a.EventID)
	}
	if strings.Join(order[:3], ",") != "d0,d1,d2" {
		t.Errorf("order %v", order)
	}
	// The disk recovers: the next alert is on disk again and the error clears.
	os.Remove(dir)
	os.MkdirAll(dir, 0o750)
	p.Alert(Alert{EventID: "d3", Phase: AlertStart, Camera: "c", Label: "x"})
	mqtttest.WaitFor(t, 10*time.Second, "the error to clear", func() bool { return p.OutboxError() == "" })
	mqtttest.WaitFor(t, 10*time.Second, "d3", func() bool { return len(sub.On(p.Topics().Alert("c"))) >= 4 })
}

// TestCommandSafety: a retained command does not run (it would again at
// every reconnect); a null payload is refused; a burst of commands runs at
// most maxRunningCommands at once and every one gets an answer.
func TestCommandSafety(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	var running, peak, ran atomic.Int32
	h := CommandFunc(func(ctx context.Context, c Command) (any, error) {
		r := running.Add(1)
		for {
			pk := peak.Load()
			if r <= pk || peak.CompareAndSwap(pk, r) {
				break
			}
		}
		ran.Add(1)
		time.Sleep(300 * time.Millisecond)
		running.Add(-1)
		return nil, nil
	})
	sub := mqtttest.NewSubscriber(t, b.URL(), "cmd-sub", true, "leafwatch/safe/cmd_result")
	// A retained reload left on the broker before the device connects.
	sub.C.Publish("leafwatch/safe/cmd/reload", 1, true, `{"id":"stale"}`).Wait()
	p, _ := testPublisher(t, cfgFor(b.URL(), "safe"), Options{Commands: h})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	mqtttest.WaitFor(t, 5*time.Second, "the retained command's answer", func() bool { return len(sub.On(p.Topics().Result())) >= 1 })
	if r := sub.On(p.Topics().Result())[0]; !strings.Contains(r, "retained") || ran.Load() != 0 {
		t.Fatalf("retained command: %s (ran %d)", r, ran.Load())
	}
	sub.C.Publish(p.Topics().Command("classify"), 1, false, "null").Wait()
	for i := 0; i < 8; i++ {
		sub.C.Publish(p.Topics().Command("classify"), 1, false, fmt.Sprintf(`{"id":"b%d"}`, i)).Wait()
	}
	mqtttest.WaitFor(t, 10*time.Second, "10 answers", func() bool { return len(sub.On(p.Topics().Result())) >= 10 })
	time.Sleep(700 * time.Millisecond)
	var busy, nulls int
	for _, s := range sub.On(p.Topics().Result()) {
		var r Result
		json.Unmarshal([]byte(s), &r)
		busy += map[bool]int{true: 1}[strings.Contains(r.Error, "busy")]
		nulls += map[bool]int{true: 1}[strings.Contains(r.Error, `not "null"`)]
	}
	if peak.Load() > maxRunningCommands || busy == 0 || nulls != 1 {
		t.Errorf("peak %d running (max %d), %d busy answers, %d null refusals", peak.Load(), maxRunningCommands, busy, nulls)
	}
	// Reconnecting does not run the (now cleared) retained command.
	before := ran.Load()
	b.Stop()
	b.Start()
	mqtttest.WaitFor(t, 20*time.Second, "reconnect", func() bool { return p.Reconnects() > 0 && p.Connected() })
	time.Sleep(500 * time.Millisecond)
	if ran.Load() != before {
		t.Errorf("a command ran again after the reconnect")
	}
}
