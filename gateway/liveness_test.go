package gateway_test

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// A cache node that freezes (SIGSTOP, a cut link) never closes its
// streams: the client notices the missing bookmarks, its lag grows while
// it waits, and after three bookmark intervals it resumes on the other
// node. Transport keepalives are off here, so nothing else would notice.
func TestFrozenNodeIsLeftAfterThreeSilentBookmarkIntervals(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	interval := time.Second
	n1 := sys.StartCache(t, "cache-1", cache.Config{ProgressInterval: interval})
	n2 := sys.StartCache(t, "cache-2", cache.Config{ProgressInterval: interval})
	f1, f2 := testcluster.NewFreezer(t, n1.Addr), testcluster.NewFreezer(t, n2.Addr)
	freezers := map[string]*testcluster.Freezer{f1.Addr(): f1, f2.Addr(): f2}
	sys.Put(t, "kv/k", "v1")
	c := newClient(t, sys, gateway.Config{
		Endpoints:   []string{f1.Addr(), f2.Addr()},
		DialOptions: []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Hour, Timeout: time.Hour})},
	})
	start(t, c)
	testcluster.WaitFor(t, "the first sync", func() bool { return c.Stats().Resets == 1 })
	frozen := c.Stats().Endpoint
	freezers[frozen].Freeze()
	defer freezers[frozen].Unfreeze()

	// Sampled while the client waits on the frozen node: the lag grows
	// beyond zero once a bookmark is overdue.
	var lagged bool
	testcluster.WaitFor(t, "the client to leave the frozen node", func() bool {
		st := c.Stats()
		lagged = lagged || st.Endpoint == frozen && st.Lag > 0
		return st.Endpoint != "" && st.Endpoint != frozen
	})
	if !lagged {
		t.Fatal("the client's lag stayed zero while the node it streamed from was silent")
	}
	sys.Put(t, "kv/k", "v2")
	testcluster.WaitFor(t, "the write after the freeze", func() bool {
		kv, _ := c.Get("k")
		return string(kv.GetValue()) == "v2"
	})
	if st := c.Stats(); st.Resets != 1 || st.Resumes < 1 {
		t.Fatalf("after the failover: %d resets, %d resumes; want one reset, then a replay", st.Resets, st.Resumes)
	}
}

// Clients that waited out an outage of every cache node come back once a
// node is ready, whatever backoff their failed attempts built up: a
// connection that becomes ready ends the wait. The jitter here draws
// nothing for the first short windows and the whole window once it
// reaches a second: the client's failed attempts put it in a long wait,
// the worst a client can be dealt.
func TestClientsComeBackWhenANodeIsReadyNotWhenTheirBackoffEnds(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	n := sys.StartCache(t, "cache-1", cache.Config{})
	sys.Put(t, "kv/k", "v1")
	c := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, BackoffInitial: 100 * time.Millisecond, BackoffMax: 24 * time.Hour})
	gateway.SetJitter(c, func(w time.Duration) time.Duration {
		if w >= time.Second {
			return time.Hour
		}
		return 0
	})
	start(t, c)
	testcluster.WaitFor(t, "the first sync", func() bool { return c.Stats().Resets == 1 })

	n.Stop()
	// Four refused attempts make the next window 1.6 s: an hour's wait.
	testcluster.WaitFor(t, "the client's attempts against the stopped node", func() bool { return c.Stats().Reconnects >= 4 })
	sys.Put(t, "kv/k", "v2")
	n.Start()
	testcluster.WaitFor(t, "the client back on the restarted node", func() bool {
		kv, _ := c.Get("k")
		return string(kv.GetValue()) == "v2"
	})
}
