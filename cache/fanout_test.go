package cache

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// checked is a subscription recorded for the contract validator.
type checked struct {
	stream *watchcheck.Stream
	cancel context.CancelFunc
	done   chan error
	gate   chan struct{} // closed when the client may read
	opts   watchcheck.Options
}

// subscribeChecked opens a subscription whose messages go to a validator
// stream; when gated, the client reads nothing until release is called.
func subscribeChecked(t *testing.T, n *node, tenant string, prefixes []string, gated bool) *checked {
	t.Helper()
	return subscribeCheckedAs(t, n, tenant, prefixes, gated, nil)
}

// subscribeCheckedAs is subscribeChecked with an identity.
func subscribeCheckedAs(t *testing.T, n *node, tenant string, prefixes []string, gated bool, id *confettipb.Identity) *checked {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := n.cli.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := scopeStart(tenant, prefixes, id)
	if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	c := &checked{stream: watchcheck.NewStream(start), cancel: cancel, done: make(chan error, 1), gate: make(chan struct{})}
	if !gated {
		close(c.gate)
	}
	c.stream.Subscribed("")
	go func() {
		<-c.gate
		for {
			m, err := st.Recv()
			if err != nil {
				c.done <- err
				return
			}
			c.stream.Received(m)
		}
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func (c *checked) release() { close(c.gate) }

// check validates the stream so far against the reference.
func (c *checked) check(t *testing.T, ref *watchcheck.Reference) watchcheck.Result {
	t.Helper()
	res, err := watchcheck.Check(ref, c.stream, TokenRevision, c.opts)
	if err != nil {
		t.Fatalf("subscription broke the contract: %v", err)
	}
	return res
}

func (c *checked) waitRevision(t *testing.T, ref *watchcheck.Reference, rev int64) watchcheck.Result {
	t.Helper()
	testcluster.WaitFor(t, fmt.Sprintf("subscriber at revision %d", rev), func() bool {
		got, err := TokenRevision(c.stream.LastToken())
		return err == nil && got >= rev
	})
	return c.check(t, ref)
}

// startReference starts a reference watcher of cli's etcd, stopped when
// the test ends.
func startReference(t *testing.T, cli *clientv3.Client) *watchcheck.Reference {
	t.Helper()
	ref, err := watchcheck.StartReference(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ref.Stop)
	return ref
}

// writeLarge puts 240 values of 64 KiB from four writers, far more than a
// client's flow-control window and a small queue hold, and returns the
// last revision written.
func writeLarge(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	value := strings.Repeat("v", 64<<10)
	var wg sync.WaitGroup
	var last int64
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				resp, err := cli.Put(context.Background(), keys.Tenant("acme")+fmt.Sprintf("kv/w%d/%d", w, i%10), fmt.Sprintf("%d:%s", i, value))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				last = max(last, resp.Header.Revision)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return last
}

func TestSubscribersOfOneViewShareAGroup(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node", Config{})
	var subs []*checked
	for i := 0; i < 20; i++ {
		subs = append(subs, subscribeChecked(t, n, "acme", []string{"kv/"}, false))
	}
	other := subscribeChecked(t, n, "acme", []string{"svc/"}, false)
	for _, s := range append(subs, other) {
		testcluster.WaitFor(t, "the reset", func() bool { return s.stream.LastToken() != "" })
	}
	var last int64
	for i := 0; i < 30; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%7), fmt.Sprint(i))
	}
	for _, s := range subs {
		res := s.waitRevision(t, ref, last)
		if res.Resets != 1 || res.Events != 30 {
			t.Fatalf("subscriber got %d resets and %d events, want 1 and 30", res.Resets, res.Events)
		}
	}
	other.waitRevision(t, ref, last)
	if got := testutil.ToFloat64(n.c.metrics.groups); got != 2 {
		t.Fatalf("groups = %v, want 2 (one per prefix set)", got)
	}
}

func TestSlowSubscriberNeitherDelaysOthersNorMissesAnything(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node", Config{SubscriberQueue: 4, HistoryMaxEvents: 50})
	slow := subscribeChecked(t, n, "acme", nil, true)
	fast := subscribeChecked(t, n, "acme", nil, false)
	last := writeLarge(t, cli)
	// The fast subscriber has everything while the slow one reads nothing.
	res := fast.waitRevision(t, ref, last)
	if res.Resets != 1 {
		t.Fatalf("the fast subscriber was reset %d times", res.Resets)
	}
	if testutil.ToFloat64(n.c.metrics.lagging) == 0 {
		t.Fatal("the slow subscriber was never marked lagging")
	}
	// Once it reads, the slow one catches up to exactly etcd's state.
	slow.release()
	slow.waitRevision(t, ref, last)
}

func TestReconnectStormEncodesEachResetOnce(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	for i := 0; i < 50; i++ {
		put(t, cli, "acme", fmt.Sprintf("kv/k%d", i), strings.Repeat("x", 1000))
	}
	n := startNode(t, f.tc, "node", Config{})
	var subs []*checked
	for i := 0; i < 200; i++ {
		subs = append(subs, subscribeChecked(t, n, "acme", []string{"kv/"}, false))
	}
	for _, s := range subs {
		testcluster.WaitFor(t, "the reset", func() bool { return s.stream.LastToken() != "" })
	}
	if got := testutil.ToFloat64(n.c.metrics.resetEncodes); got != 1 {
		t.Fatalf("200 subscribers of one view at one revision encoded %v Resets, want 1", got)
	}
}

func TestSubscriptionLimits(t *testing.T) {
	f := newFixture(t, 1, "acme", "other")
	n := startNode(t, f.tc, "node", Config{MaxSubscriptionsPerTenant: 2, MaxSubscriptionsPerConn: 3})
	a := subscribe(t, n, "acme", nil, "")
	b := subscribe(t, n, "acme", nil, "")
	for _, s := range []*subscriber{a, b} {
		testcluster.WaitFor(t, "the reset", func() bool { _, tok, _, _ := s.snapshot(); return tok != "" })
	}
	for _, tc := range []struct{ tenant, want string }{
		{tenant: "acme", want: `tenant "acme" has 2 subscriptions`},
		{tenant: "other", want: ""},
		{tenant: "other", want: "carries 3 subscriptions"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := n.cli.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: tc.tenant}}})
		_, err = st.Recv()
		if tc.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", tc.tenant, err)
			}
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: got %v, want ResourceExhausted with %q", tc.tenant, err, tc.want)
		}
	}
	// Closing a subscription frees its place.
	a.close()
	testcluster.WaitFor(t, "a freed place", func() bool {
		n.c.mu.RLock()
		defer n.c.mu.RUnlock()
		return len(n.c.subs["acme"]) == 1
	})
}

// A release change published after a batch was taken marks the members
// it moves before the batch is queued; they must still get the batch,
// since their move comes after it.
func TestMemberMovedByALaterTransactionStillGetsTheBatchBeforeIt(t *testing.T) {
	g := &group{
		tenant:   "acme",
		tokenFor: func(rev int64, _ view) string { return fmt.Sprint(rev) },
		metrics:  newMetrics(prometheus.NewRegistry()),
		bySink:   map[*sink][]*member{},
		wake:     make(chan struct{}, 1),
	}
	k := newSink(nil, true, 8)
	stay, moved := newMember(&subscription{sink: k, sid: 1}), newMember(&subscription{sink: k, sid: 2})
	for _, m := range []*member{stay, moved} {
		g.join(m, 10)
		g.release(m)
	}
	g.publish(pendingTxn{txn: &confettipb.Txn{Revision: 11, Events: []*confettipb.Event{{Kv: &confettipb.KeyValue{Key: "kv/a"}}}}})
	// The shard partitions the group for revision 12 (under its lock)
	// while the group's goroutine is about to queue the batch of 11.
	g.mu.Lock()
	g.pending, moved.left = nil, 12
	g.mu.Unlock()
	g.dispatchShared([]pendingTxn{{txn: &confettipb.Txn{Revision: 11, Events: []*confettipb.Event{{Kv: &confettipb.KeyValue{Key: "kv/a"}}}}}})
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.q) != 1 || len(k.q[0].subs) != 2 {
		t.Fatalf("queued %d frames (%+v), want one naming both subscriptions", len(k.q), k.q)
	}
	for _, m := range []*member{stay, moved} {
		if m.rev != 11 {
			t.Fatalf("subscription %d is at revision %d after the batch, want 11", m.sub.sid, m.rev)
		}
	}
}

// The hand-written Events message is byte for byte what proto.Marshal
// writes, for transactions with and without tokens, revisions and events.
func TestAppendEventsMessageMatchesProtoMarshal(t *testing.T) {
	ev := func(key, value string, rev int64) *confettipb.Event {
		return &confettipb.Event{Kv: &confettipb.KeyValue{Key: key, Value: []byte(value), ModRevision: rev, CreateRevision: 1, Version: rev, Lease: 7}}
	}
	del := &confettipb.Event{Type: confettipb.Event_DELETE, Kv: &confettipb.KeyValue{Key: "gone", ModRevision: 9}}
	for _, txns := range [][]*confettipb.Txn{
		{{Revision: 5, Token: "tok-5", Events: []*confettipb.Event{ev("a", "1", 5)}}},
		{{Revision: 6, Events: []*confettipb.Event{ev("a", "2", 6), ev("b", strings.Repeat("x", 300), 6), del}, Token: strings.Repeat("t", 200)}, {Revision: 1 << 40, Token: "big"}},
		{{Events: []*confettipb.Event{del}}},
	} {
		want, err := proto.Marshal(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: txns}}})
		if err != nil {
			t.Fatal(err)
		}
		encs := make([][][]byte, len(txns))
		for i, txn := range txns {
			for _, e := range txn.Events {
				b, err := proto.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				encs[i] = append(encs[i], b)
			}
		}
		got, ok := appendEventsMessage(nil, txns, encs)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("appendEventsMessage = %x (%v), proto.Marshal = %x", got, ok, want)
		}
	}
	if _, ok := appendEventsMessage(nil, []*confettipb.Txn{{Events: []*confettipb.Event{del}}}, [][][]byte{nil}); ok {
		t.Fatal("a transaction without its events' encodings was encoded")
	}
}
