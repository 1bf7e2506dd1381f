package shardproxy

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/meta"
)

// metrics are the proxy's Prometheus collectors.
type metrics struct {
	// requests counts finished RPCs by method ("KV.Put") and gRPC code
	// ("OK", "NotFound", ...).
	requests *prometheus.CounterVec
	// duration observes the time each RPC took, by method.
	duration *prometheus.HistogramVec
	// shardRequests counts finished RPCs of tenants by the tenant's shard
	// and gRPC code, for error ratios per shard.
	shardRequests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, store *meta.Store, health *shardHealth) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti",
			Subsystem: "proxy",
			Name:      "requests_total",
			Help:      "RPCs served by the shard proxy, by method and gRPC status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "confetti",
			Subsystem: "proxy",
			Name:      "request_duration_seconds",
			Help:      "Time the shard proxy took to serve an RPC, by method.",
			Buckets:   prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		shardRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti",
			Subsystem: "proxy",
			Name:      "shard_requests_total",
			Help:      "RPCs of a tenant served by the shard proxy, by the tenant's shard and gRPC status code.",
		}, []string{"shard", "code"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.shardRequests, err = register(reg, m.shardRequests); err != nil {
		return nil, err
	}
	if _, err = register(reg, newPlacementCollector(store, health)); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the identical collector already
// registered there, so that several proxies in one process (tests, the
// all-in-one dev mode) share their series instead of failing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, err
}

func (m *metrics) observe(method string, code codes.Code, took time.Duration) {
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(took.Seconds())
}

// placementCollector reports the placement the proxy routes by, read from
// the meta store's memory at scrape time, and the proxy's view of each
// shard's health.
type placementCollector struct {
	store   *meta.Store
	health  *shardHealth
	tenants *prometheus.Desc
	healthy *prometheus.Desc
	rev     *prometheus.Desc
}

func newPlacementCollector(store *meta.Store, health *shardHealth) *placementCollector {
	return &placementCollector{
		store:  store,
		health: health,
		tenants: prometheus.NewDesc("confetti_proxy_shard_tenants",
			"Tenants placed on each shard, with the shard's state (active, draining or pending).", []string{"shard", "state"}, nil),
		healthy: prometheus.NewDesc("confetti_proxy_shard_healthy",
			"1 while the shard answered this proxy's last check recently (only healthy active shards take new tenants), else 0.", []string{"shard"}, nil),
		rev: prometheus.NewDesc("confetti_proxy_meta_revision",
			"Meta revision the proxy's placement reflects.", nil, nil),
	}
}

func (c *placementCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tenants
	ch <- c.healthy
	ch <- c.rev
}

func (c *placementCollector) Collect(ch chan<- prometheus.Metric) {
	counts := tenantCounts(c.store.Tenants())
	for _, sh := range c.store.Shards() {
		ch <- prometheus.MustNewConstMetric(c.tenants, prometheus.GaugeValue, float64(counts[sh.ID]), sh.ID, string(sh.State))
		healthy := 0.0
		if c.health.status(sh.ID) == nil {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, healthy, sh.ID)
	}
	ch <- prometheus.MustNewConstMetric(c.rev, prometheus.GaugeValue, float64(c.store.Revision()))
}
