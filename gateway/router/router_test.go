package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
)

func TestMain(m *testing.M) { gatewaytest.VerifyNoLeaks(m) }

// staticSource is a Source whose view the test sets.
type staticSource struct {
	mu       sync.Mutex
	view     *gateway.View
	handlers []func(gateway.Change)
	rev      int64
}

func newSource(kvs map[string]string) *staticSource {
	s := &staticSource{view: gateway.NewView("")}
	if kvs != nil {
		s.set(kvs)
	}
	return s
}

func (s *staticSource) View() *gateway.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

func (s *staticSource) OnChange(fn func(gateway.Change)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers = append(s.handlers, fn)
}

// set replaces the view with kvs (key -> value; svc/<service>/<instance>
// names a service instance, any other key a plain key) and tells the
// handlers.
func (s *staticSource) set(kvs map[string]string) {
	s.mu.Lock()
	var list []*confettipb.KeyValue
	for k, v := range kvs {
		s.rev++
		kv := &confettipb.KeyValue{Key: k, Value: []byte(v), ModRevision: s.rev}
		if inst, ok := strings.CutPrefix(k, "svc/"); ok {
			kv.Key, kv.Kind = inst, confettipb.KeyValue_SERVICE
		}
		list = append(list, kv)
	}
	s.view = gateway.NewView(fmt.Sprintf("t%d", s.rev), list...)
	handlers := s.handlers
	s.mu.Unlock()
	for _, h := range handlers {
		h(gateway.Change{})
	}
}

func newRouter(t testing.TB, src Source, cfg Config) *Router {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	r, err := New(src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// backend is an HTTP server that answers with its name.
func backend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func get(t testing.TB, h http.Handler, method, host, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, "http://"+host+path, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestSmoothWeightedRoundRobin(t *testing.T) {
	healths := map[string]*health{}
	healthOf := func(a string) *health {
		if healths[a] == nil {
			healths[a] = &health{}
		}
		return healths[a]
	}
	b := newBalancer(map[string]int{"a:1": 5, "b:1": 1, "c:1": 1, "zero:1": 0}, healthOf, nil)
	now := time.Now()
	var seq []string
	for i := 0; i < 7; i++ {
		seq = append(seq, b.pick(nil, now).addr[:1])
	}
	// nginx's smooth sequence for weights 5, 1, 1.
	if got := strings.Join(seq, ""); got != "aabacaa" {
		t.Fatalf("sequence %s, want aabacaa", got)
	}
	counts := map[string]int{}
	for i := 0; i < 700; i++ {
		counts[b.pick(nil, now).addr]++
	}
	if d := cmp.Diff(map[string]int{"a:1": 500, "b:1": 100, "c:1": 100}, counts); d != "" {
		t.Fatalf("700 picks (-want +got):\n%s", d)
	}
	// A down node gets nothing while another is up; a tried one neither.
	healths["a:1"].failed(now, 1, time.Minute)
	for i := 0; i < 10; i++ {
		if n := b.pick([]string{"b:1"}, now); n.addr != "c:1" {
			t.Fatalf("pick with a down and b tried: %s", n.addr)
		}
	}
	if n := b.pick([]string{"b:1", "c:1"}, now); n.addr != "a:1" {
		t.Fatalf("with every other node tried, the down node must still be tried: %v", n)
	}
	if n := b.pick([]string{"a:1", "b:1", "c:1"}, now); n != nil {
		t.Fatalf("every node tried, picked %s", n.addr)
	}
	if n := b.pick(nil, now.Add(2*time.Minute)); n == nil || !healths["a:1"].up(now.Add(2*time.Minute)) {
		t.Fatal("a node is up again after the fail timeout")
	}
}

func TestRouteMatching(t *testing.T) {
	up := `{"nodes":{"127.0.0.1:1":1}}`
	src := newSource(map[string]string{
		"/upstreams/u":   up,
		"/routes/exact":  `{"uri":"/api/users","upstream_id":"u"}`,
		"/routes/prefix": `{"uri":"/api/*","upstream_id":"u"}`,
		"/routes/short":  `{"uri":"/*","upstream_id":"u"}`,
		"/routes/post":   `{"uri":"/api/*","methods":["post"],"upstream_id":"u"}`,
		"/routes/host":   `{"uri":"/api/*","host":"*.example.com","upstream_id":"u"}`,
		"/routes/prio":   `{"uris":["/old/*","/legacy"],"priority":10,"upstream_id":"u"}`,
		"/routes/number": `{"uri":"/n","upstream_id":7}`,
		"/upstreams/7":   up,
	})
	r := newRouter(t, src, Config{})
	tab := r.table.Load()
	for _, tc := range []struct {
		name, method, host, path, want string
	}{
		{name: "exact beats prefix", method: "GET", host: "x", path: "/api/users", want: "exact"},
		{name: "longer prefix beats shorter", method: "GET", host: "x", path: "/api/orders", want: "prefix"},
		{name: "shortest prefix catches the rest", method: "GET", host: "x", path: "/other", want: "short"},
		{name: "method", method: "POST", host: "x", path: "/api/orders", want: "post"},
		{name: "host wildcard", method: "GET", host: "shop.example.com:8080", path: "/api/orders", want: "host"},
		{name: "host wildcard needs a subdomain", method: "GET", host: "example.com", path: "/api/orders", want: "prefix"},
		{name: "priority", method: "GET", host: "x", path: "/old/x", want: "prio"},
		{name: "second uri of a route", method: "GET", host: "x", path: "/legacy", want: "prio"},
		{name: "exact uri is not a prefix", method: "GET", host: "x", path: "/legacy/x", want: "short"},
		{name: "numeric upstream id", method: "GET", host: "x", path: "/n", want: "number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://"+tc.host+tc.path, nil)
			got := tab.match(req)
			if got == nil || got.id != tc.want {
				t.Fatalf("%s %s%s matched %v, want %s", tc.method, tc.host, tc.path, got, tc.want)
			}
			if got.upstream == nil {
				t.Fatalf("route %s has no upstream", got.id)
			}
		})
	}
	src.set(map[string]string{"/upstreams/u": up, "/routes/exact": `{"uri":"/api/users","upstream_id":"u"}`})
	if code, body := get(t, r, "GET", "x", "/nothing"); code != http.StatusNotFound || !strings.Contains(body, "no route matches GET /nothing") {
		t.Fatalf("unrouted request: %d %s", code, body)
	}
}

func TestUpstreamTakesItsNodesFromServiceInstances(t *testing.T) {
	src := newSource(map[string]string{
		"/upstreams/web": `{"type":"roundrobin","service":"hello","nodes":[{"host":"10.0.0.9","port":80,"weight":2}]}`,
		"/routes/r":      `{"uri":"/*","upstream_id":"web"}`,
		"svc/hello/b-1":  `{"address":"10.0.0.1:8080"}`,
		"svc/hello/b-2":  `{"address":"10.0.0.2:8080","weight":3,"labels":{"zone":"a"}}`,
		"svc/hello/bad":  `not json`,
		"svc/other/o-1":  `{"address":"10.0.0.3:8080"}`,
	})
	r := newRouter(t, src, Config{})
	st := r.Status()
	want := []NodeStatus{{Address: "10.0.0.1:8080", Weight: 1, Up: true}, {Address: "10.0.0.2:8080", Weight: 3, Up: true}, {Address: "10.0.0.9:80", Weight: 2, Up: true}}
	if len(st.Routes) != 1 || st.Routes[0].Service != "hello" {
		t.Fatalf("status routes %+v", st.Routes)
	}
	if d := cmp.Diff(want, st.Routes[0].Nodes); d != "" {
		t.Fatalf("nodes (-want +got):\n%s", d)
	}
	if len(st.Skipped) != 1 || st.Skipped[0].Key != "hello/bad" {
		t.Fatalf("skipped %+v, want the bad instance", st.Skipped)
	}

	// The last instance leaves: the service upstream has no nodes.
	src.set(map[string]string{
		"/upstreams/web": `{"service":"hello"}`,
		"/routes/r":      `{"uri":"/*","upstream_id":"web"}`,
	})
	if code, body := get(t, r, "GET", "x", "/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "service hello has no registered instances") {
		t.Fatalf("upstream without instances: %d %s", code, body)
	}
}

func TestBadJSONIsSkippedReportedAndRefusedNeverFatal(t *testing.T) {
	b := backend(t, "ok")
	src := newSource(map[string]string{
		"/upstreams/u":    fmt.Sprintf(`{"nodes":{%q:1}}`, addr(b)),
		"/routes/good":    `{"uri":"/good","upstream_id":"u"}`,
		"/routes/broken":  `{"uri":`,
		"/routes/nouri":   `{"upstream_id":"u"}`,
		"/routes/star":    `{"uri":"/a*b","upstream_id":"u"}`,
		"/routes/method":  `{"uri":"/m","methods":["FETCH"],"upstream_id":"u"}`,
		"/routes/missing": `{"uri":"/missing","upstream_id":"nope"}`,
		"/upstreams/type": `{"type":"chash","nodes":{"h:1":1}}`,
		"/upstreams/node": `{"nodes":{"nohost":1}}`,
	})
	r := newRouter(t, src, Config{})
	if code, body := get(t, r, "GET", "x", "/good"); code != http.StatusOK || body != "ok" {
		t.Fatalf("the good route beside bad ones: %d %s", code, body)
	}
	if code, body := get(t, r, "GET", "x", "/missing"); code != http.StatusBadGateway || !strings.Contains(body, `upstream \"nope\", which does not exist`) {
		t.Fatalf("route to a missing upstream: %d %s", code, body)
	}
	var skipped []string
	for _, e := range r.Status().Skipped {
		skipped = append(skipped, e.Key)
	}
	want := []string{"/routes/broken", "/routes/method", "/routes/nouri", "/routes/star", "/upstreams/node", "/upstreams/type"}
	if d := cmp.Diff(want, sortStrings(skipped)); d != "" {
		t.Fatalf("skipped keys (-want +got):\n%s", d)
	}
	// As the SDK's validator, the router refuses the same values, so a
	// bad change keeps the previous value serving.
	view := src.View()
	for _, key := range want {
		kv, _ := view.Get(key)
		if err := Validate(key, kv); !errors.Is(err, ErrBadConfig) {
			t.Fatalf("Validate(%s) = %v", key, err)
		}
	}
	for _, key := range []string{"/routes/good", "/upstreams/u", "/routes/missing", "/unrelated"} {
		if err := Validate(key, &confettipb.KeyValue{Key: key, Value: valueOf(view, key)}); err != nil {
			t.Fatalf("Validate(%s) = %v", key, err)
		}
	}
}

func valueOf(v *gateway.View, key string) []byte {
	if kv, ok := v.Get(key); ok {
		return kv.Value
	}
	return []byte("anything")
}

func sortStrings(s []string) []string {
	slices.Sort(s)
	return s
}

// TestRouteChangeKeepsInFlightRequestsOnTheOldTable holds a request in
// its backend while the route moves to another upstream: it completes on
// the old one, and the next request goes to the new one.
func TestRouteChangeKeepsInFlightRequestsOnTheOldTable(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, "old")
	}))
	t.Cleanup(slow.Close)
	fresh := backend(t, "new")
	src := newSource(map[string]string{
		"/upstreams/old": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(slow)),
		"/upstreams/new": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(fresh)),
		"/routes/r":      `{"uri":"/*","upstream_id":"old"}`,
	})
	r := newRouter(t, src, Config{})
	type result struct {
		code int
		body string
	}
	done := make(chan result)
	go func() {
		code, body := get(t, r, "GET", "x", "/")
		done <- result{code, body}
	}()
	<-entered
	src.set(map[string]string{
		"/upstreams/old": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(slow)),
		"/upstreams/new": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(fresh)),
		"/routes/r":      `{"uri":"/*","upstream_id":"new"}`,
	})
	if code, body := get(t, r, "GET", "x", "/"); code != http.StatusOK || body != "new" {
		t.Fatalf("after the change: %d %s", code, body)
	}
	close(release)
	if res := <-done; res.code != http.StatusOK || res.body != "old" {
		t.Fatalf("the request in flight during the change: %d %s", res.code, res.body)
	}
}

func TestConnectErrorsAreRetriedOnAnotherNodeAndMarkTheNodeDown(t *testing.T) {
	good := backend(t, "good")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := addr(dead)
	dead.Close()
	src := newSource(map[string]string{
		"/upstreams/u": fmt.Sprintf(`{"nodes":{%q:1,%q:1}}`, deadAddr, addr(good)),
		"/routes/r":    `{"uri":"/*","upstream_id":"u"}`,
	})
	r := newRouter(t, src, Config{FailTimeout: time.Hour})
	for i := 0; i < 10; i++ {
		req := httptest.NewRequest("POST", "http://x/", strings.NewReader("payload"))
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Body.String() != "good" {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	for _, n := range r.Status().Routes[0].Nodes {
		if n.Up != (n.Address != deadAddr) {
			t.Fatalf("node %s up=%v after refusing connections", n.Address, n.Up)
		}
	}

	// With no node left, the answer says what was tried.
	src.set(map[string]string{
		"/upstreams/u": fmt.Sprintf(`{"nodes":{%q:1}}`, deadAddr),
		"/routes/r":    `{"uri":"/*","upstream_id":"u"}`,
	})
	if code, body := get(t, r, "GET", "x", "/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "could not connect to any node of upstream u (tried "+deadAddr) {
		t.Fatalf("every node dead: %d %s", code, body)
	}
}

func TestSlowUpstreamTimesOut(t *testing.T) {
	stop := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(stop) })
	src := newSource(map[string]string{
		"/upstreams/u": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(slow)),
		"/routes/r":    `{"uri":"/*","upstream_id":"u"}`,
	})
	r := newRouter(t, src, Config{Timeout: 50 * time.Millisecond})
	if code, body := get(t, r, "GET", "x", "/"); code != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer within 50ms") {
		t.Fatalf("slow upstream: %d %s", code, body)
	}
}

func TestNotReadyBeforeTheFirstSyncAndStatus(t *testing.T) {
	src := newSource(nil)
	r := newRouter(t, src, Config{})
	if code, body := get(t, r, "GET", "x", "/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no configuration yet") {
		t.Fatalf("before the first sync: %d %s", code, body)
	}
	src.set(map[string]string{"/upstreams/u": `{"nodes":{"h:1":1}}`, "/routes/r": `{"uri":"/*","upstream_id":"u"}`})
	code, body := get(t, r, "GET", "x", StatusPath)
	var st Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || st.Token != src.View().Token() || len(st.Routes) != 1 || st.Routes[0].Nodes[0].Address != "h:1" {
		t.Fatalf("status: %d %s (%v)", code, body, err)
	}
}
