package cache

import (
	"testing"

	"github.com/confetti-io/confetti/api/confettipb"
)

func mkTxn(rev int64, n int) txn {
	t := txn{rev: rev}
	for i := 0; i < n; i++ {
		t.add("acme", "kv/k", &confettipb.Event{Kv: &confettipb.KeyValue{Key: "kv/k", Value: make([]byte, 52), ModRevision: rev}}, nil)
	}
	return t
}

func TestHistoryEvictsWholeTransactionsAndTracksCoverage(t *testing.T) {
	h := newHistory(10, 1<<20, 100)
	if !h.covers(100) || h.covers(99) {
		t.Fatal("a fresh history covers exactly from its floor")
	}
	for rev := int64(101); rev <= 200; rev++ {
		h.append(mkTxn(rev, 3))
	}
	// 10 events at most: the last 3 transactions (9 events) remain.
	if h.n != 3 || h.events != 9 {
		t.Fatalf("held %d transactions, %d events; want 3, 9", h.n, h.events)
	}
	if h.floor != 197 || !h.covers(197) || h.covers(196) {
		t.Fatalf("floor %d; want 197", h.floor)
	}
	var got []int64
	h.after(198, func(t *txn) bool { got = append(got, t.rev); return true })
	if len(got) != 2 || got[0] != 199 || got[1] != 200 {
		t.Fatalf("after(198) = %v, want [199 200]", got)
	}
	// A transaction larger than the bound is still kept whole.
	h.append(mkTxn(201, 25))
	if h.n != 1 || h.first() != 201 || h.floor != 200 {
		t.Fatalf("after a large txn: n=%d first=%d floor=%d", h.n, h.first(), h.floor)
	}
}

func TestHistoryBytesBound(t *testing.T) {
	h := newHistory(1000, 1000, 0)
	per := mkTxn(0, 1).bytes
	for rev := int64(1); rev <= 50; rev++ {
		h.append(mkTxn(rev, 1))
	}
	if h.bytes > 1000 || h.n != 1000/per {
		t.Fatalf("bytes %d, n %d; want at most 1000 bytes in %d transactions", h.bytes, h.n, 1000/per)
	}
}
