package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

var (
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("serve: already started")
	// ErrStopped is returned by Start after Stop.
	ErrStopped = errors.New("serve: stopped")
	// ErrShuttingDown is the readiness reason while Stop drains.
	ErrShuttingDown = errors.New("serve: shutting down")
)

// Options configures a Server. The kebab-case names are the flags and
// config-file keys of the roles that embed it.
type Options struct {
	// ListenAddr is the gRPC address, host:port. Port 0 lets the kernel
	// choose; Start returns the bound address. Required.
	ListenAddr string `yaml:"listen-addr"`
	// MetricsAddr is the HTTP address for /metrics, /healthz, /readyz and
	// /debug/pprof/. Empty means no HTTP server.
	MetricsAddr string `yaml:"metrics-addr"`
	// EnablePprof serves /debug/pprof/ on MetricsAddr. Default false.
	EnablePprof bool `yaml:"enable-pprof"`
	// ReadyInterval is how often the gRPC health status is refreshed from
	// Ready. Zero means 1 second.
	ReadyInterval time.Duration `yaml:"ready-interval"`
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client. Zero means 30 seconds.
	KeepaliveTime time.Duration `yaml:"grpc-keepalive-time"`
	// KeepaliveTimeout is how long the server waits for a ping's answer
	// before it closes the connection. Zero means 10 seconds.
	KeepaliveTimeout time.Duration `yaml:"grpc-keepalive-timeout"`
	// KeepaliveMinTime is the shortest ping interval a client may use;
	// clients pinging faster are disconnected. Pings without active
	// streams are allowed (idle subscribers keep their connection warm).
	// Zero means 5 seconds.
	KeepaliveMinTime time.Duration `yaml:"grpc-keepalive-min-time"`

	// Registry is served on /metrics and receives the gRPC server metrics.
	// Nil means a new registry holding the Go and process collectors.
	Registry *prometheus.Registry `yaml:"-"`
	// Ready reports whether the role can serve: nil when it can, else an
	// error saying why not. Nil means always ready. It must be cheap and
	// safe for concurrent use.
	Ready func() error `yaml:"-"`
	// Degraded, when set, lists the parts of a ready role that cannot
	// serve now (a cache node's unreachable shard), one line each: /readyz
	// still answers 200, with "ok" and then the lines. Nil means none. It
	// must be cheap and safe for concurrent use.
	Degraded func() []string `yaml:"-"`
	// Drain, when set, is called once by Stop after the server has stopped
	// accepting RPCs, while Stop waits for running ones to finish. Roles
	// whose streams never end by themselves (cache subscriptions) end them
	// here.
	Drain func() `yaml:"-"`
	// Logger receives the server's logs. Nil means none.
	Logger *zap.Logger `yaml:"-"`
	// ServerOptions are added to the gRPC server's options.
	ServerOptions []grpc.ServerOption `yaml:"-"`
}

// Addrs are the addresses a started Server listens on.
type Addrs struct {
	// GRPC is the bound gRPC address.
	GRPC string
	// Metrics is the bound HTTP address, empty without an HTTP server.
	Metrics string
	// Gateway is the bound address of the gateway set by SetGateway, empty
	// without one.
	Gateway string
}

// Server is a gRPC server and its operator HTTP server. Its methods are
// safe for concurrent use.
type Server struct {
	opts    Options
	lg      *zap.Logger
	grpc    *grpc.Server
	health  *health.Server
	metrics *grpcprom.ServerMetrics
	http    *http.Server
	gw      *gateway

	stopping atomic.Bool
	errc     chan error
	// serving is the last health status set, for logging transitions.
	serving atomic.Bool

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New builds a Server; register services on GRPC() before Start.
func New(opts Options) (*Server, error) {
	if opts.ListenAddr == "" {
		return nil, errors.New("serve: listen address is required")
	}
	if opts.ReadyInterval == 0 {
		opts.ReadyInterval = time.Second
	}
	if opts.KeepaliveTime == 0 {
		opts.KeepaliveTime = 30 * time.Second
	}
	if opts.KeepaliveTimeout == 0 {
		opts.KeepaliveTimeout = 10 * time.Second
	}
	if opts.KeepaliveMinTime == 0 {
		opts.KeepaliveMinTime = 5 * time.Second
	}
	if opts.ReadyInterval < 0 || opts.KeepaliveTime < 0 || opts.KeepaliveTimeout < 0 || opts.KeepaliveMinTime < 0 {
		return nil, errors.New("serve: intervals must not be negative")
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if opts.Ready == nil {
		opts.Ready = func() error { return nil }
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	metrics := grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("confetti")),
		grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace("confetti")),
	)
	if err := opts.Registry.Register(metrics); err != nil {
		return nil, fmt.Errorf("serve: register grpc metrics: %w", err)
	}
	sopts := append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             opts.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    opts.KeepaliveTime,
			Timeout: opts.KeepaliveTimeout,
		}),
		grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor()),
		// Tens of thousands of mostly idle streams: serve them from a fixed
		// pool of workers rather than a new goroutine per stream (grpc-go
		// already shares write buffers between writes by default).
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
	}, opts.ServerOptions...)
	s := &Server{
		opts:    opts,
		lg:      opts.Logger,
		grpc:    grpc.NewServer(sopts...),
		health:  health.NewServer(),
		metrics: metrics,
		errc:    make(chan error, 3),
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	s.http = &http.Server{Handler: OperatorHandler(opts.Registry, s.Ready, opts.Degraded, opts.EnablePprof), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// OperatorHandler is what every role serves on its metrics address:
// /metrics of reg, /healthz (the process answers), /readyz (ready reports
// nil, with a "degraded:" line for each of degraded's parts; else 503 with
// the reason), and /debug/pprof/ when pprof is set. degraded may be nil.
func OperatorHandler(reg *prometheus.Registry, ready func() error, degraded func() []string, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
		if degraded != nil {
			for _, line := range degraded() {
				fmt.Fprintf(w, "degraded: %s\n", line)
			}
		}
	})
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// GRPC returns the gRPC server to register services on before Start.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Err returns a channel that receives an error if a server stops serving
// on its own (its listener failed) while running.
func (s *Server) Err() <-chan error { return s.errc }

// Ready reports the role's readiness as /readyz does: nil when ready,
// else the reason.
func (s *Server) Ready() error {
	if s.stopping.Load() {
		return ErrShuttingDown
	}
	return s.opts.Ready()
}

// Start binds both addresses and serves them in the background until Stop.
func (s *Server) Start() (Addrs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return Addrs{}, ErrStopped
	}
	if s.started {
		return Addrs{}, ErrStarted
	}
	glis, err := net.Listen("tcp", s.opts.ListenAddr)
	if err != nil {
		return Addrs{}, fmt.Errorf("serve: listen on %s: %w", s.opts.ListenAddr, err)
	}
	addrs := Addrs{GRPC: glis.Addr().String()}
	var hlis net.Listener
	if s.opts.MetricsAddr != "" {
		hlis, err = net.Listen("tcp", s.opts.MetricsAddr)
		if err != nil {
			glis.Close()
			return Addrs{}, fmt.Errorf("serve: listen on %s: %w", s.opts.MetricsAddr, err)
		}
		addrs.Metrics = hlis.Addr().String()
	}
	if s.gw != nil {
		if addrs.Gateway, err = s.gw.listen(addrs.GRPC); err != nil {
			glis.Close()
			if hlis != nil {
				hlis.Close()
			}
			return Addrs{}, err
		}
	}
	s.started = true
	s.lg.Info("grpc server listening", zap.String("addr", addrs.GRPC))
	if hlis != nil {
		s.lg.Info("metrics server listening", zap.String("addr", addrs.Metrics), zap.Bool("pprof", s.opts.EnablePprof))
	}
	s.metrics.InitializeMetrics(s.grpc)
	s.refreshHealth()

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.watchReady(ctx)
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(glis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.lg.Error("grpc server failed", zap.String("addr", addrs.GRPC), zap.Error(err))
			s.errc <- fmt.Errorf("serve: grpc on %s: %w", addrs.GRPC, err)
		}
	}()
	if hlis != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.http.Serve(hlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.lg.Error("metrics server failed", zap.String("addr", addrs.Metrics), zap.Error(err))
				s.errc <- fmt.Errorf("serve: http on %s: %w", addrs.Metrics, err)
			}
		}()
	}
	if s.gw != nil {
		s.serveGateway(addrs.Gateway)
	}
	return addrs, nil
}

// Stop reports not ready, stops accepting RPCs, calls Drain and waits for
// running RPCs until ctx is done, then closes every connection. The HTTP
// server keeps answering (/readyz with 503) until the gRPC server is down.
// It returns an error when ctx ended the graceful stop. Calling Stop again
// does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()

	s.stopping.Store(true)
	s.health.Shutdown()
	if !started {
		s.grpc.Stop()
		if s.opts.Drain != nil {
			s.opts.Drain()
		}
		return nil
	}
	s.cancel()
	s.lg.Info("stopping servers")
	if s.gw != nil {
		s.gw.shutdown(ctx)
	}

	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	if s.opts.Drain != nil {
		s.opts.Drain()
	}
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("serve: graceful stop interrupted, closing connections: %w", ctx.Err())
		s.lg.Warn("graceful stop timed out, closing connections")
		s.grpc.Stop()
		<-done
	}
	if ctx.Err() == nil {
		if herr := s.http.Shutdown(ctx); herr != nil {
			s.http.Close()
		}
	} else {
		s.http.Close()
	}
	s.wg.Wait()
	if s.gw != nil {
		s.gw.done()
	}
	return err
}

// watchReady keeps the gRPC health status in step with Ready.
func (s *Server) watchReady(ctx context.Context) {
	t := time.NewTicker(s.opts.ReadyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.refreshHealth()
		}
	}
}

func (s *Server) refreshHealth() {
	st := healthpb.HealthCheckResponse_SERVING
	err := s.Ready()
	if err != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	if was := s.serving.Swap(err == nil); was != (err == nil) {
		if err == nil {
			s.lg.Info("ready")
		} else {
			s.lg.Info("not ready", zap.Error(err))
		}
	}
	// The services first, the server as a whole last: a client that saw
	// the overall status change finds every service already changed.
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, st)
	}
	s.health.SetServingStatus("", st)
}
