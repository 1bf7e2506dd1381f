package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/buildinfo"
	"github.com/confetti-io/confetti/internal/etcdauth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/serve"
)

const defaultMetaEndpoint = "http://127.0.0.1:7720"

// roleFlags are the flags every server role has.
type roleFlags struct {
	metaEndpoints   []string
	listenAddr      string
	metricsAddr     string
	enablePprof     bool
	logLevel        string
	configFile      string
	shutdownTimeout time.Duration
	etcd            etcdFlags
	listen          listenFlags
}

func (f *roleFlags) register(fs *pflag.FlagSet, listen, metrics string) {
	fs.StringSliceVar(&f.metaEndpoints, "meta-endpoints", []string{defaultMetaEndpoint}, "client URLs of the meta etcd cluster, comma separated")
	fs.StringVar(&f.listenAddr, "listen-addr", listen, "gRPC listen address, host:port (loopback by default; :PORT listens on every interface)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", metrics, "HTTP address for /metrics, /healthz and /readyz (:PORT listens on every interface); empty disables it")
	fs.BoolVar(&f.enablePprof, "enable-pprof", false, "serve /debug/pprof/ on --metrics-addr")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.configFile, "config-file", "", "YAML file whose keys are this command's flag names (flags and CONFETTI_* variables win over it)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may wait for running requests")
	f.etcd.register(fs)
	f.listen.register(fs)
}

// roleParts is what a server role plugs into runRole.
type roleParts struct {
	register func(*grpc.Server)
	// ready returns nil when the role can serve, else why not.
	ready func() error
	// degraded, if set, lists what a ready role cannot serve now.
	degraded func() []string
	// drain, if set, ends the role's streams during a graceful stop.
	drain func()
	// gateway, when gatewayAddr is set, serves an HTTP gateway to the
	// role's gRPC server on gatewayAddr.
	gatewayAddr string
	gateway     serve.GatewayFunc
	// started, if set, is told the bound addresses once serving.
	started func(serve.Addrs)
}

// newRegistry returns a metrics registry holding the Go and process
// collectors and confetti_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.NewCollector(buildinfo.Get()))
	return reg
}

// runRole runs a server role against real etcd clusters until ctx ends:
// a meta client, store and shard clients, the role built by build, and
// its gRPC and metrics servers; then it stops them in reverse order.
func (a *app) runRole(ctx context.Context, name string, f *roleFlags, build func(lg *zap.Logger, store *meta.Store, clients *meta.Clients, reg *prometheus.Registry, authn *auth.Authenticator) (roleParts, error)) error {
	lg, err := newLogger(a.errOut, f.logLevel, false)
	if err != nil {
		return err
	}
	defer lg.Sync()
	lg = lg.With(zap.String("role", name))
	lg.Info("starting", buildinfo.Get().Fields()...)

	etcdConfig, err := f.etcd.clientConfig(lg.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
	if err != nil {
		return err
	}
	metaCli, err := etcdauth.New(etcdConfig(f.metaEndpoints))
	if err != nil {
		return fmt.Errorf("meta etcd %v: %w", f.metaEndpoints, err)
	}
	defer metaCli.Close()
	store, err := meta.New(metaCli, meta.Config{Logger: lg.Named("meta")})
	if err != nil {
		return err
	}
	defer store.Close()
	clients := meta.NewClients(store, etcdConfig)
	defer clients.Close()

	reg := newRegistry()
	sopts, authn, err := f.listen.serverOptions(store, lg, reg)
	if err != nil {
		return err
	}
	var parts roleParts
	srv, err := serve.New(serve.Options{
		ServerOptions: sopts,
		ListenAddr:    f.listenAddr,
		MetricsAddr:   f.metricsAddr,
		EnablePprof:   f.enablePprof,
		Registry:      reg,
		Logger:        lg.Named("serve"),
		Ready: func() error {
			if !store.Ready() {
				return fmt.Errorf("meta not loaded yet from %v", f.metaEndpoints)
			}
			return parts.ready()
		},
		Degraded: func() []string {
			if parts.degraded == nil {
				return nil
			}
			return parts.degraded()
		},
		Drain: func() {
			if parts.drain != nil {
				parts.drain()
			}
		},
	})
	if err != nil {
		return err
	}
	parts, err = build(lg, store, clients, reg, authn)
	if err != nil {
		srv.Stop(context.Background())
		return err
	}
	parts.register(srv.GRPC())
	if err := srv.SetGateway(parts.gatewayAddr, parts.gateway); err != nil {
		srv.Stop(context.Background())
		return err
	}
	addrs, err := srv.Start()
	if err != nil {
		srv.Stop(context.Background())
		return err
	}
	lg.Info("serving", zap.String("grpc-addr", addrs.GRPC), zap.String("metrics-addr", addrs.Metrics), zap.String("http-addr", addrs.Gateway), zap.Strings("meta-endpoints", f.metaEndpoints))
	if parts.started != nil {
		parts.started(addrs)
	}

	var runErr error
	select {
	case <-ctx.Done():
		lg.Info("shutting down")
	case runErr = <-srv.Err():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := srv.Stop(stopCtx); err != nil {
		lg.Warn("stop", zap.Error(err))
	}
	return runErr
}
