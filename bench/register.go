package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/shardproxy"
)

// RegisterResult is one registration storm: N instances of one service
// registering with a lease each, all at once, as a fleet does when it
// restarts.
type RegisterResult struct {
	Path    string `json:"path"`
	N       int    `json:"n"`
	Proxies int    `json:"proxies,omitempty"`
	// AllMs is the time from the storm's start to the last registration's
	// answer; Latency is of each registration.
	AllMs   float64 `json:"all_ms"`
	Latency Latency `json:"latency"`
	// Leases is how many leases the shard holds after the storm.
	Leases int `json:"leases"`
	// P99VsDirect compares the proxies with registering on etcd itself
	// (a lease grant and a put per instance).
	P99VsDirect float64 `json:"p99_vs_direct,omitempty"`
	AllVsDirect float64 `json:"all_vs_direct,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// registerTTL is the lease TTL of every registration of the storm.
const registerTTL = 30

// runRegisterStorm registers n instances at once straight to etcd (grant
// and put, as an etcd application does), then through two proxies (half
// each, the Register call), on one shard that syncs to disk.
func (h *harness) runRegisterStorm(ctx context.Context, n int) ([]RegisterResult, error) {
	cl, err := startCluster(ctx, 1, true, []string{"storm-direct", "storm-proxy"})
	if err != nil {
		return nil, err
	}
	defer cl.close()
	_, cli, err := cl.shardOf(cl.tenants[0])
	if err != nil {
		return nil, err
	}
	leases := func() int {
		resp, err := cli.Leases(ctx)
		if err != nil {
			return -1
		}
		return len(resp.Leases)
	}
	value := `{"address":"10.0.0.1:8080"}`
	direct := RegisterResult{Path: PathDirect, N: n}
	direct.AllMs, direct.Latency, err = storm(ctx, n, func(ctx context.Context, i int) error {
		g, err := cli.Grant(ctx, registerTTL)
		if err != nil {
			return err
		}
		_, err = cli.Put(ctx, keys.Tenant("storm-direct")+fmt.Sprintf("svc/api/i-%d", i), value, clientv3.WithLease(g.ID))
		return err
	})
	if err != nil {
		return []RegisterResult{direct}, err
	}
	direct.Leases = leases()

	var regs []confettipb.LeasesClient
	for range 2 {
		clients := meta.NewClients(cl.store, nil)
		defer clients.Close()
		p, err := shardproxy.New(cl.store, clients, shardproxy.Config{TenantRPS: -1})
		if err != nil {
			return []RegisterResult{direct}, err
		}
		defer p.Close()
		srv, err := startServer(p.Register, nil)
		if err != nil {
			return []RegisterResult{direct}, err
		}
		defer srv.stop()
		conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return []RegisterResult{direct}, err
		}
		defer conn.Close()
		regs = append(regs, confettipb.NewLeasesClient(conn))
	}
	proxy := RegisterResult{Path: PathProxy, N: n, Proxies: len(regs)}
	before := leases()
	proxy.AllMs, proxy.Latency, err = storm(ctx, n, func(ctx context.Context, i int) error {
		_, err := regs[i%len(regs)].Register(ctx, &confettipb.RegisterRequest{
			Tenant: "storm-proxy", Ttl: registerTTL,
			Instance: &confettipb.Instance{Service: "api", Id: fmt.Sprintf("i-%d", i), Address: "10.0.0.1:8080"},
		})
		return err
	})
	proxy.Leases = leases() - before
	if direct.Latency.P99 > 0 && direct.AllMs > 0 {
		proxy.P99VsDirect, proxy.AllVsDirect = proxy.Latency.P99/direct.Latency.P99, proxy.AllMs/direct.AllMs
	}
	return []RegisterResult{direct, proxy}, err
}

// storm runs n calls of do at once, each on a goroutine of its own, and
// returns the time until the last answered and each call's latency.
func storm(ctx context.Context, n int, do func(ctx context.Context, i int) error) (float64, Latency, error) {
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			start := time.Now()
			errs[i] = do(ctx, i)
			took[i] = time.Since(start)
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	all := float64(time.Since(start).Microseconds()) / 1000
	for i, err := range errs {
		if err != nil {
			return all, Latency{}, fmt.Errorf("bench: registration %d of %d: %w", i, n, err)
		}
	}
	lat, _ := summarizeDurations(took)
	return all, lat, nil
}
