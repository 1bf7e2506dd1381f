package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/router"
	"github.com/confetti-io/confetti/internal/buildinfo"
	"github.com/confetti-io/confetti/internal/serve"
)

// gatewayOptions are what one reference gateway runs with.
type gatewayOptions struct {
	listen string
	// metricsAddr serves /metrics, /healthz and /readyz; empty: none.
	metricsAddr string
	endpoints   []string
	tenant      string
	apiKey      string
	snapshotDir string
	identity    gateway.Identity
	router      router.Config
	dialOptions []grpc.DialOption
}

// runningGateway is a reference gateway serving HTTP.
type runningGateway struct {
	addr   string
	client *gateway.Client
	srv    *http.Server
	done   chan error
	// metricsAddr is the bound metrics address, empty without one.
	metricsAddr string
	metrics     *http.Server
}

// startGateway subscribes to the tenant's routes, upstreams and services
// and serves the router on o.listen.
func startGateway(ctx context.Context, lg *zap.Logger, o gatewayOptions) (*runningGateway, error) {
	c, err := gateway.New(gateway.Config{
		Endpoints:   o.endpoints,
		Tenant:      o.tenant,
		Prefixes:    router.Prefixes,
		Services:    router.Services,
		Identity:    o.identity,
		APIKey:      o.apiKey,
		SnapshotDir: o.snapshotDir,
		DialOptions: o.dialOptions,
		Validate:    router.Validate,
		Logger:      lg.Named("sdk"),
	})
	if err != nil {
		return nil, err
	}
	reg := newRegistry()
	reg.MustRegister(router.NewStatsCollector(c))
	o.router.Logger, o.router.Registerer = lg.Named("router"), reg
	rt, err := router.New(c, o.router)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("gateway --listen %s: %w", o.listen, err)
	}
	var mlis net.Listener
	if o.metricsAddr != "" {
		if mlis, err = net.Listen("tcp", o.metricsAddr); err != nil {
			lis.Close()
			return nil, fmt.Errorf("gateway --metrics-addr %s: %w", o.metricsAddr, err)
		}
	}
	if err := c.Start(ctx); err != nil {
		lis.Close()
		if mlis != nil {
			mlis.Close()
		}
		return nil, err
	}
	g := &runningGateway{
		addr:   lis.Addr().String(),
		client: c,
		srv:    &http.Server{Handler: rt, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(lg.Named("http"))},
		done:   make(chan error, 2),
	}
	go func() { g.done <- g.srv.Serve(lis) }()
	if mlis != nil {
		// Ready once the gateway serves a view: its snapshot, or its first
		// sync with a cache node.
		ready := func() error {
			select {
			case <-c.Ready():
				return nil
			default:
				return errors.New("no configuration yet: waiting for the first sync with a cache node")
			}
		}
		g.metricsAddr = mlis.Addr().String()
		g.metrics = &http.Server{Handler: serve.OperatorHandler(reg, ready, nil, false), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := g.metrics.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				g.done <- err
			}
		}()
	}
	return g, nil
}

// stop ends the gateway gracefully within ctx: running requests finish,
// then the subscription closes and writes its last snapshot.
func (g *runningGateway) stop(ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	if g.metrics != nil {
		err = errors.Join(err, g.metrics.Close())
	}
	return errors.Join(err, g.client.Close())
}

func newGatewayCommand(a *app) *cobra.Command {
	var (
		o        gatewayOptions
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "gateway --tenant T",
		Short: "Run the reference HTTP gateway: routes from a tenant's config, nodes from its services",
		Long: `Run the reference HTTP gateway of a tenant. Its routes are the keys
/routes/<id> of the tenant's KV space ({"uri":"/api/*","methods":[...],
"host":...,"upstream_id":...,"priority":N}, the APISIX shape) and its
upstreams /upstreams/<id> ({"type":"roundrobin","nodes":{"host:port":
weight},"service":"<name>"}); an upstream with a service also routes to
every live instance registered under it ('confetti svc register'). Changes
apply at once, without dropping requests in flight. The gateway subscribes
through the cache nodes of --cache-endpoints with --api-key (a reader key
of the tenant is enough), and keeps serving from memory, or from its
--snapshot-dir after a restart, while no cache node answers.
GET /__confetti/status shows the subscription and the route table.`,
		Example: `  confetti gateway --tenant demo --listen :9080
  confetti gateway --tenant acme --listen :9080 --cache-endpoints 10.0.0.1:7710,10.0.0.2:7710 \
      --api-key "$READER_KEY" --snapshot-dir /var/lib/confetti-gateway --instance-id gw-1 --labels zone=a`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{clientAnnotation: ""},
		RunE: func(cmd *cobra.Command, _ []string) error {
			lg, err := newLogger(a.errOut, logLevel, false)
			if err != nil {
				return err
			}
			defer lg.Sync()
			lg.Info("starting", buildinfo.Get().Fields()...)
			tlsCfg, err := a.clientTLS()
			if err != nil {
				return err
			}
			if tlsCfg != nil {
				o.dialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}
			}
			if o.identity.InstanceID == "" {
				o.identity.InstanceID, _ = os.Hostname()
			}
			o.endpoints, o.apiKey = a.cacheEndpoints, a.apiKey
			g, err := startGateway(cmd.Context(), lg, o)
			if err != nil {
				return err
			}
			lg.Info("serving", zap.String("addr", g.addr), zap.String("metrics-addr", g.metricsAddr), zap.String("tenant", o.tenant), zap.Strings("cache-endpoints", o.endpoints))
			var runErr error
			select {
			case <-cmd.Context().Done():
				lg.Info("stopping", zap.String("reason", stopReason(cmd.Context())))
			case runErr = <-g.done:
				lg.Error("stopping", zap.Error(runErr))
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = errors.Join(runErr, g.stop(sctx))
			lg.Info("stopped")
			return err
		},
	}
	fs := cmd.Flags()
	tenantFlag(cmd, &o.tenant)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9080", "HTTP address the gateway serves, host:port (:9080 listens on every interface)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9081", "HTTP address for /metrics, /healthz and /readyz (ready once the gateway has a configuration); empty disables it")
	fs.StringVar(&o.snapshotDir, "snapshot-dir", "", "directory for the on-disk snapshot that a restart serves at once (empty: none)")
	fs.StringVar(&o.identity.InstanceID, "instance-id", "", "this gateway's id for gray releases and rollout status (default: the host name)")
	fs.StringToStringVar(&o.identity.Labels, "labels", nil, "labels for gray releases, k=v comma separated (zone=a,tier=edge)")
	fs.DurationVar(&o.router.Timeout, "timeout", 60*time.Second, "how long one request may take upstream, retries included")
	fs.DurationVar(&o.router.ConnectTimeout, "connect-timeout", 3*time.Second, "how long one connection attempt to a node may take")
	fs.IntVar(&o.router.Retries, "retries", 0, "other nodes a request tries after a connection error (0: every other node, -1: none)")
	fs.DurationVar(&o.router.FailTimeout, "fail-timeout", 10*time.Second, "how long a node that failed is skipped")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}
