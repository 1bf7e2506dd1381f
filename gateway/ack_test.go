package gateway_test

import (
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// fakeCache sends a fixed script of messages to every subscriber and
// records the acks it receives, so that a test decides exactly what a
// client is sent.
type fakeCache struct {
	confettipb.UnimplementedCacheServer
	script []*confettipb.SubscribeResponse
	acks   chan *confettipb.Ack
	// refuseTokens answers a start with a token as a node of another
	// cluster does.
	refuseTokens bool
}

func (f *fakeCache) Subscribe(st confettipb.Cache_SubscribeServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	if f.refuseTokens && req.GetStart().GetToken() != "" {
		return status.Error(codes.InvalidArgument, "cache: invalid resume token: signature mismatch")
	}
	for _, m := range f.script {
		if err := st.Send(m); err != nil {
			return err
		}
	}
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		f.acks <- req.GetAck()
	}
}

func item(value string, rev int64, name string, version int64) *confettipb.KeyValue {
	return &confettipb.KeyValue{Key: name, Kind: confettipb.KeyValue_ITEM, Value: []byte(value), ModRevision: rev, Item: &confettipb.ItemRef{Item: name, Version: version}}
}

func TestValidatorNacksRefusedItemVersionsAndKeepsThePreviousOne(t *testing.T) {
	f := &fakeCache{acks: make(chan *confettipb.Ack, 10), script: []*confettipb.SubscribeResponse{
		{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "t1", Kvs: []*confettipb.KeyValue{
			item("good a1", 2, "a", 1),
			{Key: "plain", Value: []byte("p"), ModRevision: 3},
		}}}},
		{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: []*confettipb.Txn{{Revision: 4, Token: "t2", Events: []*confettipb.Event{
			{Kv: item("bad a2", 4, "a", 2)},
			{Kv: item("good b1", 4, "b", 1)},
			{Kv: &confettipb.KeyValue{Key: "plain", Value: []byte("bad"), ModRevision: 4}},
		}}}}}},
	}}
	c, err := gateway.New(gateway.Config{
		Endpoints: []string{serveFake(t, f)},
		Tenant:    "acme",
		Logger:    zaptest.NewLogger(t),
		Validate: func(key string, kv *confettipb.KeyValue) error {
			if string(kv.Value[:3]) == "bad" {
				return errors.New("value starts with bad")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start(t, c)

	var got []*confettipb.Ack
	for len(got) < 3 {
		select {
		case a := <-f.acks:
			got = append(got, a)
		case <-time.After(time.Minute):
			t.Fatalf("acks received: %v", got)
		}
	}
	want := []*confettipb.Ack{
		{Item: "a", Version: 1, Ok: true},
		{Item: "a", Version: 2, Error: "value starts with bad"},
		{Item: "b", Version: 1, Ok: true},
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("acks (-want +got):\n%s", d)
	}
	testcluster.WaitFor(t, "the events applied", func() bool { return c.View().Token() == "t2" })
	if v := values(c.View()); !maps.Equal(v, map[string]string{"plain": "p"}) {
		t.Fatalf("keys %v: refused values must leave the previous ones", v)
	}
	items := map[string]string{}
	c.View().RangeItems(func(name string, kv *confettipb.KeyValue) bool {
		items[name] = string(kv.Value)
		return true
	})
	if !maps.Equal(items, map[string]string{"a": "good a1", "b": "good b1"}) {
		t.Fatalf("items %v: refused versions must leave the previous ones", items)
	}
	if kv, _ := c.Item("a"); !proto.Equal(kv.Item, &confettipb.ItemRef{Item: "a", Version: 1}) {
		t.Fatalf("item a holds %v, want version 1", kv.Item)
	}
	if st := c.Stats(); st.Acks != 2 || st.Nacks != 1 || st.Rejected != 2 {
		t.Fatalf("stats: %d acks, %d nacks, %d rejected; want 2, 1, 2", st.Acks, st.Nacks, st.Rejected)
	}
}

func serveFake(t *testing.T, f *fakeCache) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	confettipb.RegisterCacheServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// TestRefusedResumeTokenFallsBackToAReset resumes from a snapshot whose
// token the cache refuses (a cluster rebuilt with another token key): the
// client serves the snapshot meanwhile and subscribes afresh.
func TestRefusedResumeTokenFallsBackToAReset(t *testing.T) {
	dir := t.TempDir()
	reset := func(token, value string) []*confettipb.SubscribeResponse {
		return []*confettipb.SubscribeResponse{{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: token, Kvs: []*confettipb.KeyValue{
			{Key: "k", Value: []byte(value), ModRevision: 2},
		}}}}}
	}
	cfg := gateway.Config{Tenant: "acme", SnapshotDir: dir, BackoffInitial: 50 * time.Millisecond, Logger: zaptest.NewLogger(t)}
	cfg.Endpoints = []string{serveFake(t, &fakeCache{script: reset("old", "before")})}
	a, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, a)
	testcluster.WaitFor(t, "the first reset", func() bool { return a.View().Token() == "old" })
	a.Close()

	cfg.Endpoints = []string{serveFake(t, &fakeCache{script: reset("new", "after"), refuseTokens: true})}
	b, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	start(t, b)
	testcluster.WaitFor(t, "a fresh reset", func() bool { return b.View().Token() == "new" })
	if kv, _ := b.Get("k"); string(kv.Value) != "after" || b.Stats().Resets != 1 || !b.Stats().SnapshotLoaded {
		t.Fatalf("after the refused token: k=%s, stats %+v", kv.Value, b.Stats())
	}
}

// The view after an Events message of several transactions is at the last
// transaction's token, so that a resume replays nothing the view holds.
func TestViewIsAtTheLastTransactionsToken(t *testing.T) {
	put := func(key, value string, rev int64, token string) *confettipb.Txn {
		return &confettipb.Txn{Revision: rev, Token: token, Events: []*confettipb.Event{{Kv: &confettipb.KeyValue{Key: key, Value: []byte(value), ModRevision: rev}}}}
	}
	f := &fakeCache{acks: make(chan *confettipb.Ack, 1), script: []*confettipb.SubscribeResponse{
		{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "t3"}}},
		{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: []*confettipb.Txn{put("/w/4", "4", 4, "t4"), put("/w/5", "5", 5, "t5")}}}},
	}}
	c, err := gateway.New(gateway.Config{Endpoints: []string{serveFake(t, f)}, Tenant: "acme", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start(t, c)
	testcluster.WaitFor(t, "both transactions applied", func() bool { return c.View().Len() == 2 })
	if tok := c.View().Token(); tok != "t5" {
		t.Fatalf("the view is at token %q after the transactions of t4 and t5, want t5", tok)
	}
}
