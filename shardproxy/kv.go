package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/plant"
)

// kvService serves the tenant-scoped KV service. Keys are relative to the
// tenant's KV space: the physical prefix is added on the way in, every
// range is clamped inside the space, and the prefix is stripped from every
// key on the way out.
type kvService struct {
	pb.UnimplementedKVServer
	p *Proxy
}

var _ pb.KVServer = (*kvService)(nil)

// Range reads one key, a range or a prefix of the tenant, linearizably.
func (s *kvService) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return serve(ctx, s.p, pb.KV_Range_FullMethodName, req, s.p.rangeKV)
}

// Put writes one key, fenced, optionally with a TTL or a lease and
// optionally only at an expected mod revision.
func (s *kvService) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	return serve(ctx, s.p, pb.KV_Put_FullMethodName, req, s.p.put)
}

// DeleteRange deletes one key, a range or a prefix of the tenant, fenced.
func (s *kvService) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return serve(ctx, s.p, pb.KV_DeleteRange_FullMethodName, req, s.p.deleteRange)
}

func (p *Proxy) rangeKV(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	rng, err := keys.KVRange(tenant, req.GetKey(), req.GetRangeEnd(), req.GetPrefix())
	if err != nil {
		return nil, err
	}
	if req.GetLimit() < 0 {
		return nil, fmt.Errorf("%w: limit %d must not be negative (0 means no limit)", ErrInvalidRequest, req.GetLimit())
	}
	if req.GetRevision() < 0 {
		return nil, fmt.Errorf("%w: revision %d must not be negative (0 means the latest)", ErrInvalidRequest, req.GetRevision())
	}
	limit := req.GetLimit()
	if limit == 0 || limit > int64(p.cfg.MaxRangeKeys) {
		limit = int64(p.cfg.MaxRangeKeys)
	}
	opts := append(rangeOpts(rng), clientv3.WithLimit(limit))
	if req.GetRevision() > 0 {
		opts = append(opts, clientv3.WithRev(req.GetRevision()))
	}
	if req.GetKeysOnly() {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	if req.GetCountOnly() {
		opts = append(opts, clientv3.WithCountOnly())
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, rng.Start, opts...)
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	return &pb.RangeResponse{
		Header: r.header(resp.Header),
		Kvs:    p.kvsProto(r, resp.Kvs),
		More:   resp.More,
		Count:  resp.Count,
	}, nil
}

func (p *Proxy) put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := p.checkPut(req); err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if plant.Once(plant.AckUnapplied) {
		return p.ackUnapplied(ctx, r, req)
	}
	lease := req.GetLease()
	var granted clientv3.LeaseID
	if ttl := req.GetTtl(); ttl > 0 {
		ectx, cancel := p.etcdCtx(ctx)
		g, err := r.cli.Grant(ectx, ttl)
		cancel()
		if err != nil {
			return nil, shardError(ctx, r.tenant.Shard, err)
		}
		granted = g.ID
		lease = int64(g.ID)
	}
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(lease)))
	}
	if req.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	pk := keys.KV(tenant) + req.GetKey()
	txn, err := p.leasedWrite(ctx, r, req.GetKey(), req.ExpectedModRevision, lease, granted != 0, clientv3.OpPut(pk, string(req.GetValue()), opts...))
	if err != nil {
		if granted != 0 && (errors.Is(err, ErrTenantMoving) || errors.Is(err, ErrConflict)) {
			p.revokeUnused(ctx, r, granted)
		}
		return nil, err
	}
	out := &pb.PutResponse{Header: r.header(txn.Header), Lease: lease}
	if prev := txn.Responses[0].GetResponsePut().GetPrevKv(); prev != nil {
		if kvs := p.kvsProto(r, []*mvccpb.KeyValue{prev}); len(kvs) == 1 {
			out.PrevKv = kvs[0]
		}
	}
	return out, nil
}

// ackUnapplied is the planted bug AckUnapplied: it answers a put as done
// at the shard's next revision and never writes it. Only a read reaches
// etcd, for a plausible revision.
func (p *Proxy) ackUnapplied(ctx context.Context, r route, req *pb.PutRequest) (*pb.PutResponse, error) {
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	cur, err := r.cli.Get(ectx, keys.KV(r.tenant.Name)+req.GetKey(), clientv3.WithCountOnly())
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	h := r.header(cur.Header)
	h.Revision++
	return &pb.PutResponse{Header: h, Lease: req.GetLease()}, nil
}

// checkPut enforces the limits on a put's key, value, TTL and lease.
func (p *Proxy) checkPut(req *pb.PutRequest) error {
	switch key := req.GetKey(); {
	case key == "":
		return fmt.Errorf("%w: a put needs a key", keys.ErrEmptyKey)
	case len(key) > p.cfg.MaxKeyBytes:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d; use a shorter key", ErrKeyTooLarge, len(key), p.cfg.MaxKeyBytes)
	}
	if n := len(req.GetValue()); n > p.cfg.MaxValueBytes {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d; split it over several keys or store a reference to it", ErrValueTooLarge, n, p.cfg.MaxValueBytes)
	}
	if ttl := req.GetTtl(); ttl < 0 || ttl > p.cfg.MaxTTL {
		return fmt.Errorf("%w: ttl %d is outside [0, %d] seconds (0 means no expiry)", ErrInvalidTTL, ttl, p.cfg.MaxTTL)
	}
	if req.GetLease() < 0 {
		return fmt.Errorf("%w: lease %d must not be negative", ErrInvalidRequest, req.GetLease())
	}
	if req.GetTtl() > 0 && req.GetLease() != 0 {
		return fmt.Errorf("%w: give either ttl (a new lease) or lease (an existing one), not both", ErrInvalidRequest)
	}
	if e := req.ExpectedModRevision; e != nil && *e < 0 {
		return fmt.Errorf("%w: expected_mod_revision %d must not be negative (0 means the key must not exist)", ErrInvalidRequest, *e)
	}
	return nil
}

// revokeUnused revokes a lease granted for a write that was refused, so it
// does not linger until its TTL runs out; failure only costs that wait. A
// write that failed without a verdict (a timeout) may have landed, so its
// lease is left to expire with the key instead.
func (p *Proxy) revokeUnused(ctx context.Context, r route, id clientv3.LeaseID) {
	ectx, cancel := p.etcdCtx(context.WithoutCancel(ctx))
	defer cancel()
	if _, err := r.cli.Revoke(ectx, id); err != nil {
		p.lg.Warn("revoke unused lease", zap.String("tenant", r.tenant.Name), zap.String("shard", r.tenant.Shard), zap.Int64("lease", int64(id)), zap.Error(err))
	}
}

func (p *Proxy) deleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	rng, err := keys.KVRange(tenant, req.GetKey(), req.GetRangeEnd(), req.GetPrefix())
	if err != nil {
		return nil, err
	}
	if e := req.ExpectedModRevision; e != nil {
		if rng.End != "" {
			return nil, fmt.Errorf("%w: expected_mod_revision applies to a single key; drop prefix and range_end, or drop expected_mod_revision", ErrInvalidRequest)
		}
		if *e < 0 {
			return nil, fmt.Errorf("%w: expected_mod_revision %d must not be negative", ErrInvalidRequest, *e)
		}
	}
	opts := rangeOpts(rng)
	if req.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	txn, err := p.fencedWrite(ctx, r, req.GetKey(), req.ExpectedModRevision, clientv3.OpDelete(rng.Start, opts...))
	if err != nil {
		return nil, err
	}
	dr := txn.Responses[0].GetResponseDeleteRange()
	return &pb.DeleteRangeResponse{
		Header:  r.header(txn.Header),
		Deleted: dr.GetDeleted(),
		PrevKvs: p.kvsProto(r, dr.GetPrevKvs()),
	}, nil
}

// fencedWrite runs op on the tenant's shard in one transaction that also
// requires the tenant's fence key to be absent and, when expected is set,
// the mod revision of key (relative to the KV space) to equal it (zero:
// the key must not exist). A refused write changes nothing and returns
// ErrTenantMoving when the fence is set, else ErrConflict with the key's
// current mod revision. See guardedWrite.
func (p *Proxy) fencedWrite(ctx context.Context, r route, key string, expected *int64, op clientv3.Op) (*clientv3.TxnResponse, error) {
	return p.guardedWrite(ctx, r, writeGuard{key: keys.KV(r.tenant.Name) + key, name: key, expected: expected}, op)
}

// conflict describes a failed expected mod revision.
func conflict(key string, current, expected int64) error {
	switch {
	case current == 0:
		return fmt.Errorf("%w: key %q does not exist (mod_revision is 0), expected %d; re-read and retry", ErrConflict, key, expected)
	case expected == 0:
		return fmt.Errorf("%w: key %q exists: mod_revision is %d, expected 0 (absent); re-read and retry", ErrConflict, key, current)
	default:
		return fmt.Errorf("%w: key %q was modified: mod_revision is %d, expected %d; re-read and retry", ErrConflict, key, current, expected)
	}
}

// rangeOpts are the etcd options that make a request cover rng.
func rangeOpts(rng keys.Range) []clientv3.OpOption {
	if rng.End == "" {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithRange(rng.End)}
}

// kvsProto converts the tenant's physical key-values to keys relative to
// its KV space. A key outside that space never reaches a caller: it is
// dropped and logged, since the range clamping should have made it
// impossible. A key that is not valid UTF-8 (written to the shard by other
// means than this API) is dropped and logged too: keys travel in proto
// string fields, and one such key would otherwise fail the whole reply.
func (p *Proxy) kvsProto(r route, kvs []*mvccpb.KeyValue) []*pb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]*pb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		key, ok := keys.StripKV(r.tenant.Name, string(kv.Key))
		if !ok {
			p.lg.Error("dropping key outside the tenant's kv space", zap.String("tenant", r.tenant.Name), zap.String("shard", r.tenant.Shard), zap.ByteString("key", kv.Key))
			continue
		}
		if !utf8.ValidString(key) {
			p.lg.Error("dropping key that is not valid utf-8", zap.String("tenant", r.tenant.Name), zap.String("shard", r.tenant.Shard), zap.Binary("key", kv.Key))
			continue
		}
		out = append(out, &pb.KeyValue{
			Key:            key,
			Value:          kv.Value,
			CreateRevision: kv.CreateRevision,
			ModRevision:    kv.ModRevision,
			Version:        kv.Version,
			Lease:          kv.Lease,
		})
	}
	return out
}
