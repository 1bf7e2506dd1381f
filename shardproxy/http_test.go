package shardproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig/tlstest"
)

// httpAPI is the HTTP/JSON API of a test proxy on a real listener.
type httpAPI struct {
	*api
	url string
}

// newHTTPAPI serves the HTTP API of a over a real listener on
// 127.0.0.1:0, through a's gRPC connection, until the test ends.
func newHTTPAPI(t *testing.T, a *api) *httpAPI {
	t.Helper()
	h, err := a.proxy.HTTPHandler(t.Context(), a.conn)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &httpAPI{api: a, url: srv.URL}
}

// reply is one HTTP reply, read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("HTTP %d %s", r.status, r.body) }

// json decodes the body into a fresh map, for checks on the raw shape.
func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body of %s is not a JSON object: %v", r, err)
	}
	return m
}

// do sends one request; headers alternate names and values.
func (h *httpAPI) do(t *testing.T, method, path string, body []byte, headers ...string) reply {
	t.Helper()
	r, err := h.send(testCtx(t), method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's.
func (h *httpAPI) send(ctx context.Context, method, path string, body []byte, headers ...string) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, rd)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// wantStatus fails unless r has status code.
func (r reply) wantStatus(t *testing.T, code int) reply {
	t.Helper()
	if r.status != code {
		t.Fatalf("got %s, want HTTP %d", r, code)
	}
	return r
}

// kv decodes a single-key reply.
func (r reply) kv(t *testing.T) apijson.KeyValue {
	t.Helper()
	var kv apijson.KeyValue
	if err := json.Unmarshal(r.body, &kv); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	return kv
}

// wantError fails unless r is the JSON error with status code, gRPC code
// name grpcCode and a message containing every one of parts.
func (r reply) wantError(t *testing.T, code int, grpcCode string, parts ...string) {
	t.Helper()
	if r.status != code {
		t.Fatalf("got %s, want HTTP %d", r, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	var e apijson.Error
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if e.Code != code || e.GRPCCode != grpcCode || e.Error == "" {
		t.Fatalf("error body %s, want code %d and grpc_code %s", r.body, code, grpcCode)
	}
	for _, p := range parts {
		if !strings.Contains(e.Error, p) {
			t.Fatalf("error %q does not contain %q", e.Error, p)
		}
	}
}

// rawValue reads a key of tenant straight from its shard: its value and
// whether it exists.
func rawValue(t *testing.T, c *clusters, tn *pb.Tenant, key string) (string, bool) {
	t.Helper()
	resp, err := c.raw[tn.Shard].Get(testCtx(t), keys.KV(tn.Name)+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func TestHTTPPutGetDeleteRoundTripWithSlashesInKeys(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-rt")

	tests := []struct {
		name  string
		path  string // after /v1/tenants/http-rt/kv/
		key   string
		value []byte
	}{
		{name: "plain", path: "greeting", key: "greeting", value: []byte("hello")},
		{name: "slashes", path: "routes/1/upstream", key: "routes/1/upstream", value: []byte(`{"nodes":{"127.0.0.1:80":1}}`)},
		{name: "leading slash", path: "/routes/1", key: "/routes/1", value: []byte(`{"uri":"/hello"}`)},
		{name: "percent-encoded", path: "a%2Fb%20c%3Fd", key: "a/b c?d", value: []byte("x")},
		{name: "unicode", path: "caf%C3%A9/%E2%82%AC", key: "café/€", value: []byte("ünïcode")},
		{name: "empty value", path: "empty", key: "empty", value: []byte{}},
		{name: "binary value", path: "bin", key: "bin", value: []byte{0xff, 0x00, 0xfe}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/v1/tenants/http-rt/kv/" + tt.path
			put := h.do(t, http.MethodPut, path, tt.value).wantStatus(t, http.StatusCreated)
			created := put.kv(t)
			if created.Key != tt.key || created.ModRevision == 0 || created.CreateRevision != created.ModRevision || created.Version != 1 {
				t.Fatalf("PUT replied %s for key %q", put, tt.key)
			}
			if etag := put.header.Get("ETag"); etag != strconv.Quote(strconv.FormatInt(created.ModRevision, 10)) {
				t.Fatalf("PUT ETag %q, mod_revision %d", etag, created.ModRevision)
			}
			if v, ok := rawValue(t, c, tn, tt.key); !ok || v != string(tt.value) {
				t.Fatalf("shard holds %q (exists %v) under key %q, want %q", v, ok, tt.key, tt.value)
			}

			get := h.do(t, http.MethodGet, path, nil).wantStatus(t, http.StatusOK)
			got := get.kv(t)
			want := created
			if utf8.Valid(tt.value) {
				s := string(tt.value)
				want.Value, want.ValueBase64 = &s, nil
			} else {
				want.Value, want.ValueBase64 = nil, tt.value
				if !strings.Contains(string(get.body), `"value_base64":"`+base64.StdEncoding.EncodeToString(tt.value)+`"`) {
					t.Fatalf("binary value not in value_base64: %s", get.body)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("GET (-want +got):\n%s", diff)
			}
			if get.header.Get("ETag") != put.header.Get("ETag") {
				t.Fatalf("GET ETag %q, PUT ETag %q", get.header.Get("ETag"), put.header.Get("ETag"))
			}

			replaced := h.do(t, http.MethodPut, path, []byte("second")).wantStatus(t, http.StatusOK).kv(t)
			if replaced.CreateRevision != created.CreateRevision || replaced.ModRevision <= created.ModRevision || replaced.Version != 2 {
				t.Fatalf("second PUT replied %+v after %+v", replaced, created)
			}

			del := h.do(t, http.MethodDelete, path, nil).wantStatus(t, http.StatusOK).json(t)
			if del["deleted"] != 1.0 {
				t.Fatalf("DELETE replied %v", del)
			}
			h.do(t, http.MethodGet, path, nil).wantError(t, http.StatusNotFound, "NotFound", strconv.Quote(tt.key), "not found")
			if _, ok := rawValue(t, c, tn, tt.key); ok {
				t.Fatalf("key %q still on the shard after DELETE", tt.key)
			}
			del = h.do(t, http.MethodDelete, path, nil).wantStatus(t, http.StatusOK).json(t)
			if del["deleted"] != 0.0 {
				t.Fatalf("DELETE of an absent key replied %v", del)
			}
		})
	}
}

func TestHTTPDeletePrefixLeavesOtherKeys(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-delprefix")
	for _, k := range []string{"/a/1", "/a/2", "/a/3/x", "/ab", "/b"} {
		h.do(t, http.MethodPut, "/v1/tenants/http-delprefix/kv/"+k, []byte("v")).wantStatus(t, http.StatusCreated)
	}
	del := h.do(t, http.MethodDelete, "/v1/tenants/http-delprefix/kv//a/?prefix=true", nil).wantStatus(t, http.StatusOK).json(t)
	if del["deleted"] != 3.0 {
		t.Fatalf("DELETE ?prefix=true replied %v, want 3 deleted", del)
	}
	left := c.rawTenantKeys(t, tn.Shard, tn.Name)
	want := map[string]string{keys.KV(tn.Name) + "/ab": "v", keys.KV(tn.Name) + "/b": "v"}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Fatalf("keys left (-want +got):\n%s", diff)
	}
}

func TestHTTPPutWithTTLAttachesALease(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{MaxTTL: 3600}))
	tn := h.freshTenant(t, c, "http-ttl")

	kv := h.do(t, http.MethodPut, "/v1/tenants/http-ttl/kv/session?ttl=60", []byte("x")).wantStatus(t, http.StatusCreated).kv(t)
	if kv.Lease == 0 {
		t.Fatalf("PUT ?ttl=60 replied lease 0: %+v", kv)
	}
	ttl, err := c.raw[tn.Shard].TimeToLive(testCtx(t), clientv3.LeaseID(kv.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 || ttl.TTL > 60 || ttl.GrantedTTL != 60 {
		t.Fatalf("lease %d has ttl %d granted %d, want (0, 60] of 60", kv.Lease, ttl.TTL, ttl.GrantedTTL)
	}
	if !slices.ContainsFunc(ttl.Keys, func(k []byte) bool { return string(k) == keys.KV(tn.Name)+"session" }) {
		t.Fatalf("lease %d holds %q, not the key", kv.Lease, ttl.Keys)
	}
	if got := h.do(t, http.MethodGet, "/v1/tenants/http-ttl/kv/session", nil).wantStatus(t, http.StatusOK).kv(t); got.Lease != kv.Lease {
		t.Fatalf("GET lease %d, PUT lease %d", got.Lease, kv.Lease)
	}

	for _, ttl := range []string{"-1", "abc", "3601"} {
		h.do(t, http.MethodPut, "/v1/tenants/http-ttl/kv/bad?ttl="+ttl, []byte("x")).wantError(t, http.StatusBadRequest, "InvalidArgument", "ttl")
	}
	if _, ok := rawValue(t, c, tn, "bad"); ok {
		t.Fatal("a PUT with a bad ttl wrote its key")
	}
}

func TestHTTPIfMatchSwapsOnlyAtTheCurrentRevision(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-cas")
	const path = "/v1/tenants/http-cas/kv//routes/1"

	first := h.do(t, http.MethodPut, path, []byte("v1")).wantStatus(t, http.StatusCreated).kv(t)
	second := h.do(t, http.MethodPut, path, []byte("v2"), "If-Match", strconv.Quote(strconv.FormatInt(first.ModRevision, 10))).wantStatus(t, http.StatusOK).kv(t)
	if second.ModRevision <= first.ModRevision || second.Version != 2 {
		t.Fatalf("If-Match with the current revision replied %+v", second)
	}
	cur := strconv.FormatInt(second.ModRevision, 10)

	tests := []struct {
		name     string
		path     string
		ifMatch  string
		code     int
		grpcCode string
		parts    []string
	}{
		{name: "stale quoted", path: path, ifMatch: strconv.Quote(strconv.FormatInt(first.ModRevision, 10)), code: http.StatusConflict, grpcCode: "FailedPrecondition",
			parts: []string{"mod_revision is " + cur, fmt.Sprintf("expected %d", first.ModRevision)}},
		{name: "stale bare", path: path, ifMatch: "1", code: http.StatusConflict, grpcCode: "FailedPrecondition", parts: []string{"mod_revision is " + cur}},
		{name: "absent key", path: "/v1/tenants/http-cas/kv//routes/2", ifMatch: cur, code: http.StatusConflict, grpcCode: "FailedPrecondition", parts: []string{"does not exist"}},
		{name: "star", path: path, ifMatch: "*", code: http.StatusBadRequest, grpcCode: "InvalidArgument", parts: []string{"If-Match: * is not supported"}},
		{name: "not a number", path: path, ifMatch: `W/"x"`, code: http.StatusBadRequest, grpcCode: "InvalidArgument", parts: []string{"not a mod revision"}},
		{name: "two revisions", path: path, ifMatch: `"1", "2"`, code: http.StatusBadRequest, grpcCode: "InvalidArgument", parts: []string{"not a mod revision"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.do(t, http.MethodPut, tt.path, []byte("lost"), "If-Match", tt.ifMatch).wantError(t, tt.code, tt.grpcCode, tt.parts...)
			h.do(t, http.MethodDelete, tt.path, nil, "If-Match", tt.ifMatch).wantError(t, tt.code, tt.grpcCode, tt.parts...)
		})
	}
	if v, _ := rawValue(t, c, tn, "/routes/1"); v != "v2" {
		t.Fatalf("after refused writes the key holds %q, want v2", v)
	}
	if _, ok := rawValue(t, c, tn, "/routes/2"); ok {
		t.Fatal("a refused If-Match PUT created /routes/2")
	}
	h.do(t, http.MethodDelete, path, nil, "If-Match", strconv.Quote(cur)).wantStatus(t, http.StatusOK)
	if _, ok := rawValue(t, c, tn, "/routes/1"); ok {
		t.Fatal("DELETE with the current If-Match left the key")
	}
}

func TestHTTPIfNoneMatchStarCreatesOnly(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-create")
	const path = "/v1/tenants/http-create/kv/upstreams/web"

	created := h.do(t, http.MethodPut, path, []byte("first"), "If-None-Match", "*").wantStatus(t, http.StatusCreated).kv(t)
	h.do(t, http.MethodPut, path, []byte("second"), "If-None-Match", "*").
		wantError(t, http.StatusConflict, "FailedPrecondition", fmt.Sprintf("mod_revision is %d, expected 0", created.ModRevision))
	if v, _ := rawValue(t, c, tn, "upstreams/web"); v != "first" {
		t.Fatalf("key holds %q after a refused create, want first", v)
	}
	for _, hdr := range [][]string{
		{"If-None-Match", `"3"`},
		{"If-None-Match", "*", "If-Match", "3"},
	} {
		h.do(t, http.MethodPut, path, []byte("x"), hdr...).wantError(t, http.StatusBadRequest, "InvalidArgument")
	}
	h.do(t, http.MethodDelete, path, nil, "If-None-Match", "*").wantError(t, http.StatusBadRequest, "InvalidArgument", "use If-Match")
}

// TestHTTPConcurrentCASUpdatesOneWinsOneConflicts runs the read, modify,
// PUT-with-If-Match cycle of two writers on the same key at once, many
// times: each round exactly one wins and the other gets 409 with the
// winner's revision, and no update is lost.
func TestHTTPConcurrentCASUpdatesOneWinsOneConflicts(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-race")
	const path = "/v1/tenants/http-race/kv/counter"
	h.do(t, http.MethodPut, path, []byte("0")).wantStatus(t, http.StatusCreated)

	const rounds = 10
	for round := range rounds {
		read := h.do(t, http.MethodGet, path, nil).wantStatus(t, http.StatusOK)
		n, err := strconv.Atoi(*read.kv(t).Value)
		if err != nil || n != round {
			t.Fatalf("round %d read %s", round, read.body)
		}
		etag := read.header.Get("ETag")
		var wg sync.WaitGroup
		replies := make([]reply, 2)
		errs := make([]error, 2)
		ctx := testCtx(t)
		for w := range replies {
			wg.Go(func() {
				replies[w], errs[w] = h.send(ctx, http.MethodPut, path, []byte(strconv.Itoa(n+1)), "If-Match", etag)
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		slices.SortFunc(replies, func(a, b reply) int { return a.status - b.status })
		winner := replies[0].wantStatus(t, http.StatusOK).kv(t)
		replies[1].wantError(t, http.StatusConflict, "FailedPrecondition", fmt.Sprintf("mod_revision is %d", winner.ModRevision))
	}
	if v, _ := rawValue(t, c, tn, "counter"); v != strconv.Itoa(rounds) {
		t.Fatalf("counter is %q after %d rounds of one winning update each", v, rounds)
	}
}

func TestHTTPListPagesVisitEveryKeyOnce(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-list")
	const n = 250
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("/routes/%03d", i))
	}
	// Neighbours outside the prefix that a sloppy range would include.
	outside := []string{"/routes", "/routes0", "/route/1", "/s"}
	ops := make([]clientv3.Op, 0, n)
	for _, k := range append(slices.Clone(want), outside...) {
		ops = append(ops, clientv3.OpPut(keys.KV(tn.Name)+k, "v"+k))
	}
	for chunk := range slices.Chunk(ops, 100) {
		if _, err := c.raw[tn.Shard].Txn(testCtx(t)).Then(chunk...).Commit(); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name     string
		query    string
		pages    int
		keysOnly bool
	}{
		{name: "default limit", query: "prefix=true", pages: 3},
		{name: "limit 7", query: "prefix=true&limit=7", pages: 36},
		{name: "limit 250", query: "prefix&limit=250", pages: 1},
		{name: "keys only", query: "prefix=true&limit=64&keys_only=true", pages: 4, keysOnly: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			start := ""
			var rev int64
			for page := 1; ; page++ {
				if page > tt.pages {
					t.Fatalf("more than %d pages", tt.pages)
				}
				q := tt.query
				if start != "" {
					q += "&start=" + url.QueryEscape(start)
				}
				r := h.do(t, http.MethodGet, "/v1/tenants/http-list/kv//routes/?"+q, nil).wantStatus(t, http.StatusOK)
				var l apijson.List
				if err := json.Unmarshal(r.body, &l); err != nil {
					t.Fatal(err)
				}
				if page == 1 {
					rev = l.Revision
					if l.Count != n {
						t.Fatalf("first page count %d, want %d", l.Count, n)
					}
				}
				for _, kv := range l.Kvs {
					got = append(got, kv.Key)
					switch {
					case tt.keysOnly && (kv.Value != nil || kv.ValueBase64 != nil):
						t.Fatalf("keys_only page carries a value: %+v", kv)
					case !tt.keysOnly && (kv.Value == nil || *kv.Value != "v"+kv.Key):
						t.Fatalf("key %s has value %v", kv.Key, kv.Value)
					}
				}
				if !l.More {
					if l.Next != "" || page != tt.pages {
						t.Fatalf("last page %d of %d has next %q", page, tt.pages, l.Next)
					}
					break
				}
				if l.Next == "" || l.Next <= got[len(got)-1] {
					t.Fatalf("page %d next %q after %q", page, l.Next, got[len(got)-1])
				}
				start = l.Next
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("keys visited (-want +got):\n%s", diff)
			}
			if rev == 0 {
				t.Fatal("list replied revision 0")
			}
		})
	}

	h.do(t, http.MethodGet, "/v1/tenants/http-list/kv//routes/?prefix=true&start=/other", nil).wantError(t, http.StatusBadRequest, "InvalidArgument", "does not begin with the prefix")
	h.do(t, http.MethodGet, "/v1/tenants/http-list/kv//routes/?limit=3", nil).wantError(t, http.StatusBadRequest, "InvalidArgument", "add prefix=true")
	h.do(t, http.MethodGet, "/v1/tenants/http-list/kv//routes/?prefix=true&limit=0", nil).wantError(t, http.StatusBadRequest, "InvalidArgument", "limit")

	all := h.do(t, http.MethodGet, "/v1/tenants/http-list/kv/?prefix=true&limit=1000&keys_only=true", nil).wantStatus(t, http.StatusOK)
	var l apijson.List
	if err := json.Unmarshal(all.body, &l); err != nil {
		t.Fatal(err)
	}
	if l.Count != n+int64(len(outside)) || len(l.Kvs) != int(l.Count) || l.More {
		t.Fatalf("listing the whole space: count %d, %d kvs, more %v", l.Count, len(l.Kvs), l.More)
	}
	empty := h.do(t, http.MethodGet, "/v1/tenants/http-list/kv/nothing/?prefix=true", nil).wantStatus(t, http.StatusOK).json(t)
	if kvs, ok := empty["kvs"].([]any); !ok || len(kvs) != 0 || empty["count"] != 0.0 || empty["more"] != false {
		t.Fatalf("empty listing %v, want kvs [] and count 0", empty)
	}
}

func TestHTTPErrorsAreJSONWithTheirStatus(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{MaxValueBytes: 1024}))
	tn := h.freshTenant(t, c, "http-errors")
	big := bytes.Repeat([]byte("x"), 1025)

	tests := []struct {
		name     string
		method   string
		path     string
		body     []byte
		header   []string
		code     int
		grpcCode string
		parts    []string
	}{
		{name: "unknown tenant", method: http.MethodGet, path: "/v1/tenants/nope/kv/x", code: 404, grpcCode: "NotFound", parts: []string{`tenant not found: "nope"`}},
		{name: "unknown tenant put", method: http.MethodPut, path: "/v1/tenants/nope/kv/x", body: []byte("v"), code: 404, grpcCode: "NotFound", parts: []string{`"nope"`}},
		{name: "invalid tenant", method: http.MethodGet, path: "/v1/tenants/Not_Valid/kv/x", code: 400, grpcCode: "InvalidArgument", parts: []string{`"Not_Valid"`, "must match"}},
		{name: "absent key", method: http.MethodGet, path: "/v1/tenants/http-errors/kv/absent", code: 404, grpcCode: "NotFound", parts: []string{`key "absent" not found`}},
		{name: "empty key", method: http.MethodPut, path: "/v1/tenants/http-errors/kv/", body: []byte("v"), code: 400, grpcCode: "InvalidArgument", parts: []string{"key"}},
		{name: "value over limit", method: http.MethodPut, path: "/v1/tenants/http-errors/kv/big", body: big, code: 413, grpcCode: "InvalidArgument", parts: []string{"value too large", "1024"}},
		{name: "key not UTF-8", method: http.MethodPut, path: "/v1/tenants/http-errors/kv/%FF", body: []byte("v"), code: 400, grpcCode: "InvalidArgument", parts: []string{"UTF-8"}},
		{name: "unknown parameter", method: http.MethodGet, path: "/v1/tenants/http-errors/kv/x?prefx=true", code: 400, grpcCode: "InvalidArgument", parts: []string{`"prefx"`}},
		{name: "bad boolean", method: http.MethodGet, path: "/v1/tenants/http-errors/kv/x?prefix=maybe", code: 400, grpcCode: "InvalidArgument", parts: []string{"prefix"}},
		{name: "if-match on a prefix", method: http.MethodDelete, path: "/v1/tenants/http-errors/kv/x?prefix=true", header: []string{"If-Match", "3"}, code: 400, grpcCode: "InvalidArgument", parts: []string{"single key"}},
		{name: "no route", method: http.MethodGet, path: "/v2/nothing", code: 404, grpcCode: "NotFound", parts: []string{"no route for GET /v2/nothing"}},
		{name: "method not allowed", method: http.MethodPost, path: "/v1/tenants/http-errors/kv/x", body: []byte("v"), code: 405, grpcCode: "Unimplemented", parts: []string{"POST"}},
		{name: "form post is no get", method: http.MethodPost, path: "/v1/tenants/http-errors/kv/x", body: []byte("v"), header: []string{"Content-Type", "application/x-www-form-urlencoded"}, code: 405, grpcCode: "Unimplemented", parts: []string{"POST"}},
		{name: "bad json on a generated route", method: http.MethodPost, path: "/v1/tenants", body: []byte(`{"name":`), code: 400, grpcCode: "InvalidArgument"},
		{name: "unknown json field", method: http.MethodPost, path: "/v1/tenants", body: []byte(`{"nmae":"x"}`), code: 400, grpcCode: "InvalidArgument", parts: []string{"nmae"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.do(t, tt.method, tt.path, tt.body, tt.header...).wantError(t, tt.code, tt.grpcCode, tt.parts...)
		})
	}
	if got := c.rawTenantKeys(t, tn.Shard, tn.Name); len(got) != 0 {
		t.Fatalf("refused requests wrote %v", got)
	}
}

func TestHTTPGeneratedRoutes(t *testing.T) {
	c := sharedClusters(t)
	h := newHTTPAPI(t, newAPI(t, c, Config{}))
	tn := h.freshTenant(t, c, "http-gen")

	list := h.do(t, http.MethodGet, "/v1/tenants?page_size=1000", nil).wantStatus(t, http.StatusOK)
	var tenants struct {
		Tenants []struct {
			Name  string `json:"name"`
			Shard string `json:"shard"`
			State string `json:"state"`
		} `json:"tenants"`
	}
	if err := json.Unmarshal(list.body, &tenants); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(tenants.Tenants, func(x struct {
		Name  string `json:"name"`
		Shard string `json:"shard"`
		State string `json:"state"`
	}) bool {
		return x.Name == "http-gen" && x.Shard == tn.Shard && x.State == "ACTIVE"
	}) {
		t.Fatalf("GET /v1/tenants lacks http-gen on %s: %s", tn.Shard, list.body)
	}

	got := h.do(t, http.MethodGet, "/v1/tenants/http-gen", nil).wantStatus(t, http.StatusOK).json(t)
	if got["name"] != "http-gen" || got["shard"] != tn.Shard {
		t.Fatalf("GET /v1/tenants/http-gen replied %v", got)
	}
	h.do(t, http.MethodGet, "/v1/tenants/http-none", nil).wantError(t, http.StatusNotFound, "NotFound", "http-none")
	h.do(t, http.MethodPost, "/v1/tenants", []byte(`{"name":"http-gen"}`)).wantError(t, http.StatusConflict, "AlreadyExists", "http-gen")

	txn := fmt.Sprintf(`{"compare":[{"key":"t","target":"VERSION","result":"EQUAL","version":"0"}],
		"success":[{"put":{"key":"t","value":%q}}]}`, base64.StdEncoding.EncodeToString([]byte("from txn")))
	res := h.do(t, http.MethodPost, "/v1/tenants/http-gen/txn", []byte(txn)).wantStatus(t, http.StatusOK).json(t)
	if res["succeeded"] != true {
		t.Fatalf("txn replied %v", res)
	}
	if _, ok := res["header"].(map[string]any)["revision"]; !ok {
		t.Fatalf("txn reply lacks header.revision (snake_case proto names): %v", res)
	}
	if v, _ := rawValue(t, c, tn, "t"); v != "from txn" {
		t.Fatalf("txn wrote %q", v)
	}
	res = h.do(t, http.MethodPost, "/v1/tenants/http-gen/txn", []byte(txn)).wantStatus(t, http.StatusOK).json(t)
	if _, ok := res["succeeded"]; ok {
		t.Fatalf("second txn succeeded: %v", res)
	}
	h.do(t, http.MethodPost, "/v1/tenants/http-gen/txn", []byte(`{"success":[{"put":{"tenant":"acme","key":"t"}}]}`)).
		wantError(t, http.StatusBadRequest, "InvalidArgument", "cross-tenant")
}

// unimplementedReleases answers every Releases RPC with Unimplemented.
type unimplementedReleases struct {
	pb.UnimplementedReleasesServer
}

func TestHTTPUnimplementedIs501WithTheMessage(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterReleasesServer(srv, unimplementedReleases{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a.conn = conn
	h := newHTTPAPI(t, a)

	for _, r := range []struct{ method, path, rpc string }{
		{http.MethodGet, "/v1/tenants/acme/items/web/release", "GetRelease"},
		{http.MethodPost, "/v1/tenants/acme/items/web/versions", "Publish"},
		{http.MethodPost, "/v1/tenants/acme/items/web/release/grays/g1:promote", "PromoteGray"},
		{http.MethodPost, "/v1/tenants/acme/items/web/release/plan:abort", "AbortPlan"},
		{http.MethodGet, "/v1/tenants/acme/items/web/release/log", "Log"},
	} {
		h.do(t, r.method, r.path, []byte(`{}`)).wantError(t, http.StatusNotImplemented, "Unimplemented", "method "+r.rpc+" not implemented")
	}
}

func TestHTTPForwardsTheAPIKeyAsMetadata(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "http-key")
	var mu sync.Mutex
	seen := map[string][]string{}
	record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen[methodName(info.FullMethod)] = md.Get("x-api-key")
		mu.Unlock()
		return handler(ctx, req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(record))
	a.proxy.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	h, release, err := a.proxy.HTTPGateway(fmt.Sprintf("[::]:%d", lis.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	ha := &httpAPI{api: a, url: hs.URL}

	ha.do(t, http.MethodPut, "/v1/tenants/http-key/kv/k", []byte("v"), "X-API-Key", "ck_put.secret").wantStatus(t, http.StatusCreated)
	ha.do(t, http.MethodGet, "/v1/tenants/http-key/kv/k", nil, "x-api-key", "ck_get.secret").wantStatus(t, http.StatusOK)
	ha.do(t, http.MethodGet, "/v1/tenants/http-key", nil, "X-Api-Key", "ck_gen.secret").wantStatus(t, http.StatusOK)
	ha.do(t, http.MethodDelete, "/v1/tenants/http-key/kv/k", nil).wantStatus(t, http.StatusOK)
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]string{
		"KV.Put":            {"ck_put.secret"},
		"KV.Range":          {"ck_get.secret"},
		"Tenants.GetTenant": {"ck_gen.secret"},
		"KV.DeleteRange":    nil,
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Fatalf("x-api-key metadata per RPC (-want +got):\n%s", diff)
	}
}

func TestHTTPStatusFromCodeMakesConflictsConflicts(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{name: "cas conflict", err: conflict("k", 5, 3), want: http.StatusConflict},
		{name: "invalid", err: ErrInvalidRequest, want: http.StatusBadRequest},
		{name: "not yet", err: ErrNotAvailableYet, want: http.StatusNotImplemented},
		{name: "unavailable", err: ErrShardUnavailable, want: http.StatusServiceUnavailable},
		{name: "rate", err: ErrShardBusy, want: http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			httpErrorHandler(context.Background(), nil, nil, w, httptest.NewRequest(http.MethodGet, "/", nil), tt.err)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			var e apijson.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != tt.want || e.Error != tt.err.Error() {
				t.Fatalf("body %s (%v), want code %d and error %q", w.Body, err, tt.want, tt.err)
			}
		})
	}
}

func TestPrefixEndBoundsEveryKeyWithThePrefix(t *testing.T) {
	tests := []struct {
		name, prefix, want string
		inside, outside    []string
	}{
		{name: "ascii", prefix: "/routes/", want: "/routes0", inside: []string{"/routes/", "/routes/\U0010FFFF"}, outside: []string{"/routes0", "/routes"}},
		{name: "empty", prefix: "", want: "\x00"},
		{name: "two-byte rune", prefix: "a\u00bf", want: "a\u00c0", inside: []string{"a\u00bfz"}, outside: []string{"a\u00c0"}},
		{name: "before surrogates", prefix: "a\ud7ff", want: "a\ue000", inside: []string{"a\ud7ff\U0010FFFF"}, outside: []string{"a\ue000"}},
		{name: "max rune dropped", prefix: "ab\U0010FFFF", want: "ac", inside: []string{"ab\U0010FFFFx"}, outside: []string{"ac"}},
		{name: "only max runes", prefix: "\U0010FFFF\U0010FFFF", want: "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := prefixEnd(tt.prefix)
			if got != tt.want || !utf8.ValidString(got) {
				t.Fatalf("prefixEnd(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
			for _, k := range tt.inside {
				if !(k >= tt.prefix && k < got) {
					t.Errorf("%q not in [%q, %q)", k, tt.prefix, got)
				}
			}
			for _, k := range tt.outside {
				if k >= tt.prefix && k < got {
					t.Errorf("%q in [%q, %q)", k, tt.prefix, got)
				}
			}
		})
	}
}

func TestHTTPGatewayWithDialsATLSListener(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "http-tls")
	certs := tlstest.New(t)
	serverTLS, err := tlsconfig.Server(tlsconfig.Files{Cert: certs.Server.Cert, Key: certs.Server.Key})
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := tlsconfig.Client(tlsconfig.Files{CA: certs.CA})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	a.proxy.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	tests := []struct {
		name    string
		gateway func(string) (http.Handler, func(), error)
		code    int
	}{
		{name: "tls credentials", gateway: a.proxy.HTTPGatewayWith(grpc.WithTransportCredentials(credentials.NewTLS(clientTLS))), code: http.StatusOK},
		{name: "plaintext", gateway: a.proxy.HTTPGateway, code: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, release, err := tt.gateway(lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(release)
			hs := httptest.NewServer(h)
			t.Cleanup(hs.Close)
			(&httpAPI{api: a, url: hs.URL}).do(t, http.MethodGet, "/v1/tenants/http-tls", nil).wantStatus(t, tt.code)
		})
	}
}
