package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/gateway"
)

// StatusPath serves the router's status: the subscription's token and
// endpoint and the route table.
const StatusPath = "/__confetti/status"

// Source is where the router's configuration comes from; *gateway.Client
// is one. View must never return nil; OnChange handlers are called one at
// a time, in order.
type Source interface {
	View() *gateway.View
	OnChange(func(gateway.Change))
}

// StatsSource, when the Source is one, adds its figures to the status.
type StatsSource interface {
	Stats() gateway.Stats
}

// Config configures a Router. Zero values mean the documented defaults.
type Config struct {
	// Timeout bounds one request's whole exchange with the upstream,
	// retries included; zero means 60 seconds.
	Timeout time.Duration `yaml:"timeout"`
	// ConnectTimeout bounds one connection attempt to a node; zero means 3
	// seconds.
	ConnectTimeout time.Duration `yaml:"connect-timeout"`
	// Retries is how many other nodes a request tries after a node refused
	// or did not accept its connection (nothing was sent, so any method is
	// safe to retry); zero means every other node of the upstream, and a
	// negative value none.
	Retries int `yaml:"retries"`
	// MaxFails failures in a row (connection errors and timeouts) mark a
	// node down for FailTimeout: it gets no traffic while another node is
	// up. Zero means 1 and 10 seconds.
	MaxFails    int           `yaml:"max-fails"`
	FailTimeout time.Duration `yaml:"fail-timeout"`
	// Transport, if set, sends the requests to the nodes; nil means an
	// http.Transport with ConnectTimeout and keep-alive connections.
	Transport http.RoundTripper `yaml:"-"`
	// Logger receives rebuilds and skipped keys; nil means none.
	Logger *zap.Logger `yaml:"-"`
	// Registerer receives the router's metrics (requests by route and
	// status, upstream latency, retries and errors); nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

func (c *Config) setDefaults() error {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 3 * time.Second
	}
	if c.MaxFails == 0 {
		c.MaxFails = 1
	}
	if c.FailTimeout == 0 {
		c.FailTimeout = 10 * time.Second
	}
	if c.Timeout < 0 || c.ConnectTimeout < 0 || c.MaxFails < 0 || c.FailTimeout < 0 {
		return fmt.Errorf("%w: timeouts and max fails must not be negative", ErrBadConfig)
	}
	return nil
}

// Router is the reference HTTP gateway: an http.Handler that routes each
// request by the route table built from its Source and proxies it to a
// node of the route's upstream. Its methods are safe for concurrent use.
type Router struct {
	cfg   Config
	lg    *zap.Logger
	src   Source
	table atomic.Pointer[table]
	proxy *httputil.ReverseProxy
	now   func() time.Time

	// buildMu serializes rebuilds; logged (key -> mod revision) holds the
	// bad keys already logged.
	buildMu  sync.Mutex
	logged   map[string]int64
	healthMu sync.Mutex
	healths  map[string]*health
	rebuilds atomic.Int64
	metrics  *metrics
}

// New returns a router of src's routes, rebuilt on every change. Create
// it before starting a gateway.Client so that it sees the snapshot load.
func New(src Source, cfg Config) (*Router, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, lg: cfg.Logger, src: src, healths: map[string]*health{}, now: time.Now, metrics: m}
	transport := cfg.Transport
	if transport == nil {
		dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
		transport = &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil {
					return nil, &dialError{err: err}
				}
				return c, nil
			},
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	r.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:    &retrier{r: r, base: transport},
		ErrorHandler: r.proxyError,
		ErrorLog:     zap.NewStdLog(cfg.Logger.Named("proxy")),
	}
	src.OnChange(func(gateway.Change) { r.rebuild() })
	r.rebuild()
	return r, nil
}

// rebuild builds the table of the source's current view and swaps it in;
// requests in flight keep the table they started with.
func (r *Router) rebuild() {
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	prev := r.table.Load()
	t := build(r.src.View(), prev, r.healthOf)
	r.table.Store(t)
	r.rebuilds.Add(1)
	r.pruneHealth(t)
	logged := make(map[string]int64, len(t.errors))
	for _, e := range t.errors {
		if r.logged[e.Key] != e.modRev {
			r.lg.Warn("skipping a bad key", zap.String("key", e.Key), zap.String("error", e.Error))
		}
		logged[e.Key] = e.modRev
	}
	r.logged = logged
	r.lg.Debug("route table rebuilt", zap.Int("routes", len(t.routes)), zap.Int("upstreams", len(t.upstreams)), zap.Int("skipped", len(t.errors)))
}

func (r *Router) healthOf(addr string) *health {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	h := r.healths[addr]
	if h == nil {
		h = &health{}
		r.healths[addr] = h
	}
	return h
}

// pruneHealth forgets the health of addresses no upstream holds anymore.
func (r *Router) pruneHealth(t *table) {
	used := map[string]bool{}
	for _, u := range t.upstreams {
		for _, n := range u.bal.nodes {
			used[n.addr] = true
		}
	}
	for _, rt := range t.routes {
		if rt.upstream != nil {
			for _, n := range rt.upstream.bal.nodes {
				used[n.addr] = true
			}
		}
	}
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	for addr := range r.healths {
		if !used[addr] {
			delete(r.healths, addr)
		}
	}
}

// requestKey carries a request's route into the transport.
type requestKey struct{}

// ServeHTTP routes one request.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	route := r.serve(sw, req)
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	r.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
}

// serve routes one request and returns the route id it took (noRoute or
// statusRoute when it took none).
func (r *Router) serve(w http.ResponseWriter, req *http.Request) string {
	if req.URL.Path == StatusPath {
		r.serveStatus(w)
		return statusRoute
	}
	t := r.table.Load()
	if !t.synced {
		writeError(w, http.StatusServiceUnavailable, "the gateway has no configuration yet: it waits for its first sync with a cache node (see "+StatusPath+")")
		return noRoute
	}
	rt := t.match(req)
	if rt == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route matches %s %s (host %s); routes are the tenant's keys /routes/<id> (confetti kv put --tenant T /routes/<id> '{\"uri\":...,\"upstream_id\":...}')", req.Method, req.URL.Path, req.Host))
		return noRoute
	}
	if rt.upstream == nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("route %s names upstream %q, which does not exist: write the tenant's key /upstreams/%s", rt.id, rt.missing, rt.missing))
		return rt.id
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.Timeout)
	defer cancel()
	r.proxy.ServeHTTP(w, req.WithContext(context.WithValue(ctx, requestKey{}, rt)))
	return rt.id
}

// Status is what StatusPath serves.
type Status struct {
	Endpoint string `json:"endpoint"`
	Token    string `json:"token"`
	// Lag is how long the view may have been stale (gateway.Stats.Lag).
	Lag            string        `json:"lag"`
	Resets         int64         `json:"resets"`
	Resumes        int64         `json:"resumes"`
	Reconnects     int64         `json:"reconnects"`
	LastError      string        `json:"last_error,omitempty"`
	SnapshotLoaded bool          `json:"snapshot_loaded"`
	SnapshotError  string        `json:"snapshot_error,omitempty"`
	Rebuilds       int64         `json:"rebuilds"`
	Routes         []RouteStatus `json:"routes"`
	Skipped        []KeyError    `json:"skipped,omitempty"`
}

// Status returns the router's current status.
func (r *Router) Status() Status {
	t := r.table.Load()
	s := Status{Token: t.token, Rebuilds: r.rebuilds.Load(), Routes: t.status(r.now()), Skipped: t.errors}
	if ss, ok := r.src.(StatsSource); ok {
		st := ss.Stats()
		s.Endpoint, s.Lag, s.Resets, s.Resumes, s.Reconnects = st.Endpoint, st.Lag.Round(time.Millisecond).String(), st.Resets, st.Resumes, st.Reconnects
		s.LastError, s.SnapshotLoaded, s.SnapshotError = st.LastError, st.SnapshotLoaded, st.SnapshotError
	}
	return s
}

func (r *Router) serveStatus(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	enc.Encode(r.Status())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]any{"error": msg, "code": code})
}

// proxyError answers a request the upstream did not answer.
func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	rt, _ := req.Context().Value(requestKey{}).(*route)
	id := ""
	if rt != nil {
		id = rt.upstream.id
	}
	var noNode *noNodeError
	switch {
	case errors.As(err, &noNode):
		writeError(w, http.StatusServiceUnavailable, noNode.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("upstream %s did not answer within %s (the gateway's request timeout)", id, r.cfg.Timeout))
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	default:
		r.lg.Debug("upstream failed", zap.String("upstream", id), zap.Error(err))
		writeError(w, http.StatusBadGateway, fmt.Sprintf("upstream %s failed: %v", id, err))
	}
}

// dialError marks an error of connecting to a node: the request was not
// sent, so another node may take it.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// noNodeError is returned when an upstream has no node left to try.
type noNodeError struct {
	upstream, service string
	tried             []string
	last              error
}

func (e *noNodeError) Error() string {
	if len(e.tried) == 0 {
		if e.service != "" {
			return fmt.Sprintf("upstream %s has no nodes: service %s has no registered instances (register one with `confetti svc register --tenant TENANT %s INSTANCE ADDR`)", e.upstream, e.service, e.service)
		}
		return fmt.Sprintf("upstream %s has no nodes of weight above zero", e.upstream)
	}
	return fmt.Sprintf("could not connect to any node of upstream %s (tried %s): %v", e.upstream, strings.Join(e.tried, ", "), e.last)
}

func (e *noNodeError) Unwrap() error { return e.last }

// retrier sends a request to the route's upstream: it picks a node,
// and when the connection to it fails, marks it and tries another.
type retrier struct {
	r    *Router
	base http.RoundTripper
}

func (rt *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	r := rt.r
	route := req.Context().Value(requestKey{}).(*route)
	up := route.upstream
	attempts := len(up.bal.nodes)
	if r.cfg.Retries < 0 {
		attempts = 1
	} else if r.cfg.Retries > 0 {
		attempts = min(attempts, r.cfg.Retries+1)
	}
	var body *onceBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &onceBody{r: req.Body}
	}
	var tried []string
	var last error
	for len(tried) < max(attempts, 1) {
		n := up.bal.pick(tried, r.now())
		if n == nil {
			break
		}
		if len(tried) > 0 {
			r.metrics.retries.WithLabelValues(up.id).Inc()
		}
		tried = append(tried, n.addr)
		req.URL.Host = n.addr
		if body != nil {
			req.Body = body
		}
		began := time.Now()
		resp, err := rt.base.RoundTrip(req)
		r.metrics.upstream.WithLabelValues(route.id).Observe(time.Since(began).Seconds())
		if err == nil {
			n.health.ok()
			return resp, nil
		}
		last = err
		var de *dialError
		switch {
		case errors.As(err, &de):
			r.metrics.upstreamErrors.WithLabelValues(up.id, "connect").Inc()
			n.health.failed(r.now(), r.cfg.MaxFails, r.cfg.FailTimeout)
			if body != nil && body.read {
				return nil, err
			}
			r.lg.Debug("node refused the connection; trying another", zap.String("upstream", up.id), zap.String("node", n.addr), zap.Error(err))
			continue
		case errors.Is(err, context.DeadlineExceeded):
			r.metrics.upstreamErrors.WithLabelValues(up.id, "timeout").Inc()
			n.health.failed(r.now(), r.cfg.MaxFails, r.cfg.FailTimeout)
		default:
			r.metrics.upstreamErrors.WithLabelValues(up.id, "other").Inc()
		}
		return nil, err
	}
	return nil, &noNodeError{upstream: up.id, service: up.service, tried: tried, last: last}
}

// onceBody hands a request body to one attempt after another: Close is a
// no-op (the server closes the body), and read tells whether an attempt
// consumed any of it, after which no other attempt may be made.
type onceBody struct {
	r    io.ReadCloser
	read bool
}

func (b *onceBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read = true
	}
	return n, err
}

func (b *onceBody) Close() error { return nil }
