package cache

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/wire"
)

// received is one key as a subscriber received it.
type received struct {
	Key   string
	Kind  confettipb.KeyValue_Kind
	Value string
}

func receivedOf(kvs []*confettipb.KeyValue) []received {
	var out []received
	for _, kv := range kvs {
		out = append(out, received{Key: kv.Key, Kind: kv.Kind, Value: string(kv.Value)})
	}
	return out
}

// recvUntil reads st until want reports a message it waited for.
func recvUntil(t *testing.T, st confettipb.Cache_SubscribeClient, want func(*confettipb.SubscribeResponse) bool) *confettipb.SubscribeResponse {
	t.Helper()
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if want(m) {
			return m
		}
	}
}

func openSubscribe(t *testing.T, n *node, start *confettipb.Start) confettipb.Cache_SubscribeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := n.cli.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// A subscriber names keys, items and services as their writers do, and
// receives them so named, each with its kind; the physical layout never
// shows.
func TestSubscribersReceiveKeysAsWritten(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	put(t, cli, "acme", "kv//routes/1", "r1")
	put(t, cli, "acme", "kv/routes/2", "not under /routes/")
	put(t, cli, "acme", "svc/api/i-1", `{"address":"10.0.0.1:80"}`)
	put(t, cli, "acme", "svc/web/i-9", `{"address":"10.0.0.9:80"}`)
	for _, item := range []string{"gateway", "gateway2"} {
		publishVersion(t, cli, "acme", item, 1, content(item, 1))
		setRelease(t, cli, "acme", item, &confettipb.Release{Stable: 1})
	}
	n := startNode(t, f.tc, "node", Config{})
	st := openSubscribe(t, n, &confettipb.Start{Tenant: "acme", Prefixes: []string{"/routes/"}, Items: []string{"gateway"}, Services: []string{"api"}})

	reset := recvUntil(t, st, func(m *confettipb.SubscribeResponse) bool { return m.GetReset_().GetLast() }).GetReset_()
	want := []received{
		{Key: "gateway", Kind: confettipb.KeyValue_ITEM, Value: content("gateway", 1)},
		{Key: "/routes/1", Kind: confettipb.KeyValue_KEY, Value: "r1"},
		{Key: "api/i-1", Kind: confettipb.KeyValue_SERVICE, Value: `{"address":"10.0.0.1:80"}`},
	}
	if diff := cmp.Diff(want, receivedOf(reset.Kvs)); diff != "" {
		t.Fatalf("reset (-want +got):\n%s", diff)
	}
	if ref := reset.Kvs[0].GetItem(); ref.GetItem() != "gateway" || ref.GetVersion() != 1 {
		t.Fatalf("the item arrived as %v", ref)
	}

	put(t, cli, "acme", "kv//routes/3", "r3")
	if _, err := cli.Delete(context.Background(), keys.Tenant("acme")+"svc/api/i-1"); err != nil {
		t.Fatal(err)
	}
	publishVersion(t, cli, "acme", "gateway", 2, content("gateway", 2))
	setRelease(t, cli, "acme", "gateway", &confettipb.Release{Stable: 2})
	var got []received
	recvUntil(t, st, func(m *confettipb.SubscribeResponse) bool {
		for _, txn := range m.GetEvents().GetTxns() {
			for _, ev := range txn.Events {
				got = append(got, received{Key: ev.Kv.Key, Kind: ev.Kv.Kind, Value: ev.Type.String() + " " + string(ev.Kv.Value)})
			}
		}
		return len(got) >= 3
	})
	want = []received{
		{Key: "/routes/3", Kind: confettipb.KeyValue_KEY, Value: "PUT r3"},
		{Key: "api/i-1", Kind: confettipb.KeyValue_SERVICE, Value: "DELETE "},
		{Key: "gateway", Kind: confettipb.KeyValue_ITEM, Value: "PUT " + content("gateway", 2)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

// keys.Kind and the wire's KeyValue.Kind number the kinds alike.
func TestKindsMatchTheWire(t *testing.T) {
	for k, want := range map[keys.Kind]confettipb.KeyValue_Kind{
		keys.KindKey: confettipb.KeyValue_KEY, keys.KindItem: confettipb.KeyValue_ITEM, keys.KindService: confettipb.KeyValue_SERVICE,
	} {
		if confettipb.KeyValue_Kind(k) != want {
			t.Fatalf("keys kind %d is %v on the wire, want %v", k, confettipb.KeyValue_Kind(k), want)
		}
	}
}

// A message of several transactions gives each its own token, which
// resumes exactly after that transaction: a client that stops in the
// middle of a message misses nothing.
func TestEachTransactionTokenResumesAfterIt(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	put(t, cli, "acme", "kv//w/1", "1")
	n := startNode(t, f.tc, "node", Config{})
	start := &confettipb.Start{Tenant: "acme", Prefixes: []string{"/w/"}}
	st := openSubscribe(t, n, start)
	t0 := recvUntil(t, st, func(m *confettipb.SubscribeResponse) bool { return m.GetReset_().GetLast() }).GetReset_().Token

	r4 := put(t, cli, "acme", "kv//w/4", "4")
	r5 := put(t, cli, "acme", "kv//w/5", "5")
	testcluster.WaitFor(t, "the node at the last write", func() bool {
		sh := n.c.shard(f.tenants["acme"])
		return sh != nil && sh.revision() >= r5
	})
	// Resuming from t0 catches up from history in one message of both
	// transactions.
	resumed := proto.Clone(start).(*confettipb.Start)
	resumed.Token = t0
	ev := recvUntil(t, openSubscribe(t, n, resumed), func(m *confettipb.SubscribeResponse) bool { return m.GetEvents() != nil }).GetEvents()
	if len(ev.Txns) != 2 || ev.Txns[0].Revision != r4 || ev.Txns[1].Revision != r5 {
		t.Fatalf("the catch-up was %v, want the transactions at %d and %d in one message", ev.Txns, r4, r5)
	}
	for _, txn := range ev.Txns {
		if rev := mustRevision(t, txn.Token); rev != txn.Revision {
			t.Fatalf("the token of the transaction at %d is at %d", txn.Revision, rev)
		}
	}
	// A client that applied only the first keeps its token, and gets the
	// second from it.
	resumed.Token = ev.Txns[0].Token
	next := recvUntil(t, openSubscribe(t, n, resumed), func(m *confettipb.SubscribeResponse) bool { return m.GetEvents() != nil }).GetEvents()
	if len(next.Txns) != 1 || next.Txns[0].Revision != r5 || next.Txns[0].Events[0].Kv.Key != "/w/5" {
		t.Fatalf("resuming after /w/4 gave %v, want /w/5 alone", next.Txns)
	}
}

// A group's batch of several transactions carries each one's token at its
// revision, encoded once for every member.
func TestGroupBatchTokensPerTransaction(t *testing.T) {
	g := &group{
		tenant:   "acme",
		tokenFor: func(rev int64, _ view) string { return fmt.Sprint("at-", rev) },
		metrics:  newMetrics(prometheus.NewRegistry()),
		bySink:   map[*sink][]*member{},
		wake:     make(chan struct{}, 1),
	}
	batch := []pendingTxn{
		{txn: &confettipb.Txn{Revision: 11, Events: []*confettipb.Event{{Kv: &confettipb.KeyValue{Key: "a"}}}}},
		{txn: &confettipb.Txn{Revision: 12, Events: []*confettipb.Event{{Kv: &confettipb.KeyValue{Key: "b"}}}}},
	}
	for _, after := range []int64{0, 11} {
		msg, err := g.encode(batch, after)
		if err != nil {
			t.Fatal(err)
		}
		var m confettipb.SubscribeResponse
		if err := proto.Unmarshal(msg.body, &m); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, txn := range m.GetEvents().GetTxns() {
			got = append(got, txn.Token)
		}
		want := []string{"at-11", "at-12"}
		if after == 11 {
			want = []string{"at-12"}
		}
		if !slices.Equal(got, want) || msg.rev != 12 {
			t.Fatalf("after %d: tokens %q at %d, want %q at 12", after, got, msg.rev, want)
		}
	}
}

// An idle subscription of an idle shard still hears from the node every
// bookmark interval, which its response header names: clients take the
// bookmarks as the sign the node is alive.
func TestIdleShardStillBookmarksEveryInterval(t *testing.T) {
	f := newFixture(t, 1, "acme")
	put(t, f.shardOf(t, "acme"), "acme", "kv//a", "1")
	n := startNode(t, f.tc, "node", Config{ProgressInterval: 100 * time.Millisecond})
	st := openSubscribe(t, n, &confettipb.Start{Tenant: "acme"})
	recvUntil(t, st, func(m *confettipb.SubscribeResponse) bool { return m.GetReset_().GetLast() })
	md, err := st.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Get(wire.BookmarkIntervalHeader); len(got) != 1 || got[0] != "100ms" {
		t.Fatalf("bookmark interval header %q, want 100ms", got)
	}
	var tokens []string
	recvUntil(t, st, func(m *confettipb.SubscribeResponse) bool {
		if p := m.GetProgress(); p != nil {
			tokens = append(tokens, p.Token)
		} else {
			t.Fatalf("an idle subscription got %v", m)
		}
		return len(tokens) == 3
	})
	if tokens[0] != tokens[2] {
		t.Fatalf("bookmarks of an idle shard moved: %q", tokens)
	}
}
