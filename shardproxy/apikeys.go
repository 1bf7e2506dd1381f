package shardproxy

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
)

// CreateAPIKey creates a key for a tenant, or an operator key when the
// tenant is empty and the role is OPERATOR, and returns its secret, which
// is never stored and cannot be shown again. Who may create which key is
// the access policy's business (internal/auth), checked before this runs.
func (s *tenantService) CreateAPIKey(ctx context.Context, req *pb.CreateAPIKeyRequest) (*pb.CreateAPIKeyResponse, error) {
	return serve(ctx, s.p, pb.Tenants_CreateAPIKey_FullMethodName, req, func(ctx context.Context, req *pb.CreateAPIKeyRequest) (*pb.CreateAPIKeyResponse, error) {
		role, err := roleFromProto(req.GetRole())
		if err != nil {
			return nil, err
		}
		switch {
		case role == meta.RoleOperator && req.GetTenant() != "":
			return nil, fmt.Errorf("%w: operator keys belong to no tenant; leave the tenant empty, or choose reader, writer or admin", ErrInvalidRequest)
		case role != meta.RoleOperator && req.GetTenant() == "":
			return nil, fmt.Errorf("%w: a %s key needs a tenant", ErrInvalidRequest, role)
		}
		key, err := auth.NewKey()
		if err != nil {
			return nil, err
		}
		rec, err := s.p.store.CreateAPIKey(ctx, meta.APIKey{
			ID:     key.ID,
			Tenant: req.GetTenant(),
			Role:   role,
			Name:   req.GetName(),
			SHA256: key.Hash(),
		})
		if err != nil {
			return nil, err
		}
		s.p.lg.Info("api key created", apiKeyFields(ctx, rec)...)
		return &pb.CreateAPIKeyResponse{Key: apiKeyProto(rec), Secret: key.String()}, nil
	})
}

// ListAPIKeys lists a tenant's keys, or the operator keys for an empty
// tenant, oldest first, without secrets.
func (s *tenantService) ListAPIKeys(ctx context.Context, req *pb.ListAPIKeysRequest) (*pb.ListAPIKeysResponse, error) {
	return serve(ctx, s.p, pb.Tenants_ListAPIKeys_FullMethodName, req, func(ctx context.Context, req *pb.ListAPIKeysRequest) (*pb.ListAPIKeysResponse, error) {
		if t := req.GetTenant(); t != "" {
			if _, err := s.p.store.LookupTenant(ctx, t); err != nil {
				return nil, err
			}
		}
		keys := s.p.store.APIKeys(req.GetTenant())
		resp := &pb.ListAPIKeysResponse{Keys: make([]*pb.APIKey, len(keys))}
		for i, k := range keys {
			resp.Keys[i] = apiKeyProto(k)
		}
		return resp, nil
	})
}

// RevokeAPIKey deletes a key from meta. This proxy refuses it before
// answering; every other proxy and cache node refuses it, and ends the
// streams opened with it, as soon as its meta watch delivers the delete.
func (s *tenantService) RevokeAPIKey(ctx context.Context, req *pb.RevokeAPIKeyRequest) (*pb.RevokeAPIKeyResponse, error) {
	return serve(ctx, s.p, pb.Tenants_RevokeAPIKey_FullMethodName, req, func(ctx context.Context, req *pb.RevokeAPIKeyRequest) (*pb.RevokeAPIKeyResponse, error) {
		if req.GetId() == "" {
			return nil, fmt.Errorf("%w: name the key id to revoke", ErrInvalidRequest)
		}
		rec, err := s.p.store.RevokeAPIKey(ctx, req.GetId())
		if err != nil {
			return nil, err
		}
		s.p.lg.Info("api key revoked", apiKeyFields(ctx, rec)...)
		return &pb.RevokeAPIKeyResponse{}, nil
	})
}

func roleFromProto(r pb.Role) (meta.Role, error) {
	switch r {
	case pb.Role_READER:
		return meta.RoleReader, nil
	case pb.Role_WRITER:
		return meta.RoleWriter, nil
	case pb.Role_ADMIN:
		return meta.RoleAdmin, nil
	case pb.Role_OPERATOR:
		return meta.RoleOperator, nil
	}
	return "", fmt.Errorf("%w: role %v: choose READER, WRITER, ADMIN or OPERATOR", ErrInvalidRequest, r)
}

func roleProto(r meta.Role) pb.Role {
	switch r {
	case meta.RoleReader:
		return pb.Role_READER
	case meta.RoleWriter:
		return pb.Role_WRITER
	case meta.RoleAdmin:
		return pb.Role_ADMIN
	case meta.RoleOperator:
		return pb.Role_OPERATOR
	}
	return pb.Role_ROLE_UNSPECIFIED
}

func apiKeyProto(k meta.APIKey) *pb.APIKey {
	return &pb.APIKey{Id: k.ID, Tenant: k.Tenant, Role: roleProto(k.Role), Name: k.Name, CreateTime: k.CreateTime}
}

// apiKeyFields describe a key in logs, with the caller's key when the
// request was authenticated.
func apiKeyFields(ctx context.Context, k meta.APIKey) []zap.Field {
	fields := []zap.Field{zap.String("key-id", k.ID), zap.String("tenant", k.Tenant), zap.String("role", string(k.Role)), zap.String("name", k.Name)}
	if p, ok := auth.FromContext(ctx); ok {
		fields = append(fields, zap.String("by-key-id", p.KeyID))
	}
	return fields
}
