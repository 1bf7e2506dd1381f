package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/keys"
)

// waitUntil polls cond until it holds, failing the test after deadline.
func waitUntil(t *testing.T, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// grant grants a lease through the API.
func (a *api) grant(t *testing.T, tenant string, ttl int64) int64 {
	t.Helper()
	g, err := a.leases.Grant(testCtx(t), &pb.LeaseGrantRequest{Tenant: tenant, Ttl: ttl})
	if err != nil {
		t.Fatalf("grant for %s: %v", tenant, err)
	}
	if g.Id <= 0 || g.Ttl < ttl {
		t.Fatalf("grant for %s: id %d ttl %d, want a lease of at least %d s", tenant, g.Id, g.Ttl, ttl)
	}
	return g.Id
}

// keepAliveOnce opens a KeepAlive stream, renews id once and closes it.
func (a *api) keepAliveOnce(ctx context.Context, tenant string, id int64) (*pb.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.leases.KeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.LeaseKeepAliveRequest{Tenant: tenant, Id: id}); err != nil {
		_, err = stream.Recv()
		return nil, err
	}
	return stream.Recv()
}

// gauge returns the value of a gauge series with exactly labels, and
// whether it exists.
func gauge(t *testing.T, a *api, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsEqual(m.GetLabel(), labels) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func labelsEqual(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func TestLeaseGrantKeepAliveTimeToLiveRevoke(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "lessee")
	ctx := testCtx(t)

	id := a.grant(t, "lessee", 30)
	raw := c.rawTenantKeys(t, tn.Shard, "lessee")
	if _, ok := raw[keys.LeaseOwner("lessee", id)]; !ok || len(raw) != 1 {
		t.Fatalf("after grant the tenant holds %v, want only the lease's owner key", raw)
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "lessee", Key: "/session", Value: []byte("x"), Lease: id}); err != nil {
		t.Fatalf("put with the tenant's lease: %v", err)
	}

	ttl, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "lessee", Id: id, Keys: true})
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTtl != 30 || ttl.Ttl <= 0 || ttl.Ttl > 30 || !slices.Equal(ttl.Keys, []string{"kv//session"}) {
		t.Fatalf("time to live: granted %d, remaining %d, keys %q; want 30, (0, 30], only kv//session", ttl.GrantedTtl, ttl.Ttl, ttl.Keys)
	}
	if ttl.Header.GetTenant() != "lessee" || ttl.Header.GetShard() != tn.Shard {
		t.Fatalf("header %v does not name the tenant and its shard", ttl.Header)
	}
	if noKeys, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "lessee", Id: id}); err != nil || len(noKeys.Keys) != 0 {
		t.Fatalf("time to live without keys: %v, %v", noKeys, err)
	}

	ka, err := a.keepAliveOnce(ctx, "lessee", id)
	if err != nil {
		t.Fatal(err)
	}
	if ka.Id != id || ka.Ttl != 30 || ka.Header.GetRevision() == 0 {
		t.Fatalf("keepalive: %v, want lease %d renewed to 30 s with a revision", ka, id)
	}

	if _, err := a.leases.Revoke(ctx, &pb.LeaseRevokeRequest{Tenant: "lessee", Id: id}); err != nil {
		t.Fatal(err)
	}
	if raw := c.rawTenantKeys(t, tn.Shard, "lessee"); len(raw) != 0 {
		t.Fatalf("after revoke the tenant holds %v, want nothing", raw)
	}
	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{name: "time to live says expired", check: func(t *testing.T) {
			ttl, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "lessee", Id: id})
			if err != nil || ttl.Ttl != -1 {
				t.Fatalf("time to live: %v, %v; want ttl -1", ttl, err)
			}
		}},
		{name: "keepalive answers ttl 0", check: func(t *testing.T) {
			ka, err := a.keepAliveOnce(ctx, "lessee", id)
			if err != nil || ka.Id != id || ka.Ttl != 0 {
				t.Fatalf("keepalive: %v, %v; want ttl 0", ka, err)
			}
		}},
		{name: "revoke again is not found", check: func(t *testing.T) {
			_, err := a.leases.Revoke(ctx, &pb.LeaseRevokeRequest{Tenant: "lessee", Id: id})
			wantStatus(t, err, codes.NotFound, "lease not found", "confetti lease grant --tenant lessee")
		}},
		{name: "put with it is not found", check: func(t *testing.T) {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "lessee", Key: "k", Lease: id})
			wantStatus(t, err, codes.NotFound, "lease not found")
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestLeaseGrantRefusesBadInput(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxTTL: 60})
	tn := a.freshTenant(t, c, "grants")
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{name: "no ttl", call: func() error {
			_, err := a.leases.Grant(ctx, &pb.LeaseGrantRequest{Tenant: "grants"})
			return err
		}, code: codes.InvalidArgument, msg: "[1, 60]"},
		{name: "ttl over the limit", call: func() error {
			_, err := a.leases.Grant(ctx, &pb.LeaseGrantRequest{Tenant: "grants", Ttl: 61})
			return err
		}, code: codes.InvalidArgument, msg: "[1, 60]"},
		{name: "unknown tenant", call: func() error {
			_, err := a.leases.Grant(ctx, &pb.LeaseGrantRequest{Tenant: "ghost", Ttl: 10})
			return err
		}, code: codes.NotFound, msg: "confetti tenant create ghost"},
		{name: "zero lease id", call: func() error {
			_, err := a.leases.Revoke(ctx, &pb.LeaseRevokeRequest{Tenant: "grants"})
			return err
		}, code: codes.InvalidArgument, msg: "must be positive"},
		{name: "negative lease id", call: func() error {
			_, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "grants", Id: -3})
			return err
		}, code: codes.InvalidArgument, msg: "must be positive"},
		{name: "keepalive with a bad tenant name", call: func() error {
			_, err := a.keepAliveOnce(ctx, "Grants!", 1)
			return err
		}, code: codes.InvalidArgument, msg: "[a-z0-9]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), tc.code, tc.msg)
		})
	}
	if raw := c.rawTenantKeys(t, tn.Shard, "grants"); len(raw) != 0 {
		t.Fatalf("refused requests left keys: %v", raw)
	}
}

// TestLeaseBoundToTenant uses a lease of acme from acme-2, a tenant on the
// same shard, through every API that takes a lease id: each is refused
// with PermissionDenied, and nothing is written, renewed or revoked.
func TestLeaseBoundToTenant(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	owner := a.freshTenant(t, c, "acme")
	other := a.freshTenant(t, c, "acme-2")
	if owner.Shard != other.Shard {
		t.Fatalf("acme on %s and acme-2 on %s; the test needs one shard", owner.Shard, other.Shard)
	}
	ctx := testCtx(t)
	id := a.grant(t, "acme", 60)
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "acme", Key: "mine", Value: []byte("v"), Lease: id}); err != nil {
		t.Fatal(err)
	}
	// A lease granted around the proxy is no tenant's.
	stray, err := c.raw[owner.Shard].Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.raw[owner.Shard].Revoke(context.Background(), stray.ID) })
	leasedPut := func(lease int64) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_Put{Put: &pb.PutRequest{Key: "stolen", Value: []byte("x"), Lease: lease}}}
	}
	for _, tc := range []struct {
		name string
		call func(lease int64) error
	}{
		{name: "put", call: func(lease int64) error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "acme-2", Key: "stolen", Value: []byte("x"), Lease: lease})
			return err
		}},
		{name: "txn success branch", call: func(lease int64) error {
			_, err := a.kv.Txn(ctx, &pb.TxnRequest{Tenant: "acme-2", Success: []*pb.RequestOp{putOp("plain", "x"), leasedPut(lease)}})
			return err
		}},
		{name: "txn failure branch", call: func(lease int64) error {
			_, err := a.kv.Txn(ctx, &pb.TxnRequest{
				Tenant:  "acme-2",
				Compare: []*pb.Compare{{Key: "missing", Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}},
				Failure: []*pb.RequestOp{putOp("plain", "x"), leasedPut(lease)},
			})
			return err
		}},
		{name: "keepalive", call: func(lease int64) error {
			_, err := a.keepAliveOnce(ctx, "acme-2", lease)
			return err
		}},
		{name: "revoke", call: func(lease int64) error {
			_, err := a.leases.Revoke(ctx, &pb.LeaseRevokeRequest{Tenant: "acme-2", Id: lease})
			return err
		}},
		{name: "time to live", call: func(lease int64) error {
			_, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "acme-2", Id: lease, Keys: true})
			return err
		}},
		{name: "register", call: func(lease int64) error {
			_, err := a.leases.Register(ctx, &pb.RegisterRequest{Tenant: "acme-2", Instance: &pb.Instance{Service: "api", Id: "i1", Address: "10.0.0.1:80", Lease: lease}})
			return err
		}},
	} {
		t.Run(tc.name+" with another tenant's lease", func(t *testing.T) {
			wantStatus(t, tc.call(id), codes.PermissionDenied, fmt.Sprintf("lease %d does not belong to tenant \"acme-2\"", id), "confetti lease grant --tenant acme-2")
		})
		t.Run(tc.name+" with a lease granted around the proxy", func(t *testing.T) {
			wantStatus(t, tc.call(int64(stray.ID)), codes.PermissionDenied, "does not belong to tenant")
		})
	}
	if raw := c.rawTenantKeys(t, other.Shard, "acme-2"); len(raw) != 0 {
		t.Fatalf("refused requests wrote %v", raw)
	}
	ttl, err := c.raw[owner.Shard].TimeToLive(ctx, clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	var attached []string
	for _, k := range ttl.Keys {
		attached = append(attached, string(k))
	}
	slices.Sort(attached)
	if want := []string{keys.KV("acme") + "mine", keys.LeaseOwner("acme", id)}; ttl.TTL <= 0 || !slices.Equal(attached, want) {
		t.Fatalf("acme's lease: ttl %d, keys %q; want alive with only %q", ttl.TTL, attached, want)
	}
	// The owner still uses it, and a tenant on another shard cannot even
	// find it.
	if _, err := a.keepAliveOnce(ctx, "acme", id); err != nil {
		t.Fatalf("owner's keepalive: %v", err)
	}
	_, err = a.kv.Put(ctx, &pb.PutRequest{Tenant: "acme-3", Key: "stolen", Value: []byte("x"), Lease: id})
	if code := status.Code(err); code != codes.NotFound && code != codes.PermissionDenied {
		t.Fatalf("put on another shard with acme's lease: %v, want NotFound or PermissionDenied", err)
	}
}

func TestKeepAliveUsesOneStreamPerShard(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	s1 := a.freshTenant(t, c, "acme")
	s2 := a.freshTenant(t, c, "acme-3")
	if s1.Shard == s2.Shard {
		t.Fatalf("acme and acme-3 both on %s; the test needs two shards", s1.Shard)
	}
	ctx := testCtx(t)
	// 50 callers renew 25 leases, two callers per lease, so that answers
	// for one lease id also reach every caller waiting on it.
	const callers = 50
	type caller struct {
		tenant string
		lease  int64
	}
	var all []caller
	for i := range callers / 2 {
		tenant := "acme"
		if i%5 == 4 {
			tenant = "acme-3"
		}
		c := caller{tenant: tenant, lease: a.grant(t, tenant, 30)}
		all = append(all, c, c)
	}
	// Every caller holds its own stream open and renews three times; the
	// first answers arrive before any stream closes.
	var answered, done sync.WaitGroup
	answered.Add(callers)
	release := make(chan struct{})
	errs := make(chan error, callers)
	for _, cl := range all {
		done.Add(1)
		go func() {
			defer done.Done()
			first := true
			defer func() {
				if first {
					answered.Done()
				}
			}()
			stream, err := a.leases.KeepAlive(ctx)
			if err != nil {
				errs <- err
				return
			}
			for i := range 3 {
				if err := stream.Send(&pb.LeaseKeepAliveRequest{Tenant: cl.tenant, Id: cl.lease}); err != nil {
					errs <- err
					return
				}
				resp, err := stream.Recv()
				if err != nil {
					errs <- err
					return
				}
				if resp.Id != cl.lease || resp.Ttl != 30 {
					errs <- fmt.Errorf("renewal %d of lease %d: %v", i, cl.lease, resp)
					return
				}
				if first {
					first = false
					answered.Done()
					<-release
				}
			}
			stream.CloseSend()
			if _, err := stream.Recv(); err == nil {
				errs <- errors.New("stream not ended after CloseSend")
			}
		}()
	}
	answered.Wait()
	open := map[string]float64{}
	for _, shard := range []string{s1.Shard, s2.Shard} {
		open[shard] = gauge(t, a, "confetti_proxy_keepalive_streams", map[string]string{"shard": shard})
	}
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if want := map[string]float64{s1.Shard: 1, s2.Shard: 1}; open[s1.Shard] != 1 || open[s2.Shard] != 1 {
		t.Fatalf("with %d caller streams open, keepalive streams per shard = %v, want %v", callers, open, want)
	}
}

func TestKeepAliveKeepsAShortLeaseAlivePastItsTTL(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "short")
	ctx := testCtx(t)
	put, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "short", Key: "/alive", Value: []byte("x"), Ttl: 2})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := a.leases.KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var granted int64
	renew := func() {
		t.Helper()
		if err := stream.Send(&pb.LeaseKeepAliveRequest{Tenant: "short", Id: put.Lease}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Ttl <= 0 {
			t.Fatalf("lease %d expired while kept alive: %v", put.Lease, resp)
		}
		granted = resp.Ttl
	}
	renew()
	exists := func() bool {
		got, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "short", Key: "/alive"})
		if err != nil {
			t.Fatal(err)
		}
		return len(got.Kvs) == 1
	}
	// Renew at a third of the TTL for three TTLs.
	ticker := time.NewTicker(time.Duration(granted) * time.Second / 3)
	defer ticker.Stop()
	for until := time.Now().Add(3 * time.Duration(granted) * time.Second); time.Now().Before(until); {
		<-ticker.C
		renew()
		if !exists() {
			t.Fatalf("key gone while its lease was kept alive")
		}
	}
	stream.CloseSend()
	// Without keepalives the key goes within its TTL (plus etcd's expiry
	// check interval and slack for a loaded machine).
	waitUntil(t, time.Duration(granted)*time.Second+10*time.Second, "the key to expire", func() bool { return !exists() })
}

func TestCloseEndsKeepAliveStreams(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "closing")
	ctx := testCtx(t)
	id := a.grant(t, "closing", 30)
	stream, err := a.leases.KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.LeaseKeepAliveRequest{Tenant: "closing", Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	a.proxy.Close()
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unavailable, "shutting down")
	_, err = a.keepAliveOnce(ctx, "closing", id)
	wantStatus(t, err, codes.Unavailable, "shutting down")
	a.proxy.Close()
}

// TestKeepAliveStreamReopensAfterShardRestart restarts a shard: the
// proxy's keepalive stream to it fails, and the next renewal opens a new
// one on which the lease (kept by etcd across the restart) is renewed.
func TestKeepAliveStreamReopensAfterShardRestart(t *testing.T) {
	c := newClusters(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	shard, err := embedetcd.Start(ctx, embedetcd.Config{Name: "restarting", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shard.Close() })
	a := newAPI(t, c, Config{RequestTimeout: 2 * time.Second})
	if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "r1", Endpoints: shard.Endpoints()}); err != nil {
		t.Fatal(err)
	}
	a.createTenant(t, "phoenix")
	id := a.grant(t, "phoenix", 60)
	if _, err := a.keepAliveOnce(ctx, "phoenix", id); err != nil {
		t.Fatal(err)
	}
	streams := func() float64 {
		return gauge(t, a, "confetti_proxy_keepalive_streams", map[string]string{"shard": "r1"})
	}
	if n := streams(); n != 1 {
		t.Fatalf("keepalive streams to r1 = %v, want 1", n)
	}

	shard.Close()
	waitUntil(t, 30*time.Second, "the stream to the stopped shard to close", func() bool { return streams() == 0 })
	_, err = a.keepAliveOnce(ctx, "phoenix", id)
	wantStatus(t, err, codes.Unavailable)

	shard, err = embedetcd.Start(ctx, embedetcd.Config{Name: "restarting", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var resp *pb.LeaseKeepAliveResponse
	waitUntil(t, 30*time.Second, "a renewal on the restarted shard", func() bool {
		resp, err = a.keepAliveOnce(ctx, "phoenix", id)
		return err == nil
	})
	if resp.Ttl != 60 {
		t.Fatalf("renewal after restart: %v, want ttl 60", resp)
	}
	if n := streams(); n != 1 {
		t.Fatalf("keepalive streams to r1 after the restart = %v, want 1", n)
	}
}
