package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
)

// clusters is the etcd side of a test: a meta cluster and shard clusters,
// a meta store following meta, the shard client set, and direct clients
// of every shard for checking what landed in etcd.
type clusters struct {
	meta    *embedetcd.Cluster
	shards  map[string]*embedetcd.Cluster
	metaCli *clientv3.Client
	raw     map[string]*clientv3.Client
	store   *meta.Store
	clients *meta.Clients
}

// startClusters starts a meta cluster and one single-member cluster per
// shard id, concurrently, and a ready store. Shards are not registered.
func startClusters(ctx context.Context, shardIDs ...string) (c *clusters, err error) {
	c = &clusters{shards: map[string]*embedetcd.Cluster{}, raw: map[string]*clientv3.Client{}}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		m, err := embedetcd.Start(gctx, embedetcd.Config{Name: "meta"})
		mu.Lock()
		c.meta = m
		mu.Unlock()
		return err
	})
	for _, id := range shardIDs {
		g.Go(func() error {
			s, err := embedetcd.Start(gctx, embedetcd.Config{Name: id})
			mu.Lock()
			if s != nil {
				c.shards[id] = s
			}
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return c, err
	}
	if c.metaCli, err = c.meta.Client(); err != nil {
		return c, err
	}
	for id, s := range c.shards {
		if c.raw[id], err = s.Client(); err != nil {
			return c, err
		}
	}
	if c.store, err = meta.New(c.metaCli, meta.Config{}); err != nil {
		return c, err
	}
	if err := c.store.WaitReady(ctx); err != nil {
		return c, err
	}
	c.clients = meta.NewClients(c.store, nil)
	return c, nil
}

func (c *clusters) close() {
	if c.clients != nil {
		c.clients.Close()
	}
	if c.store != nil {
		c.store.Close()
	}
	for _, cli := range c.raw {
		cli.Close()
	}
	if c.metaCli != nil {
		c.metaCli.Close()
	}
	for _, s := range c.shards {
		s.Close()
	}
	if c.meta != nil {
		c.meta.Close()
	}
}

// newClusters starts clusters for one test and stops them when it ends.
func newClusters(t *testing.T, shardIDs ...string) *clusters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := startClusters(ctx, shardIDs...)
	if err != nil {
		t.Fatalf("start clusters: %v", err)
	}
	t.Cleanup(c.close)
	return c
}

// The shared clusters serve every test that only adds tenants of its own:
// meta plus shards s1 and s2, with tenants acme and acme-2 placed on s1 and
// acme-3 on s2.
var shared struct {
	once sync.Once
	c    *clusters
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.c.close()
	}
	os.Exit(code)
}

func sharedClusters(t *testing.T) *clusters {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.c, shared.err = startClusters(ctx, "s1", "s2")
		if shared.err == nil {
			shared.err = placeAcmes(ctx, shared.c)
		}
	})
	if shared.err != nil {
		t.Fatalf("shared clusters: %v", shared.err)
	}
	return shared.c
}

// placeAcmes places acme and acme-2 on s1 while s1 is the only shard, then
// registers s2 and places acme-3, which the bounded-load cap sends to s2
// (s1 already holds its full share of three tenants over two shards).
func placeAcmes(ctx context.Context, c *clusters) error {
	want := []struct{ tenant, shard string }{{"acme", "s1"}, {"acme-2", "s1"}, {"acme-3", "s2"}}
	if _, err := c.store.AddShard(ctx, meta.Shard{ID: "s1", Endpoints: c.shards["s1"].Endpoints()}); err != nil {
		return err
	}
	for i, w := range want {
		if i == 2 {
			if _, err := c.store.AddShard(ctx, meta.Shard{ID: "s2", Endpoints: c.shards["s2"].Endpoints()}); err != nil {
				return err
			}
		}
		tn, _, err := c.store.CreateTenant(ctx, w.tenant)
		if err != nil {
			return err
		}
		if tn.Shard != w.shard {
			return fmt.Errorf("tenant %s placed on %s, want %s", w.tenant, tn.Shard, w.shard)
		}
	}
	return nil
}

// api is a proxy served over a real gRPC listener, with clients of every
// service it serves.
type api struct {
	proxy    *Proxy
	reg      *prometheus.Registry
	kv       pb.KVClient
	tenants  pb.TenantsClient
	shards   pb.ShardsClient
	leases   pb.LeasesClient
	releases pb.ReleasesClient
	// conn is the client connection the clients above share.
	conn *grpc.ClientConn
}

// newAPI starts a proxy over c with cfg (its Logger and Registerer are set
// here) on 127.0.0.1:0, served with opts, and stops it when the test ends.
func newAPI(t *testing.T, c *clusters, cfg Config, opts ...grpc.ServerOption) *api {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	cfg.Registerer = reg
	p, err := New(c.store, c.clients, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	p.Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		p.Close()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return &api{
		proxy:    p,
		reg:      reg,
		kv:       pb.NewKVClient(conn),
		tenants:  pb.NewTenantsClient(conn),
		shards:   pb.NewShardsClient(conn),
		leases:   pb.NewLeasesClient(conn),
		releases: pb.NewReleasesClient(conn),
		conn:     conn,
	}
}

// testCtx is a context for one test's requests.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// createTenant creates a tenant through the API, or returns it if a
// previous run of the test in this process created it.
func (a *api) createTenant(t *testing.T, name string) *pb.Tenant {
	t.Helper()
	tn, err := a.tenants.CreateTenant(testCtx(t), &pb.CreateTenantRequest{Name: name})
	if status.Code(err) == codes.AlreadyExists {
		tn, err = a.tenants.GetTenant(testCtx(t), &pb.GetTenantRequest{Name: name})
	}
	if err != nil {
		t.Fatalf("create tenant %s: %v", name, err)
	}
	return tn
}

// wantStatus fails unless err is a gRPC status with code whose message
// contains every one of parts.
func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	s, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if s.Code() != code {
		t.Fatalf("code = %v (%q), want %v", s.Code(), s.Message(), code)
	}
	for _, p := range parts {
		if !strings.Contains(s.Message(), p) {
			t.Fatalf("message %q does not contain %q", s.Message(), p)
		}
	}
}

// rawTenantKeys returns every physical key of tenant on a shard, read
// directly from etcd, with its value.
func (c *clusters) rawTenantKeys(t *testing.T, shard, tenant string) map[string]string {
	t.Helper()
	resp, err := c.raw[shard].Get(testCtx(t), keys.Tenant(tenant), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// freshTenant creates a tenant through the API and removes whatever an
// earlier run left in its space, directly in etcd.
func (a *api) freshTenant(t *testing.T, c *clusters, name string) *pb.Tenant {
	t.Helper()
	tn := a.createTenant(t, name)
	if _, err := c.raw[tn.Shard].Delete(testCtx(t), keys.Tenant(name), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	return tn
}
