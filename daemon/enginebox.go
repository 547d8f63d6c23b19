package daemon

import (
	"runtime/debug"
	"sync"

	"github.com/leafwatch/leafwatch/model"
)

// engineBox holds the serving engine in an atomic.Pointer and counts the
// samples using it, so a replaced engine is freed when its last sample
// ends rather than when the swap happens. A sample in flight during a
// reload keeps the old weights alive; freeing (and handing memory back to
// the OS) before it ends left them as garbage the next GC would only find
// much later — on a slow board (or qemu, where a sample takes seconds) RSS
// stayed ~400 MB high after reloads.
type engineBox struct {
	e model.Engine

	mu      sync.Mutex
	users   int
	retired bool
}

func newEngineBox(e model.Engine) *engineBox { return &engineBox{e: e} }

// engine is the engine serving now, for reading what it is (model
// metadata, engine name). Running it goes through acquireEngine.
func (d *Daemon) engine() model.Engine {
	for {
		b := d.serving.Load()
		b.mu.Lock()
		e := b.e
		b.mu.Unlock()
		if e != nil {
			return e
		}
		// freed after a swap between the two reads: take the new one
	}
}

// acquireEngine returns the serving engine's box, counted as in use until
// release.
func (d *Daemon) acquireEngine() *engineBox {
	for {
		b := d.serving.Load()
		b.mu.Lock()
		if !b.retired {
			b.users++
			b.mu.Unlock()
			return b
		}
		b.mu.Unlock() // swapped out meanwhile: take the new one
	}
}

// release ends a use; the last use of a retired engine frees it.
func (b *engineBox) release() {
	b.mu.Lock()
	b.users--
	last := b.retired && b.users == 0
	b.mu.Unlock()
	if last {
		b.free()
	}
}

// retire marks a box that has been swapped out: it is freed now if idle,
// otherwise by its last user.
func (b *engineBox) retire() {
	b.mu.Lock()
	b.retired = true
	idle := b.users == 0
	b.mu.Unlock()
	if idle {
		b.free()
	}
}

// free closes the engine (GPU memory) and hands the weights' memory back
// to the OS at once: nothing refers to them any more, and the next GC
// could be far away (the heap goal is twice the live heap).
func (b *engineBox) free() {
	b.mu.Lock()
	e := b.e
	b.e = nil // the box may outlive this call (a caller's stack); the weights must not
	b.mu.Unlock()
	e.Close()
	debug.FreeOSMemory()
}
