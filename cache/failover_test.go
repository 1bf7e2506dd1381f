package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// failoverSubscriber follows one subscription across a node failure: on
// any stream error it resumes on the next node with its last token.
type failoverSubscriber struct {
	stream *watchcheck.Stream
	resets atomic.Int32
}

func (f *failoverSubscriber) run(ctx context.Context, nodes []*node, tenant string) {
	token := ""
	for i := 0; ctx.Err() == nil; i++ {
		n := nodes[i%len(nodes)]
		st, err := n.cli.Subscribe(ctx)
		if err != nil {
			continue
		}
		f.stream.Subscribed(token)
		if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: tenant, Token: token}}}); err != nil {
			continue
		}
		for {
			m, err := st.Recv()
			if err != nil {
				break
			}
			f.stream.Received(m)
			if r := m.GetReset_(); r != nil && r.Last {
				f.resets.Add(1)
			}
			if tok := f.stream.LastToken(); tok != "" {
				token = tok
			}
		}
	}
}

func TestThousandSubscribersFailOverByReplay(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ctx := context.Background()
	ref, err := watchcheck.StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	n1 := startNode(t, f.tc, "node-1", Config{ProgressInterval: 200 * time.Millisecond})
	n2 := startNode(t, f.tc, "node-2", Config{ProgressInterval: 200 * time.Millisecond})
	put(t, cli, "acme", "kv/seed", "0")

	const count = 1000
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	subs := make([]*failoverSubscriber, count)
	for i := range subs {
		subs[i] = &failoverSubscriber{stream: watchcheck.NewStream(&confettipb.Start{Tenant: "acme"})}
		wg.Add(1)
		go func() {
			defer wg.Done()
			subs[i].run(sctx, []*node{n1, n2}, "acme")
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	waitAll := func(what string, rev int64) {
		t.Helper()
		testcluster.WaitFor(t, what, func() bool {
			for _, s := range subs {
				got, err := TokenRevision(s.stream.LastToken())
				if err != nil || got < rev {
					return false
				}
			}
			return true
		})
	}
	var rev int64
	for i := 0; i < 10; i++ {
		rev = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i), "before")
	}
	waitAll("every subscriber on node 1", rev)

	// Node 1 dies; writes go on; every subscriber resumes on node 2.
	n1.stop()
	for i := 0; i < 10; i++ {
		rev = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i), "after")
	}
	waitAll("every subscriber resumed on node 2", rev)

	for i, s := range subs {
		if got := s.resets.Load(); got != 1 {
			t.Fatalf("subscriber %d had %d resets; want only the first (resume must replay)", i, got)
		}
	}
	for i := 0; i < count; i += 50 {
		res, err := watchcheck.Check(ref, subs[i].stream, TokenRevision, watchcheck.Options{})
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		if res.Resumes != 1 {
			t.Fatalf("subscriber %d resumed %d times, want 1", i, res.Resumes)
		}
	}
}
