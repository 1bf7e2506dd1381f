package meta

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/internal/embedetcd"
)

func newStore(t *testing.T, c *embedetcd.Cluster) *Store {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st, err := New(cli, Config{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConcurrentCreatesAgreeOnOnePlacement(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	a, b := newStore(t, c), newStore(t, c)
	ctx := context.Background()
	for _, id := range []string{"s1", "s2", "s3"} {
		if _, err := a.AddShard(ctx, Shard{ID: id, Endpoints: []string{"http://" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	// Adding the same shard again is a no-op; other endpoints conflict.
	if _, err := a.AddShard(ctx, Shard{ID: "s1", Endpoints: []string{"http://s1"}}); err != nil {
		t.Fatalf("repeated AddShard: %v", err)
	}
	if _, err := a.AddShard(ctx, Shard{ID: "s1", Endpoints: []string{"http://other"}}); !errors.Is(err, ErrShardExists) {
		t.Fatalf("AddShard with other endpoints: err = %v, want ErrShardExists", err)
	}
	// b learns about the shards by watch.
	waitFor(t, func() bool { return len(b.Shards()) == 3 })

	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("tenant-%d", i)
		var wg sync.WaitGroup
		results := make([]Tenant, 2)
		created := make([]bool, 2)
		errs := make([]error, 2)
		for j, st := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[j], created[j], errs[j] = st.CreateTenant(ctx, name)
			}()
		}
		wg.Wait()
		if created[0] == created[1] {
			t.Fatalf("%s: created = %v, want exactly one winner (errors %v)", name, created, errs)
		}
		for j := range errs {
			if errs[j] != nil && !errors.Is(errs[j], ErrTenantExists) {
				t.Fatalf("%s: store %d: %v", name, j, errs[j])
			}
		}
		if results[0].Shard != results[1].Shard {
			t.Fatalf("%s: stores disagree: %s vs %s", name, results[0].Shard, results[1].Shard)
		}
	}
	waitFor(t, func() bool { return len(a.Tenants()) == 20 && len(b.Tenants()) == 20 })
}

func TestLookupFindsATenantBeforeTheWatchDoes(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	ctx := context.Background()
	if _, err := st.LookupTenant(ctx, "ghost"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("unknown tenant: err = %v, want ErrTenantNotFound", err)
	}
	if _, err := st.LookupTenant(ctx, "Bad Name"); err == nil {
		t.Fatal("invalid name: want an error")
	}
	if _, _, err := st.CreateTenant(ctx, "acme"); !errors.Is(err, ErrNoShard) {
		t.Fatalf("no shards: err = %v, want ErrNoShard", err)
	}
}

func TestTokenKeyIsSharedAndStable(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	a, b := newStore(t, c), newStore(t, c)
	ka, err := a.TokenKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.TokenKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != 32 || string(ka) != string(kb) {
		t.Fatalf("token keys differ or are short: %x vs %x", ka, kb)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDrainedShardTakesNoNewTenants(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	ctx := context.Background()
	for _, id := range []string{"s1", "s2"} {
		if _, err := st.AddShard(ctx, Shard{ID: id, Endpoints: []string{"http://" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := st.SetShardState(ctx, "s1", ShardDraining)
	if err != nil || sh.State != ShardDraining {
		t.Fatalf("drain: %v, %v", sh, err)
	}
	for i := 0; i < 20; i++ {
		tn, _, err := st.CreateTenant(ctx, fmt.Sprintf("t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if tn.Shard != "s2" {
			t.Fatalf("tenant %s placed on draining shard %s", tn.Name, tn.Shard)
		}
	}
	if _, err := st.SetShardState(ctx, "nope", ShardDraining); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("unknown shard: %v", err)
	}
	if _, err := st.SetShardState(ctx, "s1", "gone"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad state: %v", err)
	}
	if _, err := st.SetShardState(ctx, "s1", ShardDraining); err != nil {
		t.Fatalf("draining twice: %v", err)
	}
}
