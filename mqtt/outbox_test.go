package mqtt

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func alertMsg(i int) Message {
	return Message{Topic: "t/alert", Payload: []byte(fmt.Sprintf(`{"event_id":"e%d"}`, i)), QoS: 1, Kind: KindAlert}
}

func drain(t *testing.T, o *Outbox) []string {
	t.Helper()
	var out []string
	for {
		seq, m, ok := o.Peek()
		if !ok {
			return out
		}
		out = append(out, string(m.Payload))
		o.Ack(seq)
	}
}

func TestOutboxSurvivesReopenInOrder(t *testing.T) {
	dir := t.TempDir()
	o, err := OpenOutbox(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 25; i++ {
		if err := o.Enqueue(alertMsg(i)); err != nil {
			t.Fatal(err)
		}
	}
	// A write cut short by a power failure leaves a temp file behind.
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("half"), 0o600)
	o2, err := OpenOutbox(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, o2)
	if len(got) != 25 {
		t.Fatalf("%d messages after reopen, want 25", len(got))
	}
	for i, p := range got {
		if want := fmt.Sprintf(`{"event_id":"e%d"}`, i); p != want {
			t.Fatalf("message %d = %s, want %s", i, p, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Error("leftover temp file not cleaned")
	}
	// New messages continue after the old sequence numbers.
	o2.Enqueue(alertMsg(99))
	o3, _ := OpenOutbox(dir, 1<<20, nil)
	if got := drain(t, o3); len(got) != 1 || got[0] != `{"event_id":"e99"}` {
		t.Fatalf("after ack and reopen: %v", got)
	}
}

func TestOutboxCapDropsStatesBeforeAlerts(t *testing.T) {
	o, err := OpenOutbox(t.TempDir(), 6*blockSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		o.Enqueue(Message{Topic: "s", Payload: []byte(fmt.Sprintf("state%02d-%0100d", i, 0)), Kind: KindState, Key: fmt.Sprint("cam", i)})
		o.Enqueue(alertMsg(i))
	}
	a, s := o.Dropped()
	if a != 0 || s == 0 {
		t.Fatalf("dropped %d alerts and %d states; states must go first", a, s)
	}
	alerts := 0
	for _, p := range drain(t, o) {
		if p[0] == '{' {
			alerts++
		}
	}
	if alerts != 6 {
		t.Fatalf("%d alerts survived, want all 6", alerts)
	}
	// With only alerts left, the oldest alert goes and is counted.
	o2, _ := OpenOutbox(t.TempDir(), 2*blockSize, nil)
	for i := 0; i < 10; i++ {
		o2.Enqueue(alertMsg(i))
	}
	if a, _ := o2.Dropped(); a == 0 {
		t.Fatal("no alert drop counted when the cap was hit")
	}
	got := drain(t, o2)
	if got[len(got)-1] != `{"event_id":"e9"}` {
		t.Fatalf("newest alert lost: %v", got)
	}
}

// TestOutboxCapCountsDiskBlocks: a tiny message still takes a block on
// disk; the cap is what the folder takes, not the bytes of the messages.
func TestOutboxCapCountsDiskBlocks(t *testing.T) {
	dir := t.TempDir()
	o, _ := OpenOutbox(dir, 64<<10, nil)
	for i := 0; i < 100; i++ {
		o.Enqueue(alertMsg(i))
	}
	if o.Len() > 16 || o.Bytes() > 64<<10 {
		t.Fatalf("%d messages taking %d bytes of disk kept under a 64 KiB cap", o.Len(), o.Bytes())
	}
	var used int64
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if info, err := de.Info(); err == nil && !de.IsDir() {
			used += diskSize(info.Size())
		}
	}
	if used > 64<<10 {
		t.Fatalf("the outbox folder takes %d bytes on disk, cap 64 KiB", used)
	}
}

// TestOutboxCorruptFolderIsCapped: unreadable messages are kept for
// inspection, but not without bound.
func TestOutboxCorruptFolderIsCapped(t *testing.T) {
	dir := t.TempDir()
	for i := 1; i <= maxCorrupt+20; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", i, outboxExt)), []byte("garbage"), 0o600)
	}
	if _, err := OpenOutbox(dir, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(filepath.Join(dir, "corrupt"))
	if len(des) != maxCorrupt {
		t.Fatalf("%d files kept in corrupt/, want %d", len(des), maxCorrupt)
	}
	if des[len(des)-1].Name() != fmt.Sprintf("%020d%s", maxCorrupt+20, outboxExt) {
		t.Errorf("the newest corrupt file was not kept: %s", des[len(des)-1].Name())
	}
}

func TestOutboxCoalescesStates(t *testing.T) {
	o, _ := OpenOutbox(t.TempDir(), 1<<20, nil)
	o.Enqueue(Message{Topic: "a", Payload: []byte("a1"), Kind: KindState, Key: "a"})
	o.Enqueue(alertMsg(1))
	o.Enqueue(Message{Topic: "a", Payload: []byte("a2"), Kind: KindState, Key: "a"})
	got := drain(t, o)
	if len(got) != 2 || got[0] != `{"event_id":"e1"}` || got[1] != "a2" {
		t.Fatalf("got %v, want the alert then only the newest state", got)
	}
}

func TestOutboxQuarantinesCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	o, _ := OpenOutbox(dir, 1<<20, nil)
	o.Enqueue(alertMsg(1))
	o.Enqueue(alertMsg(2))
	// Flip a byte in the first message.
	p := o.path(1)
	b, _ := os.ReadFile(p)
	b[3] ^= 0xff
	os.WriteFile(p, b, 0o600)
	o2, err := OpenOutbox(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, o2)
	if len(got) != 1 || got[0] != `{"event_id":"e2"}` {
		t.Fatalf("got %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt", filepath.Base(p))); err != nil {
		t.Fatalf("corrupt file not moved aside: %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	cases := []struct {
		name, payload string
		ok            bool
		want          Command
	}{
		{"reload", "", true, Command{Name: "reload"}},
		{"reload", `{"id":"r1"}`, true, Command{Name: "reload", ID: "r1"}},
		{"classify", `{"camera":"bench_1"}`, true, Command{Name: "classify", Camera: "bench_1"}},
		{"snapshot", `  {"id":"x","camera":"c"}  `, true, Command{Name: "snapshot", ID: "x", Camera: "c"}},
		{"explode", `{}`, false, Command{}},
		{"reload", `not json`, false, Command{}},
		{"reload", `{"id":"a","force":true}`, false, Command{}},
		{"reload", `{"id":"a"} {"id":"b"}`, false, Command{}},
		{"reload", `[1,2]`, false, Command{}},
		{"classify", `{"camera":"../etc"}`, false, Command{}},
		{"reload", `{"id":` + fmt.Sprintf("%q", string(make([]byte, 5000))) + `}`, false, Command{}},
	}
	for _, tc := range cases {
		c, err := ParseCommand(tc.name, []byte(tc.payload))
		if (err == nil) != tc.ok {
			t.Errorf("%s %q: err = %v, want ok=%v", tc.name, tc.payload, err, tc.ok)
			continue
		}
		if tc.ok && c != tc.want {
			t.Errorf("%s %q = %+v, want %+v", tc.name, tc.payload, c, tc.want)
		}
	}
}
