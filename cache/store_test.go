package cache

import (
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

func kv(tenant, rel, value string, mod int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(keys.Tenant(tenant) + rel), Value: []byte(value), ModRevision: mod, CreateRevision: mod, Version: 1}
}

// TestRelistBecomesTheDifferenceAsOneTransaction checks what the cache does
// after etcd compacted away what its watch missed: the new listing is
// compared key by key with the state, and the difference reaches history
// (and so every subscriber) as ordinary events at the listing's revision.
func TestRelistBecomesTheDifferenceAsOneTransaction(t *testing.T) {
	s := newShardState("s1", 1000, 1<<20, newMetrics(nil))
	s.Snapshot(10, []*mvccpb.KeyValue{
		kv("acme", "kv/a", "1", 5), kv("acme", "kv/b", "1", 6), kv("acme", "kv/same", "x", 7),
		kv("other", "kv/gone", "1", 8), kv("acme", "fence", "", 9),
	})
	s.Backfill(10, nil)
	s.Apply([]SourceTxn{{Rev: 11, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv("acme", "kv/a", "2", 11)}}}})

	// Revisions 12..20 were compacted away before the watch saw them.
	s.Snapshot(20, []*mvccpb.KeyValue{
		kv("acme", "kv/a", "3", 15), kv("acme", "kv/same", "x", 7), kv("acme", "kv/c", "1", 18),
	})
	if s.rev != 20 {
		t.Fatalf("revision %d after the relist, want 20", s.rev)
	}
	var got []string
	s.hist.after(11, func(tx *txn) bool {
		if tx.rev != 20 {
			t.Fatalf("difference at revision %d, want the listing's 20", tx.rev)
		}
		for _, e := range tx.events {
			line := e.tenant + " " + e.ev.Type.String() + " " + e.key
			if e.ev.Type == confettipb.Event_PUT {
				line += "=" + string(e.ev.Kv.Value)
			}
			got = append(got, line)
		}
		return true
	})
	slices.Sort(got)
	want := []string{"acme DELETE kv/b", "acme PUT kv/a=3", "acme PUT kv/c=1", "other DELETE kv/gone"}
	if !slices.Equal(got, want) {
		t.Fatalf("difference %q, want %q", got, want)
	}
	// A subscriber at 11 replays to exactly the listing.
	r, ok := s.read(viewer{tenant: "acme", prefixes: []string{"kv/"}}, 11, 1<<20)
	if !ok || r.seen != 20 || len(r.txns) != 1 || len(r.txns[0].Events) != 3 {
		t.Fatalf("read after the relist: %v %d %v", r.txns, r.seen, ok)
	}
	// An older listing (a lagging member) changes nothing.
	s.Snapshot(19, nil)
	if s.rev != 20 || s.tenants["acme"].Len() != 3 {
		t.Fatalf("an older listing was applied: rev %d", s.rev)
	}
}
