package shardproxy

import (
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func TestTenantRateLimit(t *testing.T) {
	c := sharedClusters(t)
	// One request per hour after a burst of 3: the fourth is refused, and
	// another tenant is not affected.
	a := newAPI(t, c, Config{TenantRPS: 1.0 / 3600, TenantBurst: 3})
	a.freshTenant(t, c, "limited")
	a.freshTenant(t, c, "unlimited")
	ctx := testCtx(t)
	for i := 0; i < 3; i++ {
		if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "limited", Key: "k", Value: []byte("v")}); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "limited", Key: "k", Value: []byte("refused")})
	wantStatus(t, err, codes.ResourceExhausted, `tenant "limited"`, "retry in")
	_, err = a.kv.Range(ctx, &pb.RangeRequest{Tenant: "limited", Key: "k"})
	wantStatus(t, err, codes.ResourceExhausted, "requests per second")
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "unlimited", Key: "k", Value: []byte("v")}); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	// The refused put wrote nothing.
	resp, err := c.raw[a.createTenant(t, "limited").Shard].Get(ctx, "/confetti/t/limited/kv/k")
	if err != nil || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("value after a refused put: %v %v", resp, err)
	}
}
