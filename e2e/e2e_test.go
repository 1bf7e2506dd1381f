package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// serve runs a gRPC server on a loopback port chosen by the kernel and
// returns a connection to it.
func serve(t *testing.T, register func(*grpc.Server)) (*grpc.ClientConn, func()) {
	t.Helper()
	conn, _, stop := serveAt(t, register)
	return conn, stop
}

// serveAt is serve that also returns the server's address. The server
// permits the keepalive pings of clients every 5 s, as production servers
// (internal/serve) do and the gateway SDK needs.
func serveAt(t *testing.T, register func(*grpc.Server)) (*grpc.ClientConn, string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	register(srv)
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		conn.Close()
		srv.Stop()
	}
	t.Cleanup(stop)
	return conn, lis.Addr().String(), stop
}

type system struct {
	tc     *testcluster.Cluster
	proxy  *grpc.ClientConn
	kv     confettipb.KVClient
	ten    confettipb.TenantsClient
	shards confettipb.ShardsClient
}

func startSystem(t *testing.T, shards int) *system {
	t.Helper()
	tc := testcluster.New(t, shards)
	return startProxy(t, tc)
}

// startProxy starts a shard proxy with a meta store of its own over tc, as
// a separate proxy process would run.
func startProxy(t *testing.T, tc *testcluster.Cluster) *system {
	t.Helper()
	st, clients := tc.NewStore(t)
	p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zaptest.NewLogger(t).Named("proxy"), MaxValueBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	conn, _ := serve(t, p.Register)
	return &system{tc: tc, proxy: conn, kv: confettipb.NewKVClient(conn), ten: confettipb.NewTenantsClient(conn), shards: confettipb.NewShardsClient(conn)}
}

// startCache starts a cache node; stop ends it like a crash of the node
// process would for its clients.
func (s *system) startCache(t *testing.T, name string) (confettipb.CacheClient, func()) {
	t.Helper()
	cli, _, stop := s.startCacheAt(t, name)
	return cli, stop
}

// startCacheAt is startCache that also returns the node's address, which
// the node advertises in meta as `confetti cache` does, so that release
// status counts the gateways subscribed to it.
func (s *system) startCacheAt(t *testing.T, name string) (confettipb.CacheClient, string, func()) {
	t.Helper()
	st, clients := s.tc.NewStore(t)
	c, err := cache.New(st, clients, cache.Config{Logger: zaptest.NewLogger(t).Named(name), NodeName: name, ProgressInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	conn, addr, stopServer := serveAt(t, c.Register)
	c.Advertise(addr)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stopServer()
			c.Close()
		})
	}
	t.Cleanup(stop)
	testcluster.WaitFor(t, name+" ready", c.Ready)
	return confettipb.NewCacheClient(conn), addr, stop
}

// watcher is a subscriber as a gateway runs it: it applies Resets and
// Events and records every event and token it received.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	state  map[string]string
	events []string // "key=value@rev" or "key DELETED@rev"
	revs   []int64
	tokens []string
	resets int
	err    error
}

// withToken sets s's resume token.
func withToken(s *confettipb.Start, token string) *confettipb.Start {
	s.Token = token
	return s
}

func watch(t *testing.T, c confettipb.CacheClient, tenant string, prefixes []string, token string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: withToken(testcluster.ScopeStart(tenant, prefixes, nil), token)}}); err != nil {
		t.Fatal(err)
	}
	w := &watcher{cancel: cancel, done: make(chan struct{}), state: map[string]string{}}
	go func() {
		defer close(w.done)
		var pending map[string]string
		for {
			m, err := stream.Recv()
			if err != nil {
				w.mu.Lock()
				if status.Code(err) != codes.Canceled {
					w.err = err
				}
				w.mu.Unlock()
				return
			}
			w.mu.Lock()
			switch r := m.Response.(type) {
			case *confettipb.SubscribeResponse_Reset_:
				if pending == nil {
					pending = map[string]string{}
				}
				for _, kv := range r.Reset_.Kvs {
					pending[testcluster.RelativeKey(kv)] = string(kv.Value)
				}
				if r.Reset_.Last {
					w.state, pending = pending, nil
					w.resets++
					w.tokens = append(w.tokens, r.Reset_.Token)
				}
			case *confettipb.SubscribeResponse_Events:
				for _, tx := range r.Events.Txns {
					w.revs = append(w.revs, tx.Revision)
					for _, ev := range tx.Events {
						key := testcluster.RelativeKey(ev.Kv)
						if ev.Type == confettipb.Event_DELETE {
							delete(w.state, key)
							w.events = append(w.events, fmt.Sprintf("%s DELETED@%d", key, tx.Revision))
						} else {
							w.state[key] = string(ev.Kv.Value)
							w.events = append(w.events, fmt.Sprintf("%s=%s@%d", key, ev.Kv.Value, tx.Revision))
						}
					}
					w.tokens = append(w.tokens, tx.Token)
				}
			case *confettipb.SubscribeResponse_Progress:
				w.tokens = append(w.tokens, r.Progress.Token)
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

func (w *watcher) view() (state map[string]string, events []string, revs []int64, tokens []string, resets int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	state = map[string]string{}
	for k, v := range w.state {
		state[k] = v
	}
	return state, append([]string(nil), w.events...), append([]int64(nil), w.revs...), append([]string(nil), w.tokens...), w.resets, w.err
}

func (w *watcher) waitFor(t *testing.T, what string, cond func(state map[string]string) bool) {
	t.Helper()
	testcluster.WaitFor(t, what, func() bool {
		state, _, _, _, _, err := w.view()
		if err != nil {
			t.Fatalf("subscription failed: %v", err)
		}
		return cond(state)
	})
}

func TestWriteThroughProxyReachesSubscriberThroughCache(t *testing.T) {
	sys := startSystem(t, 3)
	ctx := context.Background()

	// Placement spreads tenants over the shards and is recorded in meta.
	metaCli := sys.tc.MetaClient(t)
	perShard := map[string]int{}
	var names []string
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("team-%02d", i)
		names = append(names, name)
		tn, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		perShard[tn.Shard]++
		resp, err := metaCli.Get(ctx, "/confetti/meta/tenants/"+name)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("placement of %s not in meta: %v %v", name, resp, err)
		}
		var rec struct{ Shard string }
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.Shard != tn.Shard {
			t.Fatalf("meta says %s is on %q, the proxy said %q (%v)", name, rec.Shard, tn.Shard, err)
		}
	}
	for _, id := range sys.tc.ShardIDs {
		if perShard[id] == 0 || perShard[id] > 5 {
			t.Fatalf("shard %s holds %d of 12 tenants; want 1..5 (bounded load): %v", id, perShard[id], perShard)
		}
	}
	list, err := sys.ten.ListTenants(ctx, &confettipb.ListTenantsRequest{})
	if err != nil || len(list.Tenants) != 12 {
		t.Fatalf("ListTenants: %d tenants, %v", len(list.GetTenants()), err)
	}

	// Two tenants, two sets of keys.
	a, b := names[0], names[1]
	putKV := func(tenant, key, value string) int64 {
		t.Helper()
		resp, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: tenant, Key: key, Value: []byte(value)})
		if err != nil {
			t.Fatalf("put %s/%s: %v", tenant, key, err)
		}
		return resp.Header.Revision
	}
	putKV(a, "/routes/1", `{"uri":"/hello"}`)
	putKV(a, "/routes/2", `{"uri":"/bye"}`)
	putKV(b, "/routes/1", `{"uri":"/b-only"}`)

	cacheCli, stopCache := sys.startCache(t, "cache-1")
	w := watch(t, cacheCli, a, []string{"kv/"}, "")
	w.waitFor(t, "the reset", func(s map[string]string) bool { return len(s) == 2 })
	state, _, _, _, resets, _ := w.view()
	if resets != 1 || state["kv//routes/1"] != `{"uri":"/hello"}` || state["kv//routes/2"] != `{"uri":"/bye"}` {
		t.Fatalf("reset: %d resets, state %v", resets, state)
	}

	// New writes arrive in order; the other tenant's never do.
	var want []string
	for i := 3; i <= 6; i++ {
		key := fmt.Sprintf("/routes/%d", i)
		rev := putKV(a, key, fmt.Sprintf("v%d", i))
		want = append(want, fmt.Sprintf("kv/%s=v%d@%d", key, i, rev))
		putKV(b, key, "B")
	}
	if _, err := sys.kv.DeleteRange(ctx, &confettipb.DeleteRangeRequest{Tenant: a, Key: "/routes/2"}); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "the events", func(s map[string]string) bool { return len(s) == 5 && s["kv//routes/2"] == "" })
	_, events, revs, tokens, _, _ := w.view()
	if len(events) != 5 || strings.Join(events[:4], " ") != strings.Join(want, " ") || !strings.HasPrefix(events[4], "kv//routes/2 DELETED@") {
		t.Fatalf("events %v, want %v then the delete", events, want)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("revisions not increasing: %v", revs)
		}
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] == tokens[i-1] {
			t.Fatalf("token repeated across messages: %v", tokens)
		}
	}
	for _, e := range events {
		if strings.Contains(e, "=B@") || strings.Contains(e, "b-only") {
			t.Fatalf("tenant %s's subscriber saw tenant %s's key: %s", a, b, e)
		}
	}

	// The cache node restarts; writes land meanwhile; the gateway resumes
	// with its last token on the new node: nothing lost, nothing repeated.
	held, _, _, tokens, _, _ := w.view()
	last := tokens[len(tokens)-1]
	w.stop()
	stopCache()
	var missed []string
	for i := 7; i <= 9; i++ {
		key := fmt.Sprintf("/routes/%d", i)
		rev := putKV(a, key, fmt.Sprintf("v%d", i))
		missed = append(missed, fmt.Sprintf("kv/%s=v%d@%d", key, i, rev))
	}
	cacheCli2, _ := sys.startCache(t, "cache-2")
	w2 := watch(t, cacheCli2, a, []string{"kv/"}, last)
	w2.mu.Lock()
	w2.state = held
	w2.mu.Unlock()
	w2.waitFor(t, "the resumed events", func(s map[string]string) bool { return len(s) == 8 })
	_, events, _, _, resets, _ = w2.view()
	if resets != 0 {
		t.Fatalf("resume after restart sent a Reset; want a replay")
	}
	if strings.Join(events, " ") != strings.Join(missed, " ") {
		t.Fatalf("resumed events %v, want exactly %v", events, missed)
	}
}

func TestBadInputGetsAClearErrorAndWritesNothing(t *testing.T) {
	sys := startSystem(t, 1)
	ctx := context.Background()
	tn, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		call    func() error
		code    codes.Code
		message string
	}{
		{
			name: "unknown tenant",
			call: func() error {
				_, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "nobody", Key: "k", Value: []byte("v")})
				return err
			},
			code:    codes.NotFound,
			message: "confetti tenant create",
		},
		{
			name: "invalid tenant name",
			call: func() error {
				_, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "Acme!", Key: "k", Value: []byte("v")})
				return err
			},
			code:    codes.InvalidArgument,
			message: "[a-z0-9]",
		},
		{
			name: "invalid tenant name on create",
			call: func() error {
				_, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "has space"})
				return err
			},
			code:    codes.InvalidArgument,
			message: "[a-z0-9]",
		},
		{
			name: "empty key",
			call: func() error {
				_, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "acme", Key: "", Value: []byte("v")})
				return err
			},
			code:    codes.InvalidArgument,
			message: "key",
		},
		{
			name: "value over the limit",
			call: func() error {
				_, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "acme", Key: "big", Value: make([]byte, 64<<10+1)})
				return err
			},
			code:    codes.InvalidArgument,
			message: "65536",
		},
		{
			name: "existing tenant",
			call: func() error {
				_, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "acme"})
				return err
			},
			code:    codes.AlreadyExists,
			message: tn.Shard,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			s := status.Convert(err)
			if s.Code() != tc.code || !strings.Contains(s.Message(), tc.message) {
				t.Fatalf("got %v %q; want %v with %q in the message", s.Code(), s.Message(), tc.code, tc.message)
			}
		})
	}
	// Nothing reached any shard.
	for _, id := range sys.tc.ShardIDs {
		resp, err := sys.tc.ShardClient(t, id).Get(ctx, keys.Root, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Fatalf("shard %s holds %d keys after only refused writes", id, resp.Count)
		}
	}
}
