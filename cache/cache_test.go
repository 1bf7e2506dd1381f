package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// node is a cache node serving on a real loopback listener.
type node struct {
	c    *Cache
	srv  *grpc.Server
	conn *grpc.ClientConn
	cli  confettipb.CacheClient
}

func startNode(t *testing.T, tc *testcluster.Cluster, name string, cfg Config) *node {
	t.Helper()
	st, clients := tc.NewStore(t)
	cfg.Logger = zaptest.NewLogger(t).Named(name)
	cfg.NodeName = name
	c, err := New(st, clients, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	c.Register(srv)
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{c: c, srv: srv, conn: conn, cli: confettipb.NewCacheClient(conn)}
	t.Cleanup(n.stop)
	testcluster.WaitFor(t, name+" ready", c.Ready)
	return n
}

func (n *node) stop() {
	n.conn.Close()
	n.srv.Stop()
	n.c.Close()
}

// subscriber applies a subscription the way a gateway must and records
// what it saw, so tests can check the contract.
type subscriber struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	state   map[string]string
	pending map[string]string // Reset chunks not yet applied
	token   string
	rev     int64 // highest revision applied
	resets  int
	events  []*confettipb.Event
	seen    map[string]bool // key@mod_revision of every PUT applied
	err     error
	msgs    int // messages received
	// items holds the ItemRef of every config item held.
	items        map[string]*confettipb.ItemRef
	pendingItems map[string]*confettipb.ItemRef
	stream       confettipb.Cache_SubscribeClient
}

// scopeStart and relKey speak the tests' notation of scopes and keys.
var (
	scopeStart = testcluster.ScopeStart
	relKey     = testcluster.RelativeKey
)

// lastToken is the token an Events message leaves its subscriber at.
func lastToken(ev *confettipb.Events) string {
	if len(ev.Txns) == 0 {
		return ""
	}
	return ev.Txns[len(ev.Txns)-1].Token
}

func subscribe(t *testing.T, n *node, tenant string, prefixes []string, token string) *subscriber {
	t.Helper()
	return subscribeAs(t, n, tenant, prefixes, token, nil)
}

// subscribeAs subscribes with an identity, for release resolution.
func subscribeAs(t *testing.T, n *node, tenant string, prefixes []string, token string, id *confettipb.Identity) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := n.cli.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := scopeStart(tenant, prefixes, id)
	start.Token = token
	if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	s := &subscriber{t: t, cancel: cancel, done: make(chan struct{}), state: map[string]string{}, seen: map[string]bool{}, token: token,
		items: map[string]*confettipb.ItemRef{}, stream: stream}
	go s.loop(stream)
	t.Cleanup(s.close)
	return s
}

func (s *subscriber) close() {
	s.cancel()
	<-s.done
}

func (s *subscriber) loop(stream confettipb.Cache_SubscribeClient) {
	defer close(s.done)
	for {
		m, err := stream.Recv()
		if err != nil {
			s.mu.Lock()
			if status.Code(err) != codes.Canceled && !errors.Is(err, io.EOF) {
				s.err = err
			}
			s.mu.Unlock()
			return
		}
		s.apply(m)
	}
}

func (s *subscriber) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
	}
}

func (s *subscriber) apply(m *confettipb.SubscribeResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs++
	switch r := m.Response.(type) {
	case *confettipb.SubscribeResponse_Reset_:
		if s.pending == nil {
			s.pending = map[string]string{}
		}
		if s.pendingItems == nil {
			s.pendingItems = map[string]*confettipb.ItemRef{}
		}
		for _, kv := range r.Reset_.Kvs {
			s.pending[relKey(kv)] = string(kv.Value)
			if kv.Item != nil {
				s.pendingItems[relKey(kv)] = kv.Item
			}
		}
		if r.Reset_.Last {
			s.items, s.pendingItems = s.pendingItems, nil
			s.state, s.pending = s.pending, nil
			s.token = r.Reset_.Token
			s.resets++
		}
	case *confettipb.SubscribeResponse_Events:
		for _, tx := range r.Events.Txns {
			if tx.Revision <= s.rev {
				s.fail("ordered: txn at revision %d after %d", tx.Revision, s.rev)
			}
			s.rev = tx.Revision
			for _, ev := range tx.Events {
				key := relKey(ev.Kv)
				id := fmt.Sprintf("%s@%d", key, ev.Kv.ModRevision)
				if ev.Type == confettipb.Event_PUT {
					if s.seen[id] {
						s.fail("unique: %s delivered twice", id)
					}
					s.seen[id] = true
					s.state[key] = string(ev.Kv.Value)
					if ev.Kv.Item != nil {
						s.items[key] = ev.Kv.Item
					}
				} else {
					delete(s.state, key)
					delete(s.items, key)
				}
				s.events = append(s.events, ev)
			}
		}
		s.token = lastToken(r.Events)
	case *confettipb.SubscribeResponse_Progress:
		s.token = r.Progress.Token
	}
}

func (s *subscriber) snapshot() (map[string]string, string, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := make(map[string]string, len(s.state))
	for k, v := range s.state {
		cp[k] = v
	}
	return cp, s.token, s.resets, s.err
}

// etcdState is the reference: what etcd holds for a tenant under the
// prefixes, keyed as subscribers see keys.
func etcdState(t *testing.T, cli *clientv3.Client, tenant string, prefixes []string) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), keys.Tenant(tenant), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		_, rel, _ := keys.Split(string(kv.Key))
		if keys.Match(prefixes, rel) {
			out[rel] = string(kv.Value)
		}
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// waitConverged waits until the subscriber holds exactly etcd's state.
func (s *subscriber) waitConverged(cli *clientv3.Client, tenant string, prefixes []string) {
	s.t.Helper()
	want := etcdState(s.t, cli, tenant, prefixes)
	testcluster.WaitFor(s.t, "subscriber to converge on etcd's state", func() bool {
		got, _, _, err := s.snapshot()
		if err != nil {
			s.t.Fatalf("subscription broke the contract: %v", err)
		}
		return equalMaps(got, want)
	})
}

type fixture struct {
	tc      *testcluster.Cluster
	tenants map[string]string // tenant -> shard
}

func newFixture(t *testing.T, shards int, tenants ...string) *fixture {
	t.Helper()
	tc := testcluster.New(t, shards)
	st, _ := tc.NewStore(t)
	f := &fixture{tc: tc, tenants: map[string]string{}}
	for _, name := range tenants {
		tn, _, err := st.CreateTenant(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		f.tenants[name] = tn.Shard
	}
	return f
}

func (f *fixture) shardOf(t *testing.T, tenant string) *clientv3.Client {
	return f.tc.ShardClient(t, f.tenants[tenant])
}

func put(t *testing.T, cli *clientv3.Client, tenant, rel, value string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), keys.Tenant(tenant)+rel, value)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func TestSubscribeResetEventsIsolationAndResume(t *testing.T) {
	// Both tenants on one shard, so that isolation is not just placement.
	f := newFixture(t, 1, "acme", "acme-2")
	acme, other := f.shardOf(t, "acme"), f.shardOf(t, "acme-2")
	ctx := context.Background()
	put(t, acme, "acme", "kv/routes/1", "r1")
	put(t, acme, "acme", "kv/routes/2", "r2")
	put(t, acme, "acme", "kv/upstreams/1", "u1")
	put(t, other, "acme-2", "kv/routes/1", "OTHER")

	n1 := startNode(t, f.tc, "node-1", Config{ProgressInterval: 100 * time.Millisecond})
	prefixes := []string{"kv/routes/"}
	sub := subscribe(t, n1, "acme", prefixes, "")
	sub.waitConverged(acme, "acme", prefixes)

	// Events: a put, a transaction of two puts, a delete; the other tenant
	// writes the same relative keys meanwhile.
	put(t, acme, "acme", "kv/routes/3", "r3")
	if _, err := acme.Txn(ctx).Then(
		clientv3.OpPut(keys.Tenant("acme")+"kv/routes/1", "r1b"),
		clientv3.OpPut(keys.Tenant("acme")+"kv/routes/4", "r4"),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	put(t, other, "acme-2", "kv/routes/9", "OTHER")
	if _, err := acme.Delete(ctx, keys.Tenant("acme")+"kv/routes/2"); err != nil {
		t.Fatal(err)
	}
	put(t, acme, "acme", "kv/upstreams/2", "not under the prefix")
	sub.waitConverged(acme, "acme", prefixes)
	state, token1, resets, _ := sub.snapshot()
	if resets != 1 {
		t.Fatalf("resets = %d, want 1", resets)
	}
	for k, v := range state {
		if v == "OTHER" || !strings.HasPrefix(k, "kv/routes/") {
			t.Fatalf("subscriber of acme under kv/routes/ holds %s=%s", k, v)
		}
	}
	sub.close()

	// Resume on a second node with the token: a replay of what came after
	// it, no Reset.
	n2 := startNode(t, f.tc, "node-2", Config{ProgressInterval: 100 * time.Millisecond})
	put(t, acme, "acme", "kv/routes/5", "r5")
	resumed := subscribe(t, n2, "acme", prefixes, token1)
	resumed.mu.Lock()
	resumed.state = state
	resumed.mu.Unlock()
	resumed.waitConverged(acme, "acme", prefixes)
	_, _, resets, _ = resumed.snapshot()
	if resets != 0 {
		t.Fatalf("resume on another node: %d resets, want a replay", resets)
	}
	resumed.mu.Lock()
	if len(resumed.events) != 1 || relKey(resumed.events[0].Kv) != "kv/routes/5" {
		t.Fatalf("replay after the token delivered %v, want only kv/routes/5", resumed.events)
	}
	resumed.mu.Unlock()
}

func TestTokenOfAnotherTenantOrForgedIsRejected(t *testing.T) {
	f := newFixture(t, 1, "acme", "globex")
	n := startNode(t, f.tc, "node", Config{})
	sub := subscribe(t, n, "acme", nil, "")
	testcluster.WaitFor(t, "reset", func() bool { _, tok, _, _ := sub.snapshot(); return tok != "" })
	_, token, _, _ := sub.snapshot()

	for _, tc := range []struct {
		name, tenant, token string
		items               []string
		wantMsg             string
	}{
		{name: "another tenant", tenant: "globex", token: token, wantMsg: "issued for tenant"},
		{name: "truncated", tenant: "acme", token: token[:len(token)/2], wantMsg: "invalid resume token"},
		{name: "forged", tenant: "acme", token: "AQRhY21lAnMxAQIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", wantMsg: "invalid resume token"},
		{name: "bad item", tenant: "acme", items: []string{"a/b"}, wantMsg: "not an item name"},
		{name: "unknown tenant", tenant: "nobody", wantMsg: "tenant not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := n.cli.Subscribe(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: tc.tenant, Token: tc.token, Items: tc.items}}})
			_, err = stream.Recv()
			want := codes.InvalidArgument
			if tc.name == "unknown tenant" {
				want = codes.NotFound
			}
			if status.Code(err) != want || !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Fatalf("got %v, want %v containing %q", err, want, tc.wantMsg)
			}
		})
	}
}

func TestRestartedNodeReplaysFromBackfilledHistory(t *testing.T) {
	f := newFixture(t, 1, "acme")
	acme := f.shardOf(t, "acme")
	n1 := startNode(t, f.tc, "node-1", Config{})
	sub := subscribe(t, n1, "acme", nil, "")
	for i := 0; i < 5; i++ {
		put(t, acme, "acme", fmt.Sprintf("kv/k%d", i), "v")
	}
	sub.waitConverged(acme, "acme", keys.Spaces)
	state, token, _, _ := sub.snapshot()
	sub.close()
	n1.stop()

	// Writes while no node runs, then a fresh node: its history is
	// backfilled from etcd, so the old token replays.
	for i := 0; i < 5; i++ {
		put(t, acme, "acme", fmt.Sprintf("kv/k%d", i), "v2")
	}
	n2 := startNode(t, f.tc, "node-2", Config{})
	resumed := subscribe(t, n2, "acme", nil, token)
	resumed.mu.Lock()
	resumed.state = state
	resumed.mu.Unlock()
	resumed.waitConverged(acme, "acme", keys.Spaces)
	_, _, resets, _ := resumed.snapshot()
	if resets != 0 {
		t.Fatalf("resets = %d, want a replay from backfilled history", resets)
	}
	resumed.mu.Lock()
	defer resumed.mu.Unlock()
	if len(resumed.events) != 5 {
		t.Fatalf("replayed %d events, want exactly the 5 after the token", len(resumed.events))
	}
}

func TestLargeResetComesInChunksAppliedAtOnce(t *testing.T) {
	f := newFixture(t, 1, "big")
	cli := f.shardOf(t, "big")
	value := strings.Repeat("x", 100<<10)
	for i := 0; i < 60; i++ { // 6 MiB, over gRPC's 4 MiB message limit
		put(t, cli, "big", fmt.Sprintf("kv/blob/%03d", i), value)
	}
	n := startNode(t, f.tc, "node", Config{})
	stream, err := n.cli.Subscribe(context.Background(), grpc.MaxCallRecvMsgSize(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "big"}}})
	got, chunks := 0, 0
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d chunks: %v", chunks, err)
		}
		r := m.GetReset_()
		if r == nil {
			t.Fatalf("got %T before the last Reset chunk", m.Response)
		}
		if r.Chunk != int32(chunks) {
			t.Fatalf("chunk %d numbered %d", chunks, r.Chunk)
		}
		chunks++
		got += len(r.Kvs)
		if r.Token != "" && !r.Last {
			t.Fatal("a token on a chunk that is not the last")
		}
		if r.Last {
			break
		}
	}
	if got != 60 || chunks < 6 {
		t.Fatalf("got %d keys in %d chunks, want 60 keys in at least 6 chunks", got, chunks)
	}
}

func TestIdleSubscriberKeepsUpThroughBookmarksAndCompaction(t *testing.T) {
	f := newFixture(t, 1, "idle", "busy")
	busy := f.shardOf(t, "busy")
	cfg := Config{ProgressInterval: 50 * time.Millisecond, HistoryMaxEvents: 20}
	n := startNode(t, f.tc, "node", cfg)
	sub := subscribe(t, n, "idle", nil, "")
	testcluster.WaitFor(t, "reset", func() bool { _, tok, _, _ := sub.snapshot(); return tok != "" })
	_, first, _, _ := sub.snapshot()
	// The other tenant writes far past the history bound, and etcd
	// compacts, while the idle tenant's subscriber only gets bookmarks.
	var last int64
	for i := 0; i < 100; i++ {
		last = put(t, busy, "busy", fmt.Sprintf("kv/x%d", i%5), fmt.Sprint(i))
	}
	if _, err := busy.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "a bookmark past the other tenant's writes", func() bool {
		_, tok, _, _ := sub.snapshot()
		rev, err := TokenRevision(tok)
		return err == nil && rev >= last
	})
	codec := n.c.codec()
	a, _ := codec.decode(first)
	_, tok, _, _ := sub.snapshot()
	b, err := codec.decode(tok)
	if err != nil || b.rev <= a.rev {
		t.Fatalf("bookmark revision %d after %d (%v)", b.rev, a.rev, err)
	}
	state, _, _, _ := sub.snapshot()
	if len(state) != 0 {
		t.Fatalf("idle tenant received %v", state)
	}
	// Reconnecting with the bookmark, on this node and on a new one,
	// replays (nothing); it does not reset.
	sub.close()
	n2 := startNode(t, f.tc, "node-2", cfg)
	for _, node := range []*node{n, n2} {
		resumed := subscribe(t, node, "idle", nil, tok)
		put(t, f.shardOf(t, "idle"), "idle", "kv/wake", node.c.cfg.NodeName)
		testcluster.WaitFor(t, "the resumed subscriber to see a new key", func() bool {
			s, _, _, _ := resumed.snapshot()
			return s["kv/wake"] == node.c.cfg.NodeName
		})
		if _, _, resets, _ := resumed.snapshot(); resets != 0 {
			t.Fatalf("resume on %s after compaction: %d resets, want a replay", node.c.cfg.NodeName, resets)
		}
		resumed.close()
	}
}

func TestLinearizableRangeSeesAcknowledgedWrite(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	n := startNode(t, f.tc, "node", Config{})
	for i := 0; i < 20; i++ {
		put(t, cli, "acme", "kv/counter", fmt.Sprint(i))
		resp, err := n.cli.Range(context.Background(), &confettipb.RangeRequest{Tenant: "acme", Key: "counter", Linearizable: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != fmt.Sprint(i) {
			t.Fatalf("read %v after writing %d", resp.Kvs, i)
		}
	}
	resp, err := n.cli.Range(context.Background(), &confettipb.RangeRequest{Tenant: "acme", Key: "", Prefix: true, CountOnly: true})
	if err != nil || resp.Count != 1 || len(resp.Kvs) != 0 {
		t.Fatalf("count only: %v, %v", resp, err)
	}
}

func TestResumeWithNothingNewIsAnsweredAtOnce(t *testing.T) {
	f := newFixture(t, 1, "acme")
	put(t, f.shardOf(t, "acme"), "acme", "kv/a", "1")
	// Bookmarks are far apart, so only the resume itself can answer.
	n := startNode(t, f.tc, "n1", Config{ProgressInterval: 10 * time.Second})
	s := subscribe(t, n, "acme", []string{"kv/"}, "")
	testcluster.WaitFor(t, "the Reset", func() bool { _, _, resets, _ := s.snapshot(); return resets == 1 })
	_, token, _, _ := s.snapshot()
	s.close()
	r := subscribe(t, n, "acme", []string{"kv/"}, token)
	testcluster.WaitFor(t, "an answer to the resume", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.msgs > 0
	})
	st, got, resets, err := r.snapshot()
	if err != nil || resets != 0 || len(st) != 0 || got == "" {
		t.Fatalf("resume answered with resets %d, state %v, token %q, err %v; want a bookmark", resets, st, got, err)
	}
	if rev, _ := TokenRevision(got); rev < mustRevision(t, token) {
		t.Fatalf("the bookmark went back from %d to %d", mustRevision(t, token), rev)
	}
}

func mustRevision(t *testing.T, token string) int64 {
	t.Helper()
	rev, err := TokenRevision(token)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}
