package shardproxy

import (
	"context"
	"fmt"
	"time"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// This file holds the RPCs of the API that this version of the proxy does
// not serve yet. Each answers Unimplemented with a message naming what the
// RPC will do, never a fake success, and is counted like any other RPC.

// notYet is the answer of an RPC that is not served yet.
func (p *Proxy) notYet(fullMethod, what string) error {
	return p.finish(fullMethod, time.Now(), fmt.Errorf("%w: %s: %s", ErrNotAvailableYet, methodName(fullMethod), what))
}

// DeleteTenant is not served yet.
func (s *tenantService) DeleteTenant(ctx context.Context, req *pb.DeleteTenantRequest) (*pb.DeleteTenantResponse, error) {
	return nil, s.p.notYet(pb.Tenants_DeleteTenant_FullMethodName,
		"removing a tenant's keys from its shard and then its placement arrives with tenant lifecycle management")
}
