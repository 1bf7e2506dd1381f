package cache

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
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
	lastErr  string
}

var _ Sink = (*shardState)(nil)

func newShardState(id string, maxEvents int, maxBytes int64, m *metrics) *shardState {
	return &shardState{
		id:           id,
		tenants:      map[string]*tree{},
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
	for _, kv := range kvs {
		tenant, rel, ok := keys.Split(string(kv.Key))
		if !ok || !keys.Visible(rel) {
			continue
		}
		t := next[tenant]
		if t == nil {
			t = btree.NewG(32, lessEntry)
			next[tenant] = t
		}
		t.ReplaceOrInsert(entry{key: rel, kv: toKV(rel, kv)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		// Nobody has read this shard yet: start over from this listing
		// and wait for the backfill.
		s.tenants = next
		s.hist = newHistory(s.maxEvents, s.maxBytes, rev)
		s.rev = rev
		return
	}
	if rev < s.rev {
		// A listing older than what is applied (a lagging member) is
		// dropped; the source will list again.
		return
	}
	d := txn{rev: rev}
	for tenant, old := range s.tenants {
		cur := next[tenant]
		old.Ascend(func(e entry) bool {
			if cur == nil {
				d.add(tenant, deleted(e.key, rev))
				return true
			}
			if _, ok := cur.Get(e); !ok {
				d.add(tenant, deleted(e.key, rev))
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
			d.add(tenant, &confettipb.Event{Type: confettipb.Event_PUT, Kv: e.kv})
			return true
		})
	}
	s.tenants = next
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
	defer s.notifyLocked()
	if floor >= s.hist.floor {
		return
	}
	s.hist.floor = floor
	for _, st := range txns {
		if st.Rev <= floor || st.Rev > s.rev {
			continue
		}
		t := txn{rev: st.Rev}
		for _, ev := range st.Events {
			if tenant, rel, ok := keys.Split(string(ev.Kv.Key)); ok && keys.Visible(rel) {
				t.add(tenant, toEvent(rel, ev))
			}
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
			if !ok || !keys.Visible(rel) {
				continue
			}
			e := toEvent(rel, ev)
			tr := s.tenants[tenant]
			if e.Type == confettipb.Event_DELETE {
				if tr != nil {
					tr.Delete(entry{key: rel})
					if tr.Len() == 0 {
						delete(s.tenants, tenant)
					}
				}
			} else {
				if tr == nil {
					tr = btree.NewG(32, lessEntry)
					s.tenants[tenant] = tr
				}
				tr.ReplaceOrInsert(entry{key: rel, kv: e.Kv})
			}
			t.add(tenant, e)
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
		evs := make([]*confettipb.Event, len(t.events))
		for i, e := range t.events {
			evs[i] = e.ev
		}
		s.publishLocked(tenant, t.rev, evs, now)
		return
	}
	byTenant := map[string][]*confettipb.Event{}
	for _, e := range t.events {
		if len(s.tenantGroups[e.tenant]) > 0 {
			byTenant[e.tenant] = append(byTenant[e.tenant], e.ev)
		}
	}
	for tenant, tevs := range byTenant {
		s.publishLocked(tenant, t.rev, tevs, now)
	}
}

// publishLocked hands each group of tenant the events of one transaction
// that it sees.
func (s *shardState) publishLocked(tenant string, rev int64, tevs []*confettipb.Event, now time.Time) {
	for _, g := range s.tenantGroups[tenant] {
		var evs []*confettipb.Event
		for _, ev := range tevs {
			if keys.Match(g.prefixes, ev.Kv.Key) {
				evs = append(evs, ev)
			}
		}
		if len(evs) > 0 {
			g.publish(&confettipb.Txn{Revision: rev, Events: evs}, now)
		}
	}
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

// read collects the tenant's transactions after rev that match prefixes,
// up to about maxBytes (always whole transactions, at least one). It
// returns the revision the reader has then seen, and ok false when the
// history no longer covers rev.
func (s *shardState) read(tenant string, prefixes []string, rev int64, maxBytes int) (out []*confettipb.Txn, seen int64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.readLocked(tenant, prefixes, rev, maxBytes)
}

// readLocked is read for a caller holding the lock.
func (s *shardState) readLocked(tenant string, prefixes []string, rev int64, maxBytes int) (out []*confettipb.Txn, seen int64, ok bool) {
	if !s.hist.covers(rev) {
		return nil, rev, false
	}
	seen = s.rev
	size := 0
	s.hist.after(rev, func(t *txn) bool {
		var evs []*confettipb.Event
		for _, e := range t.events {
			if e.tenant == tenant && keys.Match(prefixes, e.ev.Kv.Key) {
				evs = append(evs, e.ev)
			}
		}
		if len(evs) > 0 {
			if len(out) > 0 && size+t.bytes > maxBytes {
				seen = out[len(out)-1].Revision
				return false
			}
			out = append(out, &confettipb.Txn{Revision: t.rev, Events: evs})
			size += t.bytes
		}
		return true
	})
	return out, seen, true
}

func (t *txn) add(tenant string, ev *confettipb.Event) {
	t.events = append(t.events, event{tenant: tenant, ev: ev})
	t.bytes += len(ev.Kv.Key) + len(ev.Kv.Value) + 48
}

func toKV(rel string, kv *mvccpb.KeyValue) *confettipb.KeyValue {
	return &confettipb.KeyValue{
		Key:            rel,
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

func deleted(rel string, rev int64) *confettipb.Event {
	return &confettipb.Event{Type: confettipb.Event_DELETE, Kv: &confettipb.KeyValue{Key: rel, ModRevision: rev}}
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
			shard:    s,
			token:    sub.token,
			metrics:  s.metrics,
			progress: sub.c.cfg.ProgressInterval,
			template: sub.stream,
			members:  map[*member]int64{},
			wake:     make(chan struct{}, 1),
			sentRev:  s.rev,
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
