package cache

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
)

// A group is the subscribers of one tenant with the same prefixes and view.
// They receive the same bytes: the shard hands each new transaction to the
// group (under the shard's lock, so a join and a transaction are always
// ordered), and the group's goroutine encodes each batch once and queues
// it to every stream its members are on, one frame per stream naming all
// of them. A stream whose queue is full marks the members of the frame
// lagging and they leave; each catches up on its own from history or by a
// Reset and joins again, so a slow stream never delays the others. A
// release change that gives some members another version moves them: they
// get one message per new view (encoded once for all who share it) and
// join the group of that view.
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

	mu      sync.Mutex
	pending []pendingTxn
	// bySink holds the members by the stream they are on; size counts
	// them.
	bySink  map[*sink][]*member
	size    int
	wake    chan struct{}
	sentRev int64
	// sentAt is when the group last queued a message to its members.
	sentAt time.Time
	// to and direct are member lists of one queueing, reused under mu.
	to, direct []*member

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// pendingTxn is a transaction for the group: the events every staying
// member gets (possibly none), and the members it moves out.
type pendingTxn struct {
	txn *confettipb.Txn
	// enc, when set, holds the wire form of each of txn's events, encoded
	// once for every group the transaction reaches.
	enc   [][]byte
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

// member is one subscription's place in a group. Its fields after sub are
// guarded by the group's mu.
type member struct {
	sub *subscription
	// gone is set, and out closed, when the member leaves its group:
	// lagging, or moved to another view.
	gone atomic.Bool
	out  chan struct{}

	// joined is the revision the member joined at (zero once the group
	// has dispatched past it); left is the revision a release change moved
	// it out at (zero while it stays).
	joined, left int64
	// holding is set while the subscription still queues its own
	// catch-up after joining: what the group has for it waits in held.
	holding bool
	held    []*outMsg
	// rev is the revision of the last message queued for the member, and
	// moved the view a queued move gives it.
	rev   int64
	moved view
}

// outMsg is one encoded SubscribeResponse and what it tells.
type outMsg struct {
	body []byte
	// rev is the revision of the message's token.
	rev    int64
	events int
	// items are the item versions the message carries.
	items []itemSent
	// moved, when set, is the view the subscriber holds after this
	// message.
	moved view
	// reset, when set, is the view a final Reset chunk leaves the
	// subscriber holding.
	reset view

	// sse is the message as a Server-Sent Event, encoded once, at the
	// first SSE connection it goes to.
	sseOnce sync.Once
	sse     []byte
}

// newOutMsg encodes m.
func newOutMsg(m *confettipb.SubscribeResponse, rev int64) (*outMsg, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &outMsg{body: b, rev: rev}, nil
}

func newMember(s *subscription) *member {
	return &member{sub: s, out: make(chan struct{})}
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

// join adds m, whose state reflects revision rev, to the group, holding
// what the group sends it until release. The caller holds the shard's
// write lock, so every transaction after rev reaches m through the group,
// and none before it.
func (g *group) join(m *member, rev int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m.joined, m.left, m.rev, m.holding = rev, 0, rev, true
	k := m.sub.sink
	g.bySink[k] = append(g.bySink[k], m)
	g.size++
}

// release queues what the group held for m while its subscription caught
// up, and lets the group queue to m's stream directly from then on.
func (g *group) release(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	held := m.held
	m.holding, m.held = false, nil
	for _, msg := range held {
		g.queueLocked(m.sub.sink, msg, m)
	}
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
	for _, ms := range g.bySink {
		for _, m := range ms {
			if m.left != 0 {
				continue
			}
			refKey = refKey[:0]
			changed := false
			id := m.sub.id
			for _, ch := range changes {
				r := resolve(items.item(g.tenant, ch.item, false), ch.rel, id)
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
				nv, cevs, sent := items.changeView(g.tenant, g.prefixes, id, g.view, changes, rev)
				all := make([]*confettipb.Event, 0, len(evs)+len(cevs))
				all = append(append(all, evs...), cevs...)
				mv = &move{view: nv, txn: &confettipb.Txn{Revision: rev, Events: all}, sent: sent}
				byRefs[string(refKey)] = mv
				moves = append(moves, mv)
			}
			mv.members = append(mv.members, m)
			m.left = rev
		}
	}
	return moves
}

// leave removes m; it reports whether the group is now empty. The caller
// holds the shard's write lock.
func (g *group) leave(m *member) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeLocked(m)
	return g.size == 0
}

// removeLocked takes m out of the group, if it is still in.
func (g *group) removeLocked(m *member) {
	k := m.sub.sink
	ms := g.bySink[k]
	i := slices.Index(ms, m)
	if i < 0 {
		return
	}
	ms = slices.Delete(ms, i, i+1)
	if len(ms) == 0 {
		delete(g.bySink, k)
	} else {
		g.bySink[k] = ms
	}
	g.size--
}

// position is the revision of the last message queued for m, and the view
// m holds after it (nil: the group's).
func (g *group) position(m *member) (int64, view) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.moved != nil {
		return m.rev, m.moved
	}
	return m.rev, g.view
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
	g.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	last := batch[len(batch)-1].txn.Revision
	if slices.ContainsFunc(batch, func(p pendingTxn) bool { return len(p.moves) > 0 }) {
		g.dispatchMoves(batch)
	} else {
		g.dispatchShared(batch)
	}
	g.mu.Lock()
	for _, ms := range g.bySink {
		for _, m := range ms {
			if m.joined != 0 && m.joined < last {
				m.joined = 0
			}
		}
	}
	g.sentRev = max(g.sentRev, last)
	g.sentAt = time.Now()
	g.mu.Unlock()
	now := time.Now()
	for _, p := range batch {
		g.metrics.fanoutLatency.Observe(now.Sub(p.at).Seconds())
	}
}

// dispatchShared sends a batch with no release change: one message for
// every member (and its own to a member that joined in the middle).
// Members a release change before the batch moved get nothing; those a
// later one moves (their move is pending) get the batch first.
func (g *group) dispatchShared(batch []pendingTxn) {
	first, last := batch[0].txn.Revision, batch[len(batch)-1].txn.Revision
	shared, err := g.encode(batch, 0)
	if err != nil {
		return
	}
	// Members that joined in the middle of this batch have its beginning;
	// they get the rest, encoded for each join revision.
	var middle map[int64]*outMsg
	g.mu.Lock()
	for _, ms := range g.bySink {
		for _, m := range ms {
			if (m.left == 0 || m.left > last) && m.joined >= first && m.joined < last {
				if middle == nil {
					middle = map[int64]*outMsg{}
				}
				middle[m.joined] = nil
			}
		}
	}
	g.mu.Unlock()
	for rev := range middle {
		if middle[rev], err = g.encode(batch, rev); err != nil {
			return
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var late []*member
	g.queueAllLocked(shared, func(m *member) bool {
		switch {
		case m.left != 0 && m.left <= last || m.joined >= last:
			return false
		case m.joined >= first:
			late = append(late, m)
			return false
		}
		return true
	})
	for _, m := range late {
		g.queueLocked(m.sub.sink, middle[m.joined], m)
	}
}

// dispatchMoves sends a batch that moves members, one transaction at a
// time: each member gets the transactions after it joined and up to the
// one that moved it, which it gets resolved for its new view.
func (g *group) dispatchMoves(batch []pendingTxn) {
	for i, p := range batch {
		rev := p.txn.Revision
		var shared *outMsg
		if len(p.txn.Events) > 0 {
			var err error
			if shared, err = g.encode(batch[i:i+1], 0); err != nil {
				return
			}
		}
		moves := make([]*outMsg, len(p.moves))
		for j, mv := range p.moves {
			var err error
			if moves[j], err = g.encodeMove(mv); err != nil {
				return
			}
		}
		g.mu.Lock()
		if shared != nil {
			g.queueAllLocked(shared, func(m *member) bool {
				return m.joined < rev && (m.left == 0 || m.left > rev)
			})
		}
		for j, mv := range p.moves {
			bySink := map[*sink][]*member{}
			for _, m := range mv.members {
				bySink[m.sub.sink] = append(bySink[m.sub.sink], m)
			}
			for k, ms := range bySink {
				g.queueLocked(k, moves[j], ms...)
			}
		}
		g.mu.Unlock()
	}
}

// encodeMove builds the message of a move, whose token names the new
// view.
func (g *group) encodeMove(mv *move) (*outMsg, error) {
	rev := mv.txn.Revision
	mv.txn.Token = g.tokenFor(rev, mv.view)
	ev := &confettipb.Events{Txns: []*confettipb.Txn{mv.txn}}
	msg, err := newOutMsg(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: ev}}, rev)
	if err != nil {
		return nil, err
	}
	msg.events, msg.items, msg.moved = len(mv.txn.Events), mv.sent, mv.view
	return msg, nil
}

// bookmark sends a Progress when nothing is pending for the group and the
// shard moved past what the group last sent, or the group sent nothing for
// half an interval: checked every interval, members hear from the node at
// most an interval and a half apart (the liveness signal clients rely on),
// even from an idle shard.
func (g *group) bookmark() {
	rev := g.shard.revision()
	g.mu.Lock()
	due := rev > g.sentRev || time.Since(g.sentAt) >= g.progress/2
	idle := len(g.pending) == 0 && due && g.size > 0
	g.mu.Unlock()
	if !idle {
		return
	}
	msg, err := newOutMsg(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Progress{Progress: &confettipb.Progress{Token: g.token(rev), Revision: rev}}}, rev)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) > 0 || rev < g.sentRev {
		return
	}
	g.sentRev, g.sentAt = rev, time.Now()
	g.queueAllLocked(msg, func(m *member) bool { return m.joined <= rev && m.left == 0 })
}

// encode builds one Events message of the batch's transactions after
// rev, each with the group's token at its revision.
func (g *group) encode(batch []pendingTxn, after int64) (*outMsg, error) {
	ev := &confettipb.Events{}
	var encs [][][]byte
	n := 0
	for _, p := range batch {
		if p.txn.Revision > after {
			if p.txn.Token == "" {
				p.txn.Token = g.token(p.txn.Revision)
			}
			ev.Txns = append(ev.Txns, p.txn)
			encs = append(encs, p.enc)
			n += len(p.txn.Events)
		}
	}
	last := batch[len(batch)-1].txn.Revision
	var msg *outMsg
	if b, ok := appendEventsMessage(nil, ev.Txns, encs); ok {
		msg = &outMsg{body: b, rev: last}
	} else {
		var err error
		if msg, err = newOutMsg(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: ev}}, last); err != nil {
			return nil, err
		}
	}
	msg.events = n
	return msg, nil
}

// Field numbers of the messages appendEventsMessage writes.
const (
	fieldResponseEvents = 2 // SubscribeResponse.events
	fieldEventsTxns     = 1 // Events.txns
	fieldTxnRevision    = 1 // Txn.revision
	fieldTxnEvents      = 2 // Txn.events
	fieldTxnToken       = 3 // Txn.token
)

// appendEventsMessage appends the wire form of a SubscribeResponse whose
// Events hold txns, from the events' wire forms in encs (one slice per
// transaction, one entry per event), as proto.Marshal would write it: a
// group then costs no reflection per message, only the bytes around the
// events it shares with every other group. It reports false, appending
// nothing, when some transaction's events are not all encoded.
func appendEventsMessage(b []byte, txns []*confettipb.Txn, encs [][][]byte) ([]byte, bool) {
	sizes := make([]int, len(txns))
	total := 0
	for i, t := range txns {
		if len(encs[i]) != len(t.Events) {
			return b, false
		}
		n := 0
		if t.Revision != 0 {
			n += protowire.SizeTag(fieldTxnRevision) + protowire.SizeVarint(uint64(t.Revision))
		}
		for _, e := range encs[i] {
			n += protowire.SizeTag(fieldTxnEvents) + protowire.SizeBytes(len(e))
		}
		if t.Token != "" {
			n += protowire.SizeTag(fieldTxnToken) + protowire.SizeBytes(len(t.Token))
		}
		sizes[i] = n
		total += protowire.SizeTag(fieldEventsTxns) + protowire.SizeBytes(n)
	}
	b = slices.Grow(b, protowire.SizeTag(fieldResponseEvents)+protowire.SizeBytes(total))
	b = protowire.AppendTag(b, fieldResponseEvents, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(total))
	for i, t := range txns {
		b = protowire.AppendTag(b, fieldEventsTxns, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizes[i]))
		if t.Revision != 0 {
			b = protowire.AppendTag(b, fieldTxnRevision, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(t.Revision))
		}
		for _, e := range encs[i] {
			b = protowire.AppendTag(b, fieldTxnEvents, protowire.BytesType)
			b = protowire.AppendBytes(b, e)
		}
		if t.Token != "" {
			b = protowire.AppendTag(b, fieldTxnToken, protowire.BytesType)
			b = protowire.AppendString(b, t.Token)
		}
	}
	return b, true
}

// queueAllLocked queues msg to the members for which want reports true:
// one frame per stream, naming all of that stream's members.
func (g *group) queueAllLocked(msg *outMsg, want func(*member) bool) {
	for k, ms := range g.bySink {
		g.to = g.to[:0]
		for _, m := range ms {
			if want(m) {
				g.to = append(g.to, m)
			}
		}
		if len(g.to) > 0 {
			g.queueLocked(k, msg, g.to...)
		}
	}
	clear(g.to)
}

// queueLocked queues msg for members ms, all on stream k, in one frame. A
// holding member keeps it until release; when k's queue (or a holding
// member's) is full, the members are marked lagging instead. A member
// that msg moves leaves the group once it is queued. The caller holds
// g.mu; ms may be reused once it returns.
func (g *group) queueLocked(k *sink, msg *outMsg, ms ...*member) {
	direct := g.direct[:0]
	for _, m := range ms {
		switch {
		case m.gone.Load():
		case m.holding && len(m.held) >= k.limit:
			g.lagLocked(m)
		case m.holding:
			m.held = append(m.held, msg)
		default:
			direct = append(direct, m)
		}
	}
	defer func() { g.direct = direct[:0]; clear(direct) }()
	if len(direct) == 0 {
		return
	}
	f := frame{msg: msg}
	if len(direct) == 1 {
		f.sub = direct[0].sub
	} else {
		f.subs = make([]*subscription, len(direct))
		for i, m := range direct {
			f.subs[i] = m.sub
		}
	}
	if !k.offer(f) {
		for _, m := range direct {
			g.lagLocked(m)
		}
		return
	}
	for _, m := range direct {
		m.rev = msg.rev
		if msg.moved != nil {
			m.moved = msg.moved
			g.leaveLocked(m, false)
		}
	}
}

// lagLocked marks m lagging: it leaves the group and catches up on its
// own from the last message queued for it.
func (g *group) lagLocked(m *member) { g.leaveLocked(m, true) }

// leaveLocked takes m out of the group and wakes its subscription, which
// goes on from the last message queued for m: lagging, or moved by a
// release change.
func (g *group) leaveLocked(m *member, lagging bool) {
	if m.gone.CompareAndSwap(false, true) {
		g.removeLocked(m)
		m.held = nil
		close(m.out)
		if lagging {
			g.metrics.lagging.Inc()
		}
	}
}
