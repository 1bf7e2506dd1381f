package cache

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// TestUnreachableShardMakesOnlyItsTenantsUnavailable registers a shard
// where no etcd listens and places a tenant on it: the node becomes ready
// anyway and serves the other shard's tenants; the lost tenant's
// subscriptions and reads get Unavailable naming the shard, and status
// says why.
func TestUnreachableShardMakesOnlyItsTenantsUnavailable(t *testing.T) {
	tc := testcluster.New(t, 1)
	st, _ := tc.NewStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String()
	lis.Close()
	if _, err := st.AddShard(ctx, meta.Shard{ID: "dead", Endpoints: []string{dead}}); err != nil {
		t.Fatal(err)
	}
	place := func(tenant, on, off string) {
		t.Helper()
		if _, err := st.SetShardState(ctx, off, meta.ShardDraining); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SetShardState(ctx, on, meta.ShardActive); err != nil {
			t.Fatal(err)
		}
		if tn, _, err := st.CreateTenant(ctx, tenant); err != nil || tn.Shard != on {
			t.Fatalf("tenant %s on %q (%v), want %s", tenant, tn.Shard, err, on)
		}
	}
	place("lost", "dead", "s1")
	place("fine", "s1", "dead")
	put(t, tc.ShardClient(t, "s1"), "fine", "kv/k", "v")

	n := startNode(t, tc, "node", Config{}) // waits until the node is ready
	if un := n.c.Unavailable(); len(un) != 1 || !strings.Contains(un[0], "shard dead") || !strings.Contains(un[0], dead) {
		t.Fatalf("Unavailable() = %q, want the dead shard and its endpoint", un)
	}

	sub := subscribe(t, n, "fine", nil, "")
	testcluster.WaitFor(t, "the tenant of the good shard", func() bool {
		state, _, _, _ := sub.snapshot()
		return state["kv/k"] == "v"
	})

	wantUnavailable := func(what string, err error) {
		t.Helper()
		s := status.Convert(err)
		if s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "shard dead") {
			t.Fatalf("%s of a tenant on the dead shard: %v %q, want Unavailable naming the shard", what, s.Code(), s.Message())
		}
	}
	stream, err := n.cli.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "lost"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantUnavailable("Subscribe", err)
	_, err = n.cli.Range(ctx, &confettipb.RangeRequest{Tenant: "lost", Key: "k"})
	wantUnavailable("Range", err)
	if _, err := n.cli.Range(ctx, &confettipb.RangeRequest{Tenant: "fine", Key: "k"}); err != nil {
		t.Fatalf("Range of the good shard's tenant: %v", err)
	}

	// A shard added to a ready node whose etcd never answers (it accepts
	// connections and says nothing) leaves the node ready: its first
	// sync is under way, reported as such.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := st.AddShard(ctx, meta.Shard{ID: "late", Endpoints: []string{"http://" + silent.Addr().String()}, State: meta.ShardDraining}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the node to source the added shard", func() bool { return n.c.shard("late") != nil })
	if err := n.c.Readiness(); err != nil {
		t.Fatalf("a shard added to a ready node made it unready: %v", err)
	}
	if un := strings.Join(n.c.Unavailable(), "\n"); !strings.Contains(un, "shard late: first sync under way") {
		t.Fatalf("Unavailable() = %q, want the added shard's first sync", un)
	}

	status, err := n.cli.Status(ctx, &confettipb.CacheStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ss := range status.Shards {
		got[ss.Shard] = fmt.Sprintf("synced=%v %s", ss.Synced, ss.LastError)
	}
	if got["s1"] != "synced=true " || !strings.Contains(got["dead"], "synced=false") || !strings.Contains(got["dead"], "unavailable on this node") {
		t.Fatalf("status = %q, want s1 synced and dead not, saying why", got)
	}
}

// TestRemovedShardIsNoLongerSourced removes an empty shard from the
// registry: the node stops its source and forgets it.
func TestRemovedShardIsNoLongerSourced(t *testing.T) {
	tc := testcluster.New(t, 2)
	st, _ := tc.NewStore(t)
	n := startNode(t, tc, "node", Config{})
	if n.c.shard("s2") == nil {
		t.Fatal("s2 is not sourced")
	}
	if _, err := st.RemoveShard(context.Background(), "s2"); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the node to stop sourcing the removed shard", func() bool { return n.c.shard("s2") == nil })
	if !n.c.Ready() {
		t.Fatalf("node not ready after the removal: %v", n.c.Readiness())
	}
}
