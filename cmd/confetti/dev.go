package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/clientconfig"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/etcdauth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/serve"
	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/shardproxy"
)

// readyLine is printed once `confetti dev` serves; scripts wait for it.
const readyLine = "confetti dev is ready"

// devClusters are the embedded etcd clusters of `confetti dev`, in the
// order of their ports: meta at base+20/21, shard-a at base+22/23, ...
var devClusters = []string{"meta", "shard-a", "shard-b", "shard-c"}

// devDemo is what `confetti dev` puts into the demo tenant on first start.
// The gateway routes /hello to the instances of service hello.
var devDemo = []struct{ key, value string }{
	{"/routes/hello", `{"uri":"/hello","upstream_id":"web"}`},
	{"/upstreams/web", `{"type":"roundrobin","service":"hello"}`},
}

// devDemoBefore holds the values earlier versions of dev wrote; a start
// replaces them (and nothing a user wrote).
var devDemoBefore = map[string]string{
	"/routes/hello":  `{"uri":"/hello","upstream":"/upstreams/web"}`,
	"/upstreams/web": `{"nodes":{"127.0.0.1:8080":1},"type":"roundrobin"}`,
}

const devTenant = "demo"

type devFlags struct {
	dataDir     string
	basePort    int
	cacheNodes  int
	logLevel    string
	enablePprof bool
}

// devLayout places every listener of `confetti dev` relative to the base
// port: proxy +0, its HTTP API +1, cache i +10+i, etcd cluster k +20+2k
// (client) and +21+2k (peer), the demo gateway +30 and its backends +31
// and +32, the etcd front door of cache i +40+i, metrics of the proxy +90 and of cache i +91+i. Base 0 lets the
// kernel choose every port.
type devLayout struct {
	base int
}

func (l devLayout) port(offset int) int {
	if l.base == 0 {
		return 0
	}
	return l.base + offset
}

func (l devLayout) addr(offset int) string { return fmt.Sprintf("127.0.0.1:%d", l.port(offset)) }

func (l devLayout) proxy() string             { return l.addr(0) }
func (l devLayout) cache(i int) string        { return l.addr(10 + i) }
func (l devLayout) proxyHTTP() string         { return l.addr(1) }
func (l devLayout) proxyMetrics() string      { return l.addr(90) }
func (l devLayout) cacheMetrics(i int) string { return l.addr(91 + i) }
func (l devLayout) cacheHTTP(i int) string    { return l.addr(16 + i) }
func (l devLayout) gateway() string           { return l.addr(30) }
func (l devLayout) gatewayMetrics() string    { return l.addr(93) }
func (l devLayout) backend(i int) string      { return l.addr(31 + i) }
func (l devLayout) etcdAPI(i int) string      { return l.addr(40 + i) }

func (l devLayout) etcd(k int) []int {
	if l.base == 0 {
		return nil
	}
	return []int{l.port(20 + 2*k), l.port(21 + 2*k)}
}

func newDevCommand(a *app) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole Confetti cluster in this process, on embedded etcd",
		Long: `Run a whole Confetti cluster in this process: embedded etcd clusters for
meta and three shards (shard-a, shard-b, shard-c), a shard proxy and cache
nodes, on fixed loopback ports counted from --base-port. It creates the
tenant "demo" with a couple of keys, writes the client config file so that
the client verbs find the cluster, and prints every endpoint. Data is kept
in --data-dir, so a restart finds it again. Ctrl-C stops everything.`,
		Example: `  confetti dev
  confetti dev --data-dir /tmp/confetti --base-port 17700 --cache-nodes 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runDev(cmd.Context(), f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", "./.confetti-dev", "directory that keeps the etcd data across restarts")
	fs.IntVar(&f.basePort, "base-port", 7700, "first port: proxy +0, proxy HTTP +1, caches +10.., etcd +20..+27, gateway +30, its backends +31..+32, etcd API +40.., metrics +90..; 0 lets the kernel choose every port")
	fs.IntVar(&f.cacheNodes, "cache-nodes", 2, "number of cache nodes (1 to 9)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	fs.BoolVar(&f.enablePprof, "enable-pprof", false, "serve /debug/pprof/ on every metrics address")
	return cmd
}

// devStack runs cleanups in reverse order of registration, once.
type devStack struct {
	mu  sync.Mutex
	fns []func()
}

func (s *devStack) push(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, fn)
}

func (s *devStack) unwind() {
	s.mu.Lock()
	fns := s.fns
	s.fns = nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func (a *app) runDev(ctx context.Context, f devFlags) error {
	if f.cacheNodes < 1 || f.cacheNodes > 9 {
		return fmt.Errorf("--cache-nodes must be between 1 and 9, not %d", f.cacheNodes)
	}
	if f.basePort < 0 || f.basePort+99 > 65535 {
		return fmt.Errorf("--base-port %d leaves no room for the 100 ports dev uses", f.basePort)
	}
	lg, err := newLogger(a.errOut, f.logLevel, true)
	if err != nil {
		return err
	}
	defer lg.Sync()
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "etcd"), 0o700); err != nil {
		return err
	}
	layout := devLayout{base: f.basePort}
	var stack devStack
	defer stack.unwind()

	clusters, err := startDevClusters(ctx, lg, dataDir, layout, &stack)
	if err != nil {
		return err
	}
	secrets, fresh, err := loadDevSecrets(dataDir)
	if err != nil {
		return err
	}
	if err := bootstrapDev(ctx, lg, clusters, secrets, fresh, dataDir); err != nil {
		return err
	}
	metaCluster := clusters[0]
	metaCli, err := etcdauth.New(secrets.etcdConfig(metaCluster.Endpoints()))
	if err != nil {
		return err
	}
	stack.push(func() { metaCli.Close() })
	store, err := meta.New(metaCli, meta.Config{Logger: lg.Named("meta")})
	if err != nil {
		return err
	}
	stack.push(store.Close)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := store.WaitReady(wctx); err != nil {
		return err
	}

	var servers []*serve.Server
	stopServer := func(s *serve.Server) func() {
		return func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Stop(sctx); err != nil {
				lg.Warn("stop", zap.Error(err))
			}
		}
	}

	proxyClients := meta.NewClients(store, secrets.etcdConfig)
	stack.push(proxyClients.Close)
	proxyReg := newRegistry()
	proxyAuth, _, err := devServerOptions(store, lg.Named("proxy-auth"), proxyReg)
	if err != nil {
		return err
	}
	proxy, err := shardproxy.New(store, proxyClients, shardproxy.Config{Logger: lg.Named("proxy"), Registerer: proxyReg, CacheAPIKey: secrets.OperatorKey})
	if err != nil {
		return err
	}
	proxySrv, err := serve.New(serve.Options{
		ServerOptions: proxyAuth,
		ListenAddr:    layout.proxy(),
		MetricsAddr:   layout.proxyMetrics(),
		EnablePprof:   f.enablePprof,
		Registry:      proxyReg,
		Logger:        lg.Named("proxy-serve"),
		Ready:         proxy.Ready,
		Drain:         proxy.Close,
	})
	if err != nil {
		return err
	}
	proxy.Register(proxySrv.GRPC())
	if err := proxySrv.SetGateway(layout.proxyHTTP(), proxy.HTTPGateway); err != nil {
		return err
	}
	proxyAddrs, err := proxySrv.Start()
	stack.push(stopServer(proxySrv))
	if err != nil {
		return err
	}
	servers = append(servers, proxySrv)

	caches := make([]*cache.Cache, f.cacheNodes)
	cacheAddrs := make([]serve.Addrs, f.cacheNodes)
	cacheAuthns := make([]*auth.Authenticator, f.cacheNodes)
	for i := range caches {
		clients := meta.NewClients(store, secrets.etcdConfig)
		stack.push(clients.Close)
		reg := newRegistry()
		cacheAuth, cacheAuthn, err := devServerOptions(store, lg.Named(fmt.Sprintf("cache-%d-auth", i)), reg)
		if err != nil {
			return err
		}
		c, err := cache.New(store, clients, cache.Config{
			Logger:     lg.Named(fmt.Sprintf("cache-%d", i)),
			NodeName:   fmt.Sprintf("dev-cache-%d", i),
			Registerer: reg,
		})
		if err != nil {
			return err
		}
		srv, err := serve.New(serve.Options{
			ServerOptions: cacheAuth,
			ListenAddr:    layout.cache(i),
			MetricsAddr:   layout.cacheMetrics(i),
			EnablePprof:   f.enablePprof,
			Registry:      reg,
			Logger:        lg.Named(fmt.Sprintf("cache-%d-serve", i)),
			Ready:         c.Readiness,
			Degraded:      c.Unavailable,
			Drain:         c.Close,
		})
		if err != nil {
			c.Close()
			return err
		}
		c.Register(srv.GRPC())
		if err := srv.SetGateway(layout.cacheHTTP(i), func(string) (http.Handler, func(), error) { return c.HTTPHandler(cacheAuthn), func() {}, nil }); err != nil {
			return err
		}
		cacheAddrs[i], err = srv.Start()
		stack.push(stopServer(srv))
		if err != nil {
			return err
		}
		c.Advertise(cacheAddrs[i].GRPC)
		caches[i], cacheAuthns[i] = c, cacheAuthn
		servers = append(servers, srv)
	}

	tokenKey, err := store.TokenKey(ctx)
	if err != nil {
		return err
	}
	etcdAddrs, err := startDevEtcdFronts(lg, layout, proxyAddrs.GRPC, cacheAddrs, cacheAuthns, tokenKey, &stack)
	if err != nil {
		return err
	}

	// dev's own calls go to its plaintext proxy with its operator key,
	// whatever the client flags or variables say.
	a.apiKey, a.tls = secrets.OperatorKey, tlsconfig.Files{}
	if err := a.devDemo(ctx, proxyAddrs.GRPC); err != nil {
		return fmt.Errorf("demo tenant: %s", errorMessage(err))
	}
	if secrets.DemoKey, err = ensureDevKey(ctx, store, secrets.DemoKey, devTenant, meta.RoleWriter, "dev-demo"); err != nil {
		return err
	}
	if err := secrets.save(dataDir); err != nil {
		return err
	}
	if err := waitCachesReady(ctx, lg, caches); err != nil {
		return err
	}
	gw, err := a.startDevGateway(ctx, lg, layout, dataDir, proxyAddrs.GRPC, cacheAddrs, secrets.DemoKey, &stack)
	if err != nil {
		return fmt.Errorf("demo gateway: %s", errorMessage(err))
	}

	configPath, err := a.writeDevClientConfig(proxyAddrs, cacheAddrs, secrets.OperatorKey)
	if err != nil {
		return err
	}
	a.printDevBanner(dataDir, clusters, proxyAddrs, cacheAddrs, etcdAddrs, gw, configPath, secrets)

	failed := make(chan error, len(servers))
	done := make(chan struct{})
	defer close(done)
	for _, s := range servers {
		go func() {
			select {
			case err := <-s.Err():
				failed <- err
			case <-done:
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	}
	fmt.Fprintln(a.out, "shutting down...")
	stack.unwind()
	fmt.Fprintln(a.out, "confetti dev stopped")
	return runErr
}

// startDevEtcdFronts serves the etcd front door of every cache node, each
// reading from its node and writing through the proxy, and lists them
// all as the members etcd clients sync their endpoints from.
func startDevEtcdFronts(lg *zap.Logger, layout devLayout, proxyAddr string, caches []serve.Addrs, authns []*auth.Authenticator, tokenKey []byte, stack *devStack) ([]string, error) {
	addrs := make([]string, len(caches))
	members := make([]etcdapi.Member, len(caches))
	var mu sync.Mutex
	list := func() []etcdapi.Member {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(members)
	}
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	for i, c := range caches {
		cacheConn, err := etcdapi.DialPool(etcdapi.CacheConns, func() (*grpc.ClientConn, error) { return dial(c.GRPC) })
		if err != nil {
			return nil, err
		}
		stack.push(cacheConn.Close)
		proxyConn, err := dial(proxyAddr)
		if err != nil {
			return nil, err
		}
		stack.push(func() { proxyConn.Close() })
		name := fmt.Sprintf("dev-cache-%d", i)
		lis, err := net.Listen("tcp", layout.etcdAPI(i))
		if err != nil {
			return nil, fmt.Errorf("etcd front door: %w (is another 'confetti dev' running? try --base-port)", err)
		}
		l, err := startEtcdFront(etcdFront{
			cacheConn: cacheConn, proxyConn: proxyConn, authn: authns[i],
			flags: etcdFrontFlags{clusterName: "confetti-dev"}, name: name, members: list, logger: lg.Named(name + "-etcdapi"), tokenKey: tokenKey,
		}, lis)
		if err != nil {
			return nil, err
		}
		stack.push(l.Close)
		addrs[i] = l.Addr()
		mu.Lock()
		members[i] = etcdapi.Member{Name: name, ClientURLs: []string{"http://" + l.Addr()}}
		mu.Unlock()
	}
	return addrs, nil
}

// startDevClusters starts the meta and shard clusters in parallel, with
// their data under dataDir/etcd/<name>, and registers their Close on
// stack (shards stop before meta).
func startDevClusters(ctx context.Context, lg *zap.Logger, dataDir string, layout devLayout, stack *devStack) ([]*embedetcd.Cluster, error) {
	etcdLog := lg.Named("etcd")
	if !lg.Core().Enabled(zap.DebugLevel) {
		// etcd logs its own shutdown as errors; below debug, show only
		// errors while it runs and nothing once it is stopping.
		level := zap.NewAtomicLevelAt(zap.ErrorLevel)
		etcdLog = etcdLog.WithOptions(zap.IncreaseLevel(level))
		defer stack.push(func() { level.SetLevel(zap.FatalLevel) })
	}
	clusters := make([]*embedetcd.Cluster, len(devClusters))
	errs := make([]error, len(devClusters))
	var wg sync.WaitGroup
	for k, name := range devClusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[k], errs[k] = embedetcd.Start(ctx, embedetcd.Config{
				Name:    name,
				DataDir: filepath.Join(dataDir, "etcd", name),
				Ports:   layout.etcd(k),
				Logger:  etcdLog,
			})
		}()
	}
	wg.Wait()
	for _, c := range clusters {
		if c != nil {
			stack.push(func() { c.Close() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w (is another 'confetti dev' running? try --base-port)", err)
	}
	return clusters, nil
}

// devDemo creates the demo tenant and its keys through the proxy. Both
// steps keep what a previous run left: an existing tenant is fine, and a
// key is written only if it does not exist.
func (a *app) devDemo(ctx context.Context, proxyAddr string) error {
	cc, err := a.dial(ctx, "shard proxy", "endpoints", []string{proxyAddr})
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := pb.NewTenantsClient(cc).CreateTenant(ctx, &pb.CreateTenantRequest{Name: devTenant}); err != nil && status.Code(err) != codes.AlreadyExists {
		return err
	}
	kv := pb.NewKVClient(cc)
	for _, d := range devDemo {
		_, err := kv.Put(ctx, &pb.PutRequest{Tenant: devTenant, Key: d.key, Value: []byte(d.value), ExpectedModRevision: proto.Int64(0)})
		if status.Code(err) == codes.FailedPrecondition {
			err = upgradeDevDemoKey(ctx, kv, d.key, d.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// upgradeDevDemoKey replaces a demo key that still holds what an earlier
// version of dev wrote.
func upgradeDevDemoKey(ctx context.Context, kv pb.KVClient, key, value string) error {
	resp, err := kv.Range(ctx, &pb.RangeRequest{Tenant: devTenant, Key: key})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != devDemoBefore[key] {
		return err
	}
	_, err = kv.Put(ctx, &pb.PutRequest{Tenant: devTenant, Key: key, Value: []byte(value), ExpectedModRevision: proto.Int64(resp.Kvs[0].ModRevision)})
	if status.Code(err) == codes.FailedPrecondition {
		return nil
	}
	return err
}

// waitCachesReady waits until every cache node is ready: it has synced
// every shard it can reach. A shard a node cannot reach does not hold it
// up; it is logged, and only that shard's tenants are unavailable.
func waitCachesReady(ctx context.Context, lg *zap.Logger, caches []*cache.Cache) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var errs []error
		for i, c := range caches {
			if err := c.Readiness(); err != nil {
				errs = append(errs, fmt.Errorf("cache %d: %w", i, err))
			}
		}
		if len(errs) == 0 {
			for i, c := range caches {
				for _, line := range c.Unavailable() {
					lg.Warn("cache node serves without a shard", zap.Int("cache", i), zap.String("reason", line))
				}
			}
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("cache nodes not ready: %w", errors.Join(errs...))
		}
	}
}

// writeDevClientConfig points the client config file at this cluster,
// with its operator key, keeping the file's other settings.
func (a *app) writeDevClientConfig(proxy serve.Addrs, caches []serve.Addrs, apiKey string) (string, error) {
	path, err := clientconfig.Resolve(a.clientConfig)
	if err != nil {
		return "", err
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		return "", fmt.Errorf("%w (fix or remove it, or pass --client-config)", err)
	}
	cfg.Endpoints = []string{proxy.GRPC}
	cfg.APIKey = apiKey
	cfg.CacheEndpoints = nil
	for _, c := range caches {
		cfg.CacheEndpoints = append(cfg.CacheEndpoints, c.GRPC)
	}
	if err := clientconfig.Save(path, cfg); err != nil {
		return "", err
	}
	return path, nil
}

func (a *app) printDevBanner(dataDir string, clusters []*embedetcd.Cluster, proxy serve.Addrs, caches []serve.Addrs, etcdAddrs []string, gw devGateway, configPath string, secrets *devSecrets) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nconfetti dev: a whole cluster in this process, data in %s\n\n", dataDir)
	row := func(name, addr, note string) {
		fmt.Fprintf(&b, "  %-15s %-28s %s\n", name, addr, note)
	}
	for k, name := range devClusters {
		note := "etcd shard"
		if k == 0 {
			note = "etcd meta: shard registry and placement"
		}
		row("etcd "+name, strings.Join(clusters[k].Endpoints(), ","), note)
	}
	row("shard proxy", proxy.GRPC, "gRPC: Tenants, Shards, KV, Leases, Releases")
	row("proxy HTTP", "http://"+proxy.Gateway, "HTTP/JSON: /v1/tenants, /v1/tenants/{tenant}/kv/{key}, ...")
	for i, c := range caches {
		row(fmt.Sprintf("cache %d", i), c.GRPC, "gRPC: Cache (Subscribe, SubscribeMany, Range, Status)")
		row(fmt.Sprintf("cache %d SSE", i), "http://"+c.Gateway, "Server-Sent Events: GET /v1/tenants/{tenant}/subscribe")
		row(fmt.Sprintf("cache %d etcd", i), etcdAddrs[i], "etcd v3 API and /v3 JSON: user = tenant, password = API key")
	}
	row("gateway", "http://"+gw.addr, "HTTP: routes of tenant demo, /__confetti/status")
	for i, addr := range gw.backends {
		row(fmt.Sprintf("backend b-%d", i+1), "http://"+addr, "service hello of tenant demo, behind /hello")
	}
	row("proxy metrics", "http://"+proxy.Metrics, "/metrics /healthz /readyz")
	for i, c := range caches {
		row(fmt.Sprintf("cache %d metrics", i), "http://"+c.Metrics, "/metrics /healthz /readyz")
	}
	row("gateway metrics", "http://"+gw.metrics, "/metrics /healthz /readyz")
	fmt.Fprintf(&b, "\n  client config   %s\n", configPath)
	fmt.Fprintf(&b, "  operator key    %s\n                  (in the client config file: every verb uses it)\n", secrets.OperatorKey)
	fmt.Fprintf(&b, "  demo key        %s\n                  (writer of tenant %q)\n", secrets.DemoKey, devTenant)
	fmt.Fprintf(&b, "  etcd user       %s, password in %s\n", devEtcdUser, filepath.Join(dataDir, devSecretsFile))
	fmt.Fprintf(&b, "\nTenant %q holds", devTenant)
	for i, d := range devDemo {
		if i > 0 {
			b.WriteString(" and")
		}
		fmt.Fprintf(&b, " %s", d.key)
	}
	b.WriteString(". Try, in another terminal:\n\n")
	for _, c := range []string{
		"confetti tenant create acme",
		`confetti kv put --tenant acme /routes/1 '{"uri":"/hello"}'`,
		"confetti kv watch --tenant acme /routes/ --count 1",
		"confetti kv get --tenant acme /routes/ --prefix",
		"confetti tenant list",
	} {
		fmt.Fprintf(&b, "  %s\n", c)
	}
	if proxy.Gateway != "" {
		fmt.Fprintf(&b, "  curl -H 'X-API-Key: %s' http://%s/v1/tenants/%s/kv/%s\n", secrets.DemoKey, proxy.Gateway, devTenant, devDemo[0].key)
	}
	fmt.Fprintf(&b, "  etcdctl --endpoints %s --user %s:%s get /routes/ --prefix\n", etcdAddrs[0], devTenant, secrets.DemoKey)
	fmt.Fprintf(&b, "  curl http://%s/hello               (the gateway, round-robin over b-1 and b-2)\n", gw.addr)
	b.WriteString("  confetti demo-backend --tenant demo hello b-3 --ttl 3 &   (kill -9 it: traffic moves away)\n")
	b.WriteString("\nCtrl-C stops everything; the data stays for the next start.\n")
	b.WriteString(readyLine + "\n")
	fmt.Fprint(a.out, b.String())
}
