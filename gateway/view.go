package gateway

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/confetti-io/confetti/api/confettipb"
)

// View is an immutable snapshot of a subscription: every key the client
// holds and the token it holds them at. Keys are named as their writers
// name them: a plain key as written (/routes/1), a config item by its name
// (gateway), a service instance as <service>/<instance> (api/i-1); each
// KeyValue's Kind says which. A View never changes once published; the
// client swaps in a new one for every Reset and every Events message it
// applies, so readers see either the state before a message or the state
// after it, never a mix. Its methods are safe for concurrent use and take
// no lock. The KeyValues it returns are shared: callers must not modify
// them.
type View struct {
	token string
	// kvs holds every key by its entry name (entryName).
	kvs map[string]*confettipb.KeyValue

	sortOnce sync.Once
	sorted   []string
}

// entryName is the name a view holds a key under: its kind, then the key,
// so that the keys of one kind are contiguous in order.
func entryName(kind confettipb.KeyValue_Kind, key string) string {
	return string(rune('0'+kind)) + key
}

// entryOf is the name a view holds kv under.
func entryOf(kv *confettipb.KeyValue) string { return entryName(kv.GetKind(), kv.GetKey()) }

// emptyView is the view of a client that holds nothing yet.
var emptyView = &View{kvs: map[string]*confettipb.KeyValue{}}

// NewView returns a view holding kvs at token, for tests and for sources
// of views other than a Client.
func NewView(token string, kvs ...*confettipb.KeyValue) *View {
	m := make(map[string]*confettipb.KeyValue, len(kvs))
	for _, kv := range kvs {
		m[entryOf(kv)] = kv
	}
	return newView(token, m)
}

func newView(token string, kvs map[string]*confettipb.KeyValue) *View {
	return &View{token: token, kvs: kvs}
}

// Token is the resume token the view is at; empty for a client that has
// not synced and loaded no snapshot.
func (v *View) Token() string { return v.token }

// Len is the number of keys, items and service instances in the view.
func (v *View) Len() int { return len(v.kvs) }

// Get returns a plain key's current KeyValue, the key named as written
// (/routes/1).
func (v *View) Get(key string) (*confettipb.KeyValue, bool) {
	kv, ok := v.kvs[entryName(confettipb.KeyValue_KEY, key)]
	return kv, ok
}

// Item returns the config item's current KeyValue: the content of the
// version the client resolves to in Value, which version and why in
// Item.
func (v *View) Item(name string) (*confettipb.KeyValue, bool) {
	kv, ok := v.kvs[entryName(confettipb.KeyValue_ITEM, name)]
	return kv, ok
}

// Instance returns one registered instance of a service.
func (v *View) Instance(service, instance string) (*confettipb.KeyValue, bool) {
	kv, ok := v.kvs[entryName(confettipb.KeyValue_SERVICE, service+"/"+instance)]
	return kv, ok
}

// Keys returns the plain keys that start with prefix, sorted; an empty
// prefix returns every plain key.
func (v *View) Keys(prefix string) []string {
	var out []string
	v.Range(prefix, func(key string, _ *confettipb.KeyValue) bool {
		out = append(out, key)
		return true
	})
	return out
}

// Range calls fn for every plain key that starts with prefix, in key
// order, until fn returns false.
func (v *View) Range(prefix string, fn func(key string, kv *confettipb.KeyValue) bool) {
	v.rangeKind(confettipb.KeyValue_KEY, prefix, fn)
}

// RangeItems calls fn for every config item, in name order, until fn
// returns false.
func (v *View) RangeItems(fn func(name string, kv *confettipb.KeyValue) bool) {
	v.rangeKind(confettipb.KeyValue_ITEM, "", fn)
}

// RangeInstances calls fn for every instance of service (of every service
// when service is empty), in key order, until fn returns false. key is
// <service>/<instance>.
func (v *View) RangeInstances(service string, fn func(key string, kv *confettipb.KeyValue) bool) {
	prefix := ""
	if service != "" {
		prefix = service + "/"
	}
	v.rangeKind(confettipb.KeyValue_SERVICE, prefix, fn)
}

// rangeKind calls fn for the keys of one kind that start with prefix, in
// order, until fn returns false.
func (v *View) rangeKind(kind confettipb.KeyValue_Kind, prefix string, fn func(key string, kv *confettipb.KeyValue) bool) {
	names := v.sortedNames()
	from := entryName(kind, prefix)
	i, _ := slices.BinarySearch(names, from)
	for ; i < len(names) && strings.HasPrefix(names[i], from); i++ {
		kv := v.kvs[names[i]]
		if !fn(kv.GetKey(), kv) {
			return
		}
	}
}

func (v *View) sortedNames() []string {
	v.sortOnce.Do(func() {
		v.sorted = slices.Sorted(maps.Keys(v.kvs))
	})
	return v.sorted
}

// Update is one key's change within a Change: Old is the KeyValue before
// (nil if the key was absent) and New after (nil if it was deleted). Key
// and Kind name the key as View does.
type Update struct {
	Key      string
	Kind     confettipb.KeyValue_Kind
	Old, New *confettipb.KeyValue
}

// Source says what produced a Change.
type Source int

const (
	// SourceSnapshot is the view loaded from the snapshot file at start.
	SourceSnapshot Source = iota + 1
	// SourceReset is a Reset: the cache replaced the whole state.
	SourceReset
	// SourceEvents is an Events message: whole transactions.
	SourceEvents
)

func (s Source) String() string {
	switch s {
	case SourceSnapshot:
		return "snapshot"
	case SourceReset:
		return "reset"
	case SourceEvents:
		return "events"
	}
	return "unknown"
}

// Change is one atomic step of the view: Prev is the view before it and
// View the view after it. Updates lists each changed key once, in key
// order, with its value before and after the step (several transactions
// of one message that touch a key collapse into one Update).
type Change struct {
	Source  Source
	Prev    *View
	View    *View
	Updates []Update
}

// validator decides whether a PUT may enter the view; a non-nil error
// refuses it (and NACKs it when it carries an item). key is kv's key.
type validator func(key string, kv *confettipb.KeyValue) error

// applied is the outcome of applying one message to a view.
type applied struct {
	view    *View
	updates []Update
	acks    []*confettipb.Ack
	// rejected lists the keys the validator refused, with why.
	rejected map[string]error
}

// admit runs the validator on a PUT of key, recording the ack or nack of
// an item version. It reports whether kv may enter the view.
func (a *applied) admit(validate validator, kv, held *confettipb.KeyValue) bool {
	if held != nil && held.ModRevision == kv.ModRevision && sameItem(held.Item, kv.Item) {
		// Already validated when it entered the view.
		a.ack(kv, nil)
		return true
	}
	var err error
	if validate != nil {
		err = validate(kv.GetKey(), kv)
	}
	a.ack(kv, err)
	if err != nil {
		if a.rejected == nil {
			a.rejected = map[string]error{}
		}
		a.rejected[kv.GetKey()] = err
		return false
	}
	return true
}

func (a *applied) ack(kv *confettipb.KeyValue, err error) {
	it := kv.GetItem()
	if it == nil || it.GetItem() == "" {
		return
	}
	ack := &confettipb.Ack{Item: it.GetItem(), Version: it.GetVersion(), Ok: err == nil}
	if err != nil {
		ack.Error = err.Error()
	}
	a.acks = append(a.acks, ack)
}

func sameItem(a, b *confettipb.ItemRef) bool {
	return a.GetItem() == b.GetItem() && a.GetVersion() == b.GetVersion() && a.GetGrayId() == b.GetGrayId() && a.GetContentHash() == b.GetContentHash()
}

// applyReset replaces old with the state of a completed Reset. A PUT the
// validator refuses keeps old's value of the key, if any.
func applyReset(old *View, kvs []*confettipb.KeyValue, token string, validate validator) applied {
	var a applied
	next := make(map[string]*confettipb.KeyValue, len(kvs))
	for _, kv := range kvs {
		name := entryOf(kv)
		held := old.kvs[name]
		if a.admit(validate, kv, held) {
			next[name] = kv
		} else if held != nil {
			next[name] = held
		}
	}
	a.view = newView(token, next)
	a.updates = diff(old.kvs, next)
	return a
}

// applyEvents applies one Events message's transactions to old, in order;
// the view it leaves is at the last transaction's token.
func applyEvents(old *View, ev *confettipb.Events, validate validator) applied {
	var a applied
	next := maps.Clone(old.kvs)
	touched := map[string]*confettipb.KeyValue{}
	token := old.token
	for _, txn := range ev.GetTxns() {
		for _, e := range txn.GetEvents() {
			kv := e.GetKv()
			if kv == nil {
				continue
			}
			name := entryOf(kv)
			if e.GetType() == confettipb.Event_DELETE {
				delete(next, name)
				touched[name] = kv
				continue
			}
			if a.admit(validate, kv, next[name]) {
				next[name] = kv
				touched[name] = kv
			}
		}
		if t := txn.GetToken(); t != "" {
			token = t
		}
	}
	a.view = newView(token, next)
	for _, name := range slices.Sorted(maps.Keys(touched)) {
		o, n := old.kvs[name], next[name]
		if o != n {
			kv := touched[name]
			a.updates = append(a.updates, Update{Key: kv.GetKey(), Kind: kv.GetKind(), Old: o, New: n})
		}
	}
	return a
}

// diff lists the keys whose KeyValue differs between old and next, by kind
// and key.
func diff(old, next map[string]*confettipb.KeyValue) []Update {
	var out []Update
	for k, n := range next {
		if o := old[k]; o == nil || o.ModRevision != n.ModRevision || string(o.Value) != string(n.Value) || !sameItem(o.Item, n.Item) {
			out = append(out, Update{Key: n.GetKey(), Kind: n.GetKind(), Old: o, New: n})
		}
	}
	for k, o := range old {
		if _, ok := next[k]; !ok {
			out = append(out, Update{Key: o.GetKey(), Kind: o.GetKind(), Old: o})
		}
	}
	slices.SortFunc(out, func(a, b Update) int {
		return strings.Compare(entryName(a.Kind, a.Key), entryName(b.Kind, b.Key))
	})
	return out
}
