package shardproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// maxAddressBytes caps the length of an instance's address.
const maxAddressBytes = 1024

// instanceValue is the value of a registered instance's key
// svc/<service>/<instance>, which subscribers of svc/ receive as JSON:
//
//	{"address":"10.0.0.7:8080","labels":{"zone":"a"},"weight":10}
//
// labels and weight are left out when empty. The service and instance
// names are in the key, and the lease is the key's own.
type instanceValue struct {
	Address string            `json:"address"`
	Labels  map[string]string `json:"labels,omitempty"`
	Weight  int64             `json:"weight,omitempty"`
}

// Register writes an instance under svc/<service>/<instance>, attached to
// a new lease of ttl seconds bound to the tenant or to the given one;
// keep the lease alive to stay registered. Registering an instance again
// replaces it, and a lease of its own that the replaced registration
// leaves unused is revoked. ttl in the reply is the lease's granted TTL.
func (s *leaseService) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	return serve(ctx, s.p, pb.Leases_Register_FullMethodName, req, s.p.register)
}

// Deregister deletes an instance and revokes its lease when no other key
// of the tenant uses it.
func (s *leaseService) Deregister(ctx context.Context, req *pb.DeregisterRequest) (*pb.DeregisterResponse, error) {
	return serve(ctx, s.p, pb.Leases_Deregister_FullMethodName, req, s.p.deregister)
}

// ListInstances lists the registered instances of a service, by instance
// name.
func (s *leaseService) ListInstances(ctx context.Context, req *pb.ListInstancesRequest) (*pb.ListInstancesResponse, error) {
	return serve(ctx, s.p, pb.Leases_ListInstances_FullMethodName, req, s.p.listInstances)
}

func (p *Proxy) register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	in := req.GetInstance()
	if in == nil {
		return nil, fmt.Errorf("%w: register needs an instance with a service, an id and an address", ErrInvalidRequest)
	}
	if err := keys.ValidSvcName("service", in.GetService()); err != nil {
		return nil, err
	}
	if err := keys.ValidSvcName("instance", in.GetId()); err != nil {
		return nil, err
	}
	if err := checkAddress(in.GetAddress()); err != nil {
		return nil, err
	}
	if in.GetWeight() < 0 {
		return nil, fmt.Errorf("%w: weight %d must not be negative", ErrInvalidRequest, in.GetWeight())
	}
	lease := in.GetLease()
	switch {
	case lease < 0:
		return nil, fmt.Errorf("%w: lease %d must not be negative (0: grant one with ttl)", ErrInvalidRequest, lease)
	case lease == 0:
		if err := p.checkLeaseTTL(req.GetTtl()); err != nil {
			return nil, err
		}
	}
	value, err := json.Marshal(instanceValue{Address: in.GetAddress(), Labels: in.GetLabels(), Weight: in.GetWeight()})
	if err != nil {
		return nil, fmt.Errorf("%w: encode instance: %v", ErrInvalidRequest, err)
	}
	if len(value) > p.cfg.MaxValueBytes {
		return nil, fmt.Errorf("%w: the instance is %d bytes as JSON, the limit is %d; use fewer or shorter labels", ErrValueTooLarge, len(value), p.cfg.MaxValueBytes)
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	key := keys.Svc(tenant, in.GetService(), in.GetId())
	if lease != 0 {
		txn, err := p.guardedWrite(ctx, r, writeGuard{leases: []int64{lease}},
			clientv3.OpPut(key, string(value), clientv3.WithLease(clientv3.LeaseID(lease)), clientv3.WithPrevKV()))
		if err != nil {
			return nil, err
		}
		if prev := txn.Responses[0].GetResponsePut().GetPrevKv(); prev != nil && prev.Lease != 0 && prev.Lease != lease {
			p.revokeIfUnused(ctx, r, prev.Lease)
		}
		out := &pb.RegisterResponse{Header: r.header(txn.Header), Lease: lease}
		ectx, cancel := p.etcdCtx(ctx)
		defer cancel()
		if ttl, err := r.cli.TimeToLive(ectx, clientv3.LeaseID(lease)); err == nil && ttl.GrantedTTL > 0 {
			out.Ttl = ttl.GrantedTTL
		}
		return out, nil
	}
	g, err := p.grantLease(ctx, r, req.GetTtl())
	if err != nil {
		return nil, err
	}
	txn, err := p.guardedWrite(ctx, r, writeGuard{},
		clientv3.OpPut(key, string(value), clientv3.WithLease(g.ID), clientv3.WithPrevKV()),
		ownerPut(tenant, int64(g.ID)))
	if err != nil {
		if errors.Is(err, ErrTenantMoving) {
			p.revokeUnused(ctx, r, g.ID)
		}
		return nil, err
	}
	// A registration replaced here leaves its lease holding nothing when
	// that lease was its own; it goes now instead of at its expiry.
	if prev := txn.Responses[0].GetResponsePut().GetPrevKv(); prev != nil && prev.Lease != 0 {
		p.revokeIfUnused(ctx, r, prev.Lease)
	}
	return &pb.RegisterResponse{Header: r.header(txn.Header), Lease: int64(g.ID), Ttl: g.TTL}, nil
}

// checkAddress checks an instance's address is host:port.
func checkAddress(addr string) error {
	if len(addr) > maxAddressBytes {
		return fmt.Errorf("%w: address is %d bytes, the limit is %d", ErrInvalidRequest, len(addr), maxAddressBytes)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: address %q must be host:port (for example 10.0.0.7:8080)", ErrInvalidRequest, addr)
	}
	return nil
}

func (p *Proxy) deregister(ctx context.Context, req *pb.DeregisterRequest) (*pb.DeregisterResponse, error) {
	tenant, service, id := req.GetTenant(), req.GetService(), req.GetId()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := keys.ValidSvcName("service", service); err != nil {
		return nil, err
	}
	if err := keys.ValidSvcName("instance", id); err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	key := keys.Svc(tenant, service, id)
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	cur, err := r.cli.Get(ectx, key)
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if len(cur.Kvs) == 0 {
		return nil, fmt.Errorf("%w: instance %q of service %q of tenant %q (it was deregistered, or its lease expired)", ErrInstanceNotFound, id, service, tenant)
	}
	// The delete applies to the registration just read: one made in
	// between is a conflict, not deleted along with its lease.
	mod, lease := cur.Kvs[0].ModRevision, cur.Kvs[0].Lease
	txn, err := p.guardedWrite(ctx, r, writeGuard{key: key, name: keys.SpaceSvc + service + "/" + id, expected: &mod}, clientv3.OpDelete(key))
	if err != nil {
		return nil, err
	}
	if lease != 0 {
		p.revokeIfUnused(ctx, r, lease)
	}
	return &pb.DeregisterResponse{Header: r.header(txn.Header)}, nil
}

// revokeIfUnused revokes a lease of the tenant that holds no key but its
// owner key any more. Failure is only logged: the lease then expires on
// its own, having nothing left to keep.
func (p *Proxy) revokeIfUnused(ctx context.Context, r route, id int64) {
	ectx, cancel := p.etcdCtx(context.WithoutCancel(ctx))
	defer cancel()
	ttl, err := r.cli.TimeToLive(ectx, clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		p.lg.Warn("look up lease after deregister", zap.String("tenant", r.tenant.Name), zap.String("shard", r.tenant.Shard), zap.Int64("lease", id), zap.Error(err))
		return
	}
	if ttl.TTL < 0 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != keys.LeaseOwner(r.tenant.Name, id) {
		return
	}
	if _, err := r.cli.Revoke(ectx, clientv3.LeaseID(id)); err != nil {
		p.lg.Warn("revoke lease after deregister", zap.String("tenant", r.tenant.Name), zap.String("shard", r.tenant.Shard), zap.Int64("lease", id), zap.Error(err))
	}
	p.owners.forget(leaseRef{shard: r.tenant.Shard, tenant: r.tenant.Name, id: id})
}

func (p *Proxy) listInstances(ctx context.Context, req *pb.ListInstancesRequest) (*pb.ListInstancesResponse, error) {
	tenant, service := req.GetTenant(), req.GetService()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := keys.ValidSvcName("service", service); err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	prefix := keys.SvcPrefix(tenant, service)
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	out := &pb.ListInstancesResponse{Header: r.header(resp.Header)}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), prefix)
		var v instanceValue
		if keys.ValidSvcName("instance", id) != nil || json.Unmarshal(kv.Value, &v) != nil {
			p.lg.Error("skipping a service instance that Register did not write", zap.String("tenant", tenant), zap.String("shard", r.tenant.Shard), zap.ByteString("key", kv.Key))
			continue
		}
		out.Instances = append(out.Instances, &pb.Instance{
			Service: service,
			Id:      id,
			Address: v.Address,
			Labels:  v.Labels,
			Weight:  v.Weight,
			Lease:   kv.Lease,
		})
	}
	return out, nil
}
