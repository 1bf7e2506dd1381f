package cache

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
)

// A group is the subscribers of one tenant with the same prefixes and view.
// They receive the same bytes: the shard hands each new transaction to the
// group (under the shard's lock, so a join and a transaction are always
// ordered), and the group's goroutine encodes each batch once
// (grpc.PreparedMsg) and queues it to every member. A member whose queue
// is full is marked lagging and leaves; it catches up on its own from
// history or by a Reset and joins again, so a slow subscriber never
// delays the others. A release change that gives some members another
// version moves them: they get one message per new view (encoded once for
// all who share it) and join the group of that view.
type group struct {
	key      string
	tenant   string
	prefixes []string
	view     view
	shard    *shardState
	// tokenFor encodes the token of a revision for a view.
	tokenFor func(rev int64, v view) string
	metrics  *metrics
	progress time.Duration
	// template is the stream of the member that opened the group:
	// PreparedMsg encodes with a stream's codec, the same for every
	// subscription (the cache does not compress them).
	template grpc.ServerStream

	mu      sync.Mutex
	pending []pendingTxn
	members map[*member]struct{}
	wake    chan struct{}
	sentRev int64
	// scratch is the member list of one dispatch, reused; only the
	// group's goroutine touches it.
	scratch []memberAt

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// pendingTxn is a transaction for the group: the events every staying
// member gets (possibly none), and the members it moves out.
type pendingTxn struct {
	txn   *confettipb.Txn
	at    time.Time
	moves []*move
}

// move is the members of a group whose view a release change turned into
// view: they get txn, resolved for them, then join the group of view.
type move struct {
	members []*member
	view    view
	txn     *confettipb.Txn
	sent    []itemSent
}

// member is one subscriber's place in a group: a bounded queue of encoded
// messages that its stream's goroutine sends.
type member struct {
	q       chan *outMsg
	lagging atomic.Bool
	lag     chan struct{} // closed when marked lagging
	id      *confettipb.Identity

	// joined is the revision the member joined at (zero once the group
	// has dispatched past it); left is the revision a release change moved
	// it out at (zero while it stays). Both are guarded by the group's mu.
	joined, left int64
}

// outMsg is one encoded message and the revision of its token.
type outMsg struct {
	pm     *grpc.PreparedMsg
	rev    int64
	events int
	bytes  int
	// items are the item versions the message carries.
	items []itemSent
	// moved, when set, is the view the subscriber holds after this
	// message; it then leaves its group for the group of that view.
	moved view
}

func newMember(queue int, id *confettipb.Identity) *member {
	return &member{q: make(chan *outMsg, queue), lag: make(chan struct{}), id: id}
}

// publish hands the group a transaction's events that match it. The
// caller holds the shard's write lock.
func (g *group) publish(p pendingTxn) {
	g.mu.Lock()
	g.pending = append(g.pending, p)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// join adds m, whose state reflects revision rev, to the group. The caller
// holds the shard's write lock, so every transaction after rev reaches m
// through the group, and none before it.
func (g *group) join(m *member, rev int64) {
	g.mu.Lock()
	m.joined, m.left = rev, 0
	g.members[m] = struct{}{}
	g.mu.Unlock()
}

// partition finds the members whose resolution changes with a
// transaction's release changes, marks them moved at rev, and returns
// their moves, one per new view, each with the group's plain events evs
// and the members' resolved item events. The caller holds the shard's
// write lock.
func (g *group) partition(items itemIndex, changes []*cfgChange, evs []*confettipb.Event, rev int64) []*move {
	g.mu.Lock()
	defer g.mu.Unlock()
	var moves []*move
	byRefs := map[string]*move{}
	var refKey []byte
	for m := range g.members {
		if m.left != 0 {
			continue
		}
		refKey = refKey[:0]
		changed := false
		for _, ch := range changes {
			r := resolve(items.item(g.tenant, ch.item, false), ch.rel, m.id)
			if r.version != g.view[ch.item].version {
				changed = true
			}
			refKey = strconv.AppendInt(refKey, r.version, 10)
			refKey = append(refKey, 0)
			refKey = append(refKey, r.gray...)
			refKey = append(refKey, 1)
		}
		if !changed {
			continue
		}
		mv := byRefs[string(refKey)]
		if mv == nil {
			nv, cevs, sent := items.changeView(g.tenant, g.prefixes, m.id, g.view, changes, rev)
			all := make([]*confettipb.Event, 0, len(evs)+len(cevs))
			all = append(append(all, evs...), cevs...)
			mv = &move{view: nv, txn: &confettipb.Txn{Revision: rev, Events: all}, sent: sent}
			byRefs[string(refKey)] = mv
			moves = append(moves, mv)
		}
		mv.members = append(mv.members, m)
		m.left = rev
	}
	return moves
}

// leave removes m; it reports whether the group is now empty. The caller
// holds the shard's write lock.
func (g *group) leave(m *member) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.members, m)
	return len(g.members) == 0
}

// token is the group's token at rev.
func (g *group) token(rev int64) string { return g.tokenFor(rev, g.view) }

// stop ends the group's goroutine.
func (g *group) stop() {
	g.cancel()
	<-g.done
}

// run dispatches pending transactions, and bookmarks while idle, until the
// group is stopped.
func (g *group) run() {
	defer close(g.done)
	tick := time.NewTicker(g.progress)
	defer tick.Stop()
	for {
		select {
		case <-g.wake:
			g.dispatch()
		case <-tick.C:
			g.dispatch()
			g.bookmark()
		case <-g.ctx.Done():
			return
		}
	}
}

// dispatch encodes what is pending once and queues it to every member
// (separately to one that joined in the middle of the batch).
func (g *group) dispatch() {
	g.mu.Lock()
	batch := g.pending
	g.pending = nil
	members := g.snapshotMembersLocked(0)
	g.mu.Unlock()
	if len(batch) == 0 || len(members) == 0 {
		return
	}
	last := batch[len(batch)-1].txn.Revision
	if slices.ContainsFunc(batch, func(p pendingTxn) bool { return len(p.moves) > 0 }) {
		g.dispatchMoves(batch, members)
	} else {
		g.dispatchShared(batch, members)
	}
	g.mu.Lock()
	for m := range g.members {
		if m.joined != 0 && m.joined < last {
			m.joined = 0
		}
	}
	g.sentRev = max(g.sentRev, last)
	g.mu.Unlock()
	now := time.Now()
	for _, p := range batch {
		g.metrics.fanoutLatency.Observe(now.Sub(p.at).Seconds())
	}
}

// dispatchShared sends a batch with no release change: one message for
// every member (and its own to a member that joined in the middle).
// Moved members have left before the batch and get nothing.
func (g *group) dispatchShared(batch []pendingTxn, members []memberAt) {
	first, last := batch[0].txn.Revision, batch[len(batch)-1].txn.Revision
	shared, err := g.encode(batch, 0)
	if err != nil {
		return
	}
	for _, ma := range members {
		msg := shared
		switch {
		case ma.left != 0 || ma.joined >= last:
			continue
		case ma.joined >= first:
			// Joined in the middle of this batch: it has the beginning.
			if msg, err = g.encode(batch, ma.joined); err != nil {
				continue
			}
		}
		g.enqueue(ma.m, msg)
	}
}

// dispatchMoves sends a batch that moves members, one transaction at a
// time: each member gets the transactions after it joined and up to the
// one that moved it, which it gets resolved for its new view.
func (g *group) dispatchMoves(batch []pendingTxn, members []memberAt) {
	for i, p := range batch {
		rev := p.txn.Revision
		if len(p.txn.Events) > 0 {
			var shared *outMsg
			for _, ma := range members {
				if ma.joined >= rev || (ma.left != 0 && ma.left <= rev) {
					continue
				}
				if shared == nil {
					var err error
					if shared, err = g.encode(batch[i:i+1], 0); err != nil {
						break
					}
				}
				g.enqueue(ma.m, shared)
			}
		}
		for _, mv := range p.moves {
			msg, err := g.encodeMove(mv)
			if err != nil {
				continue
			}
			for _, m := range mv.members {
				g.enqueue(m, msg)
			}
		}
	}
}

// encodeMove builds the message of a move, whose token names the new
// view.
func (g *group) encodeMove(mv *move) (*outMsg, error) {
	rev := mv.txn.Revision
	ev := &confettipb.Events{Txns: []*confettipb.Txn{mv.txn}, Token: g.tokenFor(rev, mv.view)}
	pm := &grpc.PreparedMsg{}
	msg := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: ev}}
	if err := pm.Encode(g.template, msg); err != nil {
		return nil, err
	}
	return &outMsg{pm: pm, rev: rev, events: len(mv.txn.Events), bytes: proto.Size(msg), items: mv.sent, moved: mv.view}, nil
}

// bookmark sends a Progress when the shard moved past what the group last
// sent and nothing is pending for it.
func (g *group) bookmark() {
	rev := g.shard.revision()
	g.mu.Lock()
	if len(g.pending) > 0 || rev <= g.sentRev || len(g.members) == 0 {
		g.mu.Unlock()
		return
	}
	members := g.snapshotMembersLocked(rev)
	g.sentRev = rev
	g.mu.Unlock()
	pm := &grpc.PreparedMsg{}
	msg := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Progress{Progress: &confettipb.Progress{Token: g.token(rev)}}}
	if err := pm.Encode(g.template, msg); err != nil {
		return
	}
	out := &outMsg{pm: pm, rev: rev, bytes: proto.Size(msg)}
	for _, ma := range members {
		g.enqueue(ma.m, out)
	}
}

// memberAt is a member and the revisions it joined and left at.
type memberAt struct {
	m            *member
	joined, left int64
}

// snapshotMembersLocked lists the members that joined before rev and stay
// (every member when rev is 0) into a buffer the group's goroutine reuses, so a
// dispatch to thousands of members allocates nothing per member. The
// caller holds g.mu and runs on the group's goroutine.
func (g *group) snapshotMembersLocked(rev int64) []memberAt {
	g.scratch = g.scratch[:0]
	for m := range g.members {
		if rev == 0 || (m.joined < rev && m.left == 0) {
			g.scratch = append(g.scratch, memberAt{m: m, joined: m.joined, left: m.left})
		}
	}
	return g.scratch
}

// encode builds one Events message of the batch's transactions after
// rev.
func (g *group) encode(batch []pendingTxn, after int64) (*outMsg, error) {
	ev := &confettipb.Events{}
	n := 0
	for _, p := range batch {
		if p.txn.Revision > after {
			ev.Txns = append(ev.Txns, p.txn)
			n += len(p.txn.Events)
		}
	}
	last := batch[len(batch)-1].txn.Revision
	ev.Token = g.token(last)
	pm := &grpc.PreparedMsg{}
	msg := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: ev}}
	if err := pm.Encode(g.template, msg); err != nil {
		return nil, err
	}
	return &outMsg{pm: pm, rev: last, events: n, bytes: proto.Size(msg)}, nil
}

// enqueue queues msg to m, or marks m lagging when its queue is full.
func (g *group) enqueue(m *member, msg *outMsg) {
	if m.lagging.Load() {
		return
	}
	select {
	case m.q <- msg:
	default:
		if m.lagging.CompareAndSwap(false, true) {
			g.mu.Lock()
			delete(g.members, m)
			g.mu.Unlock()
			close(m.lag)
			g.metrics.lagging.Inc()
		}
	}
}
