package etcdapi_test

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// stack is a whole Confetti cluster in the test, on real etcd and real
// loopback listeners, with the etcd front door of one cache node.
type stack struct {
	t    *testing.T
	tc   *testcluster.Cluster
	keys map[string]string // tenant -> writer key
	addr string            // the etcd front door
}

func serveGRPC(t *testing.T, opts []grpc.ServerOption, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newStack(t *testing.T, cacheCfg cache.Config, tenants ...string) *stack {
	t.Helper()
	tc := testcluster.New(t, 1)
	s := &stack{t: t, tc: tc, keys: map[string]string{}}
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))

	pstore, pclients := tc.NewStore(t)
	for _, name := range tenants {
		if _, _, err := pstore.CreateTenant(context.Background(), name); err != nil {
			t.Fatal(err)
		}
		k, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pstore.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Tenant: name, Role: meta.RoleWriter, Name: "etcd", SHA256: k.Hash()}); err != nil {
			t.Fatal(err)
		}
		s.keys[name] = k.String()
	}
	pauth, err := auth.New(pstore, auth.Config{Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := shardproxy.New(pstore, pclients, shardproxy.Config{Logger: lg.Named("proxy")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	proxyConn := serveGRPC(t, pauth.ServerOptions(), proxy.Register)

	cstore, cclients := tc.NewStore(t)
	cauth, err := auth.New(cstore, auth.Config{Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	cacheCfg.Logger = lg.Named("cache")
	cacheCfg.NodeName = "c1"
	c, err := cache.New(cstore, cclients, cacheCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cacheConn := serveGRPC(t, cauth.ServerOptions(), c.Register)
	testcluster.WaitFor(t, "cache ready", c.Ready)
	for name, key := range s.keys {
		testcluster.WaitFor(t, "keys loaded", func() bool {
			p, err := cauth.Verify(key)
			return err == nil && p.Tenant == name
		})
		testcluster.WaitFor(t, "keys loaded on the proxy", func() bool {
			_, err := pauth.Verify(key)
			return err == nil
		})
	}

	srv := etcdapi.New(etcdapi.Config{Cache: cacheConn, Proxy: proxyConn, Verify: cauth.Verify, ClusterName: "test", Self: etcdapi.Member{Name: "c1"}, Logger: lg.Named("etcdapi")})
	l, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	s.addr = l.Addr()
	return s
}

// client is an unmodified clientv3 client of tenant's etcd.
func (s *stack) client(tenant string) *clientv3.Client {
	s.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.addr},
		Username:    tenant,
		Password:    s.keys[tenant],
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
