package etcdapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/testcluster"
)

func next(t *testing.T, ch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case wr, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return wr
	case <-time.After(60 * time.Second):
		t.Fatal("no watch response")
	}
	return clientv3.WatchResponse{}
}

func describe(evs []*clientv3.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s %s=%s@%d ", e.Type, e.Kv.Key, e.Kv.Value, e.Kv.ModRevision)
	}
	return strings.TrimSpace(b.String())
}

// Watches come from the cache's history in etcd's shape: from now, from
// a start revision, filtered to their range; a start revision older than
// the history gets etcd's compacted response; RequestProgress answers
// with a revision everything before which was sent.
func TestWatchThroughTheEtcdFrontDoor(t *testing.T) {
	s := newStack(t, cache.Config{HistoryMaxEvents: 10, ProgressInterval: 200 * time.Millisecond}, "acme", "other")
	ctx := ctxT(t)
	cli := s.client("acme")

	r1, err := cli.Put(ctx, "/a/1", "x")
	if err != nil {
		t.Fatal(err)
	}
	// A watch from now starts at the cache's revision, as one on an etcd
	// follower starts at the follower's: a linearizable read first makes
	// it at least r1.
	if _, err := cli.Get(ctx, "/a/1"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	now := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	created := next(t, now)
	if !created.Created || created.Header.Revision < r1.Header.Revision {
		t.Fatalf("created: %+v", created)
	}
	one := cli.Watch(wctx, "/a/2")
	replay := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithRev(r1.Header.Revision))
	noDel := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithRev(r1.Header.Revision))
	prevNow := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	prevOld := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(r1.Header.Revision))
	// Created responses come in order, so every watch above exists once
	// this one is created.
	next(t, cli.Watch(wctx, "/sync", clientv3.WithCreatedNotify()))

	s.client("other").Put(ctx, "/a/2", "other")
	p2, _ := cli.Put(ctx, "/a/2", "y")
	cli.Put(ctx, "/b/1", "outside")
	d1, _ := cli.Delete(ctx, "/a/1")

	want := fmt.Sprintf("PUT /a/2=y@%d DELETE /a/1=@%d", p2.Header.Revision, d1.Header.Revision)
	var got []*clientv3.Event
	for len(got) < 2 {
		got = append(got, next(t, now).Events...)
	}
	if describe(got) != want {
		t.Fatalf("watch from now: %s, want %s", describe(got), want)
	}
	if wr := next(t, one); describe(wr.Events) != fmt.Sprintf("PUT /a/2=y@%d", p2.Header.Revision) {
		t.Fatalf("single key watch: %s", describe(wr.Events))
	}
	got = nil
	for len(got) < 3 {
		got = append(got, next(t, replay).Events...)
	}
	if describe(got) != fmt.Sprintf("PUT /a/1=x@%d ", r1.Header.Revision)+want {
		t.Fatalf("watch from r1: %s", describe(got))
	}
	got = nil
	for len(got) < 2 {
		got = append(got, next(t, noDel).Events...)
	}
	for _, e := range got {
		if e.Type == mvccpb.DELETE {
			t.Fatalf("filtered watch got a delete: %s", describe(got))
		}
	}

	prevs := func(ch clientv3.WatchChan, n int) string {
		var got []string
		for len(got) < n {
			for _, e := range next(t, ch).Events {
				p := "-"
				if e.PrevKv != nil {
					p = string(e.PrevKv.Value)
				}
				got = append(got, fmt.Sprintf("%s %s prev=%s", e.Type, e.Kv.Key, p))
			}
		}
		return strings.Join(got, ", ")
	}
	if got := prevs(prevNow, 2); got != "PUT /a/2 prev=-, DELETE /a/1 prev=x" {
		t.Fatalf("prev_kv from now: %s", got)
	}
	if got := prevs(prevOld, 3); got != "PUT /a/1 prev=-, PUT /a/2 prev=-, DELETE /a/1 prev=x" {
		t.Fatalf("prev_kv from r1: %s", got)
	}

	// RequestProgress: a progress notify at or after the last event.
	if err := cli.RequestProgress(wctx); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "progress notify", func() bool {
		wr := next(t, now)
		return wr.IsProgressNotify() && wr.Header.Revision >= d1.Header.Revision
	})

	// Push r1 out of the cache's history: a watch from it is compacted.
	for i := range 20 {
		cli.Put(ctx, "/c", fmt.Sprint(i))
	}
	// A linearizable read returns once the cache has applied every put.
	if _, err := cli.Get(ctx, "/c"); err != nil {
		t.Fatal(err)
	}
	old := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithRev(r1.Header.Revision))
	wr := next(t, old)
	for wr.Created {
		wr = next(t, old)
	}
	if wr.CompactRevision <= r1.Header.Revision || wr.Err() == nil {
		t.Fatalf("watch from an evicted revision: %+v, want compacted", wr)
	}
	// Relisting and watching from the compact revision works.
	again := cli.Watch(wctx, "/a/", clientv3.WithPrefix(), clientv3.WithRev(wr.CompactRevision))
	p3, _ := cli.Put(ctx, "/a/3", "z")
	if wr := next(t, again); describe(wr.Events) != fmt.Sprintf("PUT /a/3=z@%d", p3.Header.Revision) {
		t.Fatalf("watch from the compact revision: %s", describe(wr.Events))
	}
}

// Leases are granted on the tenant's shard through the proxy.
func TestLeaseThroughTheEtcdFrontDoor(t *testing.T) {
	s := newStack(t, cache.Config{}, "acme")
	ctx := ctxT(t)
	cli := s.client("acme")
	g, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/svc/1", "up", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := cli.KeepAliveOnce(ctx, g.ID)
	if err != nil || ka.TTL <= 0 {
		t.Fatalf("keepalive: %v, %v", ka, err)
	}
	ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 || ttl.GrantedTTL != 30 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "/svc/1" {
		t.Fatalf("time to live: id %d ttl %d granted %d keys %q, %v", ttl.ID, ttl.TTL, ttl.GrantedTTL, ttl.Keys, err)
	}
	if _, err := cli.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "leased key gone", func() bool {
		resp, err := cli.Get(ctx, "/svc/1")
		return err == nil && len(resp.Kvs) == 0
	})
	st, err := cli.Status(ctx, s.addr)
	if err != nil || st.Version == "" || st.Header.Revision == 0 || st.Leader != st.Header.MemberId {
		t.Fatalf("status: %+v, %v", st, err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 {
		t.Fatalf("member list: %+v, %v", ml, err)
	}
}

// The JSON gateway answers lua-resty-etcd's requests: authenticate, a
// range with base64 keys, a chunked watch that receives a later put, and
// /version.
func TestJSONGateway(t *testing.T) {
	s := newStack(t, cache.Config{}, "acme")
	ctx := ctxT(t)
	base := "http://" + s.addr
	post := func(path, token string, body any) *http.Response {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	decode := func(resp *http.Response, v any) {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", resp.Request.URL.Path, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v: %s", resp.Request.URL.Path, err, b)
		}
	}
	var auth struct{ Token string }
	decode(post("/v3/auth/authenticate", "", map[string]string{"name": "acme", "password": s.keys["acme"]}), &auth)
	if auth.Token == "" {
		t.Fatal("no token")
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	decode(post("/v3/kv/put", auth.Token, map[string]string{"key": b64("/apisix/routes/1"), "value": b64(`{"uri":"/"}`)}), &struct{}{})
	var rng struct {
		Header struct{ Revision string }
		Kvs    []struct{ Key, Value string }
		Count  string
	}
	decode(post("/v3/kv/range", auth.Token, map[string]string{"key": b64("/apisix/routes/"), "range_end": b64("/apisix/routes0")}), &rng)
	if rng.Count != "1" || len(rng.Kvs) != 1 || rng.Kvs[0].Key != b64("/apisix/routes/1") {
		t.Fatalf("range: %+v", rng)
	}

	// The watch's response stays open, one JSON object per chunk.
	wreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v3/watch",
		strings.NewReader(fmt.Sprintf(`{"create_request":{"key":%q,"range_end":%q,"start_revision":"%d"}}`, b64("/apisix/routes/"), b64("/apisix/routes0"), atoi(t, rng.Header.Revision)+1)))
	wreq.Header.Set("Authorization", auth.Token)
	wresp, err := http.DefaultClient.Do(wreq)
	if err != nil {
		t.Fatal(err)
	}
	defer wresp.Body.Close()
	dec := json.NewDecoder(wresp.Body)
	var created struct{ Result struct{ Created bool } }
	if err := dec.Decode(&created); err != nil || !created.Result.Created {
		t.Fatalf("watch created: %+v, %v", created, err)
	}
	decode(post("/v3/kv/put", auth.Token, map[string]string{"key": b64("/apisix/routes/2"), "value": b64("v")}), &struct{}{})
	var ev struct {
		Result struct {
			Events []struct{ Kv struct{ Key string } }
		}
	}
	if err := dec.Decode(&ev); err != nil || len(ev.Result.Events) != 1 || ev.Result.Events[0].Kv.Key != b64("/apisix/routes/2") {
		t.Fatalf("watch event: %+v, %v", ev, err)
	}

	resp, err := http.Get(base + "/version")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	decode(resp, &v)
	if v["etcdserver"] == "" || v["etcdcluster"] == "" {
		t.Fatalf("version: %v", v)
	}
}

func atoi(t *testing.T, s string) int64 {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
