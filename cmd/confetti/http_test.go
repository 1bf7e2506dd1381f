package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig/tlstest"
)

// TestDevServesTheHTTPAPI follows the README's HTTP section against
// `confetti dev`: create a tenant, write with compare-and-swap, see the
// conflict, read it back, all through the address the banner prints and
// with the operator key it prints in X-API-Key.
func TestDevServesTheHTTPAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four etcd clusters")
	}
	d := startDev(t, t.TempDir(), filepath.Join(t.TempDir(), "client.yaml"))
	var base, key string
	for _, l := range strings.Split(d.out.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "proxy" && f[1] == "HTTP":
			base = f[2]
		case len(f) >= 3 && f[0] == "operator" && f[1] == "key":
			key = f[2]
		}
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || key == "" {
		t.Fatalf("banner lacks the proxy HTTP address or the operator key:\n%s", d.out)
	}

	steps := []struct {
		method, path, body string
		header             []string
		code               int
		want               string
	}{
		{method: "GET", path: "/v1/tenants", code: 401, want: `"grpc_code":"Unauthenticated"`},
		{method: "POST", path: "/v1/tenants", body: `{"name":"acme"}`, code: 200, want: `"name":"acme"`},
		{method: "PUT", path: "/v1/tenants/acme/kv//routes/1", body: `{"uri":"/hello"}`, header: []string{"If-None-Match", "*"}, code: 201, want: `"key":"/routes/1"`},
		{method: "PUT", path: "/v1/tenants/acme/kv//routes/1", body: `{"uri":"/lost"}`, header: []string{"If-Match", `"1"`}, code: 409, want: `"grpc_code":"FailedPrecondition"`},
		{method: "GET", path: "/v1/tenants/acme/kv//routes/1", code: 200, want: `"value":"{\"uri\":\"/hello\"}"`},
		{method: "GET", path: "/v1/tenants/acme/kv//routes/?prefix=true&limit=1", code: 200, want: `"count":1`},
		{method: "DELETE", path: "/v1/tenants/acme/kv//routes/1", code: 200, want: `"deleted":1`},
	}
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		req, err := http.NewRequestWithContext(ctx, s.method, base+s.path, strings.NewReader(s.body))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if s.code != 401 {
			req.Header.Set("X-API-Key", key)
		}
		for i := 0; i+1 < len(s.header); i += 2 {
			req.Header.Set(s.header[i], s.header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != s.code || !strings.Contains(string(body), s.want) {
			t.Fatalf("%s %s: HTTP %d %s, want %d with %s", s.method, s.path, resp.StatusCode, body, s.code, s.want)
		}
	}
	d.stopped(t)
}

func TestGatewayDialOptionsFollowTheListener(t *testing.T) {
	tests := []struct {
		name     string
		listener tlsconfig.Files
		opts     int
		err      string
	}{
		{name: "plaintext", opts: 0},
		{name: "tls", listener: tlsconfig.Files{Cert: "server.pem", Key: "server-key.pem"}, opts: 1},
		{name: "mutual tls", listener: tlsconfig.Files{Cert: "server.pem", Key: "server-key.pem", CA: "ca.pem"}, err: "--cacert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := gatewayDialOptions(tt.listener)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one naming %s", err, tt.err)
				}
				return
			}
			if err != nil || len(opts) != tt.opts {
				t.Fatalf("%d options, err %v; want %d", len(opts), err, tt.opts)
			}
		})
	}
}

func TestGatewayDialOptionsReachATLSListener(t *testing.T) {
	certs := tlstest.New(t)
	listener := tlsconfig.Files{Cert: certs.Server.Cert, Key: certs.Server.Key}
	cfg, err := tlsconfig.Server(listener)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	opts, err := gatewayDialOptions(listener)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(lis.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check over the gateway's TLS dial options: %v", err)
	}
}
