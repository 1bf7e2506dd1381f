package cache

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
)

// Config items reach subscribers resolved: the physical keys of an item
// (cfg/<item>/v/<version>, cfg/<item>/release and the item's schema and
// release log) are never sent; a subscriber that names the item gets one
// key, the item's name with kind ITEM, holding the content of the version its release
// resolves to for the subscriber's identity, with an ItemRef saying which.
// A release change sends an event only to the subscribers whose resolved
// version changed.

// ref is the version of an item a subscriber resolves to, and the gray
// that chose it; the zero ref means the item is not delivered. Only the
// version counts as a change: a gray promoted to stable changes no
// subscriber's content, so it sends nothing, and gray is what chose the
// version when it was sent.
type ref struct {
	version int64
	gray    string
}

// view is a subscriber's resolution of the items under its prefixes:
// item -> ref, holding only items it receives.
type view map[string]ref

// itemState is what a shard keeps of one config item of a tenant: the
// release record and every version's content.
type itemState struct {
	rel    *confettipb.Release
	relRev int64
	// versions are immutable once published.
	versions map[int64]*confettipb.ItemVersion
}

// cfgChange marks an event on an item's release record; history keeps it
// with the event so that replays resolve without decoding again.
type cfgChange struct {
	item string
	// rel is the record after the event; nil when it was deleted.
	rel *confettipb.Release
	// prev is the record before the event; prevKnown is false for the first
	// change of an item in a backfilled history (the state before it is
	// gone), which then cannot be replayed across.
	prev      *confettipb.Release
	prevKnown bool
}

// cfgKey splits a tenant-relative key under cfg/ into its item and what
// the key is: a version (with its number) or the release record. ok is
// false for the keys subscribers never see resolved (schema, log, others).
func cfgKey(rel string) (item string, version int64, isRelease, ok bool) {
	item, kind, n, ok := keys.ParseCfg(rel)
	switch {
	case !ok:
		return "", 0, false, false
	case kind == keys.CfgRelease:
		return item, 0, true, true
	case kind == keys.CfgVersion && n > 0:
		return item, n, false, true
	}
	return "", 0, false, false
}

// kept reports whether the cache keeps a tenant-relative key: the visible
// namespaces, except an item's keys that no subscriber receives (its
// schema and release log).
func kept(rel string) bool {
	if !keys.Visible(rel) {
		return false
	}
	if !strings.HasPrefix(rel, keys.SpaceCfg) {
		return true
	}
	_, _, _, ok := cfgKey(rel)
	return ok
}

// stored is what a tenant's tree keeps of a key: an item's version
// without its content, which the item index holds once.
func stored(rel string, kv *confettipb.KeyValue) *confettipb.KeyValue {
	if _, v, _, ok := cfgKey(rel); !ok || v == 0 {
		return kv
	}
	return &confettipb.KeyValue{Key: kv.Key, Kind: kv.Kind, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

// itemIndex is the config items of a shard's tenants.
type itemIndex map[string]map[string]*itemState

func (x itemIndex) item(tenant, item string, create bool) *itemState {
	items := x[tenant]
	if items == nil {
		if !create {
			return nil
		}
		items = map[string]*itemState{}
		x[tenant] = items
	}
	st := items[item]
	if st == nil && create {
		st = &itemState{versions: map[int64]*confettipb.ItemVersion{}}
		items[item] = st
	}
	return st
}

// apply records a put (kv non-nil) or a delete of a tenant-relative key
// in the index. For a release record it returns the change; for any other
// key nil.
func (x itemIndex) apply(tenant, rel string, kv *confettipb.KeyValue) *cfgChange {
	item, version, isRelease, ok := cfgKey(rel)
	if !ok {
		return nil
	}
	if !isRelease {
		if kv == nil {
			if st := x.item(tenant, item, false); st != nil {
				delete(st.versions, version)
				x.dropIfEmpty(tenant, item, st)
			}
			return nil
		}
		iv := &confettipb.ItemVersion{}
		if err := proto.Unmarshal(kv.Value, iv); err != nil {
			return nil
		}
		iv.Item, iv.Version, iv.ModRevision = item, version, kv.ModRevision
		x.item(tenant, item, true).versions[version] = iv
		return nil
	}
	st := x.item(tenant, item, kv != nil)
	ch := &cfgChange{item: item, prevKnown: true}
	if st != nil {
		ch.prev = st.rel
	}
	if kv == nil {
		if st != nil {
			st.rel, st.relRev = nil, 0
			x.dropIfEmpty(tenant, item, st)
		}
		return ch
	}
	r := decodeRelease(kv)
	st.rel, st.relRev = r, kv.ModRevision
	ch.rel = r
	return ch
}

// decodeRelease reads a release record; an unreadable one resolves to
// nothing, as if deleted.
func decodeRelease(kv *confettipb.KeyValue) *confettipb.Release {
	r := &confettipb.Release{}
	if err := proto.Unmarshal(kv.Value, r); err != nil {
		return nil
	}
	r.ModRevision = kv.ModRevision
	return r
}

func (x itemIndex) dropIfEmpty(tenant, item string, st *itemState) {
	if st.rel == nil && len(st.versions) == 0 {
		delete(x[tenant], item)
		if len(x[tenant]) == 0 {
			delete(x, tenant)
		}
	}
}

// resolve is the ref a subscriber with identity id gets from rel, given
// the item's versions: a release pointing at a version this node does not
// hold resolves to nothing.
func resolve(st *itemState, rel *confettipb.Release, id *confettipb.Identity) ref {
	if rel == nil || st == nil {
		return ref{}
	}
	v, gray := release.Resolve(rel, id)
	if v == 0 || st.versions[v] == nil {
		return ref{}
	}
	return ref{version: v, gray: gray}
}

// resolveView is the view of a subscriber of tenant from the current
// index.
func (x itemIndex) resolveView(tenant string, prefixes []string, id *confettipb.Identity) view {
	var v view
	for item, st := range x[tenant] {
		if !keys.Match(prefixes, keys.ItemKey(item)) {
			continue
		}
		if r := resolve(st, st.rel, id); r.version != 0 {
			if v == nil {
				v = view{}
			}
			v[item] = r
		}
	}
	return v
}

// resolvedKV is the key a subscriber holding r of item gets, written at
// modRev.
func (x itemIndex) resolvedKV(tenant, item string, r ref, modRev int64) *confettipb.KeyValue {
	st := x.item(tenant, item, false)
	if st == nil {
		return nil
	}
	iv := st.versions[r.version]
	if iv == nil {
		return nil
	}
	return &confettipb.KeyValue{
		Key:            item,
		Kind:           confettipb.KeyValue_ITEM,
		Value:          iv.Content,
		CreateRevision: iv.ModRevision,
		ModRevision:    modRev,
		Version:        r.version,
		Item:           &confettipb.ItemRef{Item: item, Version: r.version, GrayId: r.gray, ContentHash: iv.ContentHash},
	}
}

// resetKVs is the resolved items of v for a Reset, sorted by key; each
// carries the revision its release record was last written at.
func (x itemIndex) resetKVs(tenant string, v view) []*confettipb.KeyValue {
	out := make([]*confettipb.KeyValue, 0, len(v))
	for item, r := range v {
		st := x.item(tenant, item, false)
		if st == nil {
			continue
		}
		if kv := x.resolvedKV(tenant, item, r, st.relRev); kv != nil {
			out = append(out, kv)
		}
	}
	slices.SortFunc(out, func(a, b *confettipb.KeyValue) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// itemSent is an item version put in a message to a subscriber (version
// zero: the item was removed), for rollout status.
type itemSent struct {
	item string
	ref  ref
}

// changeView applies the release changes of one transaction to a
// subscriber's view: for each change of an item under its prefixes whose
// resolution for id differs from what v holds, it returns the event to
// send (a put of the new version's content, or a delete) and records the
// new ref in the returned view (v itself is not modified; the result is v
// when nothing changed).
func (x itemIndex) changeView(tenant string, prefixes []string, id *confettipb.Identity, v view, changes []*cfgChange, rev int64) (view, []*confettipb.Event, []itemSent) {
	out, cloned := v, false
	var evs []*confettipb.Event
	var sent []itemSent
	for _, ch := range changes {
		if !keys.Match(prefixes, keys.ItemKey(ch.item)) {
			continue
		}
		r := resolve(x.item(tenant, ch.item, false), ch.rel, id)
		if r.version == out[ch.item].version {
			continue
		}
		kv := x.resolvedKV(tenant, ch.item, r, rev)
		if r.version == 0 || kv == nil {
			r = ref{}
			if _, held := out[ch.item]; !held {
				continue
			}
			evs = append(evs, deleted(keys.ItemKey(ch.item), rev))
		} else {
			evs = append(evs, &confettipb.Event{Type: confettipb.Event_PUT, Kv: kv})
		}
		if !cloned {
			out, cloned = maps.Clone(v), true
			if out == nil {
				out = view{}
			}
		}
		if r.version == 0 {
			delete(out, ch.item)
		} else {
			out[ch.item] = r
		}
		sent = append(sent, itemSent{item: ch.item, ref: r})
	}
	return out, evs, sent
}

// String is the canonical form of a view, hashed into tokens and group
// keys: subscribers with equal strings hold equal states.
func (v view) String() string {
	if len(v) == 0 {
		return ""
	}
	items := make([]string, 0, len(v))
	for item := range v {
		items = append(items, item)
	}
	slices.Sort(items)
	var b strings.Builder
	for _, item := range items {
		b.WriteString(item)
		b.WriteByte(0)
		b.WriteString(strconv.FormatInt(v[item].version, 10))
		b.WriteByte(1)
	}
	return b.String()
}
