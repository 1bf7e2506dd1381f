package cache

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// A start at after_revision gets exactly the events after it, with no
// Reset, like an etcd watch from after_revision+1; once history no longer
// covers it, the subscription is closed with OutOfRange and the lowest
// revision still served, like etcd's compacted response.
func TestStartAfterRevisionReplaysOrReportsCompaction(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	n := startNode(t, f.tc, "c1", Config{HistoryMaxEvents: 4})
	r1 := put(t, cli, "acme", "kv//a", "1")
	r2 := put(t, cli, "acme", "kv//a", "2")
	put(t, cli, "acme", "kv//b", "3")
	testcluster.WaitFor(t, "node at the last write", func() bool {
		resp, err := n.cli.Range(context.Background(), &confettipb.RangeRequest{Tenant: "acme", Key: "/", Prefix: true, CountOnly: true})
		return err == nil && resp.Count == 2
	})

	m := openMany(t, n, false)
	var got []*confettipb.SubscribeResponse
	m.send(&confettipb.SubscribeRequest{SubscriptionId: 1, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme", Prefixes: []string{"/a"}, AfterRevision: proto.Int64(r1)}}})
	testcluster.WaitFor(t, "the event after r1", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		got = append(got[:0], m.msgs...)
		return len(got) >= 1
	})
	ev := got[0].GetEvents()
	if ev == nil || len(ev.Txns) != 1 || ev.Txns[0].Revision != r2 || string(ev.Txns[0].Events[0].Kv.Value) != "2" {
		t.Fatalf("first message after r1 = %v, want the put of /a at %d", got[0], r2)
	}

	for i := range 8 {
		put(t, cli, "acme", "kv//c", string(rune('a'+i)))
	}
	testcluster.WaitFor(t, "history past r1", func() bool {
		resp, err := n.cli.Status(context.Background(), &confettipb.CacheStatusRequest{})
		return err == nil && resp.Shards[0].HistoryStart > r1
	})
	m.send(&confettipb.SubscribeRequest{SubscriptionId: 2, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme", AfterRevision: proto.Int64(r1)}}})
	c := m.waitClosed(2)
	if codes.Code(c.Code) != codes.OutOfRange || c.CompactRevision <= r1+1 {
		t.Fatalf("start after a revision older than history: %v, want OutOfRange with compact_revision above %d", c, r1+1)
	}
	m.send(&confettipb.SubscribeRequest{SubscriptionId: 3, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme", AfterRevision: proto.Int64(c.CompactRevision - 1)}}})
	m.send(&confettipb.SubscribeRequest{SubscriptionId: 4, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: "acme", AfterRevision: proto.Int64(r1), Token: "x"}}})
	if c := m.waitClosed(4); codes.Code(c.Code) != codes.InvalidArgument {
		t.Fatalf("token and after_revision: %v, want InvalidArgument", c)
	}
	m.mu.Lock()
	_, closed3 := m.closed[3]
	m.mu.Unlock()
	if closed3 {
		t.Fatal("a start at the compact revision was refused")
	}
}
