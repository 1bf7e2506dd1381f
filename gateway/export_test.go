package gateway

import (
	"time"
)

// SnapshotPath is the file c keeps its snapshot in.
func SnapshotPath(c *Client) string { return c.snapPath }

// SetJitter makes c draw every reconnect wait with f (full jitter draws
// uniformly in [0, w)); call it before Start.
func SetJitter(c *Client, f func(w time.Duration) time.Duration) { c.jitter = f }
