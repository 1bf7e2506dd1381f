package gateway

import "github.com/confetti-io/confetti/api/confettipb"

// Trace makes c report every stream start (with the token it resumes
// from) and every message it receives; call it before Start.
func Trace(c *Client, subscribed func(token string), received func(*confettipb.SubscribeResponse)) {
	c.onSubscribe, c.onMessage = subscribed, received
}

// SnapshotPath is the file c keeps its snapshot in.
func SnapshotPath(c *Client) string { return c.snapPath }
