package etcdapi

import (
	"context"
	"errors"
	"io"
	"strings"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// LeaseGrant grants a lease on the tenant's shard through the proxy,
// which binds it to the tenant.
func (s *Server) LeaseGrant(ctx context.Context, r *etcdpb.LeaseGrantRequest) (*etcdpb.LeaseGrantResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if r.ID != 0 {
		return nil, status.Error(codes.Unimplemented, "etcdapi: choosing a lease ID is not supported: leave ID zero and use the ID granted")
	}
	resp, err := s.leases.Grant(c.ctx, &confettipb.LeaseGrantRequest{Tenant: c.tenant, Ttl: r.TTL})
	if err != nil {
		return nil, convertErr(err)
	}
	return &etcdpb.LeaseGrantResponse{Header: s.headerOf(resp.Header), ID: resp.Id, TTL: resp.Ttl}, nil
}

// LeaseRevoke revokes a lease of the tenant through the proxy.
func (s *Server) LeaseRevoke(ctx context.Context, r *etcdpb.LeaseRevokeRequest) (*etcdpb.LeaseRevokeResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.leases.Revoke(c.ctx, &confettipb.LeaseRevokeRequest{Tenant: c.tenant, Id: r.ID})
	if err != nil {
		return nil, convertErr(err)
	}
	return &etcdpb.LeaseRevokeResponse{Header: s.headerOf(resp.Header)}, nil
}

// LeaseTimeToLive reports a lease of the tenant, with its keys as the
// tenant names them.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *etcdpb.LeaseTimeToLiveRequest) (*etcdpb.LeaseTimeToLiveResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.leases.TimeToLive(c.ctx, &confettipb.LeaseTimeToLiveRequest{Tenant: c.tenant, Id: r.ID, Keys: r.Keys})
	if err != nil {
		return nil, convertErr(err)
	}
	out := &etcdpb.LeaseTimeToLiveResponse{Header: s.headerOf(resp.Header), ID: resp.Id, TTL: resp.Ttl, GrantedTTL: resp.GrantedTtl}
	for _, k := range resp.Keys {
		// Keys of other namespaces (service registrations) are not
		// keys of the tenant's etcd.
		if rel, ok := strings.CutPrefix(k, keys.SpaceKV); ok {
			out.Keys = append(out.Keys, []byte(rel))
		}
	}
	return out, nil
}

// LeaseLeases is refused: the proxy does not list a tenant's leases.
func (s *Server) LeaseLeases(context.Context, *etcdpb.LeaseLeasesRequest) (*etcdpb.LeaseLeasesResponse, error) {
	return nil, status.Error(codes.Unimplemented, "etcdapi: listing leases is not supported: keep the IDs you were granted, or list the keys you attach to them")
}

// LeaseKeepAlive relays keepalives over one proxy KeepAlive stream.
func (s *Server) LeaseKeepAlive(stream etcdpb.Lease_LeaseKeepAliveServer) error {
	c, err := s.caller(stream.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	up, err := s.leases.KeepAlive(ctx)
	if err != nil {
		return convertErr(err)
	}
	failed := make(chan error, 2)
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				failed <- err
				return
			}
			if err := stream.Send(&etcdpb.LeaseKeepAliveResponse{Header: s.headerOf(resp.Header), ID: resp.Id, TTL: resp.Ttl}); err != nil {
				failed <- err
				return
			}
		}
	}()
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				failed <- err
				return
			}
			if err := up.Send(&confettipb.LeaseKeepAliveRequest{Tenant: c.tenant, Id: req.ID}); err != nil {
				failed <- err
				return
			}
		}
	}()
	err = <-failed
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return convertErr(err)
}
