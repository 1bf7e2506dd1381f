package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

func addShards(t *testing.T, st *Store, shards ...Shard) {
	t.Helper()
	for _, sh := range shards {
		if sh.Endpoints == nil {
			sh.Endpoints = []string{"http://" + sh.ID}
		}
		if _, err := st.AddShard(context.Background(), sh); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRemoveShardIsRefusedWhileItHoldsTenants(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	a, b := newStore(t, c), newStore(t, c)
	ctx := context.Background()
	addShards(t, a, Shard{ID: "s1"}, Shard{ID: "s2"})
	on := map[string]int{}
	for i := 0; on["s1"] < 2; i++ {
		tn, _, err := a.CreateTenant(ctx, fmt.Sprintf("t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		on[tn.Shard]++
	}
	_, err := a.RemoveShard(ctx, "s1")
	if !errors.Is(err, ErrShardNotEmpty) || rpcerr.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), fmt.Sprintf("holds %d tenants", on["s1"])) {
		t.Fatalf("remove a shard holding %d tenants: err = %v, want ErrShardNotEmpty with the count", on["s1"], err)
	}
	if _, err := a.RemoveShard(ctx, "nope"); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("remove an unknown shard: err = %v", err)
	}

	addShards(t, a, Shard{ID: "empty"})
	waitFor(t, func() bool { _, ok := b.Shard("empty"); return ok })
	sh, err := b.RemoveShard(ctx, "empty")
	if err != nil || sh.ID != "empty" {
		t.Fatalf("remove an empty shard: %v, %v", sh, err)
	}
	if _, ok := b.Shard("empty"); ok {
		t.Fatal("the removing store still lists the shard")
	}
	waitFor(t, func() bool { _, ok := a.Shard("empty"); return !ok })
	for i := 0; i < 10; i++ {
		if tn, _, err := a.CreateTenant(ctx, fmt.Sprintf("after-%d", i)); err != nil || tn.Shard == "empty" {
			t.Fatalf("tenant placed on %q after its removal: %v", tn.Shard, err)
		}
	}
}

// TestTenantIsNeverPlacedOnARemovedShard places a tenant while the
// store's memory still lists a shard that meta no longer has (its removal
// not delivered yet): the placement transaction sees the shard gone and
// places the tenant elsewhere.
func TestTenantIsNeverPlacedOnARemovedShard(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	ctx := context.Background()
	addShards(t, st, Shard{ID: "s1"})
	ghost := Shard{ID: "ghost", Endpoints: []string{"http://ghost"}, State: ShardActive}
	st.mu.Lock()
	st.shards[ghost.ID] = ghost
	st.mu.Unlock()
	// A tenant whose first choice is the ghost.
	var name string
	for i := 0; name == ""; i++ {
		if n := fmt.Sprintf("t%d", i); Rank(n, st.Shards())[0].ID == ghost.ID {
			name = n
		}
	}
	tn, _, err := st.CreateTenant(ctx, name)
	if err != nil || tn.Shard != "s1" {
		t.Fatalf("tenant %s placed on %q (%v), want s1: the ghost shard is not in meta", name, tn.Shard, err)
	}
}

func TestCreateTenantSkipsShardsTheCheckRefusesAndPendingShards(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	ctx := context.Background()
	addShards(t, st, Shard{ID: "s1"}, Shard{ID: "s2"}, Shard{ID: "new", State: ShardPending})
	if sh, _ := st.Shard("new"); sh.State != ShardPending {
		t.Fatalf("shard added as pending is %q", sh.State)
	}
	down := func(sh Shard) error {
		if sh.ID == "s1" {
			return errors.New("no answer")
		}
		return nil
	}
	for i := 0; i < 20; i++ {
		tn, _, err := st.CreateTenant(ctx, fmt.Sprintf("t%d", i), WithShardCheck(down))
		if err != nil || tn.Shard != "s2" {
			t.Fatalf("tenant placed on %q (%v), want s2: s1 is refused by the check and new is pending", tn.Shard, err)
		}
	}
	none := func(sh Shard) error { return fmt.Errorf("%s is down", sh.ID) }
	_, _, err := st.CreateTenant(ctx, "nowhere", WithShardCheck(none))
	if !errors.Is(err, ErrNoHealthyShard) || rpcerr.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "s1: s1 is down") || !strings.Contains(err.Error(), "s2: s2 is down") {
		t.Fatalf("every shard refused: err = %v, want ErrNoHealthyShard naming each shard", err)
	}

	// A pending shard becomes active by ActivatePending; a draining one
	// does not.
	sh, err := st.ActivatePending(ctx, "new")
	if err != nil || sh.State != ShardActive {
		t.Fatalf("activate pending: %v, %v", sh, err)
	}
	if _, err := st.SetShardState(ctx, "s2", ShardDraining); err != nil {
		t.Fatal(err)
	}
	if sh, err := st.ActivatePending(ctx, "s2"); err != nil || sh.State != ShardDraining {
		t.Fatalf("ActivatePending changed a draining shard: %v, %v", sh, err)
	}
	if sh, err := st.SetShardState(ctx, "s2", ShardActive); err != nil || sh.State != ShardActive {
		t.Fatalf("activate a draining shard: %v, %v", sh, err)
	}
	if _, err := st.AddShard(ctx, Shard{ID: "odd", Endpoints: []string{"http://odd"}, State: "gone"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("add with a bad state: %v", err)
	}

	// With no active shard left, the error says how to get one.
	for _, id := range []string{"s1", "s2", "new"} {
		if _, err := st.SetShardState(ctx, id, ShardDraining); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.CreateTenant(ctx, "late"); !errors.Is(err, ErrNoShard) || !strings.Contains(err.Error(), "confetti shard activate") {
		t.Fatalf("no active shard: err = %v", err)
	}
}

// TestLoadedSaysMetaIsNotLoadedYet points a store at an address where no
// meta cluster answers: until it loads, Loaded is Unavailable and names
// the endpoints.
func TestLoadedSaysMetaIsNotLoadedYet(t *testing.T) {
	ep := "http://127.0.0.1:1"
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := New(cli, Config{Logger: zaptest.NewLogger(t), RequestTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Loaded()
	if rpcerr.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "meta not loaded yet from "+ep) {
		t.Fatalf("Loaded before meta answered: %v, want Unavailable naming %s", err, ep)
	}
	// Once a listing has failed, the reason is part of the message.
	waitFor(t, func() bool { return strings.Contains(st.Loaded().Error(), "last error") })
	if _, _, err := st.CreateTenant(context.Background(), "acme"); rpcerr.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "meta not loaded yet") {
		t.Fatalf("CreateTenant before meta is loaded: %v, want Unavailable saying so, not that there is no shard", err)
	}

	c := embedetcd.NewForTest(t, 1)
	if err := newStore(t, c).Loaded(); err != nil {
		t.Fatalf("Loaded after WaitReady: %v", err)
	}
}

// TestClientsDialEachShardOnItsOwn holds the dial of one shard and gets
// the client of another meanwhile.
func TestClientsDialEachShardOnItsOwn(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	addShards(t, st, Shard{ID: "slow", Endpoints: []string{"http://127.0.0.1:1"}}, Shard{ID: "good", Endpoints: c.Endpoints()})
	entered, release := make(chan struct{}), make(chan struct{})
	clients := NewClients(st, func(eps []string) clientv3.Config {
		if eps[0] == "http://127.0.0.1:1" {
			close(entered)
			<-release
		}
		return DefaultClientConfig(eps)
	})
	defer clients.Close()
	slow := make(chan error, 1)
	go func() {
		_, err := clients.Get("slow")
		slow <- err
	}()
	<-entered
	got := make(chan error, 1)
	go func() {
		_, err := clients.Get("good")
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("the client of a good shard waited for the dial of another shard")
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("dial of the slow shard: %v", err)
	}

	// Prune closes the client of a shard that left the registry.
	if _, err := st.RemoveShard(context.Background(), "good"); err != nil {
		t.Fatal(err)
	}
	clients.Prune()
	clients.mu.Lock()
	_, kept := clients.clients["good"]
	clients.mu.Unlock()
	if kept {
		t.Fatal("Prune kept the client of a removed shard")
	}
}
