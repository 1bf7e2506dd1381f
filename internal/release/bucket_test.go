package release

import (
	"fmt"
	"testing"
)

// identities returns n distinct instance ids.
func identities(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("gw-%05d", i)
	}
	return ids
}

func TestBucketPercentagesWithinOnePoint(t *testing.T) {
	ids := identities(10000)
	for _, bp := range []int32{100, 500, 1000, 2500, 5000, 7500, 9000, 9900} {
		in := 0
		for _, id := range ids {
			if Bucket("acme", "routes", id) < bp {
				in++
			}
		}
		// 10,000 identities: one identity is one basis point, and one
		// percentage point is 100 identities.
		if diff := in - int(bp); diff > 100 || diff < -100 {
			t.Errorf("%d bp: %d of 10000 identities in, want within 100 of %d", bp, in, bp)
		}
	}
}

func TestBucketMonotone(t *testing.T) {
	ids := identities(10000)
	steps := []int32{100, 1000, 5000, 10000}
	for i := 1; i < len(steps); i++ {
		for _, id := range ids {
			b := Bucket("acme", "routes", id)
			if b < steps[i-1] && b >= steps[i] {
				t.Fatalf("%s is in at %d bp but not at %d bp", id, steps[i-1], steps[i])
			}
		}
	}
	for _, id := range ids {
		if b := Bucket("acme", "routes", id); b < 0 || b >= Buckets {
			t.Fatalf("Bucket(%q) = %d, outside [0, %d)", id, b, Buckets)
		}
	}
}

// TestBucketFixedValues pins the hash: every proxy and cache node, in any
// process and any release of Confetti, must put an instance in the same
// bucket, or raising a percentage would move gateways out.
func TestBucketFixedValues(t *testing.T) {
	tests := []struct {
		name                   string
		tenant, item, instance string
		want                   int32
	}{
		{name: "first", tenant: "acme", item: "routes", instance: "gw-1", want: 2287},
		{name: "other instance", tenant: "acme", item: "routes", instance: "gw-2", want: 6269},
		{name: "other item", tenant: "acme", item: "upstreams", instance: "gw-1", want: 6753},
		{name: "other tenant", tenant: "shop", item: "routes", instance: "gw-1", want: 2400},
		{name: "empty instance", tenant: "t", item: "i", instance: "", want: 2743},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Bucket(tt.tenant, tt.item, tt.instance); got != tt.want {
				t.Errorf("Bucket(%q, %q, %q) = %d, want %d", tt.tenant, tt.item, tt.instance, got, tt.want)
			}
		})
	}
}

func TestBucketSpreadsItems(t *testing.T) {
	// The item is part of the hash: the same 10% of gateways is not the
	// canary of every item.
	ids := identities(10000)
	both := 0
	for _, id := range ids {
		if Bucket("acme", "a", id) < 1000 && Bucket("acme", "b", id) < 1000 {
			both++
		}
	}
	// Independent buckets put about 1% of identities in both 10% groups.
	if both > 200 {
		t.Errorf("%d identities in the first 10%% of both items, want about 100", both)
	}
}

func TestBucketDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Bucket("acme", "routes", "gw-1") }); n != 0 {
		t.Errorf("Bucket allocates %v times per call, want 0", n)
	}
}
