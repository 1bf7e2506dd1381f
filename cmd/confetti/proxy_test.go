package main

import (
	"context"
	"net"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// testProxy is a shard proxy over real etcd serving gRPC and the HTTP API
// on loopback listeners.
type testProxy struct {
	grpcAddr string
	httpURL  string
	// operatorKey is a key every request may use when the proxy requires
	// keys; empty when it does not.
	operatorKey string
}

// startProxy starts a proxy on one shard; withAuth requires an API key on
// every request, as a deployed proxy does.
func startProxy(t *testing.T, withAuth bool) testProxy {
	t.Helper()
	tc := testcluster.New(t, 1)
	store, clients := tc.NewStore(t)
	p, err := shardproxy.New(store, clients, shardproxy.Config{PlanInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var tp testProxy
	var opts []grpc.ServerOption
	if withAuth {
		a, err := auth.New(store, auth.Config{})
		if err != nil {
			t.Fatal(err)
		}
		opts = a.ServerOptions()
		key, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.CreateAPIKey(context.Background(), meta.APIKey{ID: key.ID, Role: meta.RoleOperator, Name: "test", SHA256: key.Hash()}); err != nil {
			t.Fatal(err)
		}
		tp.operatorKey = key.String()
		testcluster.WaitFor(t, "the proxy's copy of meta to hold the key", func() bool {
			_, ok := store.APIKey(key.ID)
			return ok
		})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	p.Register(srv)
	go srv.Serve(lis)
	tp.grpcAddr = lis.Addr().String()
	h, closeConn, err := p.HTTPGateway(tp.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	tp.httpURL = hs.URL
	t.Cleanup(func() {
		hs.Close()
		closeConn()
		srv.Stop()
		p.Close()
	})
	return tp
}
