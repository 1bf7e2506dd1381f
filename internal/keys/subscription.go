package keys

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Subscribers name what they receive in the caller's key space: prefixes of
// plain keys as writers name them, config items and services by name. The
// cache matches events on the tenant-relative keys of the namespaces
// instead, so a subscription is held as a sorted list of tenant-relative
// prefixes (its scope):
//
//	prefix /routes/  -> kv//routes/
//	item gateway     -> cfg/gateway/   ("*": cfg/)
//	service api      -> svc/api/       ("*": svc/)
//
// An item is delivered under the tenant-relative key cfg/<item>/ (see
// ItemKey), so that the scope of one item never covers another's.

// Kind is what a key a subscriber receives names.
type Kind int

const (
	// KindKey is a plain key.
	KindKey Kind = iota
	// KindItem is a config item, named by the item.
	KindItem
	// KindService is a service instance, named <service>/<instance>.
	KindService
)

// All names every item or every service in a subscription.
const All = "*"

// ItemKey is the tenant-relative key a subscriber receives an item under.
func ItemKey(item string) string { return SpaceCfg + item + "/" }

// Scope turns what a subscription names into its sorted tenant-relative
// prefixes, with duplicates and prefixes covered by another removed. When
// all three lists are empty the scope is every namespace.
func Scope(prefixes, items, services []string) ([]string, error) {
	if len(prefixes) == 0 && len(items) == 0 && len(services) == 0 {
		return slices.Clone(Spaces), nil
	}
	var out []string
	for _, p := range prefixes {
		if !utf8.ValidString(p) {
			return nil, fmt.Errorf("%w: prefix %q is not UTF-8: keys are UTF-8 strings", ErrInvalidPrefix, p)
		}
		out = append(out, SpaceKV+p)
	}
	for _, it := range items {
		switch {
		case it == All:
			out = append(out, SpaceCfg)
		case it == "" || strings.Contains(it, "/") || !utf8.ValidString(it):
			return nil, fmt.Errorf("%w: item %q is not an item name: name an item (gateway) or %q for every item", ErrInvalidPrefix, it, All)
		default:
			out = append(out, ItemKey(it))
		}
	}
	for _, s := range services {
		switch {
		case s == All:
			out = append(out, SpaceSvc)
		case ValidSvcName("service", s) != nil:
			return nil, fmt.Errorf("%w: service %q is not a service name: name a service (api) or %q for every service", ErrInvalidPrefix, s, All)
		default:
			out = append(out, SpaceSvc+s+"/")
		}
	}
	slices.Sort(out)
	kept := out[:0]
	for _, p := range out {
		if len(kept) > 0 && strings.HasPrefix(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return kept, nil
}

// Public is the key a subscriber receives for a tenant-relative key of a
// visible namespace, and what it names. ok is false for any other key.
func Public(rel string) (key string, kind Kind, ok bool) {
	if k, found := strings.CutPrefix(rel, SpaceKV); found {
		return k, KindKey, true
	}
	if k, found := strings.CutPrefix(rel, SpaceSvc); found {
		return k, KindService, true
	}
	if k, found := strings.CutPrefix(rel, SpaceCfg); found {
		return strings.TrimSuffix(k, "/"), KindItem, true
	}
	return "", KindKey, false
}

// Relative is the tenant-relative key of a key a subscriber received: the
// inverse of Public.
func Relative(key string, kind Kind) string {
	switch kind {
	case KindItem:
		return ItemKey(key)
	case KindService:
		return SpaceSvc + key
	}
	return SpaceKV + key
}
