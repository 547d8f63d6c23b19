package cpu

import "github.com/leafwatch/leafwatch/model"

// Close is a no-op: the CPU engine's buffers are garbage collected.
func (c *Classifier) Close() error { return nil }

var _ model.Engine = (*Classifier)(nil)
