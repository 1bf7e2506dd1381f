package main

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig/tlstest"
)

// keyRecorder is a Tenants service that lists one tenant and records the
// API keys it was called with.
type keyRecorder struct {
	pb.UnimplementedTenantsServer
	mu   sync.Mutex
	keys []string
}

func (r *keyRecorder) ListTenants(ctx context.Context, _ *pb.ListTenantsRequest) (*pb.ListTenantsResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.keys = append(r.keys, strings.Join(md.Get(auth.MetadataKey), ","))
	r.mu.Unlock()
	return &pb.ListTenantsResponse{Tenants: []*pb.Tenant{{Name: "acme", Shard: "s1"}}}, nil
}

func TestClientVerbsDialWithMutualTLSAndSendTheAPIKey(t *testing.T) {
	pki := tlstest.New(t)
	serverTLS, err := tlsconfig.Server(pki.Server)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	rec := &keyRecorder{}
	pb.RegisterTenantsServer(srv, rec)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	addr := lis.Addr().String()

	out, errOut, err := runCLI(t, "tenant", "list", "--endpoints", addr, "--api-key", "cft_k_s",
		"--cacert", pki.CA, "--cert", pki.Client.Cert, "--key", pki.Client.Key)
	if err != nil || out != "acme s1\n" {
		t.Fatalf("tenant list over mutual TLS: %q, %v (stderr %q)", out, err, errOut)
	}
	rec.mu.Lock()
	keys := rec.keys
	rec.mu.Unlock()
	if len(keys) != 1 || keys[0] != "cft_k_s" {
		t.Fatalf("server saw keys %q, want the one --api-key gave", keys)
	}

	tests := []struct {
		name string
		args []string
	}{
		{name: "no client certificate", args: []string{"--cacert", pki.CA}},
		{name: "plaintext", args: nil},
		{name: "certificate without key", args: []string{"--cacert", pki.CA, "--cert", pki.Client.Cert}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"tenant", "list", "--endpoints", addr, "--dial-timeout", "2s"}, tc.args...)
			if out, _, err := runCLI(t, args...); err == nil {
				t.Fatalf("tenant list succeeded with %q", out)
			}
		})
	}
}

func TestEtcdEndpointMapRewritesHostPort(t *testing.T) {
	m := map[string]string{"10.0.0.5:2379": "127.0.0.1:12379"}
	got := mapEndpoints([]string{"http://10.0.0.5:2379", "https://10.0.0.6:2379", "10.0.0.5:2379"}, m)
	want := []string{"http://127.0.0.1:12379", "https://10.0.0.6:2379", "127.0.0.1:12379"}
	if !slices.Equal(got, want) {
		t.Fatalf("mapped %q, want %q", got, want)
	}
	f := etcdFlags{endpointMap: map[string]string{"10.0.0.5": "127.0.0.1:1"}}
	if _, err := f.clientConfig(zap.NewNop()); err == nil || !strings.Contains(err.Error(), "HOST:PORT=HOST:PORT") {
		t.Fatalf("a map entry without a port: %v", err)
	}
}
