package embedetcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestEnableAuthConfinesTheUserToItsPrefixAndSurvivesARestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := Start(ctx, Config{Name: "auth", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	a := Auth{RootPassword: "root-pw", User: "confetti", Password: "user-pw", Prefix: "/confetti/"}
	if wasOn, err := c.EnableAuth(ctx, a); err != nil || wasOn {
		t.Fatalf("EnableAuth = %v, %v; want it turned on now", wasOn, err)
	}
	check := func(c *Cluster) {
		t.Helper()
		cli, err := c.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := cli.Put(ctx, "/confetti/x", "1"); err != nil {
			t.Fatalf("put inside the prefix: %v", err)
		}
		if _, err := cli.Put(ctx, "/other", "1"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("put outside the prefix: err = %v, want permission denied", err)
		}
		// Status (shard usage) needs no more than the user's role.
		if _, err := cli.Status(ctx, c.Endpoints()[0]); err != nil {
			t.Fatalf("status: %v", err)
		}
		anon, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer anon.Close()
		if _, err := anon.Get(ctx, "/confetti/x"); err == nil {
			t.Fatal("a client without credentials read a key")
		}
	}
	check(c)
	// Enabling again is a no-op.
	if wasOn, err := c.EnableAuth(ctx, a); err != nil || !wasOn {
		t.Fatalf("EnableAuth again = %v, %v; want it on already", wasOn, err)
	}
	c.Close()

	c, err = Start(ctx, Config{Name: "auth", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if wasOn, err := c.EnableAuth(ctx, a); err != nil || !wasOn {
		t.Fatalf("after a restart, EnableAuth = %v, %v; want it on already", wasOn, err)
	}
	check(c)
}
