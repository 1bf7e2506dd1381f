package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/serve"
)

func newCacheCommand(a *app) *cobra.Command {
	var (
		rf        roleFlags
		cfg       cache.Config
		advertise string
		httpAddr  string
		ef        etcdFrontFlags
	)
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Run a cache node: one watch per shard, subscriptions for gateways",
		Long: `Run a cache node against the meta etcd cluster named by --meta-endpoints.
The node watches every shard once, keeps every tenant's state and recent
history in memory, and serves resumable subscriptions. Nodes are stateless
and interchangeable: a token from one is valid on all.`,
		Example: `  confetti cache --meta-endpoints http://10.0.0.1:2379 --listen-addr :7710 --metrics-addr :7791
  confetti cache --config-file cache.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runRole(cmd.Context(), "cache", &rf, func(lg *zap.Logger, store *meta.Store, clients *meta.Clients, reg *prometheus.Registry, authn *auth.Authenticator) (roleParts, error) {
				cfg.Logger = lg.Named("cache")
				cfg.Registerer = reg
				var front *cacheEtcdFront
				if ef.listenAddr != "" {
					var err error
					if front, err = a.newCacheEtcdFront(lg, store, cfg.NodeName, authn, ef); err != nil {
						return roleParts{}, err
					}
					cfg.EtcdAddr = advertiseAddr(ef.advertiseAddr, front.lis.Addr().String())
				}
				c, err := cache.New(store, clients, cfg)
				if err != nil {
					if front != nil {
						front.close()
					}
					return roleParts{}, err
				}
				started := func(addrs serve.Addrs) { c.Advertise(advertiseAddr(advertise, addrs.GRPC)) }
				drain := c.Close
				if front != nil {
					started = func(addrs serve.Addrs) {
						c.Advertise(advertiseAddr(advertise, addrs.GRPC))
						front.start(addrs.GRPC)
					}
					drain = func() { front.close(); c.Close() }
				}
				parts := roleParts{register: c.Register, ready: c.Readiness, degraded: c.Unavailable, drain: drain, started: started, gatewayAddr: httpAddr}
				if httpAddr != "" {
					parts.gateway = func(string) (http.Handler, func(), error) { return c.HTTPHandler(authn), func() {}, nil }
				}
				return parts, nil
			})
		},
	}
	cmd.AddCommand(newCacheStatusCommand(a))
	fs := cmd.Flags()
	rf.register(fs, "127.0.0.1:7710", "127.0.0.1:7791")
	fs.StringVar(&cfg.NodeName, "node-name", "", "name of this node in status and logs (default: the host name)")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:7716", "HTTP address of the Server-Sent Events door (GET /v1/tenants/{tenant}/subscribe); :7716 listens on every interface; empty disables it")
	fs.StringVar(&advertise, "advertise-addr", "", "gRPC address proxies reach this node at, registered in meta for release status (default: the listen address, with the host name when it listens on every interface)")
	fs.IntVar(&cfg.HistoryMaxEvents, "history-max-events", 100000, "events of history kept per shard for resuming subscribers")
	fs.Int64Var(&cfg.HistoryMaxBytes, "history-max-bytes", 64<<20, "bytes of history kept per shard for resuming subscribers")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", 2*time.Second, "longest a subscriber goes without a message: idle ones get a bookmark this often, and clients that hear nothing for 3 intervals fail over (the contract allows at most 10s)")
	fs.IntVar(&cfg.SubscriberQueue, "subscriber-queue", 128, "messages queued per subscription stream; a stream whose client reads slower has its subscriptions caught up from history instead")
	fs.DurationVar(&cfg.SSEWriteTimeout, "sse-write-timeout", 30*time.Second, "longest a Server-Sent Events client may leave a write unread before its connection is closed (it resumes with Last-Event-ID)")
	fs.IntVar(&cfg.MaxSubscriptionsPerTenant, "max-subscriptions-per-tenant", 100000, "open subscriptions of one tenant on this node")
	ef.register(fs)
	fs.IntVar(&cfg.MaxSubscriptionsPerConn, "max-subscriptions-per-conn", 20000, "open subscriptions over one client connection, all its streams together")
	return cmd
}

// cacheEtcdFront binds a cache node's etcd front door, which serves once
// the node's gRPC listener is bound: reads and watches go to that
// listener, writes to the proxies.
type cacheEtcdFront struct {
	a     *app
	lg    *zap.Logger
	store *meta.Store
	lis   net.Listener
	proxy *grpc.ClientConn
	front etcdFront

	mu sync.Mutex
	l  *etcdapi.Listener
}

func (a *app) newCacheEtcdFront(lg *zap.Logger, store *meta.Store, name string, authn *auth.Authenticator, ef etcdFrontFlags) (*cacheEtcdFront, error) {
	if len(ef.proxyEndpoints) == 0 {
		return nil, fmt.Errorf("--etcd-listen-addr needs --etcd-proxy-endpoints: the shard proxies that take the etcd front door's writes")
	}
	if ef.defaultTenant != "" && ef.defaultAPIKey == "" {
		return nil, fmt.Errorf("--etcd-default-tenant needs --etcd-default-api-key: the key its requests are made with")
	}
	proxyConn, err := a.clientConn(ef.proxyEndpoints)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", ef.listenAddr)
	if err != nil {
		proxyConn.Close()
		return nil, fmt.Errorf("etcd front door: %w", err)
	}
	if name == "" {
		name, _ = os.Hostname()
	}
	members := func() []etcdapi.Member {
		var out []etcdapi.Member
		for _, n := range store.Caches() {
			if n.EtcdAddr != "" {
				out = append(out, etcdapi.Member{Name: n.Name, ClientURLs: []string{"http://" + n.EtcdAddr}})
			}
		}
		return out
	}
	return &cacheEtcdFront{a: a, lg: lg, store: store, lis: lis, proxy: proxyConn, front: etcdFront{proxyConn: proxyConn, authn: authn, flags: ef, name: name, members: members, logger: lg.Named("etcdapi")}}, nil
}

// start serves the front door against the node's bound gRPC address.
func (f *cacheEtcdFront) start(grpcAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	key, err := f.store.TokenKey(ctx)
	cancel()
	if err != nil {
		f.lg.Warn("etcd front door: no token key, so its tokens are valid on this node only", zap.Error(err))
	}
	f.front.tokenKey = key
	cacheConn, err := etcdapi.DialPool(etcdapi.CacheConns, func() (*grpc.ClientConn, error) {
		return f.a.clientConn([]string{serve.LoopbackTarget(grpcAddr)})
	})
	if err != nil {
		f.lg.Error("etcd front door", zap.Error(err))
		return
	}
	f.front.cacheConn = cacheConn
	l, err := startEtcdFront(f.front, f.lis)
	if err != nil {
		cacheConn.Close()
		f.lg.Error("etcd front door", zap.Error(err))
		return
	}
	l.OnClose(cacheConn.Close)
	f.mu.Lock()
	f.l = l
	f.mu.Unlock()
	f.lg.Info("etcd front door", zap.String("etcd-listen-addr", l.Addr()))
}

// close stops serving and closes the connections.
func (f *cacheEtcdFront) close() {
	f.mu.Lock()
	l := f.l
	f.mu.Unlock()
	if l != nil {
		l.Close()
	} else {
		f.lis.Close()
	}
	f.proxy.Close()
}

// advertiseAddr is addr, or when empty the bound address with the host
// name in place of an unspecified host.
func advertiseAddr(addr, bound string) string {
	if addr != "" {
		return addr
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			host = name
		}
	}
	return net.JoinHostPort(host, port)
}
