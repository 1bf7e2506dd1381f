package etcdapi

import (
	"context"
	"slices"
	"strings"
	"unicode/utf8"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Range reads from the cache: serializable reads answer from its state,
// linearizable ones (etcd's default) first wait until it has seen etcd's
// current revision. A read at an earlier revision goes to the shard
// proxy, which reads etcd, since the cache keeps only current state.
// Sorting and the revision filters apply to what the native Range
// returns.
func (s *Server) Range(ctx context.Context, r *etcdpb.RangeRequest) (*etcdpb.RangeResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	return s.rangeAs(c, r)
}

func (s *Server) rangeAs(c caller, r *etcdpb.RangeRequest) (*etcdpb.RangeResponse, error) {
	kr, err := nativeRange(r.Key, r.RangeEnd)
	if err != nil {
		return nil, err
	}
	if r.Limit < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "etcdapi: limit %d is negative", r.Limit)
	}
	sorted := r.SortOrder != etcdpb.RangeRequest_NONE || r.SortTarget != etcdpb.RangeRequest_KEY
	if r.SortOrder == etcdpb.RangeRequest_ASCEND && r.SortTarget == etcdpb.RangeRequest_KEY {
		sorted = false
	}
	filtered := r.MinModRevision > 0 || r.MaxModRevision > 0 || r.MinCreateRevision > 0 || r.MaxCreateRevision > 0
	post := !r.CountOnly && (sorted || filtered)
	req := &confettipb.RangeRequest{
		Tenant:       c.tenant,
		Key:          kr.key,
		RangeEnd:     kr.end,
		Prefix:       kr.prefix,
		Revision:     r.Revision,
		KeysOnly:     r.KeysOnly,
		CountOnly:    r.CountOnly,
		Linearizable: !r.Serializable,
	}
	if !post {
		req.Limit = r.Limit
	}
	if post && r.SortTarget == etcdpb.RangeRequest_VALUE {
		// etcd sorts by value before it drops values.
		req.KeysOnly = false
	}
	var resp *confettipb.RangeResponse
	if r.Revision != 0 {
		req.Linearizable = false
		resp, err = s.kv.Range(c.ctx, req, bigReply)
	} else {
		resp, err = s.cache.Range(c.ctx, req, bigReply)
	}
	if err != nil {
		return nil, convertErr(err)
	}
	out := &etcdpb.RangeResponse{Header: s.headerOf(resp.Header), Count: resp.Count, More: resp.More}
	for _, kv := range resp.Kvs {
		if post && !keep(r, kv) {
			continue
		}
		out.Kvs = append(out.Kvs, etcdKV(kv))
	}
	if post {
		if sorted {
			sortKVs(out.Kvs, r.SortTarget, r.SortOrder)
		}
		if r.Limit > 0 && int64(len(out.Kvs)) > r.Limit {
			out.Kvs, out.More = out.Kvs[:r.Limit], true
		}
		if r.KeysOnly {
			for _, kv := range out.Kvs {
				kv.Value = nil
			}
		}
	}
	return out, nil
}

// keep applies etcd's revision filters.
func keep(r *etcdpb.RangeRequest, kv *confettipb.KeyValue) bool {
	switch {
	case r.MinModRevision > 0 && kv.ModRevision < r.MinModRevision,
		r.MaxModRevision > 0 && kv.ModRevision > r.MaxModRevision,
		r.MinCreateRevision > 0 && kv.CreateRevision < r.MinCreateRevision,
		r.MaxCreateRevision > 0 && kv.CreateRevision > r.MaxCreateRevision:
		return false
	}
	return true
}

// sortKVs sorts as etcd does: by target, in order (NONE with a target
// other than KEY means ascending); ties keep key order.
func sortKVs(kvs []*mvccpb.KeyValue, target etcdpb.RangeRequest_SortTarget, order etcdpb.RangeRequest_SortOrder) {
	cmp := func(a, b *mvccpb.KeyValue) int {
		switch target {
		case etcdpb.RangeRequest_VERSION:
			return compareInt(a.Version, b.Version)
		case etcdpb.RangeRequest_CREATE:
			return compareInt(a.CreateRevision, b.CreateRevision)
		case etcdpb.RangeRequest_MOD:
			return compareInt(a.ModRevision, b.ModRevision)
		case etcdpb.RangeRequest_VALUE:
			return strings.Compare(string(a.Value), string(b.Value))
		}
		return strings.Compare(string(a.Key), string(b.Key))
	}
	if order == etcdpb.RangeRequest_DESCEND {
		slices.SortStableFunc(kvs, func(a, b *mvccpb.KeyValue) int { return cmp(b, a) })
		return
	}
	slices.SortStableFunc(kvs, cmp)
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func etcdKV(kv *confettipb.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	return &mvccpb.KeyValue{
		Key:            []byte(kv.Key),
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

// Put writes through the shard proxy. ignore_value and ignore_lease read
// the key and write it back only if it has not changed since, retrying
// when it has, so the put is as atomic as etcd's.
func (s *Server) Put(ctx context.Context, r *etcdpb.PutRequest) (*etcdpb.PutResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkKey(r.Key); err != nil {
		return nil, err
	}
	req := &confettipb.PutRequest{Tenant: c.tenant, Key: string(r.Key), Value: r.Value, Lease: r.Lease, PrevKv: r.PrevKv}
	if !r.IgnoreValue && !r.IgnoreLease {
		resp, err := s.kv.Put(c.ctx, req)
		if err != nil {
			return nil, convertErr(err)
		}
		return &etcdpb.PutResponse{Header: s.headerOf(resp.Header), PrevKv: etcdKV(resp.PrevKv)}, nil
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return nil, rpctypes.ErrGRPCValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return nil, rpctypes.ErrGRPCLeaseProvided
	}
	for range 16 {
		cur, err := s.kv.Range(c.ctx, &confettipb.RangeRequest{Tenant: c.tenant, Key: req.Key})
		if err != nil {
			return nil, convertErr(err)
		}
		if len(cur.Kvs) == 0 {
			return nil, rpctypes.ErrGRPCKeyNotFound
		}
		if r.IgnoreValue {
			req.Value = cur.Kvs[0].Value
		}
		if r.IgnoreLease {
			req.Lease = cur.Kvs[0].Lease
		}
		mod := cur.Kvs[0].ModRevision
		req.ExpectedModRevision = &mod
		resp, err := s.kv.Put(c.ctx, req)
		if status.Code(err) == codes.FailedPrecondition {
			continue
		}
		if err != nil {
			return nil, convertErr(err)
		}
		return &etcdpb.PutResponse{Header: s.headerOf(resp.Header), PrevKv: etcdKV(resp.PrevKv)}, nil
	}
	return nil, status.Error(codes.Aborted, "etcdapi: the key kept changing under a put with ignore_value or ignore_lease; retry")
}

// DeleteRange deletes through the shard proxy.
func (s *Server) DeleteRange(ctx context.Context, r *etcdpb.DeleteRangeRequest) (*etcdpb.DeleteRangeResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	kr, err := nativeRange(r.Key, r.RangeEnd)
	if err != nil {
		return nil, err
	}
	resp, err := s.kv.DeleteRange(c.ctx, &confettipb.DeleteRangeRequest{Tenant: c.tenant, Key: kr.key, RangeEnd: kr.end, Prefix: kr.prefix, PrevKv: r.PrevKv})
	if err != nil {
		return nil, convertErr(err)
	}
	return deleteResponse(s.headerOf(resp.Header), resp), nil
}

func deleteResponse(h *etcdpb.ResponseHeader, resp *confettipb.DeleteRangeResponse) *etcdpb.DeleteRangeResponse {
	out := &etcdpb.DeleteRangeResponse{Header: h, Deleted: resp.Deleted}
	for _, kv := range resp.PrevKvs {
		out.PrevKvs = append(out.PrevKvs, etcdKV(kv))
	}
	return out
}

// Txn runs through the shard proxy, atomically on the tenant's shard.
func (s *Server) Txn(ctx context.Context, r *etcdpb.TxnRequest) (*etcdpb.TxnResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	req := &confettipb.TxnRequest{Tenant: c.tenant}
	for _, cmp := range r.Compare {
		nc, err := nativeCompare(cmp)
		if err != nil {
			return nil, err
		}
		req.Compare = append(req.Compare, nc)
	}
	if req.Success, err = nativeOps(r.Success); err != nil {
		return nil, err
	}
	if req.Failure, err = nativeOps(r.Failure); err != nil {
		return nil, err
	}
	resp, err := s.kv.Txn(c.ctx, req, bigReply)
	if err != nil {
		return nil, convertErr(err)
	}
	h := s.headerOf(resp.Header)
	out := &etcdpb.TxnResponse{Header: h, Succeeded: resp.Succeeded}
	for _, op := range resp.Responses {
		var eo *etcdpb.ResponseOp
		switch {
		case op.GetRange() != nil:
			rr := op.GetRange()
			er := &etcdpb.RangeResponse{Header: h, Count: rr.Count, More: rr.More}
			for _, kv := range rr.Kvs {
				er.Kvs = append(er.Kvs, etcdKV(kv))
			}
			eo = &etcdpb.ResponseOp{Response: &etcdpb.ResponseOp_ResponseRange{ResponseRange: er}}
		case op.GetPut() != nil:
			eo = &etcdpb.ResponseOp{Response: &etcdpb.ResponseOp_ResponsePut{ResponsePut: &etcdpb.PutResponse{Header: h, PrevKv: etcdKV(op.GetPut().PrevKv)}}}
		case op.GetDeleteRange() != nil:
			eo = &etcdpb.ResponseOp{Response: &etcdpb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: deleteResponse(h, op.GetDeleteRange())}}
		default:
			eo = &etcdpb.ResponseOp{}
		}
		out.Responses = append(out.Responses, eo)
	}
	return out, nil
}

func nativeCompare(c *etcdpb.Compare) (*confettipb.Compare, error) {
	if len(c.RangeEnd) == 0 {
		if err := checkKey(c.Key); err != nil {
			return nil, err
		}
	}
	kr, err := nativeRange(c.Key, c.RangeEnd)
	if err != nil {
		return nil, err
	}
	end := kr.end
	if kr.prefix {
		end = string(c.RangeEnd)
		if !utf8.ValidString(end) {
			return nil, status.Errorf(codes.InvalidArgument, "etcdapi: compare range end %q is not UTF-8: Confetti keys are UTF-8 strings", c.RangeEnd)
		}
	}
	out := &confettipb.Compare{
		Result:   confettipb.Compare_Result(c.Result),
		Target:   confettipb.Compare_Target(c.Target),
		Key:      kr.key,
		RangeEnd: end,
	}
	switch t := c.TargetUnion.(type) {
	case *etcdpb.Compare_Version:
		out.TargetUnion = &confettipb.Compare_Version{Version: t.Version}
	case *etcdpb.Compare_CreateRevision:
		out.TargetUnion = &confettipb.Compare_CreateRevision{CreateRevision: t.CreateRevision}
	case *etcdpb.Compare_ModRevision:
		out.TargetUnion = &confettipb.Compare_ModRevision{ModRevision: t.ModRevision}
	case *etcdpb.Compare_Value:
		out.TargetUnion = &confettipb.Compare_Value{Value: t.Value}
	case *etcdpb.Compare_Lease:
		out.TargetUnion = &confettipb.Compare_Lease{Lease: t.Lease}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "etcdapi: compare on key %q names no target value", c.Key)
	}
	return out, nil
}

func nativeOps(ops []*etcdpb.RequestOp) ([]*confettipb.RequestOp, error) {
	var out []*confettipb.RequestOp
	for _, op := range ops {
		switch t := op.Request.(type) {
		case *etcdpb.RequestOp_RequestRange:
			r := t.RequestRange
			if r.SortOrder != etcdpb.RangeRequest_NONE || r.SortTarget != etcdpb.RangeRequest_KEY || r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
				return nil, status.Error(codes.Unimplemented, "etcdapi: sort and revision filters are not supported inside a transaction; range outside it")
			}
			kr, err := nativeRange(r.Key, r.RangeEnd)
			if err != nil {
				return nil, err
			}
			out = append(out, &confettipb.RequestOp{Request: &confettipb.RequestOp_Range{Range: &confettipb.RangeRequest{
				Key: kr.key, RangeEnd: kr.end, Prefix: kr.prefix, Limit: r.Limit, Revision: r.Revision, KeysOnly: r.KeysOnly, CountOnly: r.CountOnly,
			}}})
		case *etcdpb.RequestOp_RequestPut:
			r := t.RequestPut
			if r.IgnoreValue || r.IgnoreLease {
				return nil, status.Error(codes.Unimplemented, "etcdapi: ignore_value and ignore_lease are not supported inside a transaction; compare the value or lease and put it explicitly")
			}
			if err := checkKey(r.Key); err != nil {
				return nil, err
			}
			out = append(out, &confettipb.RequestOp{Request: &confettipb.RequestOp_Put{Put: &confettipb.PutRequest{
				Key: string(r.Key), Value: r.Value, Lease: r.Lease, PrevKv: r.PrevKv,
			}}})
		case *etcdpb.RequestOp_RequestDeleteRange:
			r := t.RequestDeleteRange
			kr, err := nativeRange(r.Key, r.RangeEnd)
			if err != nil {
				return nil, err
			}
			out = append(out, &confettipb.RequestOp{Request: &confettipb.RequestOp_DeleteRange{DeleteRange: &confettipb.DeleteRangeRequest{
				Key: kr.key, RangeEnd: kr.end, Prefix: kr.prefix, PrevKv: r.PrevKv,
			}}})
		case *etcdpb.RequestOp_RequestTxn:
			return nil, status.Error(codes.Unimplemented, "etcdapi: nested transactions are not supported: the shard proxy runs one level of compares and ops; flatten the transaction")
		default:
			return nil, status.Error(codes.InvalidArgument, "etcdapi: a transaction op names no request")
		}
	}
	return out, nil
}
