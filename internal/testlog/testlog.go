// Package testlog holds what tests in several packages need to read a
// program's log while its goroutines write it.
package testlog

import (
	"strings"
	"sync"
)

// Buffer collects log output; safe for concurrent Write and String.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
