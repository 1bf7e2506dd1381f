package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/shardproxy"
)

func newProxyCommand(a *app) *cobra.Command {
	var (
		rf       roleFlags
		cfg      shardproxy.Config
		httpAddr string
		cacheTLS tlsconfig.Files
		cacheKey secretFlag
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run a shard proxy: tenant placement and the tenant-scoped KV, lease and release API",
		Long: `Run a shard proxy against the meta etcd cluster named by --meta-endpoints.
The proxy is stateless: run several behind one address. It reads the shard
registry and placement table from meta and routes each tenant's requests
to its shard. --http-addr serves the same API as HTTP/JSON.`,
		Example: `  confetti proxy --meta-endpoints http://10.0.0.1:2379 --listen-addr :7700 --http-addr :7701 --metrics-addr :7790
  confetti proxy --config-file proxy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runRole(cmd.Context(), "proxy", &rf, func(lg *zap.Logger, store *meta.Store, clients *meta.Clients, reg *prometheus.Registry, _ *auth.Authenticator) (roleParts, error) {
				cfg.Logger = lg.Named("proxy")
				cfg.Registerer = reg
				var err error
				if cfg.CacheAPIKey, err = cacheKey.optional("cache-api-key"); err != nil {
					return roleParts{}, err
				}
				var gatewayOpts []grpc.DialOption
				if httpAddr != "" {
					if gatewayOpts, err = gatewayDialOptions(rf.listen.tls); err != nil {
						return roleParts{}, err
					}
				}
				tlsCfg, err := tlsconfig.Client(cacheTLS)
				if err != nil {
					return roleParts{}, fmt.Errorf("--cache-cert/--cache-key/--cache-cacert: %w", err)
				}
				if tlsCfg != nil {
					cfg.CacheDialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}
				}
				p, err := shardproxy.New(store, clients, cfg)
				if err != nil {
					return roleParts{}, err
				}
				return roleParts{register: p.Register, ready: p.Ready, drain: p.Close, gatewayAddr: httpAddr, gateway: p.HTTPGatewayWith(gatewayOpts...)}, nil
			})
		},
	}
	fs := cmd.Flags()
	rf.register(fs, "127.0.0.1:7700", "127.0.0.1:7790")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:7701", "HTTP/JSON admin API address (the gRPC API through grpc-gateway, and /v1/tenants/{tenant}/kv/{key}); :7701 listens on every interface; empty disables it")
	d := shardproxy.DefaultConfig()
	fs.IntVar(&cfg.MaxKeyBytes, "max-key-bytes", d.MaxKeyBytes, "largest key a caller may write, in bytes")
	fs.IntVar(&cfg.MaxValueBytes, "max-value-bytes", d.MaxValueBytes, "largest value a caller may write, in bytes")
	fs.Int64Var(&cfg.MaxTTL, "max-ttl", d.MaxTTL, "largest TTL of a put, a lease or a registered instance, in seconds")
	fs.IntVar(&cfg.MaxRangeKeys, "max-range-keys", d.MaxRangeKeys, "most keys one range returns before it is continued")
	fs.IntVar(&cfg.MaxTxnOps, "max-txn-ops", d.MaxTxnOps, "most compares plus ops in one transaction (keep below the shards' --max-txn-ops)")
	fs.Float64Var(&cfg.TenantRPS, "tenant-rps", d.TenantRPS, "requests per second one tenant may make on this proxy; negative: no limit")
	fs.IntVar(&cfg.TenantBurst, "tenant-burst", 0, "requests a tenant may make at once after a quiet spell (0: twice --tenant-rps)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", d.RequestTimeout, "bound of each etcd request the proxy makes on a shard")
	fs.DurationVar(&cfg.HealthInterval, "health-interval", d.HealthInterval, "how often the proxy checks every shard; new tenants go only to shards whose check passed within three intervals")
	fs.DurationVar(&cfg.ShardCheckTimeout, "shard-check-timeout", d.ShardCheckTimeout, "bound of each request of a shard check (the health check, and the Status calls and probe write of 'shard add')")
	cacheKey.register(fs, "cache-api-key", "operator API key the proxy presents to cache nodes to read rollout state (release status, staged plans)")
	fs.StringVar(&cacheTLS.Cert, "cache-cert", "", "client certificate for cache nodes that require one (PEM)")
	fs.StringVar(&cacheTLS.Key, "cache-key", "", "key of --cache-cert (PEM)")
	fs.StringVar(&cacheTLS.CA, "cache-cacert", "", "CA bundle that verifies cache nodes (PEM); setting it, --cache-cert or --cache-key dials them with TLS")
	fs.DurationVar(&cfg.PlanInterval, "plan-interval", d.PlanInterval, "how often this proxy advances staged rollouts; negative: never (another proxy does)")
	return cmd
}
