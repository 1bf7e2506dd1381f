package release

import "github.com/confetti-io/confetti/api/confettipb"

// Resolve returns the version a gateway with identity id gets from the
// release record rel: the matching gray with the highest priority (ties
// broken by the smaller gray id), else the stable version. Version 0
// means none: the item is not delivered to that gateway. grayID is "" for
// the stable version.
//
// A percentage rule matches when Bucket(rel.Tenant, rel.Item, instance id)
// is below its basis points; a gateway without an instance id only
// matches a percentage of 10000. An instance rule matches the listed
// instance ids. A selector rule matches the identity's labels; a selector
// that does not parse (the proxy refuses those) matches nothing, as does
// a gray without a rule or without a version.
//
// Resolve does not allocate for percentage and instance rules, nor for a
// selector already seen.
func Resolve(rel *confettipb.Release, id *confettipb.Identity) (version int64, grayID string) {
	var best *confettipb.Gray
	bucket := int32(-1)
	for _, g := range rel.GetGrays() {
		if g.GetVersion() <= 0 {
			continue
		}
		if best != nil && !outranks(g, best) {
			continue
		}
		if matches(rel, g.GetRule(), id, &bucket) {
			best = g
		}
	}
	if best != nil {
		return best.GetVersion(), best.GetId()
	}
	return rel.GetStable(), ""
}

// outranks reports whether gray a wins over gray b when both match.
func outranks(a, b *confettipb.Gray) bool {
	if a.GetPriority() != b.GetPriority() {
		return a.GetPriority() > b.GetPriority()
	}
	return a.GetId() < b.GetId()
}

// matches reports whether rule selects id. bucket caches the identity's
// bucket across the grays of one release: -1 until computed.
func matches(rel *confettipb.Release, rule *confettipb.Rule, id *confettipb.Identity, bucket *int32) bool {
	switch r := rule.GetRule().(type) {
	case *confettipb.Rule_BasisPoints:
		if r.BasisPoints >= Buckets {
			return true
		}
		if id.GetInstanceId() == "" || r.BasisPoints <= 0 {
			return false
		}
		if *bucket < 0 {
			*bucket = Bucket(rel.GetTenant(), rel.GetItem(), id.GetInstanceId())
		}
		return *bucket < r.BasisPoints
	case *confettipb.Rule_Instances:
		inst := id.GetInstanceId()
		if inst == "" {
			return false
		}
		for _, x := range r.Instances.GetIds() {
			if x == inst {
				return true
			}
		}
		return false
	case *confettipb.Rule_Selector:
		ps := cachedSelector(r.Selector)
		return ps.ok && ps.sel.Matches(id.GetLabels())
	}
	return false
}
