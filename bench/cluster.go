package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/serve"
)

// cluster is what a scenario runs on: a meta etcd cluster and shard etcd
// clusters embedded in this process, the shards registered, the tenants
// created, and a meta mirror with shard clients for the harness itself.
type cluster struct {
	meta     *embedetcd.Cluster
	shards   []*embedetcd.Cluster
	metaCli  *clientv3.Client
	store    *meta.Store
	clients  *meta.Clients
	tenants  []meta.Tenant
	shardIDs []string
}

// startCluster starts a meta cluster and shards one-member shard clusters
// (syncing their log to disk when fsync is set, as production etcd does)
// and creates the tenants.
func startCluster(ctx context.Context, shards int, fsync bool, tenants []string) (_ *cluster, err error) {
	c := &cluster{shards: make([]*embedetcd.Cluster, shards)}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, shards+1)
	start := func(i int, cfg embedetcd.Config, set func(*embedetcd.Cluster)) {
		defer wg.Done()
		ec, err := embedetcd.Start(ctx, cfg)
		if err != nil {
			errs[i] = err
			return
		}
		set(ec)
	}
	wg.Add(shards + 1)
	go start(0, embedetcd.Config{Name: "meta"}, func(ec *embedetcd.Cluster) { c.meta = ec })
	for i := range shards {
		id := fmt.Sprintf("s%d", i+1)
		c.shardIDs = append(c.shardIDs, id)
		cfg := embedetcd.Config{Name: id}
		if fsync {
			cfg.Tune = func(ec *embed.Config) { ec.UnsafeNoFsync = false }
		}
		go start(i+1, cfg, func(ec *embedetcd.Cluster) { c.shards[i] = ec })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if c.metaCli, err = c.meta.Client(); err != nil {
		return nil, err
	}
	if c.store, err = meta.New(c.metaCli, meta.Config{}); err != nil {
		return nil, err
	}
	if err := c.store.WaitReady(ctx); err != nil {
		return nil, err
	}
	c.clients = meta.NewClients(c.store, nil)
	for i, id := range c.shardIDs {
		if _, err := c.store.AddShard(ctx, meta.Shard{ID: id, Endpoints: c.shards[i].Endpoints()}); err != nil {
			return nil, err
		}
	}
	for _, name := range tenants {
		t, _, err := c.store.CreateTenant(ctx, name)
		if err != nil {
			return nil, err
		}
		c.tenants = append(c.tenants, t)
	}
	return c, nil
}

// shardOf returns the etcd cluster and the harness's client of a tenant's
// shard.
func (c *cluster) shardOf(t meta.Tenant) (*embedetcd.Cluster, *clientv3.Client, error) {
	for i, id := range c.shardIDs {
		if id == t.Shard {
			cli, err := c.clients.Get(id)
			return c.shards[i], cli, err
		}
	}
	return nil, nil, fmt.Errorf("bench: tenant %s is on unknown shard %q", t.Name, t.Shard)
}

// close stops everything; calling it again does nothing.
func (c *cluster) close() {
	if c.clients != nil {
		c.clients.Close()
		c.clients = nil
	}
	if c.store != nil {
		c.store.Close()
		c.store = nil
	}
	if c.metaCli != nil {
		c.metaCli.Close()
		c.metaCli = nil
	}
	for i, s := range c.shards {
		if s != nil {
			s.Close()
			c.shards[i] = nil
		}
	}
	if c.meta != nil {
		c.meta.Close()
		c.meta = nil
	}
}

// server is one gRPC server of a target, configured as the roles
// configure theirs (internal/serve: keepalive enforcement, stream workers,
// metrics interceptors), on a loopback port.
type server struct {
	srv  *serve.Server
	addr string
}

// startServer serves what register registers; drain, when set, ends the
// service's streams when the server stops.
func startServer(register func(*grpc.Server), drain func()) (*server, error) {
	srv, err := serve.New(serve.Options{ListenAddr: "127.0.0.1:0", Registry: prometheus.NewRegistry(), Drain: drain})
	if err != nil {
		return nil, err
	}
	register(srv.GRPC())
	addrs, err := srv.Start()
	if err != nil {
		return nil, err
	}
	return &server{srv: srv, addr: addrs.GRPC}, nil
}

// stop stops the server, ending its streams, within ten seconds.
func (s *server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.srv.Stop(ctx)
}

// cacheNode is a cache node serving on a loopback port.
type cacheNode struct {
	cache   *cache.Cache
	clients *meta.Clients
	// reg holds the node's metrics.
	reg *prometheus.Registry
	*server
}

// startCacheNode starts a cache node with shard clients of its own (one
// watch per shard, as in production) and waits until it is ready. The
// nodes share the harness's meta mirror, so the etcd watchers they add are
// their shard watches alone.
func (c *cluster) startCacheNode(ctx context.Context, name string) (*cacheNode, error) {
	clients := meta.NewClients(c.store, nil)
	reg := prometheus.NewRegistry()
	cn, err := cache.New(c.store, clients, cache.Config{NodeName: name, Logger: zap.NewNop(), Registerer: reg})
	if err != nil {
		clients.Close()
		return nil, err
	}
	n := &cacheNode{cache: cn, clients: clients, reg: reg}
	if n.server, err = startServer(cn.Register, cn.Close); err != nil {
		n.cache.Close()
		clients.Close()
		return nil, err
	}
	for !cn.Ready() {
		select {
		case <-ctx.Done():
			n.stop()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return n, nil
}

// stop stops the node's server (ending its subscriptions) and the node.
func (n *cacheNode) stop() {
	n.server.stop()
	n.cache.Close()
	n.clients.Close()
}
