package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// Config configures a Proxy. Zero values mean the documented defaults.
type Config struct {
	// Logger receives the proxy's logs. Nil means no logs.
	Logger *zap.Logger `json:"-" yaml:"-"`
	// Registerer receives the proxy's metrics. Nil means they are not
	// registered anywhere.
	Registerer prometheus.Registerer `json:"-" yaml:"-"`
	// MaxKeyBytes caps the size of a caller's key, without the tenant
	// prefix the proxy adds. Zero means 4096.
	MaxKeyBytes int `json:"max-key-bytes" yaml:"max-key-bytes"`
	// MaxValueBytes caps the size of a value. Zero means 1 MiB. Keep it
	// below the shards' --max-request-bytes (1.5 MiB by default), which
	// must also hold the key and the request's framing.
	MaxValueBytes int `json:"max-value-bytes" yaml:"max-value-bytes"`
	// MaxTTL caps the TTL, in seconds, of a put with a TTL, a granted
	// lease and a registered instance. Zero means 86400 (one day). The
	// shard may raise a very short TTL to its own minimum lease TTL.
	MaxTTL int64 `json:"max-ttl" yaml:"max-ttl"`
	// MaxRangeKeys caps the number of keys one Range returns: a request
	// with no limit or a larger one gets at most this many, with more set,
	// and continues from the last key. Zero means 10000. gRPC's message
	// size limit still applies to the reply as a whole.
	MaxRangeKeys int `json:"max-range-keys" yaml:"max-range-keys"`
	// MaxTxnOps caps the compares plus ops of one transaction. Zero means
	// 64; keep it at most the shards' --max-txn-ops (128 by default), since
	// the proxy adds one compare (and one per distinct lease the puts
	// attach) and wraps the request.
	MaxTxnOps int `json:"max-txn-ops" yaml:"max-txn-ops"`
	// TenantRPS is how many requests per second one tenant may make on
	// this proxy, on average (a token bucket); over it, requests fail with
	// ResourceExhausted (HTTP 429) saying when to retry. Zero means 2000;
	// negative means no limit.
	TenantRPS float64 `json:"tenant-rps" yaml:"tenant-rps"`
	// TenantBurst is the bucket's size: how many requests a tenant may
	// make at once after a quiet spell. Zero means twice TenantRPS (at
	// least 1).
	TenantBurst int `json:"tenant-burst" yaml:"tenant-burst"`
	// RequestTimeout bounds each etcd request the proxy makes on a shard;
	// when it fires the shard is reported unavailable. Zero means 10
	// seconds.
	RequestTimeout time.Duration `json:"request-timeout" yaml:"request-timeout"`
	// CacheAPIKey is the API key the proxy presents to cache nodes when
	// it asks them for the rollout state of gateways (Releases.Status and
	// staged plans): an operator key. Empty sends none, for cache nodes
	// that run without auth.
	CacheAPIKey string `json:"cache-api-key" yaml:"cache-api-key"`
	// CacheDialOptions are the gRPC dial options for cache nodes, such as
	// their transport credentials. Nil means plaintext.
	CacheDialOptions []grpc.DialOption `json:"-" yaml:"-"`
	// Rollouts reads the rollout state of gateways. Nil means asking every
	// cache node registered in meta.
	Rollouts RolloutReader `json:"-" yaml:"-"`
	// HealthInterval is how often the proxy checks every shard (a
	// linearizable one-key read; for a pending shard, the check AddShard
	// makes). Placement takes only shards whose last check passed within
	// three intervals plus ShardCheckTimeout. Zero means 2 seconds.
	HealthInterval time.Duration `json:"health-interval" yaml:"health-interval"`
	// ShardCheckTimeout bounds each request of a shard check: the health
	// check, and the Status call per endpoint and the probe write, read
	// and delete of AddShard. Zero means 3 seconds.
	ShardCheckTimeout time.Duration `json:"shard-check-timeout" yaml:"shard-check-timeout"`
	// PlanInterval is how often the plan controller checks running staged
	// rollouts. Zero means 1 second; negative disables the controller in
	// this proxy (plans then advance only where another proxy runs it).
	PlanInterval time.Duration `json:"plan-interval" yaml:"plan-interval"`
	// Now is the clock of versions, the release log and staged plans. Nil
	// means time.Now.
	Now func() time.Time `json:"-" yaml:"-"`
}

// DefaultConfig is the configuration zero fields of Config stand for.
func DefaultConfig() Config {
	return Config{
		MaxKeyBytes:       4096,
		MaxValueBytes:     1 << 20,
		MaxTTL:            86400,
		MaxRangeKeys:      10000,
		MaxTxnOps:         64,
		TenantRPS:         2000,
		RequestTimeout:    10 * time.Second,
		HealthInterval:    2 * time.Second,
		ShardCheckTimeout: 3 * time.Second,
		PlanInterval:      time.Second,
	}
}

// withDefaults fills zero fields from defaultConfig and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = d.MaxKeyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = d.MaxValueBytes
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = d.MaxTTL
	}
	if c.MaxRangeKeys == 0 {
		c.MaxRangeKeys = d.MaxRangeKeys
	}
	if c.TenantRPS == 0 {
		c.TenantRPS = d.TenantRPS
	}
	if c.TenantBurst == 0 {
		c.TenantBurst = max(1, int(2*c.TenantRPS))
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = d.MaxTxnOps
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = d.HealthInterval
	}
	if c.ShardCheckTimeout == 0 {
		c.ShardCheckTimeout = d.ShardCheckTimeout
	}
	if c.PlanInterval == 0 {
		c.PlanInterval = d.PlanInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var errs []error
	if c.MaxKeyBytes < 0 {
		errs = append(errs, fmt.Errorf("max key bytes %d must not be negative", c.MaxKeyBytes))
	}
	if c.MaxValueBytes < 0 {
		errs = append(errs, fmt.Errorf("max value bytes %d must not be negative", c.MaxValueBytes))
	}
	if c.MaxTTL < 0 {
		errs = append(errs, fmt.Errorf("max ttl %d must not be negative", c.MaxTTL))
	}
	if c.MaxRangeKeys < 0 {
		errs = append(errs, fmt.Errorf("max range keys %d must not be negative", c.MaxRangeKeys))
	}
	if c.TenantBurst < 0 {
		errs = append(errs, fmt.Errorf("tenant burst %d must not be negative", c.TenantBurst))
	}
	if c.MaxTxnOps < 0 {
		errs = append(errs, fmt.Errorf("max txn ops %d must not be negative", c.MaxTxnOps))
	}
	if c.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s must not be negative", c.RequestTimeout))
	}
	if c.HealthInterval < 0 {
		errs = append(errs, fmt.Errorf("health interval %s must not be negative", c.HealthInterval))
	}
	if c.ShardCheckTimeout < 0 {
		errs = append(errs, fmt.Errorf("shard check timeout %s must not be negative", c.ShardCheckTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("shardproxy: invalid config: %w", err)
	}
	return c, nil
}

// Proxy serves the tenant-scoped API over the shards of a meta.Store. It
// holds no state of its own: placement comes from the store, connections
// from the client set. Its methods are safe for concurrent use.
type Proxy struct {
	store   *meta.Store
	clients *meta.Clients
	cfg     Config
	lg      *zap.Logger
	metrics *metrics
	limits  *tenantLimits
	// keepalives multiplexes lease renewals over one stream per shard;
	// owners caches verified lease bindings (leases.go).
	keepalives *keepAlives
	owners     *leaseOwners
	// now is Config.Now; schemas caches compiled JSON Schemas (items.go);
	// rollouts reads gateways' rollout state and plans advances staged
	// rollouts (plan.go).
	now      func() time.Time
	schemas  *schemas
	rollouts RolloutReader
	plans    *planController
	// health is the proxy's view of which shards answer (health.go).
	health *shardHealth
}

// New returns a Proxy routing by store through clients. The caller keeps
// ownership of both and closes them after the gRPC server stops. Close
// the Proxy as the server drains (it ends the KeepAlive streams, which
// never end by themselves), before closing clients.
func New(store *meta.Store, clients *meta.Clients, cfg Config) (*Proxy, error) {
	if store == nil {
		return nil, errors.New("shardproxy: nil meta store")
	}
	if clients == nil {
		return nil, errors.New("shardproxy: nil shard clients")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Proxy{store: store, clients: clients, cfg: cfg, lg: cfg.Logger, limits: newTenantLimits(cfg.TenantRPS, cfg.TenantBurst)}
	p.health = newShardHealth(p)
	if p.metrics, err = newMetrics(cfg.Registerer, store, p.health); err != nil {
		return nil, fmt.Errorf("shardproxy: register metrics: %w", err)
	}
	if err := p.startLeases(); err != nil {
		return nil, err
	}
	if err := p.startReleases(); err != nil {
		p.keepalives.close()
		return nil, err
	}
	p.health.start()
	return p, nil
}

// Register registers every gRPC service of api/confettipb that the proxy
// serves: Tenants, Shards, KV, Leases and Releases.
func (p *Proxy) Register(s *grpc.Server) {
	pb.RegisterTenantsServer(s, &tenantService{p: p})
	pb.RegisterShardsServer(s, &shardService{p: p})
	pb.RegisterKVServer(s, &kvService{p: p})
	pb.RegisterLeasesServer(s, &leaseService{p: p})
	pb.RegisterReleasesServer(s, &releaseService{p: p})
}

// Ready reports whether the proxy can route: nil once the meta store has
// loaded the shard registry and placement table, else why not.
func (p *Proxy) Ready() error {
	if !p.store.Ready() {
		return fmt.Errorf("%w: placement not loaded from meta yet", meta.ErrUnavailable)
	}
	return nil
}

// route is where one tenant's request goes: the tenant's placement and the
// client of its shard.
type route struct {
	tenant meta.Tenant
	cli    *clientv3.Client
}

// header is the response header of a reply served at the shard revision
// of h.
func (r route) header(h *etcdserverpb.ResponseHeader) *pb.ResponseHeader {
	out := &pb.ResponseHeader{Tenant: r.tenant.Name, Shard: r.tenant.Shard, Epoch: r.tenant.Epoch}
	if h != nil {
		out.Revision = h.Revision
	}
	return out
}

// route finds the shard of tenant.
func (p *Proxy) route(ctx context.Context, tenant string) (route, error) {
	if err := keys.ValidName("tenant", tenant); err != nil {
		return route{}, err
	}
	t, err := p.store.LookupTenant(ctx, tenant)
	if err != nil {
		return route{}, err
	}
	cli, err := p.clients.Get(t.Shard)
	if err != nil {
		return route{}, shardError(ctx, t.Shard, err)
	}
	return route{tenant: t, cli: cli}, nil
}

// etcdCtx bounds one etcd request by the configured timeout and makes it
// fail fast on a shard without a leader instead of waiting for one.
func (p *Proxy) etcdCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	return clientv3.WithRequireLeader(ctx), cancel
}

// serve runs one unary RPC: fn does the work, and serve turns its error
// into a gRPC status, counts the request and logs failures that are not
// the caller's doing. It is the one place where errors become codes.
func serve[Req, Resp any](ctx context.Context, p *Proxy, fullMethod string, req Req, fn func(context.Context, Req) (Resp, error)) (Resp, error) {
	start := time.Now()
	var resp Resp
	var err error
	if t, ok := any(req).(interface{ GetTenant() string }); ok && t.GetTenant() != "" {
		err = p.limits.allow(t.GetTenant())
	}
	if err == nil {
		resp, err = fn(ctx, req)
	}
	err = p.finish(fullMethod, start, err)
	if t, ok := any(req).(interface{ GetTenant() string }); ok {
		p.observeShard(t.GetTenant(), err)
	}
	if err != nil {
		var zero Resp
		return zero, err
	}
	return resp, nil
}

// observeShard counts a finished request of tenant against the shard the
// tenant is placed on; requests of unknown tenants count nowhere.
func (p *Proxy) observeShard(tenant string, err error) {
	if tenant == "" {
		return
	}
	if t, ok := p.store.Tenant(tenant); ok {
		p.metrics.shardRequests.WithLabelValues(t.Shard, status.Code(err).String()).Inc()
	}
}

// finish converts err to a gRPC status and records the request.
func (p *Proxy) finish(fullMethod string, start time.Time, err error) error {
	err = rpcerr.Status(err)
	code := status.Code(err)
	method := methodName(fullMethod)
	p.metrics.observe(method, code, time.Since(start))
	switch code {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss, codes.ResourceExhausted:
		p.lg.Warn("request failed", zap.String("method", method), zap.String("code", code.String()), zap.Error(err))
	}
	return err
}

// methodName turns a full gRPC method name ("/confetti.v1.KV/Put") into the
// short form used in metrics and messages ("KV.Put").
func methodName(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		svc := s[:i]
		if j := strings.LastIndexByte(svc, '.'); j >= 0 {
			svc = svc[j+1:]
		}
		return svc + "." + s[i+1:]
	}
	return s
}
