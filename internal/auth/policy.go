package auth

import (
	"fmt"
	"strings"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
)

// rule is the access policy of one gRPC method. Operator keys pass every
// rule; a tenant key needs at least role and, when tenant is set, must
// belong to the tenant the request names.
type rule struct {
	role meta.Role
	// tenant returns the tenant a request message acts on; false when the
	// message names none.
	tenant func(msg any) (string, bool)
	// check, when set, is a further condition for tenant keys.
	check func(a *Authenticator, p Principal, msg any) error
}

// rank orders the roles: each may do what the ones below it may.
func rank(r meta.Role) int {
	switch r {
	case meta.RoleReader:
		return 1
	case meta.RoleWriter:
		return 2
	case meta.RoleAdmin:
		return 3
	case meta.RoleOperator:
		return 4
	}
	return 0
}

var (
	operatorOnly = rule{role: meta.RoleOperator}
	tenantReader = rule{role: meta.RoleReader, tenant: requestTenant}
	tenantWriter = rule{role: meta.RoleWriter, tenant: requestTenant}
	tenantAdmin  = rule{role: meta.RoleAdmin, tenant: requestTenant}
)

// policies maps every method of the API to its rule. A method missing here
// is refused to every key.
var policies = map[string]rule{
	pb.Tenants_CreateTenant_FullMethodName: operatorOnly,
	pb.Tenants_GetTenant_FullMethodName:    {role: meta.RoleReader, tenant: requestName},
	pb.Tenants_ListTenants_FullMethodName:  operatorOnly,
	pb.Tenants_DeleteTenant_FullMethodName: operatorOnly,
	pb.Tenants_CreateAPIKey_FullMethodName: {role: meta.RoleAdmin, tenant: requestTenant, check: checkCreateKey},
	pb.Tenants_ListAPIKeys_FullMethodName:  tenantAdmin,
	pb.Tenants_RevokeAPIKey_FullMethodName: {role: meta.RoleAdmin, check: checkRevokeKey},

	pb.Shards_AddShard_FullMethodName:      operatorOnly,
	pb.Shards_ListShards_FullMethodName:    operatorOnly,
	pb.Shards_DrainShard_FullMethodName:    operatorOnly,
	pb.Shards_ActivateShard_FullMethodName: operatorOnly,
	pb.Shards_RemoveShard_FullMethodName:   operatorOnly,

	pb.KV_Range_FullMethodName:       tenantReader,
	pb.KV_Put_FullMethodName:         tenantWriter,
	pb.KV_DeleteRange_FullMethodName: tenantWriter,
	pb.KV_Txn_FullMethodName:         tenantWriter,

	pb.Leases_Grant_FullMethodName:         tenantWriter,
	pb.Leases_Revoke_FullMethodName:        tenantWriter,
	pb.Leases_KeepAlive_FullMethodName:     tenantWriter,
	pb.Leases_TimeToLive_FullMethodName:    tenantReader,
	pb.Leases_Register_FullMethodName:      tenantWriter,
	pb.Leases_Deregister_FullMethodName:    tenantWriter,
	pb.Leases_ListInstances_FullMethodName: tenantReader,

	pb.Releases_Publish_FullMethodName:     tenantWriter,
	pb.Releases_GetVersion_FullMethodName:  tenantReader,
	pb.Releases_History_FullMethodName:     tenantReader,
	pb.Releases_ListItems_FullMethodName:   tenantReader,
	pb.Releases_SetSchema_FullMethodName:   tenantWriter,
	pb.Releases_GetRelease_FullMethodName:  tenantReader,
	pb.Releases_SetStable_FullMethodName:   tenantWriter,
	pb.Releases_StartGray_FullMethodName:   tenantWriter,
	pb.Releases_PromoteGray_FullMethodName: tenantWriter,
	pb.Releases_AbortGray_FullMethodName:   tenantWriter,
	pb.Releases_StartPlan_FullMethodName:   tenantWriter,
	pb.Releases_ResumePlan_FullMethodName:  tenantWriter,
	pb.Releases_AbortPlan_FullMethodName:   tenantWriter,
	pb.Releases_Status_FullMethodName:      tenantReader,
	pb.Releases_Log_FullMethodName:         tenantReader,

	pb.Cache_Subscribe_FullMethodName:     tenantReader,
	pb.Cache_SubscribeMany_FullMethodName: tenantReader,
	pb.Cache_Range_FullMethodName:         tenantReader,
	pb.Cache_Rollout_FullMethodName:       tenantReader,
	pb.Cache_Status_FullMethodName:        operatorOnly,
}

// exempt are the services every client may call without a key: health
// checks (load balancers, orchestrators) and reflection (the schema is
// public).
var exempt = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func isExempt(fullMethod string) bool {
	for _, p := range exempt {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// requestTenant is the tenant field of a request, or of the start message
// of a subscription.
func requestTenant(msg any) (string, bool) {
	switch m := msg.(type) {
	case *pb.SubscribeRequest:
		if s := m.GetStart(); s != nil {
			return s.GetTenant(), true
		}
		return "", false
	case interface{ GetTenant() string }:
		return m.GetTenant(), true
	}
	return "", false
}

// requestName is the name field of a request about one tenant.
func requestName(msg any) (string, bool) {
	if m, ok := msg.(interface{ GetName() string }); ok {
		return m.GetName(), true
	}
	return "", false
}

// checkCreateKey lets an admin create reader, writer and admin keys of its
// own tenant (the tenant itself is checked by the rule), never operator
// keys.
func checkCreateKey(_ *Authenticator, p Principal, msg any) error {
	if m, ok := msg.(*pb.CreateAPIKeyRequest); ok && m.GetRole() == pb.Role_OPERATOR {
		return fmt.Errorf("%w: only an operator key may create operator keys; %s may not", ErrPermissionDenied, p.describe())
	}
	return nil
}

// checkRevokeKey lets an admin revoke the keys of its own tenant.
func checkRevokeKey(a *Authenticator, p Principal, msg any) error {
	m, ok := msg.(*pb.RevokeAPIKeyRequest)
	if !ok {
		return fmt.Errorf("%w: unexpected request %T", ErrPermissionDenied, msg)
	}
	k, ok := a.keys.APIKey(m.GetId())
	if !ok {
		return fmt.Errorf("%w: %q (list the keys of tenant %s with `confetti tenant key list %s`)", meta.ErrAPIKeyNotFound, m.GetId(), p.Tenant, p.Tenant)
	}
	if k.Tenant == p.Tenant {
		return nil
	}
	if k.Tenant == "" {
		return fmt.Errorf("%w: key %s is an operator key; only an operator key may revoke it", ErrPermissionDenied, k.ID)
	}
	return fmt.Errorf("%w: key %s of tenant %s may not revoke keys of tenant %q", ErrPermissionDenied, p.KeyID, p.Tenant, k.Tenant)
}

// methodName turns "/confetti.v1.KV/Put" into "KV.Put".
func methodName(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	svc, m, ok := strings.Cut(s, "/")
	if !ok {
		return s
	}
	if i := strings.LastIndexByte(svc, '.'); i >= 0 {
		svc = svc[i+1:]
	}
	return svc + "." + m
}
