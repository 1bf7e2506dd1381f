package release

import (
	"testing"

	"github.com/confetti-io/confetti/api/confettipb"
)

func pct(id string, version int64, bp, priority int32) *confettipb.Gray {
	return &confettipb.Gray{Id: id, Version: version, Priority: priority,
		Rule: &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: bp}}}
}

func sel(id string, version int64, s string, priority int32) *confettipb.Gray {
	return &confettipb.Gray{Id: id, Version: version, Priority: priority,
		Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: s}}}
}

func inst(id string, version int64, priority int32, ids ...string) *confettipb.Gray {
	return &confettipb.Gray{Id: id, Version: version, Priority: priority,
		Rule: &confettipb.Rule{Rule: &confettipb.Rule_Instances{Instances: &confettipb.InstanceList{Ids: ids}}}}
}

func TestResolve(t *testing.T) {
	// Bucket("acme", "routes", "gw-1") is 2287 and gw-2's is 6269 (see
	// TestBucketFixedValues).
	gw1 := &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"zone": "a", "tier": "core"}}
	gw2 := &confettipb.Identity{InstanceId: "gw-2", Labels: map[string]string{"zone": "b", "tier": "edge"}}
	rel := func(stable int64, grays ...*confettipb.Gray) *confettipb.Release {
		return &confettipb.Release{Tenant: "acme", Item: "routes", Stable: stable, Grays: grays}
	}
	tests := []struct {
		name        string
		rel         *confettipb.Release
		id          *confettipb.Identity
		wantVersion int64
		wantGray    string
	}{
		{name: "nil release", rel: nil, id: gw1},
		{name: "stable only", rel: rel(3), id: gw1, wantVersion: 3},
		{name: "no stable, no gray", rel: rel(0), id: gw1},
		{name: "no stable, gray misses", rel: rel(0, inst("g", 2, 0, "gw-2")), id: gw1},
		{name: "no stable, gray matches", rel: rel(0, inst("g", 2, 0, "gw-1")), id: gw1, wantVersion: 2, wantGray: "g"},
		{name: "percentage in", rel: rel(1, pct("g", 2, 2288, 0)), id: gw1, wantVersion: 2, wantGray: "g"},
		{name: "percentage just out", rel: rel(1, pct("g", 2, 2287, 0)), id: gw1, wantVersion: 1},
		{name: "percentage everyone", rel: rel(1, pct("g", 2, 10000, 0)), id: &confettipb.Identity{}, wantVersion: 2, wantGray: "g"},
		{name: "percentage without instance id", rel: rel(1, pct("g", 2, 9999, 0)), id: &confettipb.Identity{}, wantVersion: 1},
		{name: "percentage zero", rel: rel(1, pct("g", 2, 0, 0)), id: gw1, wantVersion: 1},
		{name: "nil identity", rel: rel(1, pct("g", 2, 5000, 0), sel("s", 3, "zone", 0)), id: nil, wantVersion: 1},
		{name: "selector in", rel: rel(1, sel("g", 2, "zone in (a,c),tier!=edge", 0)), id: gw1, wantVersion: 2, wantGray: "g"},
		{name: "selector out", rel: rel(1, sel("g", 2, "zone in (a,c),tier!=edge", 0)), id: gw2, wantVersion: 1},
		{name: "unparsable selector matches nothing", rel: rel(1, sel("g", 2, "zone in (a", 0)), id: gw1, wantVersion: 1},
		{name: "instances in", rel: rel(1, inst("g", 2, 0, "gw-9", "gw-2")), id: gw2, wantVersion: 2, wantGray: "g"},
		{name: "instances without instance id", rel: rel(1, inst("g", 2, 0, "")), id: &confettipb.Identity{}, wantVersion: 1},
		{name: "gray without rule", rel: rel(1, &confettipb.Gray{Id: "g", Version: 2}), id: gw1, wantVersion: 1},
		{name: "gray without version", rel: rel(1, inst("g", 0, 0, "gw-1")), id: gw1, wantVersion: 1},
		{
			name: "highest priority wins",
			rel:  rel(1, pct("low", 2, 10000, 1), inst("high", 3, 5, "gw-1"), sel("mid", 4, "zone=a", 3)),
			id:   gw1, wantVersion: 3, wantGray: "high",
		},
		{
			name: "higher priority that misses is skipped",
			rel:  rel(1, pct("low", 2, 10000, 1), inst("high", 3, 5, "gw-2"), sel("mid", 4, "zone=a", 3)),
			id:   gw1, wantVersion: 4, wantGray: "mid",
		},
		{
			name: "tie goes to the smaller id",
			rel:  rel(1, inst("b", 2, 1, "gw-1"), inst("a", 3, 1, "gw-1"), inst("c", 4, 1, "gw-1")),
			id:   gw1, wantVersion: 3, wantGray: "a",
		},
		{
			name: "negative priority still beats stable",
			rel:  rel(1, inst("g", 2, -4, "gw-1")),
			id:   gw1, wantVersion: 2, wantGray: "g",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, g := Resolve(tt.rel, tt.id)
			if v != tt.wantVersion || g != tt.wantGray {
				t.Errorf("Resolve = (%d, %q), want (%d, %q)", v, g, tt.wantVersion, tt.wantGray)
			}
		})
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	rel := &confettipb.Release{Tenant: "acme", Item: "routes", Stable: 1, Grays: []*confettipb.Gray{
		pct("p", 2, 5000, 1),
		inst("i", 3, 2, "gw-7", "gw-8"),
		sel("s", 4, "zone in (a,b),tier!=edge", 0),
	}}
	ids := []*confettipb.Identity{
		{InstanceId: "gw-1", Labels: map[string]string{"zone": "a"}},
		{InstanceId: "gw-8"},
		{InstanceId: "gw-3", Labels: map[string]string{"zone": "c", "tier": "edge"}},
	}
	for _, id := range ids {
		Resolve(rel, id)
	}
	n := testing.AllocsPerRun(100, func() {
		for _, id := range ids {
			Resolve(rel, id)
		}
	})
	if n != 0 {
		t.Errorf("Resolve allocates %v times per run, want 0", n)
	}
}

func BenchmarkResolve(b *testing.B) {
	rel := &confettipb.Release{Tenant: "acme", Item: "routes", Stable: 1, Grays: []*confettipb.Gray{
		pct("p", 2, 5000, 1),
		sel("s", 4, "zone in (a,b),tier!=edge", 0),
	}}
	id := &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"zone": "c"}}
	b.ReportAllocs()
	for b.Loop() {
		Resolve(rel, id)
	}
}
