package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/sse"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// startSSE serves n's HTTP door; authn may be nil (no keys).
func startSSE(t *testing.T, n *node, authn *auth.Authenticator) string {
	t.Helper()
	srv := httptest.NewServer(n.c.HTTPHandler(authn))
	t.Cleanup(srv.Close)
	return srv.URL
}

// sseSub is one SSE subscription recorded into a validator stream.
type sseSub struct {
	stream *watchcheck.Stream
	resp   *http.Response
	done   chan struct{}
	mu     sync.Mutex
	lastID string
	err    error
}

// sseGet opens a subscription: query holds its parameters, header its
// key or Last-Event-ID. A refusal returns the response, not a stream.
func sseGet(t *testing.T, base, tenant string, query url.Values, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/tenants/"+tenant+"/subscribe?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// sseSubscribe subscribes and records what arrives into s (a new stream
// of start when s is nil), resuming from start.Token.
func sseSubscribe(t *testing.T, base string, start *confettipb.Start, s *watchcheck.Stream, header http.Header) *sseSub {
	t.Helper()
	q := url.Values{"prefix": start.Prefixes, "item": start.Items, "service": start.Services}
	if id := start.GetIdentity(); id != nil {
		if id.InstanceId != "" {
			q.Set("instance_id", id.InstanceId)
		}
		for k, v := range id.Labels {
			q.Add("label", k+"="+v)
		}
	}
	if header == nil {
		header = http.Header{}
	}
	if start.Token != "" {
		header.Set("Last-Event-ID", start.Token)
	}
	resp := sseGet(t, base, start.Tenant, q, header)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("subscribe: %s %s", resp.Status, b)
	}
	if s == nil {
		s = watchcheck.NewStream(start)
	}
	s.Subscribed(start.Token)
	sub := &sseSub{stream: s, resp: resp, done: make(chan struct{})}
	t.Cleanup(sub.close)
	go sub.read()
	return sub
}

func (s *sseSub) read() {
	defer close(s.done)
	r := sse.NewReader(s.resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		var m apijson.Message
		switch ev.Name {
		case "reset":
			m.Reset = &apijson.Reset{}
			err = json.Unmarshal(ev.Data, m.Reset)
		case "events":
			m.Events = &apijson.Events{}
			err = json.Unmarshal(ev.Data, m.Events)
		case "progress":
			m.Progress = &apijson.Progress{}
			err = json.Unmarshal(ev.Data, m.Progress)
		default:
			err = fmt.Errorf("unknown event %q", ev.Name)
		}
		if err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("event %s %s: %w", ev.Name, ev.Data, err)
			s.mu.Unlock()
			return
		}
		s.stream.Received(m.Proto())
		s.mu.Lock()
		s.lastID = r.LastID
		s.mu.Unlock()
	}
}

func (s *sseSub) close() {
	s.resp.Body.Close()
	<-s.done
}

// id is the last event id the stream set: what a reconnect sends.
func (s *sseSub) id() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// An SSE subscription keeps the whole contract, checked against etcd, and
// resumes from its last event id on another node by replay.
func TestSSESubscriptionKeepsTheContractAndResumesOnAnotherNode(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n1 := startNode(t, f.tc, "n1", Config{})
	n2 := startNode(t, f.tc, "n2", Config{})
	put(t, cli, "acme", "kv//routes/0", "seed")
	start := &confettipb.Start{Tenant: "acme", Prefixes: []string{"/routes/"}}
	sub := sseSubscribe(t, startSSE(t, n1, nil), start, nil, nil)
	var last int64
	for i := range 30 {
		last = put(t, cli, "acme", fmt.Sprintf("kv//routes/%d", i%7), fmt.Sprint(i))
	}
	waitAt(t, ref, last, sub.stream)
	sub.close()

	for i := range 20 {
		last = put(t, cli, "acme", fmt.Sprintf("kv//routes/%d", i%5), fmt.Sprint("after-", i))
	}
	resumed := proto.Clone(start).(*confettipb.Start)
	resumed.Token = sub.id()
	again := sseSubscribe(t, startSSE(t, n2, nil), resumed, sub.stream, nil)
	res := waitAt(t, ref, last, again.stream)[0]
	if res.Resets != 1 || res.Resumes != 1 {
		t.Fatalf("%d resets and %d resumes; want one reset, then a replay", res.Resets, res.Resumes)
	}
}

// Items resolve per identity on the SSE door as on gRPC.
func TestSSEIdentityResolvesItems(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node", Config{})
	publishVersion(t, cli, "acme", "app", 1, content("app", 1))
	publishVersion(t, cli, "acme", "app", 2, content("app", 2))
	setRelease(t, cli, "acme", "app", &confettipb.Release{Stable: 1})
	base := startSSE(t, n, nil)
	a := sseSubscribe(t, base, &confettipb.Start{Tenant: "acme", Items: []string{"app"}, Identity: &confettipb.Identity{InstanceId: "gw-a", Labels: map[string]string{"zone": "a"}}}, nil, nil)
	b := sseSubscribe(t, base, &confettipb.Start{Tenant: "acme", Items: []string{"app"}, Identity: &confettipb.Identity{InstanceId: "gw-b", Labels: map[string]string{"zone": "b"}}}, nil, nil)
	rev := setRelease(t, cli, "acme", "app", &confettipb.Release{Stable: 1, Grays: []*confettipb.Gray{{Id: "zone-a", Version: 2, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: "zone=a"}}}}})
	ra := waitAt(t, ref, rev, a.stream)[0]
	rb := waitAt(t, ref, rev, b.stream)[0]
	if ra.State["cfg/app/"] != content("app", 2) || rb.State["cfg/app/"] != content("app", 1) {
		t.Fatalf("zone a holds %q, zone b %q", ra.State["cfg/app/"], rb.State["cfg/app/"])
	}
}

// A client that reads nothing never delays the others, and catches up
// exactly once it reads.
func TestSSESlowReaderNeitherDelaysOthersNorMissesAnything(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	// The slow client reads nothing until the fast one has everything,
	// which under the race detector can take longer than the default
	// write timeout.
	n := startNode(t, f.tc, "node", Config{SubscriberQueue: 4, HistoryMaxEvents: 50, SSEWriteTimeout: time.Hour})
	base := startSSE(t, n, nil)
	start := &confettipb.Start{Tenant: "acme"}
	fast := sseSubscribe(t, base, start, nil, nil)
	// The slow client takes the head and then reads nothing.
	slowResp := sseGet(t, base, "acme", url.Values{}, nil)
	if slowResp.StatusCode != http.StatusOK {
		t.Fatalf("slow subscribe: %s", slowResp.Status)
	}
	last := writeLarge(t, cli)
	if res := waitAt(t, ref, last, fast.stream)[0]; res.Resets != 1 {
		t.Fatalf("the fast client was reset %d times", res.Resets)
	}
	slow := &sseSub{stream: watchcheck.NewStream(start), resp: slowResp, done: make(chan struct{})}
	slow.stream.Subscribed("")
	t.Cleanup(slow.close)
	go slow.read()
	waitAt(t, ref, last, slow.stream)
}

// Bad requests get the gRPC door's answers as HTTP statuses with a JSON
// error saying what to do.
func TestSSEBadInputGetsClearErrors(t *testing.T) {
	f := newFixture(t, 1, "acme", "other")
	n := startNode(t, f.tc, "node", Config{MaxSubscriptionsPerTenant: 1})
	st, _ := f.tc.NewStore(t)
	authn, err := auth.New(st, auth.Config{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	key := func(tenant string) string {
		k, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Tenant: tenant, Role: meta.RoleReader, SHA256: k.Hash()}); err != nil {
			t.Fatal(err)
		}
		testcluster.WaitFor(t, "the key in the node's table", func() bool { _, err := authn.Verify(k.String()); return err == nil })
		return k.String()
	}
	acme, other := key("acme"), key("other")
	base := startSSE(t, n, authn)
	otherToken := func() string {
		sub := sseSubscribe(t, base, &confettipb.Start{Tenant: "other"}, nil, http.Header{"X-Api-Key": {other}})
		testcluster.WaitFor(t, "a token of tenant other", func() bool { return sub.id() != "" })
		sub.close()
		return sub.id()
	}()
	with := func(k string, more ...string) http.Header {
		h := http.Header{"X-Api-Key": {k}}
		for i := 0; i+1 < len(more); i += 2 {
			h.Set(more[i], more[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		tenant string
		query  url.Values
		header http.Header
		status int
		code   codes.Code
		want   string
	}{
		{name: "no key", tenant: "acme", status: 401, code: codes.Unauthenticated, want: "X-API-Key"},
		{name: "another tenant's key", tenant: "acme", header: with(other), status: 403, code: codes.PermissionDenied, want: "may not use tenant"},
		{name: "malformed last event id", tenant: "acme", header: with(acme, "Last-Event-ID", "not-a-token"), status: 400, code: codes.InvalidArgument, want: "token"},
		{name: "a token of another tenant", tenant: "acme", header: with(acme, "Last-Event-ID", otherToken), status: 400, code: codes.InvalidArgument, want: "tenant"},
		{name: "bad item", tenant: "acme", query: url.Values{"item": {"a/b"}}, header: with(acme), status: 400, code: codes.InvalidArgument, want: "not an item name"},
		{name: "bad label", tenant: "acme", query: url.Values{"label": {"zone"}}, header: with(acme), status: 400, code: codes.InvalidArgument, want: "key=value"},
		{name: "unknown parameter", tenant: "acme", query: url.Values{"prefixes": {"/x"}}, header: with(acme), status: 400, code: codes.InvalidArgument, want: "unknown parameter"},
		{name: "bad ticket", tenant: "acme", query: url.Values{"ticket": {"nope"}}, status: 401, code: codes.Unauthenticated, want: "ticket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := sseGet(t, base, tc.tenant, tc.query, tc.header)
			defer resp.Body.Close()
			var e apijson.Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("%s: body is not a JSON error: %v", resp.Status, err)
			}
			if resp.StatusCode != tc.status || e.GRPCCode != tc.code.String() || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("got %d %+v, want %d %v mentioning %q", resp.StatusCode, e, tc.status, tc.code, tc.want)
			}
		})
	}
	// The tenant's limit of one subscription: the second gets 429.
	first := sseSubscribe(t, base, &confettipb.Start{Tenant: "acme"}, nil, with(acme))
	testcluster.WaitFor(t, "the first subscription", func() bool { return first.id() != "" })
	resp := sseGet(t, base, "acme", nil, with(acme))
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %s", resp.Status)
	}
}

// A ticket, made with the key, subscribes without the key in the URL on
// any node; revoking the key ends the stream and refuses its tickets.
func TestSSETicketsAndRevocation(t *testing.T) {
	f := newFixture(t, 1, "acme")
	n1 := startNode(t, f.tc, "n1", Config{})
	n2 := startNode(t, f.tc, "n2", Config{})
	st, _ := f.tc.NewStore(t)
	authn, err := auth.New(st, auth.Config{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := auth.NewKey()
	if _, err := st.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Tenant: "acme", Role: meta.RoleReader, SHA256: k.Hash()}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the key in the table", func() bool { _, err := authn.Verify(k.String()); return err == nil })
	base1, base2 := startSSE(t, n1, authn), startSSE(t, n2, authn)
	req, _ := http.NewRequest(http.MethodPost, base1+"/v1/tenants/acme/subscribe/tickets", nil)
	req.Header.Set("X-API-Key", k.String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ticket struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ticket); err != nil || ticket.Ticket == "" || ticket.ExpiresIn <= 0 {
		t.Fatalf("ticket: %s %+v %v", resp.Status, ticket, err)
	}
	resp.Body.Close()
	withTicket := sseGet(t, base2, "acme", url.Values{"ticket": {ticket.Ticket}}, nil)
	if withTicket.StatusCode != http.StatusOK {
		t.Fatalf("subscribe with a ticket on the other node: %s", withTicket.Status)
	}
	if _, err := st.RevokeAPIKey(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, withTicket.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the stream of a revoked key did not end")
	}
	again := sseGet(t, base1, "acme", url.Values{"ticket": {ticket.Ticket}}, nil)
	again.Body.Close()
	if again.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a revoked key's ticket: %s", again.Status)
	}
}
