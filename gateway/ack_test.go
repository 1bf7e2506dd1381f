package gateway_test

import (
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// fakeCache sends a fixed script of messages to every subscriber and
// records the acks it receives; the real cache does not resolve config
// items into subscriptions yet.
type fakeCache struct {
	confettipb.UnimplementedCacheServer
	script []*confettipb.SubscribeResponse
	acks   chan *confettipb.Ack
}

func (f *fakeCache) Subscribe(st confettipb.Cache_SubscribeServer) error {
	if _, err := st.Recv(); err != nil {
		return err
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

func item(key, value string, rev int64, name string, version int64) *confettipb.KeyValue {
	return &confettipb.KeyValue{Key: key, Value: []byte(value), ModRevision: rev, Item: &confettipb.ItemRef{Item: name, Version: version}}
}

func TestValidatorNacksRefusedItemVersionsAndKeepsThePreviousOne(t *testing.T) {
	f := &fakeCache{acks: make(chan *confettipb.Ack, 10), script: []*confettipb.SubscribeResponse{
		{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "t1", Kvs: []*confettipb.KeyValue{
			item("cfg/a", "good a1", 2, "a", 1),
			{Key: "kv/plain", Value: []byte("p"), ModRevision: 3},
		}}}},
		{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Token: "t2", Txns: []*confettipb.Txn{{Revision: 4, Events: []*confettipb.Event{
			{Kv: item("cfg/a", "bad a2", 4, "a", 2)},
			{Kv: item("cfg/b", "good b1", 4, "b", 1)},
			{Kv: &confettipb.KeyValue{Key: "kv/plain", Value: []byte("bad"), ModRevision: 4}},
		}}}}}},
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	confettipb.RegisterCacheServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	c, err := gateway.New(gateway.Config{
		Endpoints: []string{lis.Addr().String()},
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
	if v := values(c.View()); !maps.Equal(v, map[string]string{"cfg/a": "good a1", "cfg/b": "good b1", "kv/plain": "p"}) {
		t.Fatalf("view %v: refused values must leave the previous ones", v)
	}
	if kv, _ := c.Get("cfg/a"); !proto.Equal(kv.Item, &confettipb.ItemRef{Item: "a", Version: 1}) {
		t.Fatalf("cfg/a holds %v, want version 1", kv.Item)
	}
	if st := c.Stats(); st.Acks != 2 || st.Nacks != 1 || st.Rejected != 2 {
		t.Fatalf("stats: %d acks, %d nacks, %d rejected; want 2, 1, 2", st.Acks, st.Nacks, st.Rejected)
	}
}
