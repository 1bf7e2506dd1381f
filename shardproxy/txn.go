package shardproxy

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// Txn runs compares and then the success or failure ops atomically on the
// tenant's shard.
func (s *kvService) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	return serve(ctx, s.p, pb.KV_Txn_FullMethodName, req, s.p.txn)
}

// txn builds one etcd transaction from a tenant's request. Every key is
// relative to the tenant's KV space and turned into a physical key or
// range clamped inside it, so no compare or op can reach another tenant;
// an op that names another tenant is refused. The fence wraps the whole
// request: If(fence absent) Then(Txn(user compares, success, failure)),
// so a fenced tenant neither writes nor runs its failure branch. The outer
// If also requires every lease a put attaches to be bound to the tenant,
// so a lease it cannot use refuses the whole request with the lease's
// error, whichever branch would have run.
func (p *Proxy) txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	nops := len(req.GetCompare()) + len(req.GetSuccess()) + len(req.GetFailure())
	if nops > p.cfg.MaxTxnOps {
		return nil, fmt.Errorf("%w: %d compares and ops, the limit is %d; split the transaction", ErrInvalidRequest, nops, p.cfg.MaxTxnOps)
	}
	cmps := make([]clientv3.Cmp, 0, len(req.GetCompare()))
	for i, c := range req.GetCompare() {
		cmp, err := p.compare(tenant, c)
		if err != nil {
			return nil, fmt.Errorf("compare %d: %w", i, err)
		}
		cmps = append(cmps, cmp)
	}
	success, err := p.ops(tenant, "success", req.GetSuccess())
	if err != nil {
		return nil, err
	}
	failure, err := p.ops(tenant, "failure", req.GetFailure())
	if err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	resp, err := p.guardedWrite(ctx, r, writeGuard{leases: txnLeases(req)}, clientv3.OpTxn(cmps, success, failure))
	if err != nil {
		return nil, err
	}
	inner := resp.Responses[0].GetResponseTxn()
	out := &pb.TxnResponse{Header: r.header(resp.Header), Succeeded: inner.GetSucceeded()}
	for _, op := range inner.GetResponses() {
		switch {
		case op.GetResponseRange() != nil:
			rr := op.GetResponseRange()
			out.Responses = append(out.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_Range{Range: &pb.RangeResponse{
				Header: r.header(resp.Header), Kvs: p.kvsProto(r, rr.Kvs), More: rr.More, Count: rr.Count,
			}}})
		case op.GetResponsePut() != nil:
			pr := &pb.PutResponse{Header: r.header(resp.Header)}
			if prev := op.GetResponsePut().GetPrevKv(); prev != nil {
				if kvs := p.kvsProto(r, []*mvccpb.KeyValue{prev}); len(kvs) == 1 {
					pr.PrevKv = kvs[0]
				}
			}
			out.Responses = append(out.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_Put{Put: pr}})
		case op.GetResponseDeleteRange() != nil:
			dr := op.GetResponseDeleteRange()
			out.Responses = append(out.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_DeleteRange{DeleteRange: &pb.DeleteRangeResponse{
				Header: r.header(resp.Header), Deleted: dr.Deleted, PrevKvs: p.kvsProto(r, dr.PrevKvs),
			}}})
		}
	}
	return out, nil
}

// compare turns a tenant's compare into an etcd compare on the physical
// key or range.
func (p *Proxy) compare(tenant string, c *pb.Compare) (clientv3.Cmp, error) {
	if c.GetKey() == "" && c.GetRangeEnd() == "" {
		return clientv3.Cmp{}, fmt.Errorf("%w: a compare needs a key", keys.ErrEmptyKey)
	}
	rng, err := keys.KVRange(tenant, c.GetKey(), c.GetRangeEnd(), false)
	if err != nil {
		return clientv3.Cmp{}, err
	}
	var target clientv3.Cmp
	var value any
	switch c.GetTarget() {
	case pb.Compare_VERSION:
		target, value = clientv3.Version(rng.Start), c.GetVersion()
	case pb.Compare_CREATE:
		target, value = clientv3.CreateRevision(rng.Start), c.GetCreateRevision()
	case pb.Compare_MOD:
		target, value = clientv3.ModRevision(rng.Start), c.GetModRevision()
	case pb.Compare_VALUE:
		target, value = clientv3.Value(rng.Start), string(c.GetValue())
	case pb.Compare_LEASE:
		target, value = clientv3.LeaseValue(rng.Start), c.GetLease()
	default:
		return clientv3.Cmp{}, fmt.Errorf("%w: unknown compare target %v", ErrInvalidRequest, c.GetTarget())
	}
	var op string
	switch c.GetResult() {
	case pb.Compare_EQUAL:
		op = "="
	case pb.Compare_NOT_EQUAL:
		op = "!="
	case pb.Compare_GREATER:
		op = ">"
	case pb.Compare_LESS:
		op = "<"
	default:
		return clientv3.Cmp{}, fmt.Errorf("%w: unknown compare result %v", ErrInvalidRequest, c.GetResult())
	}
	cmp := clientv3.Compare(target, op, value)
	if rng.End != "" {
		cmp = cmp.WithRange(rng.End)
	}
	return cmp, nil
}

// ops turns one branch of a tenant's transaction into etcd ops, checking
// each like its single-request counterpart.
func (p *Proxy) ops(tenant, branch string, reqs []*pb.RequestOp) ([]clientv3.Op, error) {
	out := make([]clientv3.Op, 0, len(reqs))
	for i, ro := range reqs {
		op, err := p.op(tenant, ro)
		if err != nil {
			return nil, fmt.Errorf("%s op %d: %w", branch, i, err)
		}
		out = append(out, op)
	}
	return out, nil
}

func (p *Proxy) op(tenant string, ro *pb.RequestOp) (clientv3.Op, error) {
	sameTenant := func(t string) error {
		if t != "" && t != tenant {
			return fmt.Errorf("%w: the op names tenant %q inside a transaction of %q; cross-tenant transactions are not supported", ErrInvalidRequest, t, tenant)
		}
		return nil
	}
	switch {
	case ro.GetRange() != nil:
		r := ro.GetRange()
		if err := sameTenant(r.GetTenant()); err != nil {
			return clientv3.Op{}, err
		}
		if r.GetRevision() != 0 || r.GetLinearizable() {
			return clientv3.Op{}, fmt.Errorf("%w: a range inside a transaction reads at the transaction's revision; drop revision and linearizable", ErrInvalidRequest)
		}
		if r.GetLimit() < 0 {
			return clientv3.Op{}, fmt.Errorf("%w: limit %d must not be negative", ErrInvalidRequest, r.GetLimit())
		}
		rng, err := keys.KVRange(tenant, r.GetKey(), r.GetRangeEnd(), r.GetPrefix())
		if err != nil {
			return clientv3.Op{}, err
		}
		limit := r.GetLimit()
		if limit == 0 || limit > int64(p.cfg.MaxRangeKeys) {
			limit = int64(p.cfg.MaxRangeKeys)
		}
		opts := append(rangeOpts(rng), clientv3.WithLimit(limit))
		if r.GetKeysOnly() {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if r.GetCountOnly() {
			opts = append(opts, clientv3.WithCountOnly())
		}
		return clientv3.OpGet(rng.Start, opts...), nil
	case ro.GetPut() != nil:
		r := ro.GetPut()
		if err := sameTenant(r.GetTenant()); err != nil {
			return clientv3.Op{}, err
		}
		if r.GetTtl() != 0 || r.ExpectedModRevision != nil {
			return clientv3.Op{}, fmt.Errorf("%w: inside a transaction use a compare instead of expected_mod_revision, and a granted lease instead of ttl", ErrInvalidRequest)
		}
		if err := p.checkPut(r); err != nil {
			return clientv3.Op{}, err
		}
		var opts []clientv3.OpOption
		if r.GetLease() != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(r.GetLease())))
		}
		if r.GetPrevKv() {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return clientv3.OpPut(keys.KV(tenant)+r.GetKey(), string(r.GetValue()), opts...), nil
	case ro.GetDeleteRange() != nil:
		r := ro.GetDeleteRange()
		if err := sameTenant(r.GetTenant()); err != nil {
			return clientv3.Op{}, err
		}
		if r.ExpectedModRevision != nil {
			return clientv3.Op{}, fmt.Errorf("%w: inside a transaction use a compare instead of expected_mod_revision", ErrInvalidRequest)
		}
		rng, err := keys.KVRange(tenant, r.GetKey(), r.GetRangeEnd(), r.GetPrefix())
		if err != nil {
			return clientv3.Op{}, err
		}
		opts := rangeOpts(rng)
		if r.GetPrevKv() {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return clientv3.OpDelete(rng.Start, opts...), nil
	default:
		return clientv3.Op{}, fmt.Errorf("%w: an op must be a range, a put or a delete_range", ErrInvalidRequest)
	}
}
