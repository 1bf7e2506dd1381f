package cache

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/plant"
)

// entry is one key of a tenant's state. kv is immutable once stored and is
// shared by every Reset that includes it.
type entry struct {
	key string
	kv  *confettipb.KeyValue
}

func lessEntry(a, b entry) bool { return a.key < b.key }

type tree = btree.BTreeG[entry]

// shardState is one shard's view: each tenant's ordered state, the history
// ring, and the revision both reflect. It implements Sink for the shard's
// Source; readers take the read lock.
type shardState struct {
	id string

	mu      sync.RWMutex
	rev     int64
	synced  bool
	tenants map[string]*tree
	// items indexes the tenants' config items (release records and
	// versions) for resolution.
	items   itemIndex
	hist    *history
	changed chan struct{}

	maxEvents int
	maxBytes  int64
	metrics   *metrics

	// groups are the subscriber groups of this shard by key, and by tenant
	// for publishing; guarded by mu.
	groups       map[string]*group
	tenantGroups map[string][]*group

	// Status counters, guarded by mu.
	restarts int64
	relists  int64
	lastErr  string
}

var _ Sink = (*shardState)(nil)

func newShardState(id string, maxEvents int, maxBytes int64, m *metrics) *shardState {
	m.synced.WithLabelValues(id).Set(0)
	return &shardState{
		id:           id,
		tenants:      map[string]*tree{},
		items:        itemIndex{},
		changed:      make(chan struct{}),
		maxEvents:    maxEvents,
		maxBytes:     maxBytes,
		metrics:      m,
		groups:       map[string]*group{},
		tenantGroups: map[string][]*group{},
	}
}

// Snapshot replaces the state with a full listing at rev. Until the shard
// is synced, a listing starts an empty history covering revisions after
// rev; once synced, a listing (after compaction or a
// broken watch) becomes one transaction at rev holding the per-key
// difference, so subscribers see ordinary events.
func (s *shardState) Snapshot(rev int64, kvs []*mvccpb.KeyValue) {
	next := map[string]*tree{}
	nextItems := itemIndex{}
	for _, kv := range kvs {
		tenant, rel, ok := keys.Split(string(kv.Key))
		if !ok || !kept(rel) {
			continue
		}
		t := next[tenant]
		if t == nil {
			t = btree.NewG(32, lessEntry)
			next[tenant] = t
		}
		full := toKV(rel, kv)
		t.ReplaceOrInsert(entry{key: rel, kv: stored(rel, full)})
		nextItems.apply(tenant, rel, full)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		// Nobody has read this shard yet: start over from this listing
		// and wait for the backfill.
		s.tenants, s.items = next, nextItems
		s.hist = newHistory(s.maxEvents, s.maxBytes, rev)
		s.rev = rev
		return
	}
	if rev < s.rev {
		// A listing older than what is applied (a lagging member) is
		// dropped; the source will list again.
		return
	}
	s.relists++
	s.metrics.relists.WithLabelValues(s.id).Inc()
	d := txn{rev: rev}
	// change is the release change of a differing key, nil for others.
	change := func(tenant, key string) *cfgChange {
		item, _, isRelease, ok := cfgKey(key)
		if !ok || !isRelease {
			return nil
		}
		ch := &cfgChange{item: item, prevKnown: true}
		if st := s.items.item(tenant, item, false); st != nil {
			ch.prev = st.rel
		}
		if st := nextItems.item(tenant, item, false); st != nil {
			ch.rel = st.rel
		}
		return ch
	}
	for tenant, old := range s.tenants {
		cur := next[tenant]
		old.Ascend(func(e entry) bool {
			if cur == nil {
				d.add(tenant, e.key, deleted(e.key, rev), change(tenant, e.key))
				return true
			}
			if _, ok := cur.Get(e); !ok {
				d.add(tenant, e.key, deleted(e.key, rev), change(tenant, e.key))
			}
			return true
		})
	}
	for tenant, cur := range next {
		old := s.tenants[tenant]
		cur.Ascend(func(e entry) bool {
			if old != nil {
				if o, ok := old.Get(e); ok && o.kv.ModRevision == e.kv.ModRevision {
					return true
				}
			}
			d.add(tenant, e.key, &confettipb.Event{Type: confettipb.Event_PUT, Kv: e.kv}, change(tenant, e.key))
			return true
		})
	}
	s.tenants = next
	s.items = nextItems
	s.appendLocked(d)
	s.rev = rev
	s.synced = true
	s.notifyLocked()
}

// Backfill gives a fresh history the shard's transactions in (floor, rev]
// of the listing, so that tokens from before this node started can be
// replayed (the state already holds their effect), and marks the shard
// synced: from now on it serves subscribers.
func (s *shardState) Backfill(floor int64, txns []SourceTxn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hist == nil || s.synced {
		return
	}
	s.synced = true
	s.metrics.synced.WithLabelValues(s.id).Set(1)
	defer s.notifyLocked()
	if floor >= s.hist.floor {
		return
	}
	s.hist.floor = floor
	// The record before an item's first change in the backfill is gone, so
	// a token from before that change cannot be replayed across it.
	last := map[string]*confettipb.Release{}
	for _, st := range txns {
		if st.Rev <= floor || st.Rev > s.rev {
			continue
		}
		t := txn{rev: st.Rev}
		for _, ev := range st.Events {
			tenant, rel, ok := keys.Split(string(ev.Kv.Key))
			if !ok || !kept(rel) {
				continue
			}
			e := toEvent(rel, ev)
			var ch *cfgChange
			if item, _, isRelease, ok := cfgKey(rel); ok && isRelease {
				ch = &cfgChange{item: item}
				if e.Type == confettipb.Event_PUT {
					ch.rel = decodeRelease(e.Kv)
				}
				k := tenant + "/" + item
				ch.prev, ch.prevKnown = last[k]
				last[k] = ch.rel
			}
			t.add(tenant, rel, e, ch)
		}
		if len(t.events) > 0 {
			s.hist.append(t)
		}
	}
}

// Apply applies whole transactions newer than the state, in order.
func (s *shardState) Apply(txns []SourceTxn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range txns {
		if st.Rev <= s.rev {
			continue
		}
		t := txn{rev: st.Rev}
		for _, ev := range st.Events {
			tenant, rel, ok := keys.Split(string(ev.Kv.Key))
			if !ok || !kept(rel) {
				continue
			}
			if plant.Once(plant.SkipEvent) {
				continue // planted bug: an event of etcd's feed is lost
			}
			if len(t.events) == 1 && plant.Once(plant.DropSecondEvent) {
				continue // planted bug: a transaction loses its second event
			}
			e := toEvent(rel, ev)
			tr := s.tenants[tenant]
			var ch *cfgChange
			if e.Type == confettipb.Event_DELETE {
				if tr != nil {
					tr.Delete(entry{key: rel})
					if tr.Len() == 0 {
						delete(s.tenants, tenant)
					}
				}
				ch = s.items.apply(tenant, rel, nil)
			} else {
				if tr == nil {
					tr = btree.NewG(32, lessEntry)
					s.tenants[tenant] = tr
				}
				tr.ReplaceOrInsert(entry{key: rel, kv: stored(rel, e.Kv)})
				ch = s.items.apply(tenant, rel, e.Kv)
			}
			t.add(tenant, rel, e, ch)
		}
		if len(t.events) > 0 && plant.Once(plant.AdvanceToken) {
			t.events = nil // planted bug: applied and passed, never delivered
		}
		s.appendLocked(t)
		s.rev = st.Rev
	}
	s.notifyLocked()
}

// appendLocked adds a transaction to the history and hands each group of
// its tenants the events the group sees.
func (s *shardState) appendLocked(t txn) {
	if len(t.events) == 0 {
		return
	}
	s.hist.append(t)
	s.metrics.eventsIn.Add(float64(len(t.events)))
	if len(s.groups) == 0 {
		return
	}
	now := time.Now()
	// A transaction through the proxy touches one tenant; only a write made
	// around it can touch several, which then get a map.
	tenant := t.events[0].tenant
	single := true
	for _, e := range t.events[1:] {
		if e.tenant != tenant {
			single = false
			break
		}
	}
	if single {
		if len(s.tenantGroups[tenant]) == 0 {
			return
		}
		s.publishLocked(tenant, t.rev, t.events, now)
		return
	}
	byTenant := map[string][]event{}
	for _, e := range t.events {
		if len(s.tenantGroups[e.tenant]) > 0 {
			byTenant[e.tenant] = append(byTenant[e.tenant], e)
		}
	}
	for tenant, tevs := range byTenant {
		s.publishLocked(tenant, t.rev, tevs, now)
	}
}

// publishLocked hands each group of tenant the events of one transaction
// that it sees. A release change that alters the resolution of some of a
// group's members moves them out of the group with their own message.
func (s *shardState) publishLocked(tenant string, rev int64, tevs []event, now time.Time) {
	// Each event is encoded once, for every group it reaches.
	encoded := make(map[*confettipb.Event][]byte, len(tevs))
	encode := func(evs []*confettipb.Event) [][]byte {
		out := make([][]byte, len(evs))
		for i, ev := range evs {
			b, ok := encoded[ev]
			if !ok {
				var err error
				if b, err = proto.Marshal(ev); err != nil {
					return nil
				}
				encoded[ev] = b
			}
			out[i] = b
		}
		return out
	}
	for _, g := range s.tenantGroups[tenant] {
		evs, changes := sortEvents(tevs, g.prefixes)
		var moves []*move
		if len(changes) > 0 {
			moves = g.partition(s.items, changes, evs, rev)
		}
		if len(evs) > 0 || len(moves) > 0 {
			g.publish(pendingTxn{txn: &confettipb.Txn{Revision: rev, Events: evs}, enc: encode(evs), at: now, moves: moves})
		}
	}
}

// sortEvents sorts one tenant's events of a transaction for a subscriber with
// prefixes: the plain events it receives as they are, and the changes of
// release records of the items under its prefixes. The other keys of items
// (versions, schemas, logs) are never sent.
func sortEvents(tevs []event, prefixes []string) (evs []*confettipb.Event, changes []*cfgChange) {
	for _, e := range tevs {
		switch {
		case e.cfg != nil:
			if keys.Match(prefixes, keys.ItemKey(e.cfg.item)) {
				changes = append(changes, e.cfg)
			}
		case strings.HasPrefix(e.key, keys.SpaceCfg):
		case keys.Match(prefixes, e.key):
			evs = append(evs, e.ev)
		}
	}
	return evs, changes
}

// revision is the revision the shard has applied.
func (s *shardState) revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Progress records that the shard has no event up to rev.
func (s *shardState) Progress(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.rev && s.hist != nil {
		s.rev = rev
		s.notifyLocked()
	}
}

// Restarted records a broken watch.
func (s *shardState) Restarted(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarts++
	if err != nil {
		s.lastErr = err.Error()
	}
	s.metrics.watchRestarts.WithLabelValues(s.id).Inc()
}

func (s *shardState) notifyLocked() {
	s.metrics.revision.WithLabelValues(s.id).Set(float64(s.rev))
	if s.hist != nil {
		s.metrics.historyEvents.WithLabelValues(s.id).Set(float64(s.hist.events))
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns a channel closed at the next change and the revision
// applied now.
func (s *shardState) wait() (<-chan struct{}, int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed, s.rev, s.synced
}

// snapshot returns a copy-on-write clone of a tenant's state (nil when
// empty) and the revision it reflects. Cloning is O(1); the clone is
// unaffected by later changes.
func (s *shardState) snapshot(tenant string) (*tree, int64) {
	s.mu.Lock() // Clone marks the tree shared, so it takes the write lock.
	defer s.mu.Unlock()
	return s.snapshotLocked(tenant)
}

// snapshotLocked is snapshot for a caller holding the write lock.
func (s *shardState) snapshotLocked(tenant string) (*tree, int64) {
	tr := s.tenants[tenant]
	if tr == nil {
		return nil, s.rev
	}
	return tr.Clone(), s.rev
}

// viewer is who reads history: a subscriber's tenant, prefixes and
// identity, and the view it holds at the revision it reads from.
type viewer struct {
	tenant   string
	prefixes []string
	id       *confettipb.Identity
	view     view
}

// readResult is what a history read yields: the transactions a viewer
// sees and its view after each, the revision it has then seen, its view at
// that revision, and the item versions the transactions carry.
type readResult struct {
	txns  []*confettipb.Txn
	views []view
	seen  int64
	view  view
	sent  []itemSent
}

// read collects the viewer's transactions after rev, resolved for it, up
// to about maxBytes (always whole transactions, at least one). ok is false
// when the history no longer covers rev.
func (s *shardState) read(v viewer, rev int64, maxBytes int) (readResult, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.readLocked(v, rev, maxBytes)
}

// readLocked is read for a caller holding the lock.
func (s *shardState) readLocked(v viewer, rev int64, maxBytes int) (readResult, bool) {
	if !s.hist.covers(rev) {
		return readResult{seen: rev, view: v.view}, false
	}
	r := readResult{seen: s.rev, view: v.view}
	size := 0
	var tevs []event
	s.hist.after(rev, func(t *txn) bool {
		tevs = tevs[:0]
		for _, e := range t.events {
			if e.tenant == v.tenant {
				tevs = append(tevs, e)
			}
		}
		if len(tevs) == 0 {
			return true
		}
		evs, changes := sortEvents(tevs, v.prefixes)
		nv, sent := r.view, []itemSent(nil)
		if len(changes) > 0 {
			var cevs []*confettipb.Event
			nv, cevs, sent = s.items.changeView(v.tenant, v.prefixes, v.id, r.view, changes, t.rev)
			evs = append(evs, cevs...)
		}
		if len(evs) > 0 {
			if len(r.txns) > 0 && size+t.bytes > maxBytes {
				r.seen = r.txns[len(r.txns)-1].Revision
				return false
			}
			r.txns = append(r.txns, &confettipb.Txn{Revision: t.rev, Events: evs})
			r.views = append(r.views, nv)
			size += t.bytes
		}
		r.view = nv
		r.sent = append(r.sent, sent...)
		return true
	})
	return r, true
}

// viewAtLocked is the view a viewer held at rev: its resolution of the
// release records as they were then, known from the history's record of
// each change. ok is false when the history does not reach back to rev.
func (s *shardState) viewAtLocked(v viewer, rev int64) (view, bool) {
	if !s.hist.covers(rev) {
		return nil, false
	}
	then := map[string]*confettipb.Release{}
	ok := true
	s.hist.after(rev, func(t *txn) bool {
		for _, e := range t.events {
			if e.tenant != v.tenant || e.cfg == nil {
				continue
			}
			if _, seen := then[e.cfg.item]; seen {
				continue
			}
			if !e.cfg.prevKnown {
				ok = false
				return false
			}
			then[e.cfg.item] = e.cfg.prev
		}
		return true
	})
	if !ok {
		return nil, false
	}
	out := s.items.resolveView(v.tenant, v.prefixes, v.id)
	for item, rel := range then {
		if !keys.Match(v.prefixes, keys.ItemKey(item)) {
			continue
		}
		if out == nil {
			out = view{}
		}
		if r := resolve(s.items.item(v.tenant, item, false), rel, v.id); r.version != 0 {
			out[item] = r
		} else {
			delete(out, item)
		}
	}
	return out, true
}

func (t *txn) add(tenant, rel string, ev *confettipb.Event, ch *cfgChange) {
	t.events = append(t.events, event{tenant: tenant, key: rel, ev: ev, cfg: ch})
	t.bytes += len(ev.Kv.Key) + len(ev.Kv.Value) + 48
}

// publicKey is the key and kind subscribers receive for a tenant-relative
// key.
func publicKey(rel string) (string, confettipb.KeyValue_Kind) {
	key, kind, _ := keys.Public(rel)
	return key, confettipb.KeyValue_Kind(kind)
}

// toKV is a key of etcd as subscribers receive it.
func toKV(rel string, kv *mvccpb.KeyValue) *confettipb.KeyValue {
	key, kind := publicKey(rel)
	return &confettipb.KeyValue{
		Key:            key,
		Kind:           kind,
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

func toEvent(rel string, ev *mvccpb.Event) *confettipb.Event {
	if ev.Type == mvccpb.DELETE {
		return deleted(rel, ev.Kv.ModRevision)
	}
	return &confettipb.Event{Type: confettipb.Event_PUT, Kv: toKV(rel, ev.Kv)}
}

// deleted is the event of the deletion of a tenant-relative key at rev.
func deleted(rel string, rev int64) *confettipb.Event {
	key, kind := publicKey(rel)
	return &confettipb.Event{Type: confettipb.Event_DELETE, Kv: &confettipb.KeyValue{Key: key, Kind: kind, ModRevision: rev}}
}

// inRange reports whether a tenant-relative key is in [start, end).
func inRange(key, start, end string) bool {
	return strings.Compare(key, start) >= 0 && (end == "" || key < end)
}

// attachLocked adds a subscriber's member to its group, creating the group
// on first use, at the shard's current revision. The caller holds the
// write lock.
func (s *shardState) attachLocked(sub *subscription, m *member) *group {
	key := sub.groupKey()
	g := s.groups[key]
	if g == nil {
		ctx, cancel := context.WithCancel(context.Background())
		g = &group{
			key:      key,
			tenant:   sub.tenant.Name,
			prefixes: sub.prefixes,
			view:     sub.view,
			shard:    s,
			tokenFor: sub.tokenFor,
			metrics:  s.metrics,
			progress: sub.c.cfg.ProgressInterval,
			bySink:   map[*sink][]*member{},
			wake:     make(chan struct{}, 1),
			sentRev:  s.rev,
			sentAt:   time.Now(),
			ctx:      ctx,
			cancel:   cancel,
			done:     make(chan struct{}),
		}
		s.groups[key] = g
		s.tenantGroups[g.tenant] = append(s.tenantGroups[g.tenant], g)
		s.metrics.groups.Inc()
		go g.run()
	}
	g.join(m, s.rev)
	return g
}

// detach removes a member from its group and ends the group when it was
// the last.
func (s *shardState) detach(g *group, m *member) {
	s.mu.Lock()
	empty := g.leave(m)
	if empty && s.groups[g.key] == g {
		delete(s.groups, g.key)
		tg := s.tenantGroups[g.tenant]
		for i, x := range tg {
			if x == g {
				tg = append(tg[:i], tg[i+1:]...)
				break
			}
		}
		if len(tg) == 0 {
			delete(s.tenantGroups, g.tenant)
		} else {
			s.tenantGroups[g.tenant] = tg
		}
		s.metrics.groups.Dec()
	}
	s.mu.Unlock()
	if empty {
		g.stop()
	}
}
