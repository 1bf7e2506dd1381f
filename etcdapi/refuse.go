package etcdapi

import (
	"context"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errOperators refuses what only the operators of the etcd clusters
// behind Confetti may do.
func errOperators(what string) error {
	return status.Errorf(codes.Unimplemented, "etcdapi: %s is not served to tenants: the etcd clusters behind Confetti are run by its operators (confetti shard, etcdctl against the shards)", what)
}

// Alarm lists no alarms, so that health checks (etcdctl endpoint health)
// pass; raising or clearing alarms is refused.
func (s *Server) Alarm(_ context.Context, r *etcdpb.AlarmRequest) (*etcdpb.AlarmResponse, error) {
	if r.Action != etcdpb.AlarmRequest_GET {
		return nil, errOperators("raising or clearing alarms")
	}
	return &etcdpb.AlarmResponse{Header: s.header(0)}, nil
}

func (s *Server) Defragment(context.Context, *etcdpb.DefragmentRequest) (*etcdpb.DefragmentResponse, error) {
	return nil, errOperators("defragmentation")
}

func (s *Server) Hash(context.Context, *etcdpb.HashRequest) (*etcdpb.HashResponse, error) {
	return nil, errOperators("Hash")
}

func (s *Server) HashKV(context.Context, *etcdpb.HashKVRequest) (*etcdpb.HashKVResponse, error) {
	return nil, errOperators("HashKV")
}

func (s *Server) Snapshot(*etcdpb.SnapshotRequest, grpc.ServerStreamingServer[etcdpb.SnapshotResponse]) error {
	return errOperators("a snapshot (read the tenant with a range instead)")
}

func (s *Server) MoveLeader(context.Context, *etcdpb.MoveLeaderRequest) (*etcdpb.MoveLeaderResponse, error) {
	return nil, errOperators("moving the leader")
}

func (s *Server) Downgrade(context.Context, *etcdpb.DowngradeRequest) (*etcdpb.DowngradeResponse, error) {
	return nil, errOperators("downgrading")
}

func (s *Server) MemberAdd(context.Context, *etcdpb.MemberAddRequest) (*etcdpb.MemberAddResponse, error) {
	return nil, errMembers
}

func (s *Server) MemberRemove(context.Context, *etcdpb.MemberRemoveRequest) (*etcdpb.MemberRemoveResponse, error) {
	return nil, errMembers
}

func (s *Server) MemberUpdate(context.Context, *etcdpb.MemberUpdateRequest) (*etcdpb.MemberUpdateResponse, error) {
	return nil, errMembers
}

func (s *Server) MemberPromote(context.Context, *etcdpb.MemberPromoteRequest) (*etcdpb.MemberPromoteResponse, error) {
	return nil, errMembers
}

// errMembers refuses member changes: members are cache nodes.
var errMembers = status.Error(codes.Unimplemented, "etcdapi: members are Confetti's cache nodes: add or remove cache nodes instead of etcd members")
