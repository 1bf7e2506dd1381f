package gateway_test

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// TestThousandClientsSpreadTheirReconnectsOverTheBackoffWindow restarts
// the cache node a thousand clients stream from and records when each
// one opened its new stream. The clients share one
// connection (Config.Dial), as a thousand processes would not share, so
// that the test stays within the race detector's goroutine limit; each
// client still decides alone when to resubscribe.
func TestThousandClientsSpreadTheirReconnectsOverTheBackoffWindow(t *testing.T) {
	const (
		count  = 1000
		window = 2 * time.Second
	)
	sys := gatewaytest.Start(t, "acme")
	n := sys.StartCache(t, "cache-1", cache.Config{})
	sys.Put(t, "kv/k", "v")
	conn, err := grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	clients := make([]*gateway.Client, count)
	for i := range clients {
		clients[i] = newClient(t, sys, gateway.Config{
			Endpoints:      []string{n.Addr},
			BackoffInitial: window,
			BackoffMax:     4 * window,
			Dial:           func(string) (grpc.ClientConnInterface, error) { return conn, nil },
			Logger:         zap.NewNop(),
		})
		start(t, clients[i])
	}
	testcluster.WaitFor(t, "every client synced", func() bool {
		for _, c := range clients {
			if c.Stats().Resets != 1 {
				return false
			}
		}
		return true
	})

	restart := time.Now()
	n.Stop()
	n.Start()
	restarted := time.Since(restart)
	testcluster.WaitFor(t, "every client reconnected", func() bool {
		for _, c := range clients {
			if !c.Stats().SubscribedAt.After(restart) {
				return false
			}
		}
		return true
	})
	// A write after the restart reaches every client by replay.
	sys.Put(t, "kv/k", "after")
	testcluster.WaitFor(t, "every client to receive the write", func() bool {
		for _, c := range clients {
			if kv, _ := c.Get("k"); string(kv.GetValue()) != "after" {
				return false
			}
		}
		return true
	})

	offsets := make([]time.Duration, count)
	per100ms := map[time.Duration]int{}
	for i, c := range clients {
		st := c.Stats()
		offsets[i] = st.SubscribedAt.Sub(restart)
		per100ms[offsets[i].Truncate(100*time.Millisecond)]++
		if st.Resets != 1 || st.Resumes != 1 {
			t.Fatalf("client %d: %d resets, %d resumes; want to resume by replay after the restart", i, st.Resets, st.Resumes)
		}
	}
	slices.Sort(offsets)
	pct := func(p int) time.Duration { return offsets[(count-1)*p/100] }
	busiest := 0
	for _, k := range per100ms {
		busiest = max(busiest, k)
	}
	t.Logf("node down and back in %s; reconnects after the restart: min %s p10 %s p50 %s p90 %s max %s; spread p10-p90 %s over a first window of %s; busiest 100 ms held %d of %d",
		restarted.Round(time.Millisecond), pct(0).Round(time.Millisecond), pct(10).Round(time.Millisecond), pct(50).Round(time.Millisecond),
		pct(90).Round(time.Millisecond), pct(100).Round(time.Millisecond), (pct(90) - pct(10)).Round(time.Millisecond), window, busiest, count)
	// Uniform jitter spreads p10..p90 over 80% of the window; a quarter
	// leaves room for any scheduling delay, and a herd would be near zero.
	if spread := pct(90) - pct(10); spread < window/4 {
		t.Fatalf("reconnects bunched: p10-p90 spread %s, want at least %s of a %s window", spread, window/4, window)
	}
}
