package cache

import (
	"context"
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
// delays the others.
type group struct {
	key      string
	tenant   string
	prefixes []string
	shard    *shardState
	token    func(rev int64) string
	metrics  *metrics
	progress time.Duration
	// template is the stream of the member that opened the group:
	// PreparedMsg encodes with a stream's codec, the same for every
	// subscription (the cache does not compress them).
	template grpc.ServerStream

	mu      sync.Mutex
	pending []pendingTxn
	members map[*member]int64 // member -> revision it joined at
	wake    chan struct{}
	sentRev int64
	// scratch is the member list of one dispatch, reused; only the
	// group's goroutine touches it.
	scratch []memberAt

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

type pendingTxn struct {
	txn *confettipb.Txn
	at  time.Time
}

// member is one subscriber's place in a group: a bounded queue of encoded
// messages that its stream's goroutine sends.
type member struct {
	q       chan *outMsg
	lagging atomic.Bool
	lag     chan struct{} // closed when marked lagging
}

// outMsg is one encoded message and the revision of its token.
type outMsg struct {
	pm     *grpc.PreparedMsg
	rev    int64
	events int
	bytes  int
}

func newMember(queue int) *member {
	return &member{q: make(chan *outMsg, queue), lag: make(chan struct{})}
}

// publish hands the group a transaction's events that match it. The
// caller holds the shard's write lock.
func (g *group) publish(t *confettipb.Txn, at time.Time) {
	g.mu.Lock()
	g.pending = append(g.pending, pendingTxn{txn: t, at: at})
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
	g.members[m] = rev
	g.mu.Unlock()
}

// leave removes m; it reports whether the group is now empty. The caller
// holds the shard's write lock.
func (g *group) leave(m *member) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.members, m)
	return len(g.members) == 0
}

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
	first, last := batch[0].txn.Revision, batch[len(batch)-1].txn.Revision
	shared, err := g.encode(batch, 0)
	if err != nil {
		return
	}
	for _, ma := range members {
		m, joined := ma.m, ma.joined
		msg := shared
		switch {
		case joined >= last:
			continue
		case joined >= first:
			// Joined in the middle of this batch: it has the beginning.
			if msg, err = g.encode(batch, joined); err != nil {
				continue
			}
		}
		g.enqueue(m, msg)
	}
	g.mu.Lock()
	for m, joined := range g.members {
		if joined != 0 && joined < last {
			g.members[m] = 0
		}
	}
	g.sentRev = max(g.sentRev, last)
	g.mu.Unlock()
	now := time.Now()
	for _, p := range batch {
		g.metrics.fanoutLatency.Observe(now.Sub(p.at).Seconds())
	}
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

// memberAt is a member and the revision it joined at.
type memberAt struct {
	m      *member
	joined int64
}

// snapshotMembersLocked lists the members that joined before rev (every
// member when rev is 0) into a buffer the group's goroutine reuses, so a
// dispatch to thousands of members allocates nothing per member. The
// caller holds g.mu and runs on the group's goroutine.
func (g *group) snapshotMembersLocked(rev int64) []memberAt {
	g.scratch = g.scratch[:0]
	for m, joined := range g.members {
		if rev == 0 || joined < rev {
			g.scratch = append(g.scratch, memberAt{m: m, joined: joined})
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
