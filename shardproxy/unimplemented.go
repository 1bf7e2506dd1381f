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

// releaseService serves the Releases service.
type releaseService struct {
	pb.UnimplementedReleasesServer
	p *Proxy
}

var _ pb.ReleasesServer = (*releaseService)(nil)

// releasesLater says what serves the Releases RPCs once they are available.
const releasesLater = "arrives with versioned items and releases"

// Publish is not served yet.
func (s *releaseService) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.ItemVersion, error) {
	return nil, s.p.notYet(pb.Releases_Publish_FullMethodName,
		"publishing the next immutable version of a config item "+releasesLater)
}

// GetVersion is not served yet.
func (s *releaseService) GetVersion(ctx context.Context, req *pb.GetVersionRequest) (*pb.ItemVersion, error) {
	return nil, s.p.notYet(pb.Releases_GetVersion_FullMethodName,
		"reading one version of an item "+releasesLater)
}

// History is not served yet.
func (s *releaseService) History(ctx context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	return nil, s.p.notYet(pb.Releases_History_FullMethodName,
		"listing an item's versions, newest first, "+releasesLater)
}

// ListItems is not served yet.
func (s *releaseService) ListItems(ctx context.Context, req *pb.ListItemsRequest) (*pb.ListItemsResponse, error) {
	return nil, s.p.notYet(pb.Releases_ListItems_FullMethodName,
		"listing a tenant's config items "+releasesLater)
}

// SetSchema is not served yet.
func (s *releaseService) SetSchema(ctx context.Context, req *pb.SetSchemaRequest) (*pb.SetSchemaResponse, error) {
	return nil, s.p.notYet(pb.Releases_SetSchema_FullMethodName,
		"validating an item's versions against a JSON Schema "+releasesLater)
}

// GetRelease is not served yet.
func (s *releaseService) GetRelease(ctx context.Context, req *pb.GetReleaseRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_GetRelease_FullMethodName,
		"reading an item's release record (stable version and grays) "+releasesLater)
}

// SetStable is not served yet.
func (s *releaseService) SetStable(ctx context.Context, req *pb.SetStableRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_SetStable_FullMethodName,
		"pointing the stable release at any published version, rollback included, "+releasesLater)
}

// StartGray is not served yet.
func (s *releaseService) StartGray(ctx context.Context, req *pb.StartGrayRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_StartGray_FullMethodName,
		"gray releases by percentage, label selector or instance list "+releasesLater)
}

// PromoteGray is not served yet.
func (s *releaseService) PromoteGray(ctx context.Context, req *pb.PromoteGrayRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_PromoteGray_FullMethodName,
		"making a gray's version stable "+releasesLater)
}

// AbortGray is not served yet.
func (s *releaseService) AbortGray(ctx context.Context, req *pb.AbortGrayRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_AbortGray_FullMethodName,
		"removing a gray release "+releasesLater)
}

// StartPlan is not served yet.
func (s *releaseService) StartPlan(ctx context.Context, req *pb.StartPlanRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_StartPlan_FullMethodName,
		"staged rollouts that advance after a bake time and pause on NACKs arrive with staged rollouts")
}

// ResumePlan is not served yet.
func (s *releaseService) ResumePlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_ResumePlan_FullMethodName,
		"resuming a paused staged rollout arrives with staged rollouts")
}

// AbortPlan is not served yet.
func (s *releaseService) AbortPlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return nil, s.p.notYet(pb.Releases_AbortPlan_FullMethodName,
		"stopping a staged rollout and removing its gray arrives with staged rollouts")
}

// Status is not served yet.
func (s *releaseService) Status(ctx context.Context, req *pb.ReleaseStatusRequest) (*pb.ReleaseStatus, error) {
	return nil, s.p.notYet(pb.Releases_Status_FullMethodName,
		"counting gateways per version from their ACKs and NACKs arrives with rollout status")
}

// Log is not served yet.
func (s *releaseService) Log(ctx context.Context, req *pb.ReleaseLogRequest) (*pb.ReleaseLogResponse, error) {
	return nil, s.p.notYet(pb.Releases_Log_FullMethodName,
		"listing an item's release changes (who, when, why) "+releasesLater)
}
