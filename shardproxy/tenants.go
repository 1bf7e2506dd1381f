package shardproxy

import (
	"context"
	"fmt"
	"sort"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
)

const (
	// defaultTenantPage is the page size of ListTenants when none is given;
	// larger requests are cut to it.
	defaultTenantPage = 1000
)

// tenantService serves the Tenants service from the meta store.
type tenantService struct {
	pb.UnimplementedTenantsServer
	p *Proxy
}

var _ pb.TenantsServer = (*tenantService)(nil)

// CreateTenant places a new tenant on an active shard that is healthy on
// this proxy's view (shards without a fresh view are checked first). An
// existing tenant is AlreadyExists, with its shard in the message; no
// healthy active shard is Unavailable, naming each shard and why.
func (s *tenantService) CreateTenant(ctx context.Context, req *pb.CreateTenantRequest) (*pb.Tenant, error) {
	return serve(ctx, s.p, pb.Tenants_CreateTenant_FullMethodName, req, func(ctx context.Context, req *pb.CreateTenantRequest) (*pb.Tenant, error) {
		if _, ok := s.p.store.Tenant(req.GetName()); !ok {
			var active []meta.Shard
			for _, sh := range s.p.store.Shards() {
				if sh.State == meta.ShardActive {
					active = append(active, sh)
				}
			}
			s.p.health.refresh(ctx, active)
		}
		t, _, err := s.p.store.CreateTenant(ctx, req.GetName(), meta.WithShardCheck(s.p.health.placeable))
		if err != nil {
			return nil, err
		}
		return tenantProto(t), nil
	})
}

// GetTenant returns a tenant's placement, from memory when the store has
// seen it, else from meta.
func (s *tenantService) GetTenant(ctx context.Context, req *pb.GetTenantRequest) (*pb.Tenant, error) {
	return serve(ctx, s.p, pb.Tenants_GetTenant_FullMethodName, req, func(ctx context.Context, req *pb.GetTenantRequest) (*pb.Tenant, error) {
		t, err := s.p.store.LookupTenant(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		return tenantProto(t), nil
	})
}

// ListTenants lists the placement table in name order from the store's
// memory. page_token is the last name of the previous page; page_size zero
// or above 1000 means 1000.
func (s *tenantService) ListTenants(ctx context.Context, req *pb.ListTenantsRequest) (*pb.ListTenantsResponse, error) {
	return serve(ctx, s.p, pb.Tenants_ListTenants_FullMethodName, req, func(ctx context.Context, req *pb.ListTenantsRequest) (*pb.ListTenantsResponse, error) {
		size := int(req.GetPageSize())
		switch {
		case size < 0:
			return nil, fmt.Errorf("%w: page_size %d must not be negative", ErrInvalidRequest, size)
		case size == 0 || size > defaultTenantPage:
			size = defaultTenantPage
		}
		all := s.p.store.Tenants()
		start := 0
		if tok := req.GetPageToken(); tok != "" {
			start = sort.Search(len(all), func(i int) bool { return all[i].Name > tok })
		}
		end := min(start+size, len(all))
		resp := &pb.ListTenantsResponse{Tenants: make([]*pb.Tenant, 0, end-start)}
		for _, t := range all[start:end] {
			resp.Tenants = append(resp.Tenants, tenantProto(t))
		}
		if end < len(all) {
			resp.NextPageToken = all[end-1].Name
		}
		return resp, nil
	})
}

func tenantProto(t meta.Tenant) *pb.Tenant {
	return &pb.Tenant{
		Name:       t.Name,
		Shard:      t.Shard,
		Epoch:      t.Epoch,
		State:      tenantState(t.State),
		CreateTime: t.CreateTime,
	}
}

func tenantState(s meta.TenantState) pb.Tenant_State {
	switch s {
	case meta.TenantActive:
		return pb.Tenant_ACTIVE
	}
	return pb.Tenant_STATE_UNSPECIFIED
}
