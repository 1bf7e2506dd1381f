package embedetcd

import (
	"context"
	"testing"
	"time"
)

func TestClusterServesAndRestartsWithData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members int
	}{
		{name: "one member", members: 1},
		{name: "three members", members: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			c, err := Start(ctx, Config{Name: "t", Members: tc.members, DataDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(c.Endpoints()); got != tc.members {
				t.Fatalf("endpoints: got %d, want %d", got, tc.members)
			}
			cli, err := c.Client()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
			cli.Close()
			c.Close()

			// The same data dir brings the key back.
			c2, err := Start(ctx, Config{Name: "t", Members: tc.members, DataDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			cli2, err := c2.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer cli2.Close()
			resp, err := cli2.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
				t.Fatalf("after restart got %v, want k=v", resp.Kvs)
			}
		})
	}
}

func TestRejectsBadMemberCount(t *testing.T) {
	if _, err := Start(context.Background(), Config{Members: 2}); err == nil {
		t.Fatal("two members: want an error")
	}
}
