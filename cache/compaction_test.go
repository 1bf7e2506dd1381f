package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// reconnecting is a subscriber that drops its stream every few messages
// and resumes with its last token, alternating between nodes.
func reconnecting(ctx context.Context, t *testing.T, nodes []*node, tenant string, id *confettipb.Identity, s *watchcheck.Stream, every int) error {
	token := ""
	for round := 0; ctx.Err() == nil; round++ {
		n := nodes[round%len(nodes)]
		sctx, cancel := context.WithCancel(ctx)
		st, err := n.cli.Subscribe(sctx)
		if err != nil {
			cancel()
			return err
		}
		s.Subscribed(token)
		if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: tenant, Token: token, Identity: id}}}); err != nil {
			cancel()
			return err
		}
		for i := 0; i < every; i++ {
			m, err := st.Recv()
			if err != nil {
				cancel()
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("round %d: %w", round, err)
			}
			s.Received(m)
			if tok := s.LastToken(); tok != "" {
				token = tok
			}
		}
		cancel()
	}
	return nil
}

// TestCompactionUnderLoadNeverReachesSubscribers writes plain keys and
// changes a config item's release while etcd compacts, so relists carry
// both kinds of change; subscribers of several identities, connected and
// reconnecting, must hold the contract throughout.
func TestCompactionUnderLoadNeverReachesSubscribers(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ctx := context.Background()
	ref, err := watchcheck.StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	const item = "app.json"
	for v := int64(1); v <= 3; v++ {
		publishVersion(t, cli, "acme", item, v, content(item, v))
	}
	setRelease(t, cli, "acme", item, &confettipb.Release{Tenant: "acme", Item: item, Stable: 1})
	cfg := Config{ProgressInterval: 100 * time.Millisecond, HistoryMaxEvents: 200}
	nodes := []*node{startNode(t, f.tc, "node-1", cfg), startNode(t, f.tc, "node-2", cfg)}

	ids := []*confettipb.Identity{
		{InstanceId: "gw-0", Labels: map[string]string{"zone": "a"}},
		{InstanceId: "gw-1", Labels: map[string]string{"zone": "b"}},
		{InstanceId: "gw-2"},
		{InstanceId: "gw-3", Labels: map[string]string{"zone": "a"}},
	}
	var connected []*checked
	for i := 0; i < 3; i++ {
		connected = append(connected, subscribeCheckedAs(t, nodes[i%2], "acme", nil, false, ids[i]))
	}
	for _, c := range connected {
		c.opts.Merged = true
	}
	wctx, stop := context.WithCancel(ctx)
	var writers, others sync.WaitGroup
	var mu sync.Mutex
	var last int64
	var writeErr, compactErr, reconnectErr error
	writers.Add(1)
	go func() {
		defer writers.Done()
		rng := rand.New(rand.NewPCG(3, 3))
		for i := 0; i < 600; i++ {
			k := keys.Tenant("acme") + fmt.Sprintf("kv/k%02d", i%40)
			var rev int64
			if i%25 == 0 {
				// A release change: grays by label and by percentage
				// that select some of the subscribers.
				rel := &confettipb.Release{Tenant: "acme", Item: item, Stable: 1 + int64(rng.IntN(3))}
				if rng.IntN(2) == 0 {
					rel.Grays = append(rel.Grays, &confettipb.Gray{Id: "zone", Version: 1 + int64(rng.IntN(3)), Priority: 2, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: "zone=a"}}})
				}
				if rng.IntN(2) == 0 {
					rel.Grays = append(rel.Grays, &confettipb.Gray{Id: "pct", Version: 1 + int64(rng.IntN(3)), Priority: 1, Rule: &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: int32(rng.IntN(10001))}}})
				}
				b, _ := proto.Marshal(rel)
				resp, err := cli.Put(wctx, keys.ItemRelease("acme", item), string(b))
				if err != nil {
					writeErr = err
					return
				}
				rev = resp.Header.Revision
			} else if i%9 == 0 {
				resp, err := cli.Delete(wctx, k)
				if err != nil {
					writeErr = err
					return
				}
				rev = resp.Header.Revision
			} else {
				resp, err := cli.Put(wctx, k, fmt.Sprint(i))
				if err != nil {
					writeErr = err
					return
				}
				rev = resp.Header.Revision
			}
			mu.Lock()
			last = rev
			mu.Unlock()
		}
	}()
	others.Add(2)
	go func() { // compactor: close to current, every 100-200 ms
		defer others.Done()
		rng := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-time.After(time.Duration(100+rng.IntN(100)) * time.Millisecond):
			case <-wctx.Done():
				return
			}
			mu.Lock()
			cur := last
			mu.Unlock()
			if rev := cur - int64(rng.IntN(20)); rev > 1 {
				if _, err := cli.Compact(wctx, rev); err != nil && wctx.Err() == nil && !strings.Contains(err.Error(), "compacted") {
					compactErr = err
					return
				}
			}
		}
	}()
	rs := watchcheck.NewStream(&confettipb.Start{Tenant: "acme", Identity: ids[3]})
	go func() {
		defer others.Done()
		reconnectErr = reconnecting(wctx, t, nodes, "acme", ids[3], rs, 7)
	}()
	writers.Wait()
	stop()
	others.Wait()
	if writeErr != nil || compactErr != nil {
		t.Fatalf("writer: %v, compactor: %v", writeErr, compactErr)
	}
	if reconnectErr != nil {
		t.Fatalf("a reconnecting subscriber saw an error: %v", reconnectErr)
	}
	mu.Lock()
	final := last
	mu.Unlock()
	for _, c := range connected {
		c.waitRevision(t, ref, final)
	}
	res, err := watchcheck.Check(ref, rs, TokenRevision, watchcheck.Options{Merged: true})
	if err != nil {
		t.Fatalf("reconnecting subscriber: %v", err)
	}
	if res.Resumes == 0 {
		t.Fatal("the reconnecting subscriber never resumed")
	}
}
