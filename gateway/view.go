package gateway

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/confetti-io/confetti/api/confettipb"
)

// View is an immutable snapshot of a subscription: every key the client
// holds and the token it holds them at. A View never changes once
// published; the client swaps in a new one for every Reset and every
// Events message it applies, so readers see either the state before a
// message or the state after it, never a mix. Its methods are safe for
// concurrent use and take no lock. The KeyValues it returns are shared:
// callers must not modify them.
type View struct {
	token string
	kvs   map[string]*confettipb.KeyValue

	sortOnce sync.Once
	sorted   []string
}

// emptyView is the view of a client that holds nothing yet.
var emptyView = &View{kvs: map[string]*confettipb.KeyValue{}}

// NewView returns a view holding kvs at token, for tests and for sources
// of views other than a Client.
func NewView(token string, kvs ...*confettipb.KeyValue) *View {
	m := make(map[string]*confettipb.KeyValue, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv
	}
	return newView(token, m)
}

func newView(token string, kvs map[string]*confettipb.KeyValue) *View {
	return &View{token: token, kvs: kvs}
}

// Token is the resume token the view is at; empty for a client that has
// not synced and loaded no snapshot.
func (v *View) Token() string { return v.token }

// Len is the number of keys in the view.
func (v *View) Len() int { return len(v.kvs) }

// Get returns the key's current KeyValue, relative to the tenant
// (kv/..., svc/<service>/<instance>, cfg/<item>).
func (v *View) Get(key string) (*confettipb.KeyValue, bool) {
	kv, ok := v.kvs[key]
	return kv, ok
}

// Keys returns the keys that start with prefix, sorted; an empty prefix
// returns every key.
func (v *View) Keys(prefix string) []string {
	var out []string
	v.Range(prefix, func(key string, _ *confettipb.KeyValue) bool {
		out = append(out, key)
		return true
	})
	return out
}

// Range calls fn for every key that starts with prefix, in key order,
// until fn returns false.
func (v *View) Range(prefix string, fn func(key string, kv *confettipb.KeyValue) bool) {
	keys := v.sortedKeys()
	i, _ := slices.BinarySearch(keys, prefix)
	for ; i < len(keys) && strings.HasPrefix(keys[i], prefix); i++ {
		if !fn(keys[i], v.kvs[keys[i]]) {
			return
		}
	}
}

func (v *View) sortedKeys() []string {
	v.sortOnce.Do(func() {
		v.sorted = slices.Sorted(maps.Keys(v.kvs))
	})
	return v.sorted
}

// Update is one key's change within a Change: Old is the KeyValue before
// (nil if the key was absent) and New after (nil if it was deleted).
type Update struct {
	Key      string
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
// refuses it (and NACKs it when it carries an item).
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
func (a *applied) admit(validate validator, key string, kv, held *confettipb.KeyValue) bool {
	if held != nil && held.ModRevision == kv.ModRevision && sameItem(held.Item, kv.Item) {
		// Already validated when it entered the view.
		a.ack(kv, nil)
		return true
	}
	var err error
	if validate != nil {
		err = validate(key, kv)
	}
	a.ack(kv, err)
	if err != nil {
		if a.rejected == nil {
			a.rejected = map[string]error{}
		}
		a.rejected[key] = err
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
		held := old.kvs[kv.Key]
		if a.admit(validate, kv.Key, kv, held) {
			next[kv.Key] = kv
		} else if held != nil {
			next[kv.Key] = held
		}
	}
	a.view = newView(token, next)
	a.updates = diff(old.kvs, next)
	return a
}

// applyEvents applies one Events message's transactions to old, in order.
func applyEvents(old *View, ev *confettipb.Events, validate validator) applied {
	var a applied
	next := maps.Clone(old.kvs)
	touched := map[string]bool{}
	for _, txn := range ev.GetTxns() {
		for _, e := range txn.GetEvents() {
			kv := e.GetKv()
			if kv == nil {
				continue
			}
			key := kv.Key
			if e.GetType() == confettipb.Event_DELETE {
				delete(next, key)
				touched[key] = true
				continue
			}
			if a.admit(validate, key, kv, next[key]) {
				next[key] = kv
				touched[key] = true
			}
		}
	}
	a.view = newView(ev.GetToken(), next)
	for _, key := range slices.Sorted(maps.Keys(touched)) {
		o, n := old.kvs[key], next[key]
		if o != n {
			a.updates = append(a.updates, Update{Key: key, Old: o, New: n})
		}
	}
	return a
}

// diff lists the keys whose KeyValue differs between old and next, in key
// order.
func diff(old, next map[string]*confettipb.KeyValue) []Update {
	var out []Update
	for k, n := range next {
		if o := old[k]; o == nil || o.ModRevision != n.ModRevision || string(o.Value) != string(n.Value) || !sameItem(o.Item, n.Item) {
			out = append(out, Update{Key: k, Old: o, New: n})
		}
	}
	for k, o := range old {
		if _, ok := next[k]; !ok {
			out = append(out, Update{Key: k, Old: o})
		}
	}
	slices.SortFunc(out, func(a, b Update) int { return strings.Compare(a.Key, b.Key) })
	return out
}
