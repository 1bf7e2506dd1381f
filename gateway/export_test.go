package gateway

import (
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Trace makes c report every stream start (with the token it resumes
// from) and every message it receives; call it before Start.
func Trace(c *Client, subscribed func(token string), received func(*confettipb.SubscribeResponse)) {
	c.onSubscribe, c.onMessage = subscribed, received
}

// SnapshotPath is the file c keeps its snapshot in.
func SnapshotPath(c *Client) string { return c.snapPath }

// SetJitter makes c draw every reconnect wait with f (full jitter draws
// uniformly in [0, w)); call it before Start.
func SetJitter(c *Client, f func(w time.Duration) time.Duration) { c.jitter = f }
