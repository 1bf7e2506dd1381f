package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// staticRollouts reports fixed gateways for every item.
type staticRollouts []*pb.GatewayRollout

func (s staticRollouts) Rollout(context.Context, string, string) ([]*pb.GatewayRollout, error) {
	return s, nil
}

// startReleaseProxy serves a shard proxy over real etcd, without auth,
// whose rollout state is rollouts, and returns its address.
func startReleaseProxy(t *testing.T, rollouts shardproxy.RolloutReader) string {
	t.Helper()
	tc := testcluster.New(t, 1)
	store, clients := tc.NewStore(t)
	p, err := shardproxy.New(store, clients, shardproxy.Config{Rollouts: rollouts, PlanInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	p.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Stop()
		p.Close()
	})
	return lis.Addr().String()
}

// TestItemAndReleaseVerbs walks the release tour through the CLI against
// a real proxy: publish, history, show, diff, gray by percentage and by
// labels, status, a conflicting edit, promote, rollback and the log.
func TestItemAndReleaseVerbs(t *testing.T) {
	addr := startReleaseProxy(t, staticRollouts{
		{InstanceId: "gw-a", Version: 2, GrayId: "v2", State: pb.GatewayRollout_RUNNING},
		{InstanceId: "gw-b", Version: 1, State: pb.GatewayRollout_NACKED, Error: "bad route"},
	})
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(t, append(args, "--endpoints", addr)...)
		if err != nil {
			t.Fatalf("confetti %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	fail := func(args ...string) string {
		t.Helper()
		_, _, err := runCLI(t, append(args, "--endpoints", addr)...)
		if err == nil {
			t.Fatalf("confetti %s succeeded, want an error", strings.Join(args, " "))
		}
		return errorMessage(err)
	}
	wantLines := func(got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Fatalf("output lacks %q:\n%s", w, got)
			}
		}
	}
	run("tenant", "create", "acme")
	wantLines(run("item", "publish", "--tenant", "acme", "routes", "--file", file("v1", "a: 1\nb: 2\n"), "--message", "first"), "published routes version 1")
	wantLines(run("item", "publish", "--tenant", "acme", "routes", "--file", file("v2", "a: 1\nb: 3\n")), "published routes version 2")
	wantLines(fail("item", "publish", "--tenant", "acme", "routes", "--file", file("v2", "a: 1\nb: 3\n")), "identical to version 2")
	wantLines(run("item", "history", "--tenant", "acme", "routes"), "2 ", "1 ", "anonymous", "first")
	if got := run("item", "show", "--tenant", "acme", "routes", "--version", "1"); got != "a: 1\nb: 2\n" {
		t.Errorf("show v1 = %q", got)
	}
	if got := run("item", "diff", "--tenant", "acme", "routes", "1", "2"); got != "--- routes v1\n+++ routes v2\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n" {
		t.Errorf("diff =\n%s", got)
	}
	wantLines(run("item", "list", "--tenant", "acme"), "routes")
	run("item", "schema", "--tenant", "acme", "routes", "--file", file("schema", `{"type":"object"}`))
	wantLines(fail("item", "publish", "--tenant", "acme", "routes", "--file", file("v3", "[1]")), "schema violation")
	run("item", "schema", "--tenant", "acme", "routes", "--clear")

	wantLines(run("release", "gray", "--tenant", "acme", "routes", "--version", "2", "--percent", "10"),
		"routes stable 1", "gray v2 version 2 percent 10% priority 0")
	wantLines(run("release", "gray", "--tenant", "acme", "routes", "--version", "2", "--labels", "zone in (a,b),tier!=edge", "--priority", "5", "--id", "zones"),
		`gray zones version 2 labels "zone in (a,b),tier!=edge" priority 5`)
	wantLines(fail("release", "gray", "--tenant", "acme", "routes", "--version", "2", "--labels", "zone in (a"), "position 11")
	wantLines(run("release", "status", "--tenant", "acme", "routes"),
		"version 2 running 1 pending 0 nacked 0", "version 1 running 0 pending 0 nacked 1", "  nack gw-b: bad route")
	wantLines(fail("release", "set-stable", "--tenant", "acme", "routes", "2", "--expect-mod-revision", "1"), "not the expected 1", "read it again")
	wantLines(run("release", "promote", "--tenant", "acme", "routes", "v2"), "routes stable 2", "gray zones")
	wantLines(run("release", "set-stable", "--tenant", "acme", "routes", "1", "--reason", "roll back"), "routes stable 1")
	wantLines(run("release", "plan", "--tenant", "acme", "routes", "--version", "2", "--steps", "1,10,50,100", "--bake", "5m", "--max-nack", "1%"),
		"plan running gray v2 version 2 steps 1%,10%,50%,100% bake 5m0s max-nack 1% at step 1/4 (1%)")
	wantLines(run("release", "abort-plan", "--tenant", "acme", "routes"), "plan aborted")
	wantLines(run("release", "log", "--tenant", "acme", "routes"),
		"anonymous create stable 1", "start-gray stable 1 grays 1", "promote-gray stable 2", "set-stable stable 1 grays 1: roll back", "abort-plan")
	wantLines(run("release", "get", "--tenant", "acme", "routes", "-w", "json"), `"stable":"1"`)
}

func TestParsePercent(t *testing.T) {
	tests := []struct {
		in   string
		want int32
		err  bool
	}{
		{in: "10", want: 1000},
		{in: "10%", want: 1000},
		{in: "0.5%", want: 50},
		{in: "100", want: 10000},
		{in: "0.01", want: 1},
		{in: "0.001", err: true},
		{in: "101", err: true},
		{in: "-1", err: true},
		{in: "ten", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePercent(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parsePercent(%q) = %d, %v", tt.in, got, err)
			}
		})
	}
}
