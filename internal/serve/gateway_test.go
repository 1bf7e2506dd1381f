package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGatewayStopsBeforeTheGRPCServer starts a request on the gateway,
// stops the server while it runs, and has the request call the gRPC
// server only after Stop began: the call must succeed, since Stop shuts
// the gateway down (waiting for its requests) before the gRPC server.
func TestGatewayStopsBeforeTheGRPCServer(t *testing.T) {
	s, err := New(Options{ListenAddr: "127.0.0.1:0", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		builtFor string
		released atomic.Bool
		entered  = make(chan struct{})
		proceed  = make(chan struct{})
	)
	err = s.SetGateway("127.0.0.1:0", func(grpcAddr string) (http.Handler, func(), error) {
		builtFor = grpcAddr
		cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-proceed
			if _, err := healthpb.NewHealthClient(cc).Check(r.Context(), &healthpb.HealthCheckRequest{}); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			fmt.Fprintln(w, "forwarded")
		})
		return h, func() { released.Store(true); cc.Close() }, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	if addrs.Gateway == "" || builtFor != addrs.GRPC {
		t.Fatalf("gateway on %q built for %q, gRPC on %q", addrs.Gateway, builtFor, addrs.GRPC)
	}
	if err := s.SetGateway("127.0.0.1:0", nil); !errors.Is(err, ErrStarted) {
		t.Fatalf("SetGateway after Start: %v, want ErrStarted", err)
	}

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, body, err := get("http://" + addrs.Gateway + "/")
		res <- result{code, body, err}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- s.Stop(ctx)
	}()
	waitRefused(t, addrs.Gateway)
	if released.Load() {
		t.Fatal("gateway released while its request runs")
	}
	close(proceed)
	r := <-res
	if r.err != nil || r.code != http.StatusOK || strings.TrimSpace(r.body) != "forwarded" {
		t.Fatalf("request running across Stop: %d %q %v, want 200 forwarded", r.code, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if !released.Load() {
		t.Fatal("Stop did not release the gateway")
	}
}

func TestGatewayBuildErrorFailsStart(t *testing.T) {
	s, err := New(Options{ListenAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.SetGateway("127.0.0.1:0", func(string) (http.Handler, func(), error) { return nil, nil, boom }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(); !errors.Is(err, boom) {
		t.Fatalf("Start with a failing gateway: %v, want %v", err, boom)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGateway("127.0.0.1:0", nil); !errors.Is(err, ErrStopped) {
		t.Fatalf("SetGateway after Stop: %v, want ErrStopped", err)
	}
}

func TestNoGatewayWithoutAnAddress(t *testing.T) {
	s, err := New(Options{ListenAddr: "127.0.0.1:0", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetGateway("", func(string) (http.Handler, func(), error) {
		t.Error("gateway built without an address")
		return nil, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGateway("127.0.0.1:0", nil); err == nil {
		t.Fatal("SetGateway with an address and no handler succeeded")
	}
	addrs, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	if addrs.Gateway != "" {
		t.Fatalf("gateway on %q without an address", addrs.Gateway)
	}
}

func get(url string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitRefused waits until addr refuses connections.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		select {
		case <-deadline:
			t.Fatalf("%s still accepts connections", addr)
		case <-tick.C:
		}
	}
}

func TestLoopbackTargetDialsUnspecifiedHostsLocally(t *testing.T) {
	for addr, want := range map[string]string{
		":7700":          "127.0.0.1:7700",
		"[::]:7700":      "127.0.0.1:7700",
		"0.0.0.0:7700":   "127.0.0.1:7700",
		"127.0.0.1:7700": "127.0.0.1:7700",
		"10.1.2.3:7700":  "10.1.2.3:7700",
		"[::1]:7700":     "[::1]:7700",
		"proxy:7700":     "proxy:7700",
	} {
		if got := LoopbackTarget(addr); got != want {
			t.Errorf("LoopbackTarget(%q) = %q, want %q", addr, got, want)
		}
	}
}
