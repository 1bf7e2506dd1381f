package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// fakeLeases is a shard proxy's Leases service that records what it is
// asked. Register hands out leases 7, 8, ...; keepalives of the leases in
// expired are answered with ttl 0, others with ttl 1; the first KeepAlive
// stream fails with Unavailable when failFirst is set.
type fakeLeases struct {
	pb.UnimplementedLeasesServer
	failFirst bool
	expired   map[int64]bool
	instances []*pb.Instance

	mu          sync.Mutex
	streams     int
	registered  []*pb.RegisterRequest
	renewed     []int64
	deregisters []*pb.DeregisterRequest
}

func (f *fakeLeases) Register(_ context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered = append(f.registered, req)
	return &pb.RegisterResponse{Lease: 7 + int64(len(f.registered)-1), Ttl: req.Ttl}, nil
}

func (f *fakeLeases) KeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	f.mu.Lock()
	f.streams++
	fail := f.failFirst && f.streams == 1
	f.mu.Unlock()
	if fail {
		return status.Error(codes.Unavailable, "shardproxy: proxy shutting down")
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		f.renewed = append(f.renewed, req.Id)
		f.mu.Unlock()
		var ttl int64 = 1
		if f.expired[req.Id] {
			ttl = 0
		}
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Id: req.Id, Ttl: ttl}); err != nil {
			return err
		}
	}
}

func (f *fakeLeases) Deregister(_ context.Context, req *pb.DeregisterRequest) (*pb.DeregisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deregisters = append(f.deregisters, req)
	return &pb.DeregisterResponse{Header: &pb.ResponseHeader{Revision: 42}}, nil
}

func (f *fakeLeases) ListInstances(_ context.Context, req *pb.ListInstancesRequest) (*pb.ListInstancesResponse, error) {
	return &pb.ListInstancesResponse{Instances: f.instances}, nil
}

func (f *fakeLeases) TimeToLive(_ context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if f.expired[req.Id] {
		return &pb.LeaseTimeToLiveResponse{Id: req.Id, Ttl: -1}, nil
	}
	out := &pb.LeaseTimeToLiveResponse{Id: req.Id, Ttl: 8, GrantedTtl: 10}
	if req.Keys {
		out.Keys = []string{"kv//session", "svc/api/i-1"}
	}
	return out, nil
}

func (f *fakeLeases) seen() (registered []*pb.RegisterRequest, renewed []int64, deregisters []*pb.DeregisterRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.registered), slices.Clone(f.renewed), slices.Clone(f.deregisters)
}

func startLeases(t *testing.T, f *fakeLeases) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterLeasesServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// syncWriter is a buffer written by a command while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// startCLI runs one command line in the background until stop cancels
// its context, as Ctrl-C does; stop returns the command's error.
func startCLI(t *testing.T, args ...string) (out, errOut *syncWriter, stop func() error) {
	t.Helper()
	out, errOut = &syncWriter{}, &syncWriter{}
	a := newApp(out, errOut)
	a.lookupEnv = func(string) (string, bool) { return "", false }
	root := newRootCommand(a)
	root.SetArgs(append(args, "--client-config", filepath.Join(t.TempDir(), "none.yaml")))
	root.SetOut(out)
	root.SetErr(errOut)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return out, errOut, stop
}

func waitUntilCLI(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSvcRegisterKeepsAliveRegistersAgainAndDeregisters runs svc register
// against a proxy whose first keepalive stream fails and whose first lease
// has expired: the command retries the stream, registers again with a new
// lease, keeps that one alive, and deregisters on interrupt.
func TestSvcRegisterKeepsAliveRegistersAgainAndDeregisters(t *testing.T) {
	f := &fakeLeases{failFirst: true, expired: map[int64]bool{7: true}}
	out, errOut, stop := startCLI(t, "svc", "register", "--tenant", "acme", "api", "i-1", "10.0.0.1:8080",
		"--ttl", "3", "--label", "zone=a", "--label", "tier=web", "--weight", "5", "--endpoints", startLeases(t, f))
	waitUntilCLI(t, "two renewals of the second lease", func() bool {
		_, renewed, _ := f.seen()
		n := 0
		for _, id := range renewed {
			if id == 8 {
				n++
			}
		}
		return n >= 2
	})
	if err := stop(); err != nil {
		t.Fatalf("svc register: %v (stderr %q)", err, errOut.String())
	}
	registered, renewed, deregisters := f.seen()
	wantReq := &pb.RegisterRequest{Tenant: "acme", Ttl: 3, Instance: &pb.Instance{
		Service: "api", Id: "i-1", Address: "10.0.0.1:8080", Weight: 5, Labels: map[string]string{"zone": "a", "tier": "web"},
	}}
	if len(registered) != 2 {
		t.Fatalf("registered %d times, want 2 (once, then after the lease expired)", len(registered))
	}
	for _, got := range registered {
		if diff := cmp.Diff(wantReq, got, protocmp.Transform()); diff != "" {
			t.Fatalf("register request (-want +got):\n%s", diff)
		}
	}
	if renewed[0] != 7 || slices.Contains(renewed[1:], 7) {
		t.Fatalf("renewed leases %v: want 7 once, then only 8", renewed)
	}
	wantDereg := []*pb.DeregisterRequest{{Tenant: "acme", Service: "api", Id: "i-1"}}
	if diff := cmp.Diff(wantDereg, deregisters, protocmp.Transform()); diff != "" {
		t.Fatalf("deregister requests (-want +got):\n%s", diff)
	}
	wantOut := "registered api/i-1 lease=7 ttl=3\nregistered api/i-1 lease=8 ttl=3\nderegistered api/i-1\n"
	if out.String() != wantOut {
		t.Fatalf("output = %q, want %q", out.String(), wantOut)
	}
	for _, want := range []string{"shutting down; retrying", "lease 7 of api/i-1 expired; registering again"} {
		if !strings.Contains(errOut.String(), want) {
			t.Fatalf("stderr %q does not say %q", errOut.String(), want)
		}
	}
}

func TestLeaseAndSvcOutput(t *testing.T) {
	f := &fakeLeases{
		expired: map[int64]bool{9: true},
		instances: []*pb.Instance{
			{Service: "api", Id: "i-1", Address: "10.0.0.1:8080", Weight: 10, Labels: map[string]string{"zone": "a", "tier": "web"}, Lease: 7},
			{Service: "api", Id: "i-2", Address: "10.0.0.2:8080", Lease: 8},
		},
	}
	ep := startLeases(t, f)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "svc list", args: []string{"svc", "list", "--tenant", "acme", "api"}, want: "i-1 10.0.0.1:8080 weight=10 labels=tier=web,zone=a lease=7\ni-2 10.0.0.2:8080 lease=8\n"},
		{name: "lease ttl", args: []string{"lease", "ttl", "--tenant", "acme", "7"}, want: "lease=7 ttl=8 granted-ttl=10\n"},
		{name: "lease ttl with keys", args: []string{"lease", "ttl", "--tenant", "acme", "7", "--keys"}, want: "lease=7 ttl=8 granted-ttl=10\nkv//session\nsvc/api/i-1\n"},
		{name: "lease ttl of an expired lease", args: []string{"lease", "ttl", "--tenant", "acme", "9"}, want: "lease=9 expired\n"},
		{name: "svc deregister", args: []string{"svc", "deregister", "--tenant", "acme", "api", "i-1"}, want: "OK rev=42\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runCLI(t, append(tc.args, "--endpoints", ep)...)
			if err != nil {
				t.Fatalf("%v (stderr %q)", err, errOut)
			}
			if out != tc.want {
				t.Fatalf("output = %q, want %q", out, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "ttl not a number", args: []string{"lease", "grant", "--tenant", "acme", "ten"}, want: "positive whole number"},
		{name: "lease id zero", args: []string{"lease", "revoke", "--tenant", "acme", "0"}, want: "positive whole number"},
		{name: "keepalive of an expired lease", args: []string{"lease", "keepalive", "--tenant", "acme", "9"}, want: "lease 9 expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCLI(t, append(tc.args, "--endpoints", ep)...)
			if err == nil || !strings.Contains(errorMessage(err), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
