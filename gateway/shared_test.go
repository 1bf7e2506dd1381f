package gateway_test

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// TestClientsSharingStreamsUseOneStreamPerNodeAndFailOverAlone runs
// clients of two views over shared SubscribeMany streams: they open one
// stream per node between them, never a Subscribe stream; when a node
// crashes, each of its subscriptions resumes on the other node from its
// own token, by replay; and a client that closes leaves the others on the
// stream.
func TestClientsSharingStreamsUseOneStreamPerNodeAndFailOverAlone(t *testing.T) {
	const count = 8
	sys := gatewaytest.Start(t, "acme")
	n1 := sys.StartCache(t, "cache-1", cache.Config{})
	n2 := sys.StartCache(t, "cache-2", cache.Config{})
	sys.Put(t, "kv/a/1", "a1")
	sys.Put(t, "kv/b/1", "b1")

	var many, single atomic.Int64
	counted := grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		switch method {
		case "/confetti.v1.Cache/SubscribeMany":
			many.Add(1)
		case "/confetti.v1.Cache/Subscribe":
			single.Add(1)
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
	streams := gateway.NewStreams()
	// Registered first, so it runs after every client's Close.
	t.Cleanup(streams.Close)
	clients := make([]*gateway.Client, count)
	for i := range clients {
		clients[i] = newClient(t, sys, gateway.Config{
			Endpoints:   []string{n1.Addr, n2.Addr},
			Prefixes:    []string{fmt.Sprintf("%c/", 'a'+i%2)},
			Streams:     streams,
			DialOptions: []grpc.DialOption{counted},
		})
		start(t, clients[i])
	}
	holds := func(what string) {
		t.Helper()
		want := [2]map[string]string{etcdValues(t, sys, "kv/a/"), etcdValues(t, sys, "kv/b/")}
		testcluster.WaitFor(t, what, func() bool {
			for i, c := range clients {
				if c != nil && !maps.Equal(values(c.View()), want[i%2]) {
					return false
				}
			}
			return true
		})
	}
	holds("every client synced")
	if m, s := many.Load(), single.Load(); m > 2 || s != 0 {
		t.Fatalf("%d clients opened %d SubscribeMany and %d Subscribe streams; want at most one SubscribeMany per node", count, m, s)
	}

	n1.Stop()
	for i := range 5 {
		sys.Put(t, fmt.Sprintf("kv/a/%d", i), fmt.Sprint("after-", i))
		sys.Put(t, fmt.Sprintf("kv/b/%d", i), fmt.Sprint("after-", i))
	}
	holds("every client caught up on the node that is left")
	for i, c := range clients {
		if st := c.Stats(); st.Resets != 1 {
			t.Fatalf("client %d: %d resets; want the first alone (the failover replays)", i, st.Resets)
		}
	}
	if m := many.Load(); m > 3 {
		t.Fatalf("%d SubscribeMany streams after the failover; want one more at most", m)
	}

	clients[0].Close()
	clients[0] = nil
	sys.Put(t, "kv/a/9", "after-close")
	sys.Put(t, "kv/b/9", "after-close")
	holds("the other clients go on after one closed")
}
