package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/embedetcd"
)

// TestNewShardAndTenantUsableEverywhereWithoutRestart adds a shard through
// one proxy while another proxy and a cache node run, creates a tenant on
// it, and uses the tenant at once through the other proxy and the cache.
func TestNewShardAndTenantUsableEverywhereWithoutRestart(t *testing.T) {
	a := startSystem(t, 1)
	ctx := context.Background()
	// Started first so that it stops last, after the components using it.
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	fresh, err := embedetcd.Start(startCtx, embedetcd.Config{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fresh.Close() })
	b := startProxy(t, a.tc)
	cacheCli, _ := a.startCache(t, "cache")

	if _, err := a.shards.AddShard(ctx, &confettipb.AddShardRequest{Id: "fresh", Endpoints: fresh.Endpoints()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.shards.DrainShard(ctx, &confettipb.DrainShardRequest{Id: "s1"}); err != nil {
		t.Fatal(err)
	}
	tn, err := a.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "newcomer"})
	if err != nil {
		t.Fatal(err)
	}
	if tn.Shard != "fresh" {
		t.Fatalf("tenant placed on %s, want the only active shard, fresh", tn.Shard)
	}

	// The other proxy routes the tenant right away, to the new shard.
	put, err := b.kv.Put(ctx, &confettipb.PutRequest{Tenant: "newcomer", Key: "hello", Value: []byte("world")})
	if err != nil {
		t.Fatalf("put through the other proxy: %v", err)
	}
	if put.Header.Shard != "fresh" {
		t.Fatalf("the other proxy wrote to %s", put.Header.Shard)
	}
	cli, err := fresh.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if resp, err := cli.Get(ctx, "/confetti/t/newcomer/kv/hello"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the key is not on the new shard's etcd: %v %v", resp, err)
	}

	// The cache node sources the new shard and serves the tenant.
	w := watch(t, cacheCli, "newcomer", nil, "")
	w.waitFor(t, "the new tenant's key through the cache", func(s map[string]string) bool { return s["kv/hello"] == "world" })
}
