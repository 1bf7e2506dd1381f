package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// Leases are granted on the tenant's shard and bound to the tenant by an
// owner key (keys.LeaseOwner) attached to the lease and written in the
// same fenced transaction as the lease's first use: Grant, KV.Put with a
// ttl, Register. The owner key lives exactly as long as the lease, under
// exactly one tenant, and outside the namespaces subscribers see. Every
// write that attaches an existing lease compares the owner key's lease
// inside its transaction, so another tenant's lease (or one granted around
// the proxy) is refused atomically; Revoke, TimeToLive and KeepAlive check
// the owner key before acting.

const (
	// ownerCacheTTL is how long a lease found bound to a tenant is trusted
	// without a new lookup, for keepalives.
	ownerCacheTTL = 10 * time.Second
	// ownerCacheMax bounds the number of bindings remembered.
	ownerCacheMax = 100000
)

// leaseService serves the Leases service.
type leaseService struct {
	pb.UnimplementedLeasesServer
	p *Proxy
}

var _ pb.LeasesServer = (*leaseService)(nil)

// Grant grants a lease of ttl seconds, bound to the tenant, on its shard.
func (s *leaseService) Grant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return serve(ctx, s.p, pb.Leases_Grant_FullMethodName, req, s.p.grant)
}

// Revoke revokes one of the tenant's leases, deleting every key attached
// to it.
func (s *leaseService) Revoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return serve(ctx, s.p, pb.Leases_Revoke_FullMethodName, req, s.p.revoke)
}

// TimeToLive reports one of the tenant's leases: remaining and granted
// TTL and, on request, its keys relative to the tenant (kv/<key>,
// svc/<service>/<instance>).
func (s *leaseService) TimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return serve(ctx, s.p, pb.Leases_TimeToLive_FullMethodName, req, s.p.timeToLive)
}

// KeepAlive renews the leases a caller names, one answer per request, in
// order, over the proxy's one keepalive stream per shard. An expired or
// unknown lease is answered with ttl 0; another tenant's lease ends the
// stream with PermissionDenied.
func (s *leaseService) KeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	start := time.Now()
	return s.p.finish(pb.Leases_KeepAlive_FullMethodName, start, s.p.keepAlive(stream))
}

// startLeases sets up what the proxy's leases need: the shard keepalive
// streams and the cache of verified lease bindings.
func (p *Proxy) startLeases() error {
	streams := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "confetti",
		Subsystem: "proxy",
		Name:      "keepalive_streams",
		Help:      "Lease keepalive streams open from the shard proxy to each shard: at most one per shard, whatever the number of callers.",
	}, []string{"shard"})
	if p.cfg.Registerer != nil {
		var err error
		if streams, err = register(p.cfg.Registerer, streams); err != nil {
			return fmt.Errorf("shardproxy: register metrics: %w", err)
		}
	}
	p.keepalives = newKeepAlives(p.clients.Get, p.cfg.RequestTimeout, p.lg, streams)
	p.owners = newLeaseOwners(ownerCacheTTL, ownerCacheMax, time.Now)
	return nil
}

// Close stops the plan controller, closes the connections to cache nodes,
// ends every KeepAlive stream the proxy serves (callers reconnect,
// to another proxy if this one is going away) and its keepalive streams to
// the shards, and waits for its goroutines. Use it as the gRPC server's
// drain step; unary RPCs are unaffected. Calling Close again does nothing.
func (p *Proxy) Close() {
	p.keepalives.close()
	p.stopReleases()
	p.health.close()
}

func (p *Proxy) grant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := p.checkLeaseTTL(req.GetTtl()); err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	g, err := p.grantLease(ctx, r, req.GetTtl())
	if err != nil {
		return nil, err
	}
	txn, err := p.guardedWrite(ctx, r, writeGuard{}, ownerPut(tenant, int64(g.ID)))
	if err != nil {
		if errors.Is(err, ErrTenantMoving) {
			p.revokeUnused(ctx, r, g.ID)
		}
		return nil, err
	}
	return &pb.LeaseGrantResponse{Header: r.header(txn.Header), Id: int64(g.ID), Ttl: g.TTL}, nil
}

// checkLeaseTTL enforces the bounds of a new lease's TTL.
func (p *Proxy) checkLeaseTTL(ttl int64) error {
	if ttl < 1 || ttl > p.cfg.MaxTTL {
		return fmt.Errorf("%w: ttl %d is outside [1, %d] seconds (the shard may raise a very short ttl to its minimum)", ErrInvalidTTL, ttl, p.cfg.MaxTTL)
	}
	return nil
}

// checkLeaseID refuses a lease id that cannot name a lease of tenant.
func checkLeaseID(tenant string, id int64) error {
	if id <= 0 {
		return fmt.Errorf("%w: lease id %d must be positive: use an id that `confetti lease grant --tenant %s TTL` printed", ErrInvalidRequest, id, tenant)
	}
	return nil
}

// grantLease grants a lease on the tenant's shard. The caller binds it to
// the tenant with ownerPut in its first write.
func (p *Proxy) grantLease(ctx context.Context, r route, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	g, err := r.cli.Grant(ectx, ttl)
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	return g, nil
}

// ownerPut is the op that binds lease id to tenant; it belongs in the
// transaction of the lease's first write.
func ownerPut(tenant string, id int64) clientv3.Op {
	return clientv3.OpPut(keys.LeaseOwner(tenant, id), "", clientv3.WithLease(clientv3.LeaseID(id)))
}

// leaseRoute checks a lease request's tenant and lease id and routes it.
func (p *Proxy) leaseRoute(ctx context.Context, tenant string, id int64) (route, error) {
	if err := checkLeaseID(tenant, id); err != nil {
		return route{}, err
	}
	return p.route(ctx, tenant)
}

func (p *Proxy) revoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	tenant, id := req.GetTenant(), req.GetId()
	r, err := p.leaseRoute(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	// etcd cannot revoke inside a transaction: the fence and the binding
	// are read together just before.
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	check, err := r.cli.Txn(ectx).Then(
		clientv3.OpGet(keys.Fence(tenant), clientv3.WithCountOnly()),
		clientv3.OpGet(keys.LeaseOwner(tenant, id)),
	).Commit()
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if check.Responses[0].GetResponseRange().GetCount() > 0 {
		return nil, errMoving(r)
	}
	if !bound(check.Responses[1].GetResponseRange().GetKvs(), id) {
		return nil, p.leaseRefused(ctx, r, id)
	}
	resp, err := r.cli.Revoke(ectx, clientv3.LeaseID(id))
	p.owners.forget(leaseRef{shard: r.tenant.Shard, tenant: tenant, id: id})
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	return &pb.LeaseRevokeResponse{Header: r.header(resp.Header)}, nil
}

func (p *Proxy) timeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	tenant, id := req.GetTenant(), req.GetId()
	r, err := p.leaseRoute(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	// The attached keys tell in the same answer whether the lease is the
	// tenant's: its owner key is one of them.
	resp, err := r.cli.TimeToLive(ectx, clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	out := &pb.LeaseTimeToLiveResponse{Header: r.header(resp.ResponseHeader), Id: id, Ttl: -1}
	if resp.TTL < 0 {
		return out, nil
	}
	owner := keys.LeaseOwner(tenant, id)
	owned := false
	var attached []string
	for _, k := range resp.Keys {
		if string(k) == owner {
			owned = true
			continue
		}
		if t, rel, ok := keys.Split(string(k)); ok && t == tenant && keys.Visible(rel) {
			attached = append(attached, rel)
		}
	}
	if !owned {
		return nil, errNotOwned(r, id)
	}
	out.Ttl, out.GrantedTtl = resp.TTL, resp.GrantedTTL
	if req.GetKeys() {
		out.Keys = attached
	}
	return out, nil
}

// keepAlive serves one caller's KeepAlive stream: each request is checked
// and renewed in turn, and answered before the next is read.
func (p *Proxy) keepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	ctx := stream.Context()
	reqs := make(chan *pb.LeaseKeepAliveRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-p.keepalives.ctx.Done():
			return fmt.Errorf("%w; open a new keepalive stream, to another proxy if this one is gone", ErrClosing)
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			resp, err := p.keepAliveOnce(ctx, req)
			if err != nil {
				return err
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

func (p *Proxy) keepAliveOnce(ctx context.Context, req *pb.LeaseKeepAliveRequest) (*pb.LeaseKeepAliveResponse, error) {
	tenant, id := req.GetTenant(), req.GetId()
	r, err := p.leaseRoute(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	ref := leaseRef{shard: r.tenant.Shard, tenant: tenant, id: id}
	if err := p.checkOwner(ctx, r, ref); err != nil {
		if errors.Is(err, ErrLeaseNotFound) {
			return &pb.LeaseKeepAliveResponse{Header: r.header(nil), Id: id}, nil
		}
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	rn, err := p.keepalives.renew(rctx, r.tenant.Shard, id)
	if err != nil {
		if errors.Is(err, ErrClosing) {
			return nil, err
		}
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if rn.ttl <= 0 {
		p.owners.forget(ref)
	}
	return &pb.LeaseKeepAliveResponse{Header: r.header(&etcdserverpb.ResponseHeader{Revision: rn.revision}), Id: id, Ttl: rn.ttl}, nil
}

// checkOwner returns nil when the lease of ref is bound to its tenant, else
// why not (see leaseRefused). A binding found is trusted for
// ownerCacheTTL.
func (p *Proxy) checkOwner(ctx context.Context, r route, ref leaseRef) error {
	if p.owners.has(ref) {
		return nil
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.LeaseOwner(ref.tenant, ref.id))
	if err != nil {
		return shardError(ctx, r.tenant.Shard, err)
	}
	if !bound(resp.Kvs, ref.id) {
		return p.leaseRefused(ctx, r, ref.id)
	}
	p.owners.add(ref)
	return nil
}

// bound reports whether kvs, the result of reading a lease's owner key,
// hold that key attached to the lease. Owner keys are read in full: etcd
// leaves the lease out of a keys-only read.
func bound(kvs []*mvccpb.KeyValue, id int64) bool {
	return len(kvs) == 1 && kvs[0].Lease == id
}

// leaseRefused explains why the tenant of r cannot use lease id, whose
// owner key under the tenant is missing: the lease is gone
// (ErrLeaseNotFound) or it is not the tenant's (ErrLeaseNotOwned).
func (p *Proxy) leaseRefused(ctx context.Context, r route, id int64) error {
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.TimeToLive(ectx, clientv3.LeaseID(id))
	if err != nil {
		return shardError(ctx, r.tenant.Shard, err)
	}
	if resp.TTL < 0 {
		return fmt.Errorf("%w: lease %d of tenant %q expired, was revoked or never existed; grant a new one with `confetti lease grant --tenant %s TTL`, or put with a ttl", ErrLeaseNotFound, id, r.tenant.Name, r.tenant.Name)
	}
	return errNotOwned(r, id)
}

func errNotOwned(r route, id int64) error {
	return fmt.Errorf("%w: lease %d does not belong to tenant %q; grant one with `confetti lease grant --tenant %s TTL`", ErrLeaseNotOwned, id, r.tenant.Name, r.tenant.Name)
}

func errMoving(r route) error {
	return fmt.Errorf("%w: tenant %q is fenced on shard %s; retry shortly", ErrTenantMoving, r.tenant.Name, r.tenant.Shard)
}

// leasedWrite is fencedWrite for a write that attaches lease (0: none).
// A lease just granted for this write (granted) is bound to the tenant in
// the same transaction; an existing one must already be bound to it, or
// nothing is written and the error says why.
func (p *Proxy) leasedWrite(ctx context.Context, r route, key string, expected *int64, lease int64, granted bool, op clientv3.Op) (*clientv3.TxnResponse, error) {
	g := writeGuard{key: keys.KV(r.tenant.Name) + key, name: key, expected: expected}
	ops := []clientv3.Op{op}
	switch {
	case lease == 0:
	case granted:
		ops = append(ops, ownerPut(r.tenant.Name, lease))
	default:
		g.leases = []int64{lease}
	}
	return p.guardedWrite(ctx, r, g, ops...)
}

// writeGuard is what a guarded write requires besides the tenant's fence
// being absent.
type writeGuard struct {
	// key is a physical key and name what the caller calls it. When
	// expected is set, key's mod revision must equal it (zero: the key
	// must not exist).
	key, name string
	expected  *int64
	// leases must each be bound to the tenant.
	leases []int64
}

// guardedWrite runs ops on the tenant's shard in one transaction that also
// requires the tenant's fence key to be absent, every lease of g bound to
// the tenant, and key at its expected mod revision. ops run in order and
// their responses are the transaction's. A refused write changes nothing
// and returns, checked in this order, ErrTenantMoving when the fence is
// set, the reason a lease cannot be used (ErrLeaseNotFound,
// ErrLeaseNotOwned), or ErrConflict with the key's current mod revision.
func (p *Proxy) guardedWrite(ctx context.Context, r route, g writeGuard, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	fence := keys.Fence(r.tenant.Name)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(fence), "=", 0)}
	orElse := []clientv3.Op{clientv3.OpGet(fence, clientv3.WithCountOnly())}
	for _, id := range g.leases {
		owner := keys.LeaseOwner(r.tenant.Name, id)
		cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(owner), "=", id))
		orElse = append(orElse, clientv3.OpGet(owner))
	}
	if g.expected != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(g.key), "=", *g.expected))
		orElse = append(orElse, clientv3.OpGet(g.key, clientv3.WithKeysOnly()))
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(ectx).If(cmps...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if resp.Succeeded {
		return resp, nil
	}
	if len(resp.Responses) != len(orElse) {
		return nil, fmt.Errorf("%w: shard %s answered a refused write of tenant %q with %d results, want %d", ErrShardFailed, r.tenant.Shard, r.tenant.Name, len(resp.Responses), len(orElse))
	}
	if resp.Responses[0].GetResponseRange().GetCount() > 0 {
		return nil, errMoving(r)
	}
	for i, id := range g.leases {
		if !bound(resp.Responses[1+i].GetResponseRange().GetKvs(), id) {
			return nil, p.leaseRefused(ctx, r, id)
		}
	}
	if g.expected != nil {
		var cur int64
		if kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			cur = kvs[0].ModRevision
		}
		return nil, conflict(g.name, cur, *g.expected)
	}
	return nil, fmt.Errorf("%w: shard %s refused a write of tenant %q with neither the fence set nor a failed compare", ErrShardFailed, r.tenant.Shard, r.tenant.Name)
}

// leaseRef names one lease of one tenant on one shard.
type leaseRef struct {
	shard, tenant string
	id            int64
}

// leaseOwners remembers for a short time which leases were found bound to
// which tenant, so that a caller renewing a lease every few seconds costs
// one owner lookup per lease per ttl rather than one per keepalive. A
// binding cannot change while its lease lives (the owner key is written
// once, attached to the lease, in the lease's first write, and no API
// rewrites or deletes it), and etcd itself refuses to renew a lease that
// is gone; an entry could only mislead if a shard reused the id of a dead
// lease within ttl, which etcd's id generator does not do. Entries are
// also dropped when the proxy sees their lease revoked or expired. Safe for
// concurrent use.
type leaseOwners struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu   sync.Mutex
	seen map[leaseRef]time.Time
}

func newLeaseOwners(ttl time.Duration, max int, now func() time.Time) *leaseOwners {
	return &leaseOwners{ttl: ttl, max: max, now: now, seen: map[leaseRef]time.Time{}}
}

// has reports whether ref was found bound less than ttl ago.
func (o *leaseOwners) has(ref leaseRef) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, ok := o.seen[ref]
	if ok && o.now().Before(exp) {
		return true
	}
	delete(o.seen, ref)
	return false
}

// add records ref as found bound now. When full, expired entries go
// first, then arbitrary ones, down to three quarters of max.
func (o *leaseOwners) add(ref leaseRef) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if len(o.seen) >= o.max {
		for k, exp := range o.seen {
			if !now.Before(exp) {
				delete(o.seen, k)
			}
		}
		for k := range o.seen {
			if len(o.seen) < o.max*3/4 {
				break
			}
			delete(o.seen, k)
		}
	}
	o.seen[ref] = now.Add(o.ttl)
}

// forget drops ref.
func (o *leaseOwners) forget(ref leaseRef) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.seen, ref)
}

// txnLeases returns the distinct leases the puts of a transaction attach,
// in either branch.
func txnLeases(req *pb.TxnRequest) []int64 {
	var out []int64
	for _, branch := range [][]*pb.RequestOp{req.GetSuccess(), req.GetFailure()} {
		for _, op := range branch {
			if id := op.GetPut().GetLease(); id != 0 && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}
