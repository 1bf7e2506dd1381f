package gateway_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

func TestMain(m *testing.M) { gatewaytest.VerifyNoLeaks(m) }

// newClient starts a client of sys's tenant against endpoints, closed at
// the end of the test.
func newClient(t *testing.T, sys *gatewaytest.System, cfg gateway.Config) *gateway.Client {
	t.Helper()
	cfg.Tenant = sys.Tenant
	cfg.APIKey = sys.ReaderKey
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t).Named("gateway")
	}
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = 100 * time.Millisecond
		cfg.BackoffMax = time.Second
	}
	c, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func start(t *testing.T, c *gateway.Client) {
	t.Helper()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// values is a view as key -> value.
func values(v *gateway.View) map[string]string {
	out := map[string]string{}
	v.Range("", func(k string, kv *confettipb.KeyValue) bool {
		out[k] = string(kv.Value)
		return true
	})
	return out
}

// etcdValues is what etcd holds for the tenant under prefix, keyed as
// subscribers see keys.
func etcdValues(t *testing.T, sys *gatewaytest.System, prefix string) map[string]string {
	t.Helper()
	resp, err := sys.Shard.Get(context.Background(), sys.Physical(prefix), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), sys.Physical("kv/"))] = string(kv.Value)
	}
	return out
}

// waitHolds waits until c's view equals etcd's state under kv/.
func waitHolds(t *testing.T, sys *gatewaytest.System, c *gateway.Client) {
	t.Helper()
	want := etcdValues(t, sys, "kv/")
	testcluster.WaitFor(t, "the client to hold etcd's state", func() bool {
		return maps.Equal(values(c.View()), want)
	})
}

func TestClientAppliesResetAndEventsAndReportsChanges(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	sys.Put(t, "kv/routes/1", "r1")
	sys.Put(t, "kv/other", "not subscribed")
	n := sys.StartCache(t, "cache-1", cache.Config{})
	c := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, Prefixes: []string{"routes/"}})
	var calls atomic.Int32
	c.OnChange(func(ch gateway.Change) { calls.Add(1) })
	start(t, c)
	select {
	case <-c.Ready():
	case <-time.After(time.Minute):
		t.Fatal("not ready within a minute")
	}
	if got := values(c.View()); !maps.Equal(got, map[string]string{"routes/1": "r1"}) {
		t.Fatalf("after the reset the view is %v", got)
	}
	first := <-c.Changes()
	if first.Source != gateway.SourceReset || len(first.Updates) != 1 || first.Updates[0].Key != "routes/1" || first.Updates[0].Old != nil {
		t.Fatalf("first change %+v, want the reset adding kv/routes/1", first)
	}

	if _, err := sys.Shard.Txn(context.Background()).Then(
		clientv3.OpPut(sys.Physical("kv/routes/1"), "r1b"),
		clientv3.OpPut(sys.Physical("kv/routes/2"), "r2"),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	ch := <-c.Changes()
	if ch.Source != gateway.SourceEvents || len(ch.Updates) != 2 || string(ch.Updates[0].New.Value) != "r1b" || string(ch.Updates[0].Old.Value) != "r1" || ch.Updates[1].Key != "routes/2" {
		t.Fatalf("transaction change %+v, want both keys in one change", ch)
	}
	if kv, ok := ch.View.Get("routes/2"); !ok || string(kv.Value) != "r2" || ch.Prev.Len() != 1 {
		t.Fatalf("the change's views: prev %d keys, view has kv/routes/2=%v", ch.Prev.Len(), kv)
	}
	sys.Delete(t, "kv/routes/1")
	ch = <-c.Changes()
	if len(ch.Updates) != 1 || ch.Updates[0].New != nil || ch.Updates[0].Key != "routes/1" {
		t.Fatalf("delete change %+v", ch)
	}
	if _, ok := c.Get("routes/1"); ok {
		t.Fatal("deleted key still in the view")
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("OnChange called %d times, want 3", got)
	}
	st := c.Stats()
	if st.Endpoint != n.Addr || st.Resets != 1 || st.Token == "" || st.Keys != 1 || st.Reconnects != 0 {
		t.Fatalf("stats %+v", st)
	}
	c.Close()
	if _, ok := <-c.Changes(); ok {
		t.Fatal("Changes not closed by Close")
	}
}

func TestEveryCacheDownServesFromMemoryThenFromSnapshotThenResumesByReplay(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	n := sys.StartCache(t, "cache-1", cache.Config{})
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		sys.Put(t, fmt.Sprintf("kv/k%d", i), "v1")
	}
	a := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, SnapshotDir: dir})
	start(t, a)
	waitHolds(t, sys, a)
	held := values(a.View())

	// Every cache node stops: the client keeps serving what it holds.
	n.Stop()
	testcluster.WaitFor(t, "the client to notice", func() bool { return a.Stats().Endpoint == "" })
	for i := 0; i < 5; i++ {
		sys.Put(t, fmt.Sprintf("kv/k%d", i), "v2")
	}
	if got := values(a.View()); !maps.Equal(got, held) {
		t.Fatalf("with every cache down the client serves %v, want %v", got, held)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// A new client, caches still down: it serves the snapshot at once.
	b := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, SnapshotDir: dir})
	start(t, b)
	select {
	case <-b.Ready():
	default:
		t.Fatal("not ready right after Start with a snapshot on disk")
	}
	if got := values(b.View()); !maps.Equal(got, held) || !b.Stats().SnapshotLoaded || b.View().Token() != a.View().Token() {
		t.Fatalf("from the snapshot the client serves %v (stats %+v), want %v", got, b.Stats(), held)
	}

	// The cache comes back: the client resumes from the snapshot's token
	// by replay, not by a Reset.
	n.Start()
	waitHolds(t, sys, b)
	if st := b.Stats(); st.Resets != 0 || st.Resumes < 1 {
		t.Fatalf("after the caches returned: %d resets, %d resumes; want a replay", st.Resets, st.Resumes)
	}
}

func TestFailoverMidStreamHasNoGapAndNoDuplicate(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	ref, err := watchcheck.StartReference(context.Background(), sys.Shard)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	nodes := map[string]*gatewaytest.CacheNode{}
	n1 := sys.StartCache(t, "cache-1", cache.Config{})
	n2 := sys.StartCache(t, "cache-2", cache.Config{})
	nodes[n1.Addr], nodes[n2.Addr] = n1, n2
	sys.Put(t, "kv/seed", "0")

	stream := watchcheck.NewStream(&confettipb.Start{Tenant: "acme", Prefixes: []string{""}})
	c := newClient(t, sys, gateway.Config{Endpoints: []string{n1.Addr, n2.Addr}, Prefixes: []string{""}, Observer: stream})
	start(t, c)
	testcluster.WaitFor(t, "the first sync", func() bool { return c.Stats().Endpoint != "" })

	// Writes run while the node the client streams from dies.
	ctx, cancel := context.WithCancel(context.Background())
	writes := make(chan int64, 1)
	go func() {
		var last int64
		defer func() { writes <- last }()
		for i := 0; ctx.Err() == nil; i++ {
			resp, err := sys.Shard.Txn(context.Background()).Then(
				clientv3.OpPut(sys.Physical(fmt.Sprintf("kv/a%d", i%7)), fmt.Sprint(i)),
				clientv3.OpPut(sys.Physical(fmt.Sprintf("kv/b%d", i%5)), fmt.Sprint(i)),
			).Commit()
			if err != nil {
				t.Error(err)
				return
			}
			last = resp.Header.Revision
			time.Sleep(2 * time.Millisecond)
		}
	}()
	testcluster.WaitFor(t, "events before the failover", func() bool { return c.Stats().Keys > 5 })
	first := c.Stats().Endpoint
	nodes[first].Stop()
	testcluster.WaitFor(t, "the client to fail over", func() bool {
		ep := c.Stats().Endpoint
		return ep != "" && ep != first
	})
	failedAt, err := sys.Shard.Get(context.Background(), "count-only", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "100 transactions after the failover", func() bool {
		rev, err := cache.TokenRevision(c.View().Token())
		return err == nil && rev > failedAt.Header.Revision+100
	})
	cancel()
	last := <-writes
	testcluster.WaitFor(t, "the client to reach the last write", func() bool {
		rev, err := cache.TokenRevision(c.View().Token())
		return err == nil && rev >= last
	})

	res, err := watchcheck.Check(ref, stream, cache.TokenRevision, watchcheck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resets != 1 || res.Resumes < 1 {
		t.Fatalf("%d resets and %d resumes; want one reset, then a replay on the other node", res.Resets, res.Resumes)
	}
	// The checker keys its state by the tenant-relative layout.
	held := map[string]string{}
	for k, v := range values(c.View()) {
		held["kv/"+k] = v
	}
	if !maps.Equal(held, res.State) {
		t.Fatalf("the client's view %v differs from what it received %v", held, res.State)
	}
	t.Logf("failover: %d events checked, %d resumes", res.Events, res.Resumes)
}

func TestCorruptSnapshotIsDetectedIgnoredAndReported(t *testing.T) {
	sys := gatewaytest.Start(t, "acme")
	n := sys.StartCache(t, "cache-1", cache.Config{})
	sys.Put(t, "kv/k", "v")
	for _, tc := range []struct {
		name    string
		corrupt func(b []byte) []byte
	}{
		{name: "flipped byte", corrupt: func(b []byte) []byte { b[len(b)-3] ^= 0x40; return b }},
		{name: "truncated", corrupt: func(b []byte) []byte { return b[:len(b)-5] }},
		{name: "header only", corrupt: func(b []byte) []byte { return b[:20] }},
		{name: "not a snapshot", corrupt: func([]byte) []byte { return []byte("{}") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, SnapshotDir: dir})
			start(t, a)
			waitHolds(t, sys, a)
			a.Close()
			path := gateway.SnapshotPath(a)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.corrupt(b), 0o600); err != nil {
				t.Fatal(err)
			}

			// With the cache unreachable, the client must not serve the
			// corrupt file: it starts empty and not ready.
			c := newClient(t, sys, gateway.Config{Endpoints: []string{"127.0.0.1:1"}, SnapshotDir: dir})
			start(t, c)
			st := c.Stats()
			if st.SnapshotLoaded || !strings.Contains(st.SnapshotError, "corrupt snapshot") || c.View().Len() != 0 || c.View().Token() != "" {
				t.Fatalf("corrupt snapshot: stats %+v, view of %d keys", st, c.View().Len())
			}
			select {
			case <-c.Ready():
				t.Fatal("ready with nothing to serve")
			default:
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				t.Fatalf("the corrupt file was not kept aside: %v", err)
			}
			c.Close()

			// With the cache up it syncs and writes a good snapshot.
			d := newClient(t, sys, gateway.Config{Endpoints: []string{n.Addr}, SnapshotDir: dir})
			start(t, d)
			waitHolds(t, sys, d)
			d.Close()
			e := newClient(t, sys, gateway.Config{Endpoints: []string{"127.0.0.1:1"}, SnapshotDir: dir})
			start(t, e)
			if !e.Stats().SnapshotLoaded || !maps.Equal(values(e.View()), map[string]string{"k": "v"}) {
				t.Fatalf("snapshot after the resync: %+v", e.Stats())
			}
		})
	}
}
