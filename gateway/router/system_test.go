package router_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/internal/gatewaytest"
	"github.com/confetti-io/confetti/gateway/router"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// demo is the reference gateway on a real system: a cache node, a shard
// proxy, the SDK client and the router behind an HTTP listener.
type demo struct {
	sys    *gatewaytest.System
	proxy  *gatewaytest.Proxy
	client *gateway.Client
	router *router.Router
	url    string
}

func startDemo(t testing.TB) *demo {
	t.Helper()
	sys := gatewaytest.Start(t, "demo")
	d := &demo{sys: sys, proxy: sys.StartProxy(t)}
	n := sys.StartCache(t, "cache-1", cache.Config{})
	c, err := gateway.New(gateway.Config{
		Endpoints: []string{n.Addr},
		Tenant:    "demo",
		APIKey:    sys.ReaderKey,
		Prefixes:  router.Prefixes,
		Services:  router.Services,
		Validate:  router.Validate,
		Identity:  gateway.Identity{InstanceID: "gw-test"},
		Logger:    zaptest.NewLogger(t).Named("sdk"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d.client = c
	if d.router, err = router.New(c, router.Config{Logger: zaptest.NewLogger(t).Named("router")}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.router)
	t.Cleanup(srv.Close)
	d.url = srv.URL
	return d
}

// put writes a key through the proxy as `confetti kv put` does.
func (d *demo) put(t testing.TB, key, value string) {
	t.Helper()
	if _, err := d.proxy.KV.Put(context.Background(), &confettipb.PutRequest{Tenant: "demo", Key: key, Value: []byte(value)}); err != nil {
		t.Fatal(err)
	}
}

// instance is a backend HTTP server registered as an instance of a
// service with a TTL lease that a keepalive stream renews until kill.
type instance struct {
	name   string
	srv    *httptest.Server
	served atomic.Int64
	ttl    int64
	stop   context.CancelFunc
	done   chan struct{}
}

func (d *demo) startInstance(t testing.TB, service, name string, ttl int64) *instance {
	t.Helper()
	in := &instance{name: name, done: make(chan struct{})}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.served.Add(1)
		fmt.Fprintf(w, "hello from %s\n", name)
	}))
	t.Cleanup(in.srv.Close)
	resp, err := d.proxy.Leases.Register(context.Background(), &confettipb.RegisterRequest{
		Tenant:   "demo",
		Instance: &confettipb.Instance{Service: service, Id: name, Address: strings.TrimPrefix(in.srv.URL, "http://")},
		Ttl:      ttl,
	})
	if err != nil {
		t.Fatal(err)
	}
	in.ttl = resp.Ttl
	ctx, cancel := context.WithCancel(context.Background())
	in.stop = cancel
	t.Cleanup(in.kill)
	go func() {
		defer close(in.done)
		st, err := d.proxy.Leases.KeepAlive(ctx)
		if err != nil {
			return
		}
		for ctx.Err() == nil {
			if st.Send(&confettipb.LeaseKeepAliveRequest{Tenant: "demo", Id: resp.Lease}) != nil {
				return
			}
			if _, err := st.Recv(); err != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(in.ttl) * time.Second / 4):
			}
		}
	}()
	return in
}

// kill ends the instance as a crash would: its server stops and its
// lease is no longer renewed, so it expires within the TTL.
func (in *instance) kill() {
	in.stop()
	<-in.done
	in.srv.Close()
}

func (d *demo) nodes() []router.NodeStatus {
	st := d.router.Status()
	if len(st.Routes) == 0 {
		return nil
	}
	return st.Routes[0].Nodes
}

// TestKilledBackendLeavesRoutingAndItsRequestsGoToTheOther kills one of
// two registered backends under load: every request still succeeds
// (connection errors are retried on the other node), and the instance
// leaves the route table once its lease expires.
func TestKilledBackendLeavesRoutingAndItsRequestsGoToTheOther(t *testing.T) {
	d := startDemo(t)
	b1 := d.startInstance(t, "hello", "b-1", 2)
	b2 := d.startInstance(t, "hello", "b-2", 2)
	d.put(t, "/upstreams/web", `{"type":"roundrobin","service":"hello"}`)
	d.put(t, "/routes/hello", `{"uri":"/hello","upstream_id":"web"}`)
	testcluster.WaitFor(t, "both instances in the route table", func() bool { return len(d.nodes()) == 2 })

	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		total    atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		failed   []string
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := http.Get(d.url + "/hello")
				total.Add(1)
				if err != nil {
					failures.Add(1)
					mu.Lock()
					failed = append(failed, err.Error())
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello from b-") {
					failures.Add(1)
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%d %s", resp.StatusCode, body))
					mu.Unlock()
				}
			}
		}()
	}
	testcluster.WaitFor(t, "traffic on both backends", func() bool { return b1.served.Load() > 20 && b2.served.Load() > 20 })

	killed := time.Now()
	b2.kill()
	testcluster.WaitFor(t, "b-2 to leave the route table", func() bool { return len(d.nodes()) == 1 })
	removed := time.Since(killed)
	after := b1.served.Load()
	testcluster.WaitFor(t, "traffic after the removal", func() bool { return b1.served.Load() > after+50 })
	cancel()
	wg.Wait()

	if n := d.nodes(); len(n) != 1 || n[0].Address != strings.TrimPrefix(b1.srv.URL, "http://") {
		t.Fatalf("route table nodes %+v, want b-1 only", n)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed while b-2 died: %q", failures.Load(), total.Load(), failed)
	}
	t.Logf("b-2 (ttl %ds) left the route table %s after it died; %d requests, none failed", b2.ttl, removed.Round(time.Millisecond), total.Load())
	// The lease expires at most one TTL after the last renewal; etcd
	// checks expiry every 500 ms and the delete reaches the gateway in
	// milliseconds. The bound is TTL + 1 s, plus slack for a loaded
	// machine, where etcd's own expiry can lag.
	if limit := time.Duration(b2.ttl)*time.Second + time.Second + 5*time.Second; removed > limit {
		t.Fatalf("b-2 left the route table %s after it died, over %s", removed, limit)
	}
}

// TestRouteChangeThroughTheProxyTakesEffectAtOnce changes a route with a
// KV put, as the README tour does with `confetti kv put`.
func TestRouteChangeThroughTheProxyTakesEffectAtOnce(t *testing.T) {
	d := startDemo(t)
	d.startInstance(t, "hello", "b-1", 10)
	d.startInstance(t, "other", "o-1", 10)
	d.put(t, "/upstreams/web", `{"service":"hello"}`)
	d.put(t, "/upstreams/other", `{"service":"other"}`)
	d.put(t, "/routes/hello", `{"uri":"/hello","upstream_id":"web"}`)
	body := func() string {
		resp, err := http.Get(d.url + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	testcluster.WaitFor(t, "the route to b-1", func() bool { return body() == "hello from b-1\n" })
	d.put(t, "/routes/hello", `{"uri":"/hello","upstream_id":"other"}`)
	testcluster.WaitFor(t, "the route to o-1", func() bool { return body() == "hello from o-1\n" })

	// A bad change is refused by the validator: the route keeps serving.
	d.put(t, "/routes/hello", `{"uri":`)
	testcluster.WaitFor(t, "the refusal", func() bool { return d.client.Stats().Rejected == 1 })
	if got := body(); got != "hello from o-1\n" {
		t.Fatalf("after a bad route value: %q", got)
	}
}
