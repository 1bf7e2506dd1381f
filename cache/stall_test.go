package cache

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// TestStalledWatchIsRestartedAndCaughtUp silences the network between the
// cache and its shard while writes go on: the source notices no answer to
// its progress requests and restarts its watch at its revision, so once
// the network is back subscribers get etcd's own transactions, not a
// relisted difference.
func TestStalledWatchIsRestartedAndCaughtUp(t *testing.T) {
	tc := testcluster.New(t, 1)
	etcd := tc.Shards["s1"]
	fz := testcluster.NewFreezer(t, strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
	st, _ := tc.NewStore(t)
	ctx := context.Background()
	if _, err := st.AddShard(ctx, meta.Shard{ID: "silent", Endpoints: []string{"http://" + fz.Addr()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetShardState(ctx, "s1", meta.ShardDraining); err != nil {
		t.Fatal(err)
	}
	tn, _, err := st.CreateTenant(ctx, "acme")
	if err != nil || tn.Shard != "silent" {
		t.Fatalf("tenant on %q (%v), want the silent shard", tn.Shard, err)
	}
	cli := tc.ShardClient(t, "s1") // the same etcd, reached directly
	ref, err := watchcheck.StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	n := startNode(t, tc, "node", Config{ProgressInterval: 100 * time.Millisecond, StallTimeout: 500 * time.Millisecond})
	sub := subscribeChecked(t, n, "acme", nil, false)
	put(t, cli, "acme", "kv/before", "1")

	fz.Freeze()
	var last int64
	for i := 0; i < 20; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%5), fmt.Sprint(i))
	}
	silent := n.c.shard("silent")
	testcluster.WaitFor(t, "the stalled watch to be restarted", func() bool {
		silent.mu.RLock()
		defer silent.mu.RUnlock()
		return silent.restarts > 0
	})
	fz.Unfreeze()
	sub.waitRevision(t, ref, last)
	if relists := silent.status().relists; relists != 0 {
		t.Fatalf("the shard was listed %d times after a stall etcd's history covered", relists)
	}
}

// A shard whose etcd is down: clientv3 holds a progress request until the
// watch stream is back, so a detector that waited for it would notice
// nothing during the outage. It notices, and once etcd is back the watch
// resumes at its revision.
func TestStallDuringAnOutageIsNoticedAndResumedWithoutRelisting(t *testing.T) {
	tc := testcluster.New(t, 1)
	ctx := context.Background()
	cfg := embedetcd.Config{Name: "down", DataDir: t.TempDir()}
	down, err := embedetcd.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { down.Close() }()
	st, _ := tc.NewStore(t)
	if _, err := st.AddShard(ctx, meta.Shard{ID: "down", Endpoints: down.Endpoints()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetShardState(ctx, "s1", meta.ShardDraining); err != nil {
		t.Fatal(err)
	}
	if tn, _, err := st.CreateTenant(ctx, "acme"); err != nil || tn.Shard != "down" {
		t.Fatalf("tenant on %q (%v), want the shard that goes down", tn.Shard, err)
	}
	n := startNode(t, tc, "node", Config{ProgressInterval: 100 * time.Millisecond, StallTimeout: 500 * time.Millisecond})
	// The client outlives the restart: etcd comes back on the same ports,
	// and the reference's watch resumes as any clientv3 watch does.
	cli, err := down.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put(t, cli, "acme", "kv/before", "1")
	ref, err := watchcheck.StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	sub := subscribeChecked(t, n, "acme", nil, false)
	shard := n.c.shard("down")
	testcluster.WaitFor(t, "the node synced", func() bool { return shard.revision() > 0 })

	down.Close()
	restarts := shard.status().restarts
	testcluster.WaitFor(t, "the stall noticed while etcd is down", func() bool { return shard.status().restarts > restarts })

	if down, err = embedetcd.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := 0; i < 20; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%5), fmt.Sprint(i))
	}
	sub.waitRevision(t, ref, last)
	if relists := shard.status().relists; relists != 0 {
		t.Fatalf("the shard was listed %d times after an outage etcd's history covered", relists)
	}
}

// status is the shard's restart and relist counts.
func (s *shardState) status() struct{ restarts, relists int64 } {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return struct{ restarts, relists int64 }{s.restarts, s.relists}
}
