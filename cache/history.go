package cache

import "github.com/confetti-io/confetti/api/confettipb"

// txn is one etcd transaction as the cache keeps it: the events of one
// revision, each tagged with its tenant. Events are shared, never copied,
// by every subscriber that receives them.
type txn struct {
	rev    int64
	events []event
	bytes  int
}

type event struct {
	tenant string
	// key is the event's key relative to the tenant (for example
	// "kv//routes/1"), which subscriptions' scopes match; ev names it as
	// subscribers receive it (keys.Public).
	key string
	ev  *confettipb.Event
	// cfg is set on a change of an item's release record.
	cfg *cfgChange
}

// history is a shard's ring of recent transactions, bounded by event count
// and bytes. It covers every revision after floor: all of the shard's
// transactions in (floor, last] are in the ring.
type history struct {
	maxEvents int
	maxBytes  int64

	txns   []txn // ring buffer
	head   int   // index of the oldest
	n      int
	events int
	bytes  int64
	floor  int64
}

func newHistory(maxEvents int, maxBytes int64, floor int64) *history {
	return &history{maxEvents: maxEvents, maxBytes: maxBytes, txns: make([]txn, 64), floor: floor}
}

// append adds a transaction newer than every held one and evicts the
// oldest whole transactions while over a bound (keeping at least the new
// one).
func (h *history) append(t txn) {
	if h.n == len(h.txns) {
		grown := make([]txn, 2*len(h.txns))
		for i := 0; i < h.n; i++ {
			grown[i] = h.txns[(h.head+i)%len(h.txns)]
		}
		h.txns, h.head = grown, 0
	}
	h.txns[(h.head+h.n)%len(h.txns)] = t
	h.n++
	h.events += len(t.events)
	h.bytes += int64(t.bytes)
	for h.n > 1 && (h.events > h.maxEvents || h.bytes > h.maxBytes) {
		old := h.txns[h.head]
		h.txns[h.head] = txn{}
		h.head = (h.head + 1) % len(h.txns)
		h.n--
		h.events -= len(old.events)
		h.bytes -= int64(old.bytes)
		h.floor = old.rev
	}
}

// covers reports whether every transaction after rev is in the ring.
func (h *history) covers(rev int64) bool { return rev >= h.floor }

// after calls fn for each held transaction with a revision above rev, in
// order, until fn returns false.
func (h *history) after(rev int64, fn func(t *txn) bool) {
	// Binary search for the first transaction above rev.
	lo, hi := 0, h.n
	for lo < hi {
		mid := (lo + hi) / 2
		if h.txns[(h.head+mid)%len(h.txns)].rev <= rev {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo; i < h.n; i++ {
		if !fn(&h.txns[(h.head+i)%len(h.txns)]) {
			return
		}
	}
}

// first returns the revision of the oldest held transaction, or 0.
func (h *history) first() int64 {
	if h.n == 0 {
		return 0
	}
	return h.txns[h.head].rev
}
