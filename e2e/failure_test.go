package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// TestMetaDownKeepsExistingTenantsWorking stops the meta cluster: tenants
// already placed keep reading and writing through the proxy, and the cache
// keeps streaming, from the placement they hold in memory; creating a
// tenant fails with a clear Unavailable.
func TestMetaDownKeepsExistingTenantsWorking(t *testing.T) {
	sys := startSystem(t, 2)
	ctx := context.Background()
	if _, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "steady"}); err != nil {
		t.Fatal(err)
	}
	cacheCli, _ := sys.startCache(t, "cache")
	w := watch(t, cacheCli, "steady", nil, "")
	if _, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "steady", Key: "before", Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "the first key", func(s map[string]string) bool { return s["kv/before"] == "1" })

	if err := sys.tc.Meta.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "steady", Key: "during", Value: []byte("2")}); err != nil {
		t.Fatalf("write of an existing tenant with meta down: %v", err)
	}
	got, err := sys.kv.Range(ctx, &confettipb.RangeRequest{Tenant: "steady", Key: "during"})
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("read with meta down: %v, %v", got, err)
	}
	w.waitFor(t, "the write made while meta is down", func(s map[string]string) bool { return s["kv/during"] == "2" })

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = sys.ten.CreateTenant(cctx, &confettipb.CreateTenantRequest{Name: "newcomer"})
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "meta") {
		t.Fatalf("create tenant with meta down: %v %q, want Unavailable naming meta", s.Code(), s.Message())
	}
}
