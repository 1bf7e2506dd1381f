package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// many is a SubscribeMany stream whose messages go to one validator
// stream per subscription; when gated, it reads nothing until release.
type many struct {
	t      *testing.T
	st     confettipb.Cache_SubscribeManyClient
	cancel context.CancelFunc
	gate   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	subs   map[int64]*watchcheck.Stream
	closed map[int64]*confettipb.Closed
	// msgs is every message received with its subscription ids.
	msgs []*confettipb.SubscribeResponse
	err  error
}

func openMany(t *testing.T, n *node, gated bool) *many {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := n.cli.SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := &many{t: t, st: st, cancel: cancel, gate: make(chan struct{}), done: make(chan struct{}),
		subs: map[int64]*watchcheck.Stream{}, closed: map[int64]*confettipb.Closed{}}
	if !gated {
		close(m.gate)
	}
	go m.loop()
	t.Cleanup(func() { cancel(); <-m.done })
	return m
}

func (m *many) loop() {
	defer close(m.done)
	<-m.gate
	for {
		resp, err := m.st.Recv()
		m.mu.Lock()
		if err != nil {
			m.err = err
			m.mu.Unlock()
			return
		}
		m.msgs = append(m.msgs, resp)
		for _, id := range resp.SubscriptionIds {
			if c := resp.GetClosed(); c != nil {
				m.closed[id] = c
				continue
			}
			if s := m.subs[id]; s != nil {
				s.Received(resp)
			} else if m.err == nil {
				m.err = fmt.Errorf("a message for subscription %d, which is not open", id)
			}
		}
		m.mu.Unlock()
	}
}

// start opens subscription id and returns its validator stream.
func (m *many) start(id int64, tenant string, prefixes []string, ident *confettipb.Identity) *watchcheck.Stream {
	m.t.Helper()
	start := scopeStart(tenant, prefixes, ident)
	s := watchcheck.NewStream(start)
	m.resume(id, s, start)
	return s
}

// resume opens subscription id from start's token, recording into s.
func (m *many) resume(id int64, s *watchcheck.Stream, start *confettipb.Start) {
	m.t.Helper()
	s.Subscribed(start.Token)
	m.mu.Lock()
	m.subs[id] = s
	delete(m.closed, id)
	m.mu.Unlock()
	m.send(&confettipb.SubscribeRequest{SubscriptionId: id, Request: &confettipb.SubscribeRequest_Start{Start: start}})
}

func (m *many) send(req *confettipb.SubscribeRequest) {
	m.t.Helper()
	if err := m.st.Send(req); err != nil {
		m.t.Fatal(err)
	}
}

// waitClosed waits for subscription id's Closed.
func (m *many) waitClosed(id int64) *confettipb.Closed {
	m.t.Helper()
	var c *confettipb.Closed
	testcluster.WaitFor(m.t, fmt.Sprintf("subscription %d closed", id), func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		c = m.closed[id]
		return c != nil
	})
	return c
}

func (m *many) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil && status.Code(m.err) != codes.Canceled {
		return m.err
	}
	return nil
}

// waitAt waits until every stream has a token at rev or later and checks
// each against the reference.
func waitAt(t *testing.T, ref *watchcheck.Reference, rev int64, streams ...*watchcheck.Stream) []watchcheck.Result {
	t.Helper()
	var out []watchcheck.Result
	for _, s := range streams {
		testcluster.WaitFor(t, fmt.Sprintf("subscription at revision %d", rev), func() bool {
			got, err := TokenRevision(s.LastToken())
			return err == nil && got >= rev
		})
		res, err := watchcheck.Check(ref, s, TokenRevision, watchcheck.Options{})
		if err != nil {
			t.Fatalf("subscription broke the contract: %v", err)
		}
		out = append(out, res)
	}
	return out
}

// waitReleased waits until no member of any group on the node is still
// finishing its catch-up, so that a group's next message reaches each of
// its streams as one frame.
func waitReleased(t *testing.T, n *node) {
	t.Helper()
	testcluster.WaitFor(t, "every member released", func() bool {
		n.c.mu.RLock()
		shards := make([]*shardState, 0, len(n.c.shards))
		for _, s := range n.c.shards {
			shards = append(shards, s)
		}
		n.c.mu.RUnlock()
		for _, s := range shards {
			s.mu.RLock()
			for _, g := range s.groups {
				g.mu.Lock()
				for _, ms := range g.bySink {
					for _, m := range ms {
						if m.holding {
							g.mu.Unlock()
							s.mu.RUnlock()
							return false
						}
					}
				}
				g.mu.Unlock()
			}
			s.mu.RUnlock()
		}
		return true
	})
}

func TestManySubscriptionsOverOneStreamKeepTheContractAndShareMessages(t *testing.T) {
	f := newFixture(t, 1, "acme", "beta")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	const item = "app.json"
	for v := int64(1); v <= 2; v++ {
		publishVersion(t, cli, "acme", item, v, content(item, v))
	}
	setRelease(t, cli, "acme", item, &confettipb.Release{Tenant: "acme", Item: item, Stable: 1})
	n := startNode(t, f.tc, "node", Config{})
	m := openMany(t, n, false)
	plain := subscribeChecked(t, n, "acme", nil, false)

	// 36 subscriptions: two tenants, three prefix sets, two zones.
	type spec struct {
		tenant   string
		prefixes []string
		zone     string
	}
	var specs []spec
	var streams []*watchcheck.Stream
	for i := 0; i < 36; i++ {
		sp := spec{tenant: []string{"acme", "beta"}[i%2], prefixes: [][]string{nil, {"kv/"}, {"cfg/"}}[i/2%3], zone: []string{"a", "b"}[i/6%2]}
		specs = append(specs, sp)
		id := &confettipb.Identity{InstanceId: fmt.Sprintf("gw-%d", i), Labels: map[string]string{"zone": sp.zone}}
		streams = append(streams, m.start(int64(i+1), sp.tenant, sp.prefixes, id))
	}
	var last int64
	for i := 0; i < 40; i++ {
		tenant := []string{"acme", "beta"}[i%2]
		last = put(t, cli, tenant, fmt.Sprintf("kv/k%d", i%5), fmt.Sprint(i))
		if i == 20 {
			// Zone a moves to version 2; zone b stays.
			last = setRelease(t, cli, "acme", item, &confettipb.Release{Tenant: "acme", Item: item, Stable: 1, Grays: []*confettipb.Gray{{
				Id: "g1", Version: 2, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: "zone=a"}},
			}}})
		}
	}
	waitAt(t, ref, last, append(streams, plain.stream)...)
	if err := m.failure(); err != nil {
		t.Fatal(err)
	}

	// Once every subscription is caught up, one write to acme's kv/ is one
	// message per group on the stream, naming all its subscriptions:
	// prefixes nil per zone (their item versions differ) and kv/ (no
	// items, one view for both zones).
	waitReleased(t, n)
	m.mu.Lock()
	before := len(m.msgs)
	m.mu.Unlock()
	rev := put(t, cli, "acme", "kv/once", "x")
	waitAt(t, ref, rev, streams...)
	m.mu.Lock()
	var events, named int
	for _, resp := range m.msgs[before:] {
		if ev := resp.GetEvents(); ev != nil && len(ev.Txns) > 0 && ev.Txns[0].Revision == rev {
			events++
			named += len(resp.SubscriptionIds)
		}
	}
	m.mu.Unlock()
	wantNamed := 0
	for _, sp := range specs {
		if sp.tenant == "acme" && len(sp.prefixes) != 1 || sp.tenant == "acme" && sp.prefixes[0] == "kv/" {
			wantNamed++
		}
	}
	if events != 3 || named != wantNamed {
		t.Fatalf("the write came as %d messages naming %d subscriptions, want 3 naming %d", events, named, wantNamed)
	}
}

func TestSubscribeManyEndsOneSubscriptionNotTheStream(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node", Config{MaxSubscriptionsPerConn: 3})
	m := openMany(t, n, false)
	good := m.start(1, "acme", []string{"kv/"}, nil)
	waitAt(t, ref, 0, good)

	for _, tc := range []struct {
		id    int64
		start *confettipb.Start
		code  codes.Code
		want  string
	}{
		{2, &confettipb.Start{Tenant: "nope"}, codes.NotFound, "nope"},
		{3, &confettipb.Start{Tenant: "acme", Token: "garbage"}, codes.InvalidArgument, "token"},
		{4, &confettipb.Start{Tenant: "acme", Items: []string{"bad/item"}}, codes.InvalidArgument, "bad/item"},
	} {
		m.mu.Lock()
		m.subs[tc.id] = watchcheck.NewStream(&confettipb.Start{Tenant: "acme"})
		m.mu.Unlock()
		m.send(&confettipb.SubscribeRequest{SubscriptionId: tc.id, Request: &confettipb.SubscribeRequest_Start{Start: tc.start}})
		c := m.waitClosed(tc.id)
		if codes.Code(c.Code) != tc.code || !strings.Contains(c.Message, tc.want) {
			t.Fatalf("subscription %d closed with %v %q, want %v mentioning %q", tc.id, codes.Code(c.Code), c.Message, tc.code, tc.want)
		}
	}
	// The limit of subscriptions per connection counts each of them.
	waitAt(t, ref, 0, m.start(5, "acme", nil, nil), m.start(6, "acme", nil, nil))
	m.start(7, "acme", nil, nil)
	if c := m.waitClosed(7); codes.Code(c.Code) != codes.ResourceExhausted {
		t.Fatalf("the fourth subscription on a connection of limit 3 closed with %v %q", codes.Code(c.Code), c.Message)
	}
	// Cancel ends one subscription with OK; the id can be used again.
	m.send(&confettipb.SubscribeRequest{SubscriptionId: 5, Request: &confettipb.SubscribeRequest_Cancel{Cancel: &confettipb.Cancel{}}})
	if c := m.waitClosed(5); codes.Code(c.Code) != codes.OK {
		t.Fatalf("a canceled subscription closed with %v %q", codes.Code(c.Code), c.Message)
	}
	again := m.start(5, "acme", []string{"kv/"}, nil)
	rev := put(t, cli, "acme", "kv/after", "x")
	waitAt(t, ref, rev, good, again)
	if err := m.failure(); err != nil {
		t.Fatal(err)
	}

	// A request without an id, or a start for an open id, ends the stream:
	// the client could not tell what an answer was for. The streams are
	// on a node without the connection limit above: on n the first start
	// would be refused by the limit, its id freed, and the second start
	// would open it anew instead of breaking the protocol.
	n2 := startNode(t, f.tc, "node-2", Config{})
	for _, req := range []*confettipb.SubscribeRequest{
		{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme"}}},
		{SubscriptionId: 1, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme"}}},
	} {
		bad := openMany(t, n2, false)
		if req.SubscriptionId != 0 {
			// The id is open once its Reset came.
			open := bad.start(1, "acme", nil, nil)
			testcluster.WaitFor(t, "subscription 1 open", func() bool { return open.LastToken() != "" })
		}
		bad.send(req)
		testcluster.WaitFor(t, "the stream to end", func() bool { return bad.failure() != nil })
		if err := bad.failure(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "subscription") {
			t.Fatalf("a request breaking the protocol ended the stream with %v", err)
		}
	}
}

func TestSlowManyStreamNeitherDelaysOthersNorMissesAnything(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node", Config{SubscriberQueue: 4, HistoryMaxEvents: 50})
	slow, fast := openMany(t, n, true), openMany(t, n, false)
	var slows, fasts []*watchcheck.Stream
	for i := int64(1); i <= 5; i++ {
		slows = append(slows, slow.start(i, "acme", nil, nil))
		fasts = append(fasts, fast.start(i, "acme", nil, nil))
	}
	last := writeLarge(t, cli)
	for _, res := range waitAt(t, ref, last, fasts...) {
		if res.Resets != 1 {
			t.Fatalf("a subscription of the fast stream was reset %d times", res.Resets)
		}
	}
	if testutil.ToFloat64(n.c.metrics.lagging) == 0 {
		t.Fatal("the slow stream's subscriptions were never marked lagging")
	}
	close(slow.gate)
	waitAt(t, ref, last, slows...)
	for _, m := range []*many{slow, fast} {
		if err := m.failure(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

func TestManySubscriptionsResumeOnAnotherNodeByReplay(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n1 := startNode(t, f.tc, "node-1", Config{})
	n2 := startNode(t, f.tc, "node-2", Config{})
	m1 := openMany(t, n1, false)
	prefixes := [][]string{nil, {"kv/"}, {"svc/"}}
	var streams []*watchcheck.Stream
	for i := 0; i < 30; i++ {
		streams = append(streams, m1.start(int64(i+1), "acme", prefixes[i%3], nil))
	}
	var last int64
	for i := 0; i < 20; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%4), fmt.Sprint(i))
	}
	waitAt(t, ref, last, streams...)
	n1.stop()
	testcluster.WaitFor(t, "node 1's stream to end", func() bool {
		select {
		case <-m1.done:
			return true
		default:
			return false
		}
	})
	// Written while no node serves them: node 2 replays it from history.
	for i := 0; i < 20; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%4), fmt.Sprint("after-", i))
	}
	m2 := openMany(t, n2, false)
	for i, s := range streams {
		start := scopeStart("acme", prefixes[i%3], nil)
		start.Token = s.LastToken()
		m2.resume(int64(i+1), s, start)
	}
	for _, res := range waitAt(t, ref, last, streams...) {
		if res.Resets != 1 || res.Resumes != 1 {
			t.Fatalf("a subscription had %d resets and %d resumes, want the first Reset and one replay", res.Resets, res.Resumes)
		}
	}
}
