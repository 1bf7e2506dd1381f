package router

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's request and upstream figures.
type metrics struct {
	// requests counts answered requests by route id and HTTP status.
	requests *prometheus.CounterVec
	// upstream observes each attempt's exchange with a node, by route.
	upstream *prometheus.HistogramVec
	// retries counts attempts on another node after a connection error,
	// by upstream.
	retries *prometheus.CounterVec
	// upstreamErrors counts attempts that failed, by upstream and reason
	// (connect, timeout, other).
	upstreamErrors *prometheus.CounterVec
}

// Route labels of requests that matched no route, or asked for the status
// page.
const (
	noRoute     = "-"
	statusRoute = "status"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "gateway", Name: "requests_total",
			Help: "Requests answered, by route id (- when no route matched) and HTTP status.",
		}, []string{"route", "code"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "confetti", Subsystem: "gateway", Name: "upstream_duration_seconds",
			Help:    "Time from sending a request to a node to its response headers (or the failure), per attempt, by route id.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "gateway", Name: "upstream_retries_total",
			Help: "Attempts made on another node of an upstream after a connection error.",
		}, []string{"upstream"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "gateway", Name: "upstream_errors_total",
			Help: "Attempts on a node that failed, by upstream and reason (connect, timeout, other).",
		}, []string{"upstream", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.upstream, m.retries, m.upstreamErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// statusWriter records the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes flushes through, for streamed responses.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// StatsCollector exports a subscription's figures (gateway.Stats) as
// metrics, read at scrape time so that the SDK's hot path records nothing
// for them.
type StatsCollector struct {
	src StatsSource

	connected, lag, snapshotAge                     *prometheus.Desc
	resets, resumes, reconnects, acks, nacks, rejct *prometheus.Desc
}

var _ prometheus.Collector = (*StatsCollector)(nil)

// NewStatsCollector returns a collector of src's Stats.
func NewStatsCollector(src StatsSource) *StatsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("confetti", "gateway_sdk", name), help, labels, nil)
	}
	return &StatsCollector{
		src:         src,
		connected:   d("connected", "1 while the subscription streams from the cache node named by endpoint, 0 while disconnected (endpoint empty).", "endpoint"),
		lag:         d("lag_seconds", "How long the view may have been stale: zero while a stream keeps it current."),
		snapshotAge: d("snapshot_age_seconds", "Time since the last snapshot file write; absent before the first."),
		resets:      d("resets_total", "Resets applied: the cache replaced the whole view."),
		resumes:     d("resumes_total", "Streams that resumed from the view's token by replay."),
		reconnects:  d("reconnects_total", "Attempts to open a stream after the first."),
		acks:        d("acks_total", "Config item versions acknowledged."),
		nacks:       d("nacks_total", "Config item versions refused."),
		rejct:       d("rejected_total", "Values the validator refused (items and plain keys)."),
	}
}

// Describe implements prometheus.Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.lag, c.snapshotAge, c.resets, c.resumes, c.reconnects, c.acks, c.nacks, c.rejct} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StatsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	connected := 0.0
	if st.Endpoint != "" {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, connected, st.Endpoint)
	ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, st.Lag.Seconds())
	if !st.SnapshotAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.snapshotAge, prometheus.GaugeValue, time.Since(st.SnapshotAt).Seconds())
	}
	for _, v := range []struct {
		d *prometheus.Desc
		n int64
	}{{c.resets, st.Resets}, {c.resumes, st.Resumes}, {c.reconnects, st.Reconnects}, {c.acks, st.Acks}, {c.nacks, st.Nacks}, {c.rejct, st.Rejected}} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.n))
	}
}
