package bootstrap

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/etcdauth"
	"github.com/confetti-io/confetti/internal/meta"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// authOn reports whether a cluster has etcd auth on.
func authOn(t *testing.T, c *embedetcd.Cluster) bool {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := cli.AuthStatus(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.Enabled
}

type clusters struct {
	meta   *embedetcd.Cluster
	shards []*embedetcd.Cluster
}

func newClusters(t *testing.T, shards int) clusters {
	var c clusters
	c.meta = embedetcd.NewForTest(t, 1)
	for range shards {
		c.shards = append(c.shards, embedetcd.NewForTest(t, 1))
	}
	return c
}

func (c clusters) config(t *testing.T) Config {
	cfg := Config{MetaEndpoints: c.meta.Endpoints(), RootPassword: "root-pw", Password: "confetti-pw", Timeout: 5 * time.Second, Logger: zaptest.NewLogger(t)}
	for i, sh := range c.shards {
		cfg.Shards = append(cfg.Shards, Shard{ID: []string{"shard-a", "shard-b", "shard-c"}[i], Endpoints: sh.Endpoints()})
	}
	return cfg
}

func TestInitSetsUpAClusterAndAgainChangesNothing(t *testing.T) {
	ctx := testCtx(t)
	c := newClusters(t, 2)
	cfg := c.config(t)
	res, err := Init(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) == 0 || res.OperatorKey == "" || res.ClusterID == "" {
		t.Fatalf("first run: %+v", res)
	}
	for _, cl := range append([]*embedetcd.Cluster{c.meta}, c.shards...) {
		if !authOn(t, cl) {
			t.Fatalf("auth off on %v after init", cl.Endpoints())
		}
	}
	// Confetti's user reads meta: both shards and the operator key.
	cli, err := etcdauth.New(cfg.clientConfig(cfg.MetaEndpoints, "confetti", "confetti-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := meta.New(cli, meta.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sh := range cfg.Shards {
		if _, ok := st.Shard(sh.ID); !ok {
			t.Fatalf("shard %s not registered", sh.ID)
		}
	}
	k, err := auth.ParseKey(res.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := st.APIKey(k.ID); !ok || rec.Role != meta.RoleOperator || rec.SHA256 != k.Hash() {
		t.Fatalf("operator key %s in meta: %+v %v", k.ID, rec, ok)
	}
	// ... and nothing outside /confetti/.
	if _, err := cli.Put(ctx, "/elsewhere", "x"); err == nil {
		t.Fatal("confetti's etcd user wrote outside /confetti/")
	}

	cfg.OperatorKey = res.OperatorKey
	again, err := Init(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 0 || again.ClusterID != res.ClusterID || again.OperatorKey != res.OperatorKey {
		t.Fatalf("second run changed %q (cluster %s, want %s)", again.Changes, again.ClusterID, res.ClusterID)
	}
}

// Bad input fails before anything changes.
func TestInitRefusesAndChangesNothing(t *testing.T) {
	ctx := testCtx(t)
	set := newClusters(t, 1)
	cfg := set.config(t)
	res, err := Init(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OperatorKey = res.OperatorKey

	t.Run("wrong root password", func(t *testing.T) {
		bad := cfg
		bad.RootPassword = "wrong"
		if _, err := Init(ctx, bad); !errors.Is(err, ErrRootCredentials) {
			t.Fatalf("err = %v, want %v", err, ErrRootCredentials)
		}
	})
	t.Run("another operator key", func(t *testing.T) {
		other, _ := auth.NewKey()
		bad := cfg
		bad.OperatorKey = other.String()
		if _, err := Init(ctx, bad); !errors.Is(err, ErrOtherConfetti) {
			t.Fatalf("err = %v, want %v", err, ErrOtherConfetti)
		}
	})
	t.Run("no operator key for a set-up meta", func(t *testing.T) {
		bad := cfg
		bad.OperatorKey = ""
		if _, err := Init(ctx, bad); !errors.Is(err, ErrOtherConfetti) {
			t.Fatalf("err = %v, want %v", err, ErrOtherConfetti)
		}
	})
	t.Run("a shard of another Confetti", func(t *testing.T) {
		fresh := newClusters(t, 0)
		bad := fresh.config(t)
		bad.Shards = cfg.Shards
		if _, err := Init(ctx, bad); !errors.Is(err, ErrOtherConfetti) {
			t.Fatalf("err = %v, want %v", err, ErrOtherConfetti)
		}
		if authOn(t, fresh.meta) {
			t.Fatal("a refused init turned auth on in the new meta")
		}
	})
	t.Run("an unreachable shard", func(t *testing.T) {
		fresh := newClusters(t, 0)
		bad := fresh.config(t)
		bad.Timeout = time.Second
		bad.Shards = []Shard{{ID: "shard-x", Endpoints: []string{"http://127.0.0.1:1"}}}
		if _, err := Init(ctx, bad); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want %v", err, ErrUnreachable)
		}
		if authOn(t, fresh.meta) {
			t.Fatal("a refused init turned auth on in meta")
		}
	})
}

// etcd members signing JWT tokens with the keys WriteJWTKeys makes start
// and serve authenticated clients.
func TestJWTKeysServeEtcd(t *testing.T) {
	dir := t.TempDir()
	if wrote, err := WriteJWTKeys(dir); err != nil || !wrote {
		t.Fatalf("WriteJWTKeys = %v, %v", wrote, err)
	}
	if wrote, err := WriteJWTKeys(dir); err != nil || wrote {
		t.Fatalf("WriteJWTKeys again = %v, %v; want the keys kept", wrote, err)
	}
	ctx := testCtx(t)
	c, err := embedetcd.Start(ctx, embedetcd.Config{Name: "jwt", Tune: func(ec *embed.Config) { ec.AuthToken = JWTAuthToken(dir) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := Config{MetaEndpoints: c.Endpoints(), RootPassword: "root-pw", Password: "confetti-pw", Logger: zaptest.NewLogger(t)}
	if _, err := Init(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cli, err := etcdauth.New(cfg.clientConfig(cfg.MetaEndpoints, "confetti", "confetti-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/confetti/x", "1"); err != nil {
		t.Fatal(err)
	}
}
