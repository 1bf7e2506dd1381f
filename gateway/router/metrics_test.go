package router

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/confetti-io/confetti/gateway"
)

// The router counts requests by route and status, times each attempt on a
// node, and counts retries and failed attempts by upstream.
func TestMetricsCountRequestsUpstreamTimeAndRetries(t *testing.T) {
	good := backend(t, "good")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := addr(dead)
	dead.Close()
	src := newSource(map[string]string{
		"/upstreams/u": fmt.Sprintf(`{"nodes":{%q:1,%q:1}}`, deadAddr, addr(good)),
		"/routes/r":    `{"uri":"/api/*","upstream_id":"u"}`,
		"/routes/gone": `{"uri":"/gone","upstream_id":"missing"}`,
	})
	reg := prometheus.NewPedanticRegistry()
	r := newRouter(t, src, Config{Registerer: reg, FailTimeout: time.Hour})
	for i := 0; i < 4; i++ {
		if code, body := get(t, r, "GET", "x", "/api/a"); code != http.StatusOK || body != "good" {
			t.Fatalf("GET /api/a: %d %s", code, body)
		}
	}
	get(t, r, "GET", "x", "/nowhere")
	get(t, r, "GET", "x", "/gone")
	get(t, r, "GET", "x", StatusPath)

	for _, tc := range []struct {
		route, code string
		want        float64
	}{
		{route: "r", code: "200", want: 4},
		{route: noRoute, code: "404", want: 1},
		{route: "gone", code: "502", want: 1},
		{route: statusRoute, code: "200", want: 1},
	} {
		if got := testutil.ToFloat64(r.metrics.requests.WithLabelValues(tc.route, tc.code)); got != tc.want {
			t.Errorf("requests{route=%q,code=%q} = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}
	// The dead node is tried once, then marked down: one connection
	// error, one retry, and an attempt timed for each of the five.
	if got := testutil.ToFloat64(r.metrics.upstreamErrors.WithLabelValues("u", "connect")); got != 1 {
		t.Errorf("connect errors of u = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.metrics.retries.WithLabelValues("u")); got != 1 {
		t.Errorf("retries of u = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(r.metrics.upstream); got != 1 {
		t.Errorf("upstream histograms = %d, want one, of route r", got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP confetti_gateway_upstream_retries_total Attempts made on another node of an upstream after a connection error.
# TYPE confetti_gateway_upstream_retries_total counter
confetti_gateway_upstream_retries_total{upstream="u"} 1
`), "confetti_gateway_upstream_retries_total"); err != nil {
		t.Error(err)
	}
}

// The SDK's figures are read at scrape time.
func TestStatsCollectorExportsTheSubscription(t *testing.T) {
	st := &fixedStats{st: gateway.Stats{Endpoint: "10.0.0.1:7710", Resets: 1, Resumes: 2, Reconnects: 3, Acks: 4, Nacks: 5, Lag: 1500 * time.Millisecond, SnapshotAt: time.Now().Add(-time.Minute)}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewStatsCollector(st))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP confetti_gateway_sdk_connected 1 while the subscription streams from the cache node named by endpoint, 0 while disconnected (endpoint empty).
# TYPE confetti_gateway_sdk_connected gauge
confetti_gateway_sdk_connected{endpoint="10.0.0.1:7710"} 1
# HELP confetti_gateway_sdk_lag_seconds How long the view may have been stale: zero while a stream keeps it current.
# TYPE confetti_gateway_sdk_lag_seconds gauge
confetti_gateway_sdk_lag_seconds 1.5
# HELP confetti_gateway_sdk_resumes_total Streams that resumed from the view's token by replay.
# TYPE confetti_gateway_sdk_resumes_total counter
confetti_gateway_sdk_resumes_total 2
`), "confetti_gateway_sdk_connected", "confetti_gateway_sdk_lag_seconds", "confetti_gateway_sdk_resumes_total"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(reg, "confetti_gateway_sdk_snapshot_age_seconds")
	if err != nil || n != 1 {
		t.Fatalf("snapshot age series: %d, %v", n, err)
	}
}

type fixedStats struct{ st gateway.Stats }

func (f *fixedStats) Stats() gateway.Stats { return f.st }
