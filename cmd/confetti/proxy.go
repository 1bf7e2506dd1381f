package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/shardproxy"
)

func newProxyCommand(a *app) *cobra.Command {
	var (
		rf  roleFlags
		cfg shardproxy.Config
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run a shard proxy: tenant placement and the tenant-scoped KV, lease and release API",
		Long: `Run a shard proxy against the meta etcd cluster named by --meta-endpoints.
The proxy is stateless: run several behind one address. It reads the shard
registry and placement table from meta and routes each tenant's requests
to its shard.`,
		Example: `  confetti proxy --meta-endpoints http://10.0.0.1:2379 --listen-addr :7700 --metrics-addr :7790
  confetti proxy --config-file proxy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runRole(cmd.Context(), "proxy", &rf, func(lg *zap.Logger, store *meta.Store, clients *meta.Clients, reg *prometheus.Registry) (roleParts, error) {
				cfg.Logger = lg.Named("proxy")
				cfg.Registerer = reg
				p, err := shardproxy.New(store, clients, cfg)
				if err != nil {
					return roleParts{}, err
				}
				return roleParts{register: p.Register, ready: func() error { return nil }}, nil
			})
		},
	}
	fs := cmd.Flags()
	rf.register(fs, ":7700", ":7790")
	fs.IntVar(&cfg.MaxKeyBytes, "max-key-bytes", 4096, "largest key a caller may write, in bytes")
	fs.IntVar(&cfg.MaxValueBytes, "max-value-bytes", 1<<20, "largest value a caller may write, in bytes")
	fs.Int64Var(&cfg.MaxTTL, "max-ttl", 86400, "largest TTL of a put, in seconds")
	fs.IntVar(&cfg.MaxRangeKeys, "max-range-keys", 10000, "most keys one range returns before it is continued")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 10*time.Second, "bound of each etcd request the proxy makes on a shard")
	return cmd
}
