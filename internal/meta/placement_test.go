package meta

import (
	"fmt"
	"math"
	"testing"
)

func shards(ids ...string) []Shard {
	var out []Shard
	for _, id := range ids {
		out = append(out, Shard{ID: id, Endpoints: []string{"http://" + id}, State: ShardActive})
	}
	return out
}

// placeAll places n tenants one after another, as CreateTenant does.
func placeAll(t *testing.T, n int, sh []Shard, counts map[string]int, placed map[string]string) {
	t.Helper()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("tenant-%d", len(placed))
		id, err := Place(name, sh, counts, 0.25)
		if err != nil {
			t.Fatal(err)
		}
		counts[id]++
		placed[name] = id
	}
}

func TestPlacementStaysWithinBoundedLoad(t *testing.T) {
	sh := shards("a", "b", "c")
	counts := map[string]int{}
	placed := map[string]string{}
	placeAll(t, 1000, sh, counts, placed)
	limit := math.Ceil(1.25 * 1000 / 3)
	for _, s := range sh {
		if float64(counts[s.ID]) > limit {
			t.Errorf("shard %s holds %d tenants, over the cap %v", s.ID, counts[s.ID], limit)
		}
		if counts[s.ID] == 0 {
			t.Errorf("shard %s got no tenant", s.ID)
		}
	}
}

func TestAddingAShardMovesNoTenantAndTakesNewOnes(t *testing.T) {
	sh := shards("a", "b", "c")
	counts := map[string]int{}
	placed := map[string]string{}
	placeAll(t, 1000, sh, counts, placed)
	before := map[string]string{}
	for k, v := range placed {
		before[k] = v
	}
	sh = append(sh, shards("d")...)
	placeAll(t, 300, sh, counts, placed)
	for name, id := range before {
		if placed[name] != id {
			t.Fatalf("tenant %s moved from %s to %s", name, id, placed[name])
		}
	}
	if counts["d"] == 0 {
		t.Fatal("the new shard took no new tenant")
	}
}

func TestPlacementIsDeterministicAndWeighted(t *testing.T) {
	sh := shards("a", "b", "c")
	first, _ := Place("acme", sh, nil, 0.25)
	for i := 0; i < 10; i++ {
		if got, _ := Place("acme", sh, nil, 0.25); got != first {
			t.Fatalf("placement changed from %s to %s", first, got)
		}
	}
	// With no load cap in the way, a heavier shard takes a larger share.
	sh[0].Weight = 3
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		id, _ := Place(fmt.Sprintf("t%d", i), sh, nil, 0.25)
		counts[id]++
	}
	if counts["a"] < counts["b"]+counts["c"]-300 {
		t.Fatalf("weight 3 shard got %d of 3000 (others %d, %d); want about 1800", counts["a"], counts["b"], counts["c"])
	}
}

func TestPlaceWithoutShards(t *testing.T) {
	if _, err := Place("acme", nil, nil, 0.25); err == nil {
		t.Fatal("want ErrNoShard")
	}
}
