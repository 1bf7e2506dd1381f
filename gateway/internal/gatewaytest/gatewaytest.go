// Package gatewaytest starts, for the tests of the gateway SDK and the
// reference gateway, the real system they subscribe to: etcd (meta and a
// shard), cache nodes that check API keys on real loopback listeners and
// can be stopped and restarted on the same address, and a shard proxy for
// service registration. Everything stops when the test ends.
package gatewaytest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// System is one tenant on a real cluster, with API keys for it.
type System struct {
	TC     *testcluster.Cluster
	Tenant string
	// Shard is a client of the tenant's shard, for writes straight into
	// etcd and for a reference watcher.
	Shard *clientv3.Client
	// ReaderKey may subscribe to the tenant; WriterKey may also write and
	// register instances.
	ReaderKey, WriterKey string
}

// Start starts meta and one shard and creates tenant with a reader and a
// writer key.
func Start(t testing.TB, tenant string) *System {
	t.Helper()
	tc := testcluster.New(t, 1)
	st, _ := tc.NewStore(t)
	tn, _, err := st.CreateTenant(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	s := &System{TC: tc, Tenant: tenant, Shard: tc.ShardClient(t, tn.Shard)}
	s.ReaderKey = newKey(t, st, tenant, meta.RoleReader)
	s.WriterKey = newKey(t, st, tenant, meta.RoleWriter)
	return s
}

func newKey(t testing.TB, st *meta.Store, tenant string, role meta.Role) string {
	t.Helper()
	k, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Tenant: tenant, Role: role, Name: string(role), SHA256: k.Hash()}); err != nil {
		t.Fatal(err)
	}
	return k.String()
}

// Put writes a key of the tenant (relative: kv/..., svc/...) straight into
// etcd and returns the revision.
func (s *System) Put(t testing.TB, rel, value string) int64 {
	t.Helper()
	resp, err := s.Shard.Put(context.Background(), keys.Tenant(s.Tenant)+rel, value)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// Delete deletes a key of the tenant straight in etcd.
func (s *System) Delete(t testing.TB, rel string) int64 {
	t.Helper()
	resp, err := s.Shard.Delete(context.Background(), keys.Tenant(s.Tenant)+rel)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// Physical is the etcd key of a tenant-relative key.
func (s *System) Physical(rel string) string { return keys.Tenant(s.Tenant) + rel }

// CacheNode is a cache node serving with API keys on a fixed loopback
// address: Stop ends it as a crash would for its clients, and Start brings
// a new node up on the same address.
type CacheNode struct {
	t    testing.TB
	sys  *System
	name string
	cfg  cache.Config
	// Addr is the node's gRPC address.
	Addr string

	mu  sync.Mutex
	c   *cache.Cache
	srv *grpc.Server
}

// StartCache starts a cache node on a kernel-chosen port.
func (s *System) StartCache(t testing.TB, name string, cfg cache.Config) *CacheNode {
	t.Helper()
	n := &CacheNode{t: t, sys: s, name: name, cfg: cfg, Addr: "127.0.0.1:0"}
	n.Start()
	return n
}

// Start starts the node (again) on its address.
func (n *CacheNode) Start() {
	t := n.t
	t.Helper()
	st, clients := n.sys.TC.NewStore(t)
	// Registered after the store's own cleanup, so it runs before it.
	t.Cleanup(n.Stop)
	cfg := n.cfg
	cfg.Logger = zaptest.NewLogger(t).Named(n.name)
	cfg.NodeName = n.name
	if cfg.ProgressInterval == 0 {
		// Short for quick tests, long enough that a client on a loaded
		// machine under the race detector never takes three intervals of
		// scheduling delay for a dead node.
		cfg.ProgressInterval = time.Second
	}
	c, err := cache.New(st, clients, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(st, auth.Config{Logger: zaptest.NewLogger(t).Named(n.name + "-auth")})
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	testcluster.WaitFor(t, "listen on "+n.Addr, func() bool {
		lis, err = net.Listen("tcp", n.Addr)
		return err == nil
	})
	srv := grpc.NewServer(a.ServerOptions()...)
	c.Register(srv)
	go srv.Serve(lis)
	n.mu.Lock()
	n.c, n.srv, n.Addr = c, srv, lis.Addr().String()
	n.mu.Unlock()
	testcluster.WaitFor(t, n.name+" ready", c.Ready)
}

// Stop stops the node, closing its listener and every stream; a stopped
// node stays stopped.
func (n *CacheNode) Stop() {
	n.mu.Lock()
	c, srv := n.c, n.srv
	n.c, n.srv = nil, nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Stop()
	c.Close()
}

// Proxy is a shard proxy serving with API keys on a loopback listener.
type Proxy struct {
	// Conn sends the writer key with every call.
	Conn   *grpc.ClientConn
	Leases confettipb.LeasesClient
	KV     confettipb.KVClient
}

// StartProxy starts a shard proxy.
func (s *System) StartProxy(t testing.TB) *Proxy {
	t.Helper()
	st, clients := s.TC.NewStore(t)
	p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zaptest.NewLogger(t).Named("proxy")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	a, err := auth.New(st, auth.Config{Logger: zaptest.NewLogger(t).Named("proxy-auth")})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(a.ServerOptions()...)
	p.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), auth.WithAPIKey(s.WriterKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Proxy{Conn: conn, Leases: confettipb.NewLeasesClient(conn), KV: confettipb.NewKVClient(conn)}
}

// VerifyNoLeaks is TestMain for packages whose tests start the system: it
// fails the run when goroutines outlive the tests, apart from the
// package-level ones of etcd's embedded server and client.
func VerifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}
