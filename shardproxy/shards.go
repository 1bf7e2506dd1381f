package shardproxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
)

// shardService serves the Shards service from the meta store's registry.
type shardService struct {
	pb.UnimplementedShardsServer
	p *Proxy
}

var _ pb.ShardsServer = (*shardService)(nil)

// AddShard registers an etcd cluster as an active shard, once
// checkEndpoints has found it an etcd cluster this proxy can read and
// write with its etcd credentials; a failed check is ErrShardCheckFailed
// (FailedPrecondition) naming the endpoint and the step, unless force
// registers the shard anyway as pending: it takes no tenant until a
// proxy's health check finds it passing (then it becomes active by itself)
// or an operator activates it. Repeating the registration with the same
// endpoints returns the shard unchanged, unchecked; other endpoints for a
// registered id are AlreadyExists.
func (s *shardService) AddShard(ctx context.Context, req *pb.AddShardRequest) (*pb.Shard, error) {
	return serve(ctx, s.p, pb.Shards_AddShard_FullMethodName, req, func(ctx context.Context, req *pb.AddShardRequest) (*pb.Shard, error) {
		sh := meta.Shard{
			ID:        req.GetId(),
			Endpoints: req.GetEndpoints(),
			State:     meta.ShardActive,
			Weight:    req.GetWeight(),
		}
		if err := keys.ValidName("shard", sh.ID); err != nil {
			return nil, err
		}
		if len(sh.Endpoints) == 0 {
			return nil, fmt.Errorf("%w: shard %q needs at least one etcd endpoint (--etcd-endpoints URL[,URL...])", ErrInvalidRequest, sh.ID)
		}
		if slices.Contains(sh.Endpoints, "") {
			return nil, fmt.Errorf("%w: shard %q has an empty endpoint in %q", ErrInvalidRequest, sh.ID, strings.Join(sh.Endpoints, ","))
		}
		if sh.Weight < 0 {
			return nil, fmt.Errorf("%w: shard %q weight %v must not be negative", ErrInvalidRequest, sh.ID, sh.Weight)
		}
		_, registered := s.p.store.Shard(sh.ID)
		var checkErr error
		if !registered {
			// A registered id needs no check: the store returns it
			// unchanged for the same endpoints and AlreadyExists for
			// others.
			if checkErr = s.p.checkEndpoints(ctx, sh.ID, sh.Endpoints); checkErr != nil {
				if !req.GetForce() {
					return nil, checkErr
				}
				s.p.lg.Warn("registering a shard that failed its check, as pending", zap.String("shard", sh.ID), zap.Strings("endpoints", sh.Endpoints), zap.Error(checkErr))
				sh.State = meta.ShardPending
			}
		}
		added, err := s.p.store.AddShard(ctx, sh)
		if err != nil {
			return nil, err
		}
		if !registered {
			s.p.health.record(added.ID, healthError(checkErr))
		}
		return s.shardProto(added, tenantCounts(s.p.store.Tenants())[added.ID]), nil
	})
}

// ListShards lists the registry in id order with the number of tenants
// placed on each shard.
//
// With with_usage, each shard is asked, concurrently:
//   - keys: the number of keys under the tenants' root prefix (every
//     tenant's keys in every namespace, internal ones included), by a
//     count-only range;
//   - bytes: the bytes of the shard's etcd backend logically in use
//     (DbSizeInUse of the first member that answers a Status), which
//     covers all of the cluster's keys and the history it has not
//     compacted yet. This is what the etcd storage quota is measured
//     against, not the sum of the tenants' current keys and values.
//
// A shard that does not answer within the request timeout reports -1 for
// the count it could not get; the listing itself still succeeds.
func (s *shardService) ListShards(ctx context.Context, req *pb.ListShardsRequest) (*pb.ListShardsResponse, error) {
	return serve(ctx, s.p, pb.Shards_ListShards_FullMethodName, req, func(ctx context.Context, req *pb.ListShardsRequest) (*pb.ListShardsResponse, error) {
		shards := s.p.store.Shards()
		counts := tenantCounts(s.p.store.Tenants())
		resp := &pb.ListShardsResponse{Shards: make([]*pb.Shard, len(shards))}
		s.p.health.refresh(ctx, shards)
		for i, sh := range shards {
			resp.Shards[i] = s.shardProto(sh, counts[sh.ID])
		}
		if !req.GetWithUsage() {
			return resp, nil
		}
		var wg sync.WaitGroup
		for _, out := range resp.Shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out.Keys, out.Bytes = s.usage(ctx, out.Id)
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return resp, nil
	})
}

// DrainShard marks a shard draining: it keeps its tenants, which go on
// working, but placement proposes it for no new tenant.
func (s *shardService) DrainShard(ctx context.Context, req *pb.DrainShardRequest) (*pb.Shard, error) {
	return serve(ctx, s.p, pb.Shards_DrainShard_FullMethodName, req, func(ctx context.Context, req *pb.DrainShardRequest) (*pb.Shard, error) {
		return s.setState(ctx, req.GetId(), meta.ShardDraining)
	})
}

// ActivateShard makes a draining or pending shard active: placement may
// propose it again, while the proxy finds it healthy.
func (s *shardService) ActivateShard(ctx context.Context, req *pb.ActivateShardRequest) (*pb.Shard, error) {
	return serve(ctx, s.p, pb.Shards_ActivateShard_FullMethodName, req, func(ctx context.Context, req *pb.ActivateShardRequest) (*pb.Shard, error) {
		return s.setState(ctx, req.GetId(), meta.ShardActive)
	})
}

func (s *shardService) setState(ctx context.Context, id string, state meta.ShardState) (*pb.Shard, error) {
	if err := keys.ValidName("shard", id); err != nil {
		return nil, err
	}
	sh, err := s.p.store.SetShardState(ctx, id, state)
	if err != nil {
		return nil, err
	}
	return s.shardProto(sh, tenantCounts(s.p.store.Tenants())[sh.ID]), nil
}

// RemoveShard deletes a shard that holds no tenant from the registry;
// proxies and cache nodes close their clients of it. A shard holding
// tenants is refused with FailedPrecondition and their number.
func (s *shardService) RemoveShard(ctx context.Context, req *pb.RemoveShardRequest) (*pb.Shard, error) {
	return serve(ctx, s.p, pb.Shards_RemoveShard_FullMethodName, req, func(ctx context.Context, req *pb.RemoveShardRequest) (*pb.Shard, error) {
		sh, err := s.p.store.RemoveShard(ctx, req.GetId())
		if err != nil {
			return nil, err
		}
		s.p.clients.Prune()
		out := shardProto(sh, 0)
		out.Health = "removed from the registry"
		return out, nil
	})
}

// usage counts a shard's tenant keys and its backend bytes in use; -1
// stands for a count the shard did not give.
func (s *shardService) usage(ctx context.Context, shard string) (nkeys, nbytes int64) {
	nkeys, nbytes = -1, -1
	cli, err := s.p.clients.Get(shard)
	if err != nil {
		s.p.lg.Warn("shard usage unavailable", zap.String("shard", shard), zap.Error(err))
		return nkeys, nbytes
	}
	ectx, cancel := s.p.etcdCtx(ctx)
	defer cancel()
	if resp, err := cli.Get(ectx, keys.Root, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		s.p.lg.Warn("shard key count unavailable", zap.String("shard", shard), zap.Error(shardError(ctx, shard, err)))
	} else {
		nkeys = resp.Count
	}
	for _, ep := range cli.Endpoints() {
		st, err := cli.Status(ectx, ep)
		if err != nil {
			s.p.lg.Warn("shard member status unavailable", zap.String("shard", shard), zap.String("endpoint", ep), zap.Error(err))
			continue
		}
		nbytes = st.DbSizeInUse
		break
	}
	return nkeys, nbytes
}

func tenantCounts(tenants []meta.Tenant) map[string]int {
	counts := make(map[string]int)
	for _, t := range tenants {
		counts[t.Shard]++
	}
	return counts
}

// shardProto is shardProto with this proxy's view of the shard's health.
func (s *shardService) shardProto(sh meta.Shard, tenants int) *pb.Shard {
	out := shardProto(sh, tenants)
	out.Healthy, out.Health = s.p.health.healthOf(sh.ID)
	return out
}

func shardProto(sh meta.Shard, tenants int) *pb.Shard {
	return &pb.Shard{
		Id:        sh.ID,
		Endpoints: append([]string(nil), sh.Endpoints...),
		State:     shardState(sh.State),
		Weight:    sh.Weight,
		Tenants:   int64(tenants),
	}
}

func shardState(s meta.ShardState) pb.Shard_State {
	switch s {
	case meta.ShardActive:
		return pb.Shard_ACTIVE
	case meta.ShardDraining:
		return pb.Shard_DRAINING
	case meta.ShardPending:
		return pb.Shard_PENDING
	}
	return pb.Shard_STATE_UNSPECIFIED
}
