package testcluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/meta"
)

// Cluster is a meta cluster and shard clusters s1..sN, registered.
type Cluster struct {
	Meta     *embedetcd.Cluster
	Shards   map[string]*embedetcd.Cluster
	ShardIDs []string
}

// Option changes how New starts the clusters.
type Option func(*embedetcd.Config)

// WithFsync makes the shards' etcd sync their log to disk as a production
// etcd does (tests run without it), for benchmarks whose figures should
// reflect a real write path.
func WithFsync() Option {
	return func(c *embedetcd.Config) {
		prev := c.Tune
		c.Tune = func(ec *embed.Config) {
			if prev != nil {
				prev(ec)
			}
			ec.UnsafeNoFsync = false
		}
	}
}

// New starts a meta cluster and n one-member shard clusters, in parallel,
// and registers the shards.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{Shards: map[string]*embedetcd.Cluster{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	start := func(name string, set func(*embedetcd.Cluster)) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cfg := embedetcd.Config{Name: name}
		if name != "meta" {
			for _, o := range opts {
				o(&cfg)
			}
		}
		ec, err := embedetcd.Start(ctx, cfg)
		if err != nil {
			errs <- err
			return
		}
		t.Cleanup(func() { ec.Close() })
		mu.Lock()
		set(ec)
		mu.Unlock()
	}
	wg.Add(1)
	go start("meta", func(ec *embedetcd.Cluster) { c.Meta = ec })
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("s%d", i)
		c.ShardIDs = append(c.ShardIDs, id)
		wg.Add(1)
		go start(id, func(ec *embedetcd.Cluster) { c.Shards[id] = ec })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("start etcd: %v", err)
	}
	st, _ := c.NewStore(t)
	for _, id := range c.ShardIDs {
		if _, err := st.AddShard(context.Background(), meta.Shard{ID: id, Endpoints: c.Shards[id].Endpoints()}); err != nil {
			t.Fatalf("register shard %s: %v", id, err)
		}
	}
	return c
}

// NewStore returns a meta store and shard clients of its own, as one
// component (a proxy or a cache node) would hold, loaded and closed at the
// end of the test.
func (c *Cluster) NewStore(t testing.TB) (*meta.Store, *meta.Clients) {
	t.Helper()
	cli := c.MetaClient(t)
	st, err := meta.New(cli, meta.Config{Logger: zaptest.NewLogger(t).Named("meta")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	clients := meta.NewClients(st, nil)
	t.Cleanup(func() {
		clients.Close()
		st.Close()
	})
	return st, clients
}

// MetaClient returns a client of the meta cluster, closed at the end of the
// test.
func (c *Cluster) MetaClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := c.Meta.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// ShardClient returns a client of one shard's etcd, closed at the end of
// the test, for checking what was really written.
func (c *Cluster) ShardClient(t testing.TB, id string) *clientv3.Client {
	t.Helper()
	cli, err := c.Shards[id].Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitFor polls cond until it holds, failing the test after a generous
// deadline. Tests wait with it instead of sleeping.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
