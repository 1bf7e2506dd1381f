package shardproxy

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func TestDrainShardKeepsTenantsAndTakesNoNewOnes(t *testing.T) {
	c := newClusters(t, "d1", "d2")
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	for _, id := range []string{"d1", "d2"} {
		if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: id, Endpoints: c.shards[id].Endpoints()}); err != nil {
			t.Fatal(err)
		}
	}
	// Place tenants until d1 holds one, then drain d1.
	var onD1 string
	for i := 0; onD1 == ""; i++ {
		tn := a.createTenant(t, fmt.Sprintf("early-%d", i))
		if tn.Shard == "d1" {
			onD1 = tn.Name
		}
	}
	sh, err := a.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: "d1"})
	if err != nil || sh.State != pb.Shard_DRAINING {
		t.Fatalf("drain: %v, %v", sh, err)
	}
	for i := 0; i < 10; i++ {
		if tn := a.createTenant(t, fmt.Sprintf("late-%d", i)); tn.Shard != "d2" {
			t.Fatalf("tenant %s placed on draining shard %s", tn.Name, tn.Shard)
		}
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: onD1, Key: "still", Value: []byte("works")}); err != nil {
		t.Fatalf("a tenant of a draining shard cannot write: %v", err)
	}
	list, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{})
	if err != nil || list.Shards[0].State != pb.Shard_DRAINING || list.Shards[1].State != pb.Shard_ACTIVE {
		t.Fatalf("list: %v, %v", list, err)
	}
	_, err = a.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: "missing"})
	wantStatus(t, err, codes.NotFound, "missing")
}
