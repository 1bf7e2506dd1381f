package watchcheck

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/keys"
)

// Tokens in these tests are "rev:N".
func rev(tok string) (int64, error) { return strconv.ParseInt(strings.TrimPrefix(tok, "rev:"), 10, 64) }
func tok(r int64) string            { return "rev:" + strconv.FormatInt(r, 10) }

func put(k, v string, mod int64) *confettipb.Event {
	return &confettipb.Event{Type: confettipb.Event_PUT, Kv: &confettipb.KeyValue{Key: k, Value: []byte(v), ModRevision: mod}}
}

// events is a message of txns; a transaction without a token gets its
// revision's.
func events(txns ...*confettipb.Txn) *confettipb.SubscribeResponse {
	for _, t := range txns {
		if t.Token == "" {
			t.Token = tok(t.Revision)
		}
	}
	return &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: txns}}}
}

func reset(token int64, kvs ...*confettipb.KeyValue) *confettipb.SubscribeResponse {
	return &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Kvs: kvs, Last: true, Token: tok(token)}}}
}

func TestCheckFindsEachViolation(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	p := keys.Tenant("acme")
	base, err := cli.Put(ctx, p+"kv/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	r0 := base.Header.Revision
	ref, err := StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	t1, _ := cli.Txn(ctx).Then(clientv3.OpPut(p+"kv/b", "2"), clientv3.OpPut(p+"kv/c", "3")).Commit()
	r1 := t1.Header.Revision
	t2, _ := cli.Put(ctx, p+"kv/a", "4")
	r2 := t2.Header.Revision
	cli.Put(ctx, keys.Tenant("other")+"kv/z", "x")
	if err := ref.WaitRevision(ctx, r2); err != nil {
		t.Fatal(err)
	}

	good := []*confettipb.SubscribeResponse{
		reset(r0, &confettipb.KeyValue{Key: "a", Value: []byte("1")}),
		events(&confettipb.Txn{Revision: r1, Events: []*confettipb.Event{put("b", "2", r1), put("c", "3", r1)}}),
		events(&confettipb.Txn{Revision: r2, Events: []*confettipb.Event{put("a", "4", r2)}}),
	}
	both := func(tok1 string) *confettipb.SubscribeResponse {
		return events(
			&confettipb.Txn{Revision: r1, Token: tok1, Events: []*confettipb.Event{put("b", "2", r1), put("c", "3", r1)}},
			&confettipb.Txn{Revision: r2, Events: []*confettipb.Event{put("a", "4", r2)}})
	}
	for _, tc := range []struct {
		name string
		msgs []*confettipb.SubscribeResponse
		want string
	}{
		{name: "correct stream", msgs: good},
		{name: "two transactions in one message", msgs: []*confettipb.SubscribeResponse{good[0], both("")}},
		{name: "split transaction", msgs: []*confettipb.SubscribeResponse{good[0],
			events(&confettipb.Txn{Revision: r1, Events: []*confettipb.Event{put("b", "2", r1)}}),
			good[2]}, want: "atomic"},
		{name: "transaction token past the transaction", msgs: []*confettipb.SubscribeResponse{good[0], both(tok(r2))}, want: "resumable"},
		{name: "transaction without a token", msgs: []*confettipb.SubscribeResponse{good[0],
			{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: []*confettipb.Txn{{Revision: r1, Events: []*confettipb.Event{put("b", "2", r1), put("c", "3", r1)}}}}}},
			good[2]}, want: "resumable"},
		{name: "duplicate", msgs: []*confettipb.SubscribeResponse{good[0], good[1], good[1], good[2]}, want: "unique"},
		{name: "backwards", msgs: []*confettipb.SubscribeResponse{good[0], good[2], good[1]}, want: "ordered"},
		{name: "gap", msgs: []*confettipb.SubscribeResponse{good[0], good[2]}, want: "reliable"},
		{name: "wrong reset", msgs: []*confettipb.SubscribeResponse{reset(r0)}, want: "reliable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStream(&confettipb.Start{Tenant: "acme", Prefixes: []string{""}})
			s.Subscribed("")
			for _, m := range tc.msgs {
				s.Received(m)
			}
			res, err := Check(ref, s, rev, Options{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("a correct stream failed: %v", err)
				}
				if res.Resets != 1 || res.Events != 3 || res.Revision != r2 || res.State["kv/a"] != "4" {
					t.Fatalf("result %+v", res)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want+":") {
				t.Fatalf("err = %v, want a %s violation", err, tc.want)
			}
		})
	}

	// Resuming counts as a replay, and a stale resume token is caught.
	s := NewStream(&confettipb.Start{Tenant: "acme", Prefixes: []string{""}})
	s.Subscribed("")
	s.Received(good[0])
	s.Received(good[1])
	s.Subscribed(tok(r1))
	s.Received(good[2])
	res, err := Check(ref, s, rev, Options{})
	if err != nil || res.Resumes != 1 || res.Resets != 1 {
		t.Fatalf("resume: %+v, %v", res, err)
	}
	s.Subscribed(tok(r0))
	if _, err := Check(ref, s, rev, Options{}); err == nil || !strings.Contains(err.Error(), "resumable:") {
		t.Fatalf("stale resume: %v", err)
	}

	// A silent connection breaks the bookmark bound.
	s = NewStream(&confettipb.Start{Tenant: "acme", Prefixes: []string{""}})
	s.Subscribed("")
	s.Received(good[0])
	s.Received(good[1])
	s.items[2].at = s.items[1].at.Add(12 * time.Second)
	if _, err := Check(ref, s, rev, Options{}); err == nil || !strings.Contains(err.Error(), "bookmarked:") {
		t.Fatalf("bookmark gap: %v", err)
	}
}
