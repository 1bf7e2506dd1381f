package cache

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestShardSyncedMetric checks confetti_cache_shard_synced, which the
// ConfettiCacheShardNotSynced alert (deploy/prometheus/rules.yaml) reads:
// 0 while a shard loads, 1 once its backfill has it serve subscribers.
func TestShardSyncedMetric(t *testing.T) {
	const help = `# HELP confetti_cache_shard_synced 1 once the node has loaded a shard and serves its subscribers, 0 while it loads it.
# TYPE confetti_cache_shard_synced gauge
`
	reg := prometheus.NewRegistry()
	s := newShardState("s1", 1000, 1<<20, newMetrics(reg))
	for _, tc := range []struct {
		name string
		step func()
		want string
	}{
		{name: "created", step: func() {}, want: `confetti_cache_shard_synced{shard="s1"} 0`},
		{name: "listed", step: func() { s.Snapshot(10, []*mvccpb.KeyValue{kv("acme", "kv/a", "1", 5)}) }, want: `confetti_cache_shard_synced{shard="s1"} 0`},
		{name: "backfilled", step: func() { s.Backfill(10, nil) }, want: `confetti_cache_shard_synced{shard="s1"} 1`},
		{name: "listed again after compaction", step: func() { s.Snapshot(20, nil) }, want: `confetti_cache_shard_synced{shard="s1"} 1`},
	} {
		tc.step()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(help+tc.want+"\n"), "confetti_cache_shard_synced"); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
