package shardproxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
)

func TestDrainShardKeepsTenantsAndTakesNoNewOnes(t *testing.T) {
	c := newClusters(t, "d1", "d2")
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	for _, id := range []string{"d1", "d2"} {
		if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: id, Endpoints: c.shards[id].Endpoints()}); err != nil {
			t.Fatal(err)
		}
	}
	// Place tenants until d1 holds one, then drain d1.
	var onD1 string
	for i := 0; onD1 == ""; i++ {
		tn := a.createTenant(t, fmt.Sprintf("early-%d", i))
		if tn.Shard == "d1" {
			onD1 = tn.Name
		}
	}
	sh, err := a.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: "d1"})
	if err != nil || sh.State != pb.Shard_DRAINING {
		t.Fatalf("drain: %v, %v", sh, err)
	}
	for i := 0; i < 10; i++ {
		if tn := a.createTenant(t, fmt.Sprintf("late-%d", i)); tn.Shard != "d2" {
			t.Fatalf("tenant %s placed on draining shard %s", tn.Name, tn.Shard)
		}
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: onD1, Key: "still", Value: []byte("works")}); err != nil {
		t.Fatalf("a tenant of a draining shard cannot write: %v", err)
	}
	list, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{})
	if err != nil || list.Shards[0].State != pb.Shard_DRAINING || list.Shards[1].State != pb.Shard_ACTIVE {
		t.Fatalf("list: %v, %v", list, err)
	}
	_, err = a.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: "missing"})
	wantStatus(t, err, codes.NotFound, "missing")
}

// withClients is c with a client set of its own built by config, as a
// proxy with other etcd credentials would hold.
func withClients(t *testing.T, c *clusters, config func([]string) clientv3.Config) *clusters {
	t.Helper()
	own := *c
	own.clients = meta.NewClients(c.store, config)
	t.Cleanup(own.clients.Close)
	return &own
}

// freePort returns a port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

func TestAddShardChecksTheEndpoints(t *testing.T) {
	c := newClusters(t, "c1", "c2")
	a := newAPI(t, c, Config{ShardCheckTimeout: time.Second})
	ctx := testCtx(t)
	// An HTTP server answers, but is not etcd.
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	nothing := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	good := c.shards["c1"].Endpoints()[0]
	for _, tc := range []struct {
		name      string
		endpoints []string
		parts     []string
	}{
		{name: "nothing listens", endpoints: []string{nothing}, parts: []string{"shard bad: endpoint " + nothing + ": ", "Status call", "--force"}},
		{name: "not etcd", endpoints: []string{web.URL}, parts: []string{"endpoint " + web.URL + ": ", "Status call"}},
		{name: "one bad member", endpoints: []string{good, nothing}, parts: []string{"endpoint " + nothing + ": "}},
		{name: "two clusters", endpoints: []string{good, c.shards["c2"].Endpoints()[0]}, parts: []string{"different etcd clusters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "bad", Endpoints: tc.endpoints})
			wantStatus(t, err, codes.FailedPrecondition, tc.parts...)
			if strings.Contains(status.Convert(err).Message(), "endpoint "+good+": ") {
				t.Fatalf("the good endpoint is reported: %v", err)
			}
			if _, ok := c.store.Shard("bad"); ok {
				t.Fatal("the refused shard was registered")
			}
		})
	}

	sh, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "c1", Endpoints: c.shards["c1"].Endpoints()})
	if err != nil || sh.State != pb.Shard_ACTIVE || !sh.Healthy {
		t.Fatalf("add a reachable shard: %v, %v", sh, err)
	}
	if resp, err := c.raw["c1"].Get(ctx, meta.ProbePrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("the check left %v probe keys (%v)", resp.Count, err)
	}
}

// TestAddShardChecksWritesWithTheProxysCredentials adds a shard whose
// etcd lets the proxy's user read tenants' keys but write nothing else,
// and with a wrong password; then forces it: it is pending and takes no
// tenant.
func TestAddShardChecksWritesWithTheProxysCredentials(t *testing.T) {
	c := newClusters(t, "open")
	ctx := testCtx(t)
	locked, err := embedetcd.Start(ctx, embedetcd.Config{Name: "locked"})
	if err != nil {
		t.Fatal(err)
	}
	defer locked.Close()
	if _, err := locked.EnableAuth(ctx, embedetcd.Auth{RootPassword: "root-pw", User: "narrow", Password: "pw", Prefix: keys.Root}); err != nil {
		t.Fatal(err)
	}
	as := func(user, password string) func([]string) clientv3.Config {
		return func(eps []string) clientv3.Config {
			cfg := meta.DefaultClientConfig(eps)
			if eps[0] == locked.Endpoints()[0] {
				cfg.Username, cfg.Password = user, password
			}
			return cfg
		}
	}
	eps := locked.Endpoints()

	wrong := newAPI(t, withClients(t, c, as("narrow", "wrong")), Config{ShardCheckTimeout: time.Second})
	_, err = wrong.shards.AddShard(ctx, &pb.AddShardRequest{Id: "locked", Endpoints: eps})
	wantStatus(t, err, codes.FailedPrecondition, "endpoint "+eps[0]+": cannot connect with the proxy's etcd credentials", "authentication failed")

	a := newAPI(t, withClients(t, c, as("narrow", "pw")), Config{ShardCheckTimeout: time.Second})
	_, err = a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "locked", Endpoints: eps})
	wantStatus(t, err, codes.FailedPrecondition, "cannot write the probe key "+meta.ProbePrefix, "permission denied", "readwrite on the prefix /confetti/")

	sh, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "locked", Endpoints: eps, Force: true})
	if err != nil || sh.State != pb.Shard_PENDING || sh.Healthy || !strings.Contains(sh.Health, "permission denied") {
		t.Fatalf("forced add: %v, %v; want a pending, unhealthy shard saying why", sh, err)
	}
	if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "open", Endpoints: c.shards["open"].Endpoints()}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if tn := a.createTenant(t, fmt.Sprintf("t%d", i)); tn.Shard != "open" {
			t.Fatalf("tenant %s placed on %s, a pending shard", tn.Name, tn.Shard)
		}
	}
	// An operator may activate it anyway.
	if sh, err := a.shards.ActivateShard(ctx, &pb.ActivateShardRequest{Id: "locked"}); err != nil || sh.State != pb.Shard_ACTIVE {
		t.Fatalf("activate: %v, %v", sh, err)
	}
}

// TestForcedShardBecomesActiveOnceItPassesTheCheck registers a shard
// where no etcd listens yet, then starts etcd there: the proxy's health
// loop finds it passing, makes it active, and tenants land on it.
func TestForcedShardBecomesActiveOnceItPassesTheCheck(t *testing.T) {
	c := newClusters(t, "first")
	a := newAPI(t, c, Config{HealthInterval: 50 * time.Millisecond, ShardCheckTimeout: time.Second})
	ctx := testCtx(t)
	if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "first", Endpoints: c.shards["first"].Endpoints()}); err != nil {
		t.Fatal(err)
	}
	client, peer := freePort(t), freePort(t)
	ep := fmt.Sprintf("http://127.0.0.1:%d", client)
	sh, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: "later", Endpoints: []string{ep}, Force: true})
	if err != nil || sh.State != pb.Shard_PENDING {
		t.Fatalf("forced add: %v, %v", sh, err)
	}
	if tn := a.createTenant(t, "early"); tn.Shard != "first" {
		t.Fatalf("tenant placed on %s before it answered", tn.Shard)
	}
	later, err := embedetcd.Start(ctx, embedetcd.Config{Name: "later", Ports: []int{client, peer}})
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	testcluster.WaitFor(t, "the pending shard to become active", func() bool {
		sh, ok := c.store.Shard("later")
		return ok && sh.State == meta.ShardActive
	})
	testcluster.WaitFor(t, "a tenant to land on the activated shard", func() bool {
		return a.createTenant(t, fmt.Sprintf("t-%d", time.Now().UnixNano())).Shard == "later"
	})
}

// TestShardThatGoesDownTakesNoNewTenantsUntilItIsBack stops one shard's
// etcd: once the proxy's check notices, every new tenant goes to the other
// shard; when the etcd is back, new tenants land on it again.
func TestShardThatGoesDownTakesNoNewTenantsUntilItIsBack(t *testing.T) {
	c := newClusters(t, "up")
	a := newAPI(t, c, Config{HealthInterval: 50 * time.Millisecond, ShardCheckTimeout: 500 * time.Millisecond})
	ctx := testCtx(t)
	cfg := embedetcd.Config{Name: "flaky", DataDir: t.TempDir()}
	flaky, err := embedetcd.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { flaky.Close() }()
	for id, eps := range map[string][]string{"up": c.shards["up"].Endpoints(), "flaky": flaky.Endpoints()} {
		if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: id, Endpoints: eps}); err != nil {
			t.Fatal(err)
		}
	}
	health := func(id string) *pb.Shard {
		list, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range list.Shards {
			if sh.Id == id {
				return sh
			}
		}
		t.Fatalf("shard %s not listed", id)
		return nil
	}

	flaky.Close()
	testcluster.WaitFor(t, "the proxy to see the stopped shard unhealthy", func() bool { return !health("flaky").Healthy })
	if sh := health("flaky"); sh.State != pb.Shard_ACTIVE || sh.Health == "" {
		t.Fatalf("stopped shard listed as %v; want active, unhealthy, saying why", sh)
	}
	for i := 0; i < 10; i++ {
		if tn := a.createTenant(t, fmt.Sprintf("down-%d", i)); tn.Shard != "up" {
			t.Fatalf("tenant %s placed on %s while it is down", tn.Name, tn.Shard)
		}
	}

	if flaky, err = embedetcd.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the restarted shard to be healthy", func() bool { return health("flaky").Healthy })
	testcluster.WaitFor(t, "a tenant to land on the restarted shard", func() bool {
		return a.createTenant(t, fmt.Sprintf("back-%d", time.Now().UnixNano())).Shard == "flaky"
	})
}

func TestRemoveAndActivateShard(t *testing.T) {
	c := newClusters(t, "r1", "r2")
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	for _, id := range []string{"r1", "r2"} {
		if _, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: id, Endpoints: c.shards[id].Endpoints()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: "r2"}); err != nil {
		t.Fatal(err)
	}
	a.createTenant(t, "one")
	a.createTenant(t, "two")
	_, err := a.shards.RemoveShard(ctx, &pb.RemoveShardRequest{Id: "r1"})
	wantStatus(t, err, codes.FailedPrecondition, "shard r1 holds 2 tenants")

	sh, err := a.shards.ActivateShard(ctx, &pb.ActivateShardRequest{Id: "r2"})
	if err != nil || sh.State != pb.Shard_ACTIVE {
		t.Fatalf("activate a draining shard: %v, %v", sh, err)
	}
	sh, err = a.shards.RemoveShard(ctx, &pb.RemoveShardRequest{Id: "r2"})
	if err != nil || sh.Id != "r2" {
		t.Fatalf("remove an empty shard: %v, %v", sh, err)
	}
	list, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{})
	if err != nil || len(list.Shards) != 1 || list.Shards[0].Id != "r1" {
		t.Fatalf("shards after the removal: %v, %v", list, err)
	}
	_, err = a.shards.RemoveShard(ctx, &pb.RemoveShardRequest{Id: "r2"})
	wantStatus(t, err, codes.NotFound, "r2")
	_, err = a.shards.ActivateShard(ctx, &pb.ActivateShardRequest{Id: "r2"})
	wantStatus(t, err, codes.NotFound, "r2")
}
