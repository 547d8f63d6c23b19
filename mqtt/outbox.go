package mqtt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Kind decides what the outbox drops first when its disk cap is reached.
type Kind string

const (
	// KindAlert is never dropped while any state message can be dropped.
	KindAlert Kind = "alert"
	// KindState is a retained state; a newer state with the same Key
	// replaces an older undelivered one.
	KindState Kind = "state"
)

// Message is one MQTT publication held by the outbox.
type Message struct {
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
	QoS     byte   `json:"qos"`
	Retain  bool   `json:"retain"`
	Kind    Kind   `json:"kind"`
	Key     string `json:"key,omitempty"`
}

type entry struct {
	seq  uint64
	kind Kind
	key  string
	size int64
}

// Outbox is a durable FIFO of messages on disk: one file per message,
// written to a temporary name, synced, then renamed, so a power cut leaves
// whole messages or none. A CRC guards against a disk that lies about sync.
// Delivery order is the order of Enqueue.
type Outbox struct {
	dir      string
	maxBytes int64
	log      *slog.Logger

	mu      sync.Mutex
	entries []entry
	bytes   int64
	nextSeq uint64
	dropped map[Kind]uint64
	notify  chan struct{}
}

const outboxExt = ".msg"

// blockSize is the file system's allocation unit assumed for the cap: each
// message file takes at least one block on disk, however small it is.
const blockSize = 4096

// diskSize is what a file of n bytes takes on disk.
func diskSize(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// maxCorrupt is how many unreadable messages are kept for inspection; the
// oldest are removed beyond it.
const maxCorrupt = 100

// OpenOutbox opens (creating if needed) an outbox in dir holding at most
// maxBytes. Messages left by an earlier process are kept, in order;
// unreadable ones are moved to dir/corrupt and logged.
func OpenOutbox(dir string, maxBytes int64, log *slog.Logger) (*Outbox, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("outbox %s: size cap must be positive", dir)
	}
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &Outbox{dir: dir, maxBytes: maxBytes, log: log, dropped: map[Kind]uint64{}, notify: make(chan struct{}, 1), nextSeq: 1}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // a write cut short
			continue
		}
		if !strings.HasSuffix(name, outboxExt) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, outboxExt), 10, 64)
		if err != nil {
			continue
		}
		msg, size, err := o.read(seq)
		if err != nil {
			o.quarantine(name, err)
			continue
		}
		o.entries = append(o.entries, entry{seq: seq, kind: msg.Kind, key: msg.Key, size: diskSize(size)})
		o.bytes += diskSize(size)
		o.nextSeq = max(o.nextSeq, seq+1)
	}
	sort.Slice(o.entries, func(i, j int) bool { return o.entries[i].seq < o.entries[j].seq })
	if len(o.entries) > 0 {
		log.Info("outbox: messages kept from before", "count", len(o.entries), "bytes", o.bytes, "dir", dir)
	}
	return o, nil
}

func (o *Outbox) path(seq uint64) string {
	return filepath.Join(o.dir, fmt.Sprintf("%020d%s", seq, outboxExt))
}

func (o *Outbox) quarantine(name string, why error) {
	bad := filepath.Join(o.dir, "corrupt")
	os.MkdirAll(bad, 0o750)
	os.Rename(filepath.Join(o.dir, name), filepath.Join(bad, name))
	o.log.Error("outbox: unreadable message moved aside", "file", name, "to", bad, "err", why)
	// Keep only the newest few: a disk that corrupts files must not fill
	// the state folder with them.
	if des, err := os.ReadDir(bad); err == nil && len(des) > maxCorrupt {
		for _, de := range des[:len(des)-maxCorrupt] { // names sort by sequence
			os.Remove(filepath.Join(bad, de.Name()))
		}
	}
}

func (o *Outbox) read(seq uint64) (Message, int64, error) {
	b, err := os.ReadFile(o.path(seq))
	if err != nil {
		return Message{}, 0, err
	}
	if len(b) < 4 {
		return Message{}, 0, errors.New("too short")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return Message{}, 0, errors.New("checksum mismatch")
	}
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, 0, err
	}
	return m, int64(len(b)), nil
}

// Enqueue stores msg durably. It returns only after the message is on disk.
func (o *Outbox) Enqueue(msg Message) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	body = binary.LittleEndian.AppendUint32(body, crc32.ChecksumIEEE(body))
	size := diskSize(int64(len(body)))
	if size > o.maxBytes {
		return fmt.Errorf("outbox: message of %d bytes exceeds the %d-byte cap", size, o.maxBytes)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	seq := o.nextSeq
	o.nextSeq++
	if err := writeFileSync(o.dir, o.path(seq), body); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if msg.Kind == KindState && msg.Key != "" {
		o.removeWhere(func(e entry) bool { return e.kind == KindState && e.key == msg.Key })
	}
	o.entries = append(o.entries, entry{seq: seq, kind: msg.Kind, key: msg.Key, size: size})
	o.bytes += size
	o.enforceCap()
	o.signal()
	return nil
}

// enforceCap drops the oldest states, then the oldest alerts, until the
// outbox fits. The newest message is never dropped.
func (o *Outbox) enforceCap() {
	for _, kind := range []Kind{KindState, KindAlert} {
		for i := 0; o.bytes > o.maxBytes && i < len(o.entries)-1; {
			e := o.entries[i]
			if e.kind != kind {
				i++
				continue
			}
			o.drop(i)
			o.dropped[kind]++
			o.log.Warn("outbox full: dropped an undelivered message", "kind", kind, "bytes_cap", o.maxBytes, "dropped_total", o.dropped[kind])
		}
	}
}

func (o *Outbox) drop(i int) {
	e := o.entries[i]
	os.Remove(o.path(e.seq))
	o.bytes -= e.size
	o.entries = append(o.entries[:i], o.entries[i+1:]...)
}

func (o *Outbox) removeWhere(f func(entry) bool) {
	for i := 0; i < len(o.entries); {
		if f(o.entries[i]) {
			o.drop(i)
			continue
		}
		i++
	}
}

// Peek returns the oldest message without removing it.
func (o *Outbox) Peek() (uint64, Message, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.entries) > 0 {
		e := o.entries[0]
		msg, _, err := o.read(e.seq)
		if err == nil {
			return e.seq, msg, true
		}
		o.entries = o.entries[1:]
		o.bytes -= e.size
		o.quarantine(filepath.Base(o.path(e.seq)), err)
	}
	return 0, Message{}, false
}

// Ack removes a delivered message.
func (o *Outbox) Ack(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.removeWhere(func(e entry) bool { return e.seq == seq })
}

// Len is the number of undelivered messages.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// Bytes is the disk space the undelivered messages take (whole blocks).
func (o *Outbox) Bytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// Dropped counts messages dropped because the cap was reached.
func (o *Outbox) Dropped() (alerts, states uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped[KindAlert], o.dropped[KindState]
}

// Notify is signalled after every Enqueue.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// signal wakes the delivery loop.
func (o *Outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// countDrop counts a message dropped outside the outbox (the publisher's
// memory queue), so Dropped reports every loss.
func (o *Outbox) countDrop(k Kind) {
	o.mu.Lock()
	o.dropped[k]++
	o.mu.Unlock()
}

// writeFileSync writes data to path atomically and durably.
func writeFileSync(dir, path string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
