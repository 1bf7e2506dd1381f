package shardproxy

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// ErrRolloutUnavailable is returned when no cache node answered for the
// rollout state of an item's gateways.
var ErrRolloutUnavailable = rpcerr.New(codes.Unavailable, "shardproxy: rollout state unavailable")

const (
	// rolloutTimeout bounds one cache node's answer.
	rolloutTimeout = 5 * time.Second
	// maxNackErrors is how many NACK messages a version's status holds.
	maxNackErrors = 5
)

// RolloutReader reads the rollout state of the gateways subscribed to one
// item of a tenant: one entry per gateway, wherever it is connected.
// Implementations must be safe for concurrent use: Status requests and
// the plan controller call it at the same time.
type RolloutReader interface {
	Rollout(ctx context.Context, tenant, item string) ([]*pb.GatewayRollout, error)
}

// Status counts gateways per version from their ACKs and NACKs.
func (s *releaseService) Status(ctx context.Context, req *pb.ReleaseStatusRequest) (*pb.ReleaseStatus, error) {
	return serve(ctx, s.p, pb.Releases_Status_FullMethodName, req, s.p.releaseStatus)
}

func (p *Proxy) releaseStatus(ctx context.Context, req *pb.ReleaseStatusRequest) (*pb.ReleaseStatus, error) {
	rel, err := p.getRelease(ctx, &pb.GetReleaseRequest{Tenant: req.GetTenant(), Item: req.GetItem()})
	if err != nil {
		return nil, err
	}
	gws, err := p.rollouts.Rollout(ctx, req.GetTenant(), req.GetItem())
	if err != nil {
		return nil, err
	}
	counts := tally(gws)
	// Every version the release names is listed, gateways or not.
	for _, v := range []int64{rel.GetStable(), rel.GetPlan().GetVersion()} {
		if v > 0 {
			countOf(counts, v)
		}
	}
	for _, g := range rel.GetGrays() {
		countOf(counts, g.GetVersion())
	}
	out := &pb.ReleaseStatus{Release: rel, Versions: make([]*pb.VersionStatus, 0, len(counts))}
	for _, vs := range counts {
		out.Versions = append(out.Versions, vs)
	}
	slices.SortFunc(out.Versions, func(a, b *pb.VersionStatus) int { return cmp.Compare(b.GetVersion(), a.GetVersion()) })
	return out, nil
}

// tally counts gateways per version: running, pending and NACKed, with
// the first NACK messages in the order the NACKs arrived.
func tally(gws []*pb.GatewayRollout) map[int64]*pb.VersionStatus {
	counts := map[int64]*pb.VersionStatus{}
	var nacks []*pb.GatewayRollout
	for _, g := range gws {
		vs := countOf(counts, g.GetVersion())
		switch g.GetState() {
		case pb.GatewayRollout_RUNNING:
			vs.Running++
		case pb.GatewayRollout_PENDING:
			vs.Pending++
		case pb.GatewayRollout_NACKED:
			vs.Nacked++
			nacks = append(nacks, g)
		}
	}
	slices.SortFunc(nacks, func(a, b *pb.GatewayRollout) int {
		return cmp.Or(cmp.Compare(a.GetTime(), b.GetTime()), cmp.Compare(a.GetInstanceId(), b.GetInstanceId()))
	})
	for _, g := range nacks {
		if vs := counts[g.GetVersion()]; len(vs.Errors) < maxNackErrors {
			vs.Errors = append(vs.Errors, g.GetInstanceId()+": "+g.GetError())
		}
	}
	return counts
}

func countOf(counts map[int64]*pb.VersionStatus, v int64) *pb.VersionStatus {
	vs, ok := counts[v]
	if !ok {
		vs = &pb.VersionStatus{Version: v}
		counts[v] = vs
	}
	return vs
}

// cacheRollouts is the RolloutReader of a proxy: it asks every cache node
// registered in meta (Cache.Rollout) and merges the answers. A gateway
// seen on several nodes (it moved, and the old node has not noticed yet)
// counts where it connected last. A node that does not answer is skipped,
// logged and counted; only when no node answers is the read an error.
type cacheRollouts struct {
	store    *meta.Store
	dialOpts []grpc.DialOption
	lg       *zap.Logger
	failures *prometheus.CounterVec

	mu sync.Mutex
	// conns holds one connection per cache node address.
	conns map[string]*grpc.ClientConn
}

var _ RolloutReader = (*cacheRollouts)(nil)

func newCacheRollouts(store *meta.Store, cfg Config, failures *prometheus.CounterVec) *cacheRollouts {
	opts := cfg.CacheDialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if cfg.CacheAPIKey != "" {
		opts = append(slices.Clip(opts), auth.WithAPIKey(cfg.CacheAPIKey))
	}
	return &cacheRollouts{store: store, dialOpts: opts, lg: cfg.Logger, failures: failures, conns: map[string]*grpc.ClientConn{}}
}

// Rollout asks every registered cache node in parallel.
func (c *cacheRollouts) Rollout(ctx context.Context, tenant, item string) ([]*pb.GatewayRollout, error) {
	nodes := c.store.Caches()
	conns, err := c.connect(nodes)
	if err != nil {
		return nil, err
	}
	answers := make([][]*pb.GatewayRollout, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, rolloutTimeout)
			defer cancel()
			resp, err := pb.NewCacheClient(conns[i]).Rollout(rctx, &pb.RolloutRequest{Tenant: tenant, Item: item})
			answers[i], errs[i] = resp.GetGateways(), err
		})
	}
	wg.Wait()
	latest := map[string]*pb.GatewayRollout{}
	answered := 0
	for i, n := range nodes {
		if errs[i] != nil {
			c.failures.WithLabelValues(n.Name).Inc()
			c.lg.Warn("cache node did not report rollout state", zap.String("node", n.Name), zap.String("addr", n.Addr), zap.String("tenant", tenant), zap.String("item", item), zap.Error(errs[i]))
			continue
		}
		answered++
		for _, g := range answers[i] {
			prev, ok := latest[g.GetInstanceId()]
			if !ok || g.GetConnectedTime() > prev.GetConnectedTime() {
				latest[g.GetInstanceId()] = g
			}
		}
	}
	if len(nodes) > 0 && answered == 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: none of the %d cache nodes answered for item %q of tenant %q: %v", ErrRolloutUnavailable, len(nodes), item, tenant, errs[0])
	}
	out := make([]*pb.GatewayRollout, 0, len(latest))
	for _, g := range latest {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *pb.GatewayRollout) int { return cmp.Compare(a.GetInstanceId(), b.GetInstanceId()) })
	return out, nil
}

// connect returns a connection per node, dialing new addresses and
// closing those of nodes that are gone.
func (c *cacheRollouts) connect(nodes []meta.CacheNode) ([]*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*grpc.ClientConn, len(nodes))
	live := make(map[string]bool, len(nodes))
	for i, n := range nodes {
		live[n.Addr] = true
		conn, ok := c.conns[n.Addr]
		if !ok {
			var err error
			if conn, err = grpc.NewClient(n.Addr, c.dialOpts...); err != nil {
				return nil, fmt.Errorf("%w: cache node %s at %q: %v", ErrRolloutUnavailable, n.Name, n.Addr, err)
			}
			c.conns[n.Addr] = conn
		}
		out[i] = conn
	}
	for addr, conn := range c.conns {
		if !live[addr] {
			conn.Close()
			delete(c.conns, addr)
		}
	}
	return out, nil
}

// close closes every connection.
func (c *cacheRollouts) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, conn := range c.conns {
		conn.Close()
		delete(c.conns, addr)
	}
}
