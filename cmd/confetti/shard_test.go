package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/clientconfig"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// startShardProxy serves a shard proxy over real etcd (meta and shard s1),
// without auth, on a port the kernel chooses, and returns its address.
func startShardProxy(t *testing.T) string {
	t.Helper()
	tc := testcluster.New(t, 1)
	store, clients := tc.NewStore(t)
	p, err := shardproxy.New(store, clients, shardproxy.Config{PlanInterval: -1, ShardCheckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	p.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Stop()
		p.Close()
	})
	return lis.Addr().String()
}

// unusedURL is an etcd URL where nothing listens.
func unusedURL(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return "http://" + lis.Addr().String()
}

// TestShardVerbsReachTheProxyTheGlobalFlagsName runs the shard verbs
// against a proxy on a port other than the default, named by --endpoints
// or by the client config file, with the shard's own etcd URLs in
// --etcd-endpoints.
func TestShardVerbsReachTheProxyTheGlobalFlagsName(t *testing.T) {
	proxy := startShardProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	extra, err := embedetcd.Start(ctx, embedetcd.Config{Name: "extra"})
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	eps := strings.Join(extra.Endpoints(), ",")

	out, errOut, err := runCLI(t, "shard", "add", "extra", "--etcd-endpoints", eps, "--endpoints", proxy)
	if err != nil || out != fmt.Sprintf("shard extra active %s\n", eps) {
		t.Fatalf("shard add with --endpoints %s: %q, %v (stderr %q)", proxy, out, err, errOut)
	}

	clientConfig := filepath.Join(t.TempDir(), "client.yaml")
	if err := clientconfig.Save(clientConfig, &clientconfig.Config{Endpoints: []string{proxy}}); err != nil {
		t.Fatal(err)
	}
	dead := unusedURL(t)
	_, _, err = runCLIWith(t, clientConfig, "shard", "add", "dead", "--etcd-endpoints", dead)
	if err == nil || !strings.Contains(errorMessage(err), "endpoint "+dead+": ") || !strings.Contains(errorMessage(err), "--force") {
		t.Fatalf("shard add of an unreachable etcd: err = %v, want it refused naming the endpoint", err)
	}
	out, errOut, err = runCLIWith(t, clientConfig, "shard", "add", "dead", "--etcd-endpoints", dead, "--force")
	if err != nil || out != fmt.Sprintf("shard dead pending %s\n", dead) || !strings.Contains(errOut, "takes no tenant until it passes") {
		t.Fatalf("shard add --force: %q, %v (stderr %q)", out, err, errOut)
	}
	list := cli(t, clientConfig, "shard", "list")
	if !regexp.MustCompile(`(?m)^dead pending tenants=0 `+regexp.QuoteMeta(dead)+` unhealthy: .*endpoint `+regexp.QuoteMeta(dead)+`: `).MatchString(list) ||
		!regexp.MustCompile(`(?m)^extra active tenants=0 `+regexp.QuoteMeta(eps)+`$`).MatchString(list) {
		t.Fatalf("shard list printed:\n%s", list)
	}

	if out := cli(t, clientConfig, "shard", "drain", "s1"); out != "shard s1 draining tenants=0\n" {
		t.Fatalf("shard drain printed %q", out)
	}
	if out := cli(t, clientConfig, "tenant", "create", "acme"); out != "created tenant acme on shard extra\n" {
		t.Fatalf("tenant create printed %q, want it on extra, the only healthy active shard", out)
	}
	if out := cli(t, clientConfig, "shard", "activate", "s1"); out != "shard s1 active tenants=0\n" {
		t.Fatalf("shard activate printed %q", out)
	}
	_, _, err = runCLIWith(t, clientConfig, "shard", "remove", "extra")
	if err == nil || !strings.Contains(errorMessage(err), "shard extra holds 1 tenant;") {
		t.Fatalf("shard remove of a shard with a tenant: err = %v", err)
	}
	if out := cli(t, clientConfig, "shard", "remove", "dead"); out != "removed shard dead\n" {
		t.Fatalf("shard remove printed %q", out)
	}
	if out := cli(t, clientConfig, "shard", "list"); strings.Contains(out, "dead") {
		t.Fatalf("shard list after the removal:\n%s", out)
	}
}
