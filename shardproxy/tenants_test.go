package shardproxy

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

func TestTenantsCreateGetList(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)

	created := a.createTenant(t, "tenants-a")
	if created.Name != "tenants-a" || created.Epoch != 1 || created.State != pb.Tenant_ACTIVE || created.CreateTime == 0 || (created.Shard != "s1" && created.Shard != "s2") {
		t.Fatalf("created %v", created)
	}
	got, err := a.tenants.GetTenant(ctx, &pb.GetTenantRequest{Name: "tenants-a"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created, got, protocmp.Transform()); diff != "" {
		t.Fatalf("get (-created +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name     string
		call     func() error
		wantCode codes.Code
		wantMsg  []string
	}{
		{name: "create existing", call: func() error {
			_, err := a.tenants.CreateTenant(ctx, &pb.CreateTenantRequest{Name: "tenants-a"})
			return err
		}, wantCode: codes.AlreadyExists, wantMsg: []string{"tenants-a", "shard " + created.Shard}},
		{name: "create invalid name", call: func() error {
			_, err := a.tenants.CreateTenant(ctx, &pb.CreateTenantRequest{Name: "Tenants A"})
			return err
		}, wantCode: codes.InvalidArgument},
		{name: "get unknown", call: func() error {
			_, err := a.tenants.GetTenant(ctx, &pb.GetTenantRequest{Name: "tenants-ghost"})
			return err
		}, wantCode: codes.NotFound, wantMsg: []string{"confetti tenant create tenants-ghost"}},
		{name: "get invalid name", call: func() error {
			_, err := a.tenants.GetTenant(ctx, &pb.GetTenantRequest{Name: "-x"})
			return err
		}, wantCode: codes.InvalidArgument},
		{name: "list with negative page size", call: func() error {
			_, err := a.tenants.ListTenants(ctx, &pb.ListTenantsRequest{PageSize: -1})
			return err
		}, wantCode: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), tc.wantCode, tc.wantMsg...)
		})
	}

	a.createTenant(t, "tenants-b")
	a.createTenant(t, "tenants-c")
	var want []string
	for _, tn := range c.store.Tenants() {
		want = append(want, tn.Name)
	}
	for _, size := range []int32{0, 1, 2, 1000} {
		var names []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("page size %d: paging does not end", size)
			}
			page, err := a.tenants.ListTenants(ctx, &pb.ListTenantsRequest{PageSize: size, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			if size > 0 && len(page.Tenants) > int(size) {
				t.Fatalf("page size %d: got %d tenants", size, len(page.Tenants))
			}
			for _, tn := range page.Tenants {
				names = append(names, tn.Name)
			}
			if token = page.NextPageToken; token == "" {
				break
			}
		}
		if diff := cmp.Diff(want, names); diff != "" {
			t.Fatalf("page size %d: tenants (-want +got):\n%s", size, diff)
		}
	}
}

func TestShardsAddAndList(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	eps := c.shards["s1"].Endpoints()

	again, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "s1", Endpoints: eps})
	if err != nil {
		t.Fatalf("repeated registration: %v", err)
	}
	if again.Id != "s1" || again.State != pb.Shard_ACTIVE || !slices.Equal(again.Endpoints, eps) || again.Tenants < 2 {
		t.Fatalf("repeated registration returned %v", again)
	}
	for _, tc := range []struct {
		name     string
		req      *pb.AddShardRequest
		wantCode codes.Code
	}{
		{name: "other endpoints", req: &pb.AddShardRequest{Id: "s1", Endpoints: []string{"http://127.0.0.1:1"}}, wantCode: codes.AlreadyExists},
		{name: "invalid id", req: &pb.AddShardRequest{Id: "S 1", Endpoints: eps}, wantCode: codes.InvalidArgument},
		{name: "no endpoints", req: &pb.AddShardRequest{Id: "s9"}, wantCode: codes.InvalidArgument},
		{name: "negative weight", req: &pb.AddShardRequest{Id: "s9", Endpoints: eps, Weight: -1}, wantCode: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.shards.AddShard(ctx, tc.req)
			wantStatus(t, err, tc.wantCode)
		})
	}

	wantTenants := map[string]int64{}
	for _, tn := range c.store.Tenants() {
		wantTenants[tn.Shard]++
	}
	plain, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sh := range plain.Shards {
		ids = append(ids, sh.Id)
		if sh.Tenants != wantTenants[sh.Id] || sh.Keys != 0 || sh.Bytes != 0 {
			t.Fatalf("shard %s: tenants %d keys %d bytes %d; want %d tenants and no usage", sh.Id, sh.Tenants, sh.Keys, sh.Bytes, wantTenants[sh.Id])
		}
	}
	if !slices.Equal(ids, []string{"s1", "s2"}) {
		t.Fatalf("shards %v", ids)
	}

	a.freshTenant(t, c, "usage")
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "usage", Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	usage, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{WithUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range usage.Shards {
		resp, err := c.raw[sh.Id].Get(ctx, keys.Root, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if sh.Keys != resp.Count || sh.Bytes <= 0 {
			t.Fatalf("shard %s usage: keys %d (etcd counts %d), bytes %d", sh.Id, sh.Keys, resp.Count, sh.Bytes)
		}
	}
}
