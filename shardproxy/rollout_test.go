package shardproxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// fakeCache answers Cache.Rollout with fixed gateways, after checking the
// caller's API key.
type fakeCache struct {
	pb.UnimplementedCacheServer
	key string
	gws []*pb.GatewayRollout
}

func (f *fakeCache) Rollout(ctx context.Context, req *pb.RolloutRequest) (*pb.RolloutResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get(auth.MetadataKey); len(got) != 1 || got[0] != f.key {
		return nil, status.Errorf(codes.Unauthenticated, "key %v", got)
	}
	if req.GetTenant() != "roll" || req.GetItem() != "cfg" {
		return nil, status.Errorf(codes.InvalidArgument, "asked for %s/%s", req.GetTenant(), req.GetItem())
	}
	return &pb.RolloutResponse{Node: "fake", Gateways: f.gws}, nil
}

// serveCache serves f on a real listener until the test ends.
func serveCache(t *testing.T, f *fakeCache) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterCacheServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func gw(id string, version int64, st pb.GatewayRollout_State, connected, at int64, errMsg string) *pb.GatewayRollout {
	return &pb.GatewayRollout{InstanceId: id, Version: version, State: st, ConnectedTime: connected, Time: at, Error: errMsg}
}

// TestStatusMergesCacheNodes registers two fake cache nodes and a dead
// one: Status counts each gateway once, where it connected last, skips
// and counts the dead node, and lists every version the release names.
func TestStatusMergesCacheNodes(t *testing.T) {
	const key = "operator-key"
	c := newClusters(t, "roll")
	ctx := testCtx(t)
	if _, err := c.store.AddShard(ctx, meta.Shard{ID: "roll", Endpoints: c.shards["roll"].Endpoints()}); err != nil {
		t.Fatal(err)
	}
	n1 := serveCache(t, &fakeCache{key: key, gws: []*pb.GatewayRollout{
		gw("gw-1", 2, pb.GatewayRollout_NACKED, 10, 11, "stale"), // moved to n2 since
		gw("gw-2", 1, pb.GatewayRollout_RUNNING, 10, 12, ""),
		gw("gw-3", 2, pb.GatewayRollout_NACKED, 10, 13, "bad json"),
	}})
	n2 := serveCache(t, &fakeCache{key: key, gws: []*pb.GatewayRollout{
		gw("gw-1", 2, pb.GatewayRollout_RUNNING, 20, 21, ""),
		gw("gw-4", 2, pb.GatewayRollout_PENDING, 20, 22, ""),
		gw("gw-5", 2, pb.GatewayRollout_NACKED, 20, 9, "schema"),
	}})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	regCtx, unregister := context.WithCancel(context.Background())
	t.Cleanup(unregister)
	for name, addr := range map[string]string{"n1": n1, "n2": n2, "n3-dead": deadAddr} {
		if err := c.store.RegisterCache(regCtx, meta.CacheNode{Name: name, Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	testcluster.WaitFor(t, "three cache nodes in the store", func() bool { return len(c.store.Caches()) == 3 })

	a := newAPI(t, c, Config{PlanInterval: -1, CacheAPIKey: key})
	a.createTenant(t, "roll")
	a.publish(t, "roll", "cfg", "1")
	a.publish(t, "roll", "cfg", "2")
	a.publish(t, "roll", "cfg", "3")
	if _, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: "roll", Item: "cfg", Gray: &pb.Gray{Id: "g", Version: 2, Rule: pctRule(5000)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: "roll", Item: "cfg", Gray: &pb.Gray{Id: "h", Version: 3, Rule: selRule("canary")}}); err != nil {
		t.Fatal(err)
	}
	st, err := a.releases.Status(ctx, &pb.ReleaseStatusRequest{Tenant: "roll", Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.VersionStatus{
		{Version: 3},
		{Version: 2, Running: 1, Pending: 1, Nacked: 2, Errors: []string{"gw-5: schema", "gw-3: bad json"}},
		{Version: 1, Running: 1},
	}
	if diff := cmp.Diff(want, st.GetVersions(), protocmp.Transform()); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	if st.GetRelease().GetStable() != 1 || len(st.GetRelease().GetGrays()) != 2 {
		t.Errorf("status release = %v", st.GetRelease())
	}
	if got := testutil.ToFloat64(a.proxy.rollouts.(*cacheRollouts).failures.WithLabelValues("n3-dead")); got != 1 {
		t.Errorf("failures of the dead node = %v, want 1", got)
	}

	// With no node answering, Status says so.
	unregister()
	testcluster.WaitFor(t, "cache nodes to leave the store", func() bool { return len(c.store.Caches()) == 0 })
	regCtx2, unregister2 := context.WithCancel(context.Background())
	t.Cleanup(unregister2)
	if err := c.store.RegisterCache(regCtx2, meta.CacheNode{Name: "n3-dead", Addr: deadAddr}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the dead node in the store", func() bool { return len(c.store.Caches()) == 1 })
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = a.releases.Status(sctx, &pb.ReleaseStatusRequest{Tenant: "roll", Item: "cfg"})
	wantStatus(t, err, codes.Unavailable, "none of the 1 cache nodes answered")
}

func TestTallyKeepsFirstNACKErrors(t *testing.T) {
	var gws []*pb.GatewayRollout
	for i := range 8 {
		gws = append(gws, gw(string(rune('h'-i)), 4, pb.GatewayRollout_NACKED, 0, int64(i), "e"))
	}
	vs := tally(gws)[4]
	if vs.GetNacked() != 8 || !cmp.Equal(vs.GetErrors(), []string{"h: e", "g: e", "f: e", "e: e", "d: e"}) {
		t.Errorf("tally = %v", vs)
	}
}
