package tlsconfig_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig/tlstest"
)

// serveHealth serves grpc.health.v1 on a loopback listener with opts.
func serveHealth(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// check makes one health check over a connection dialed with creds.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func clientCreds(t *testing.T, f tlsconfig.Files) credentials.TransportCredentials {
	t.Helper()
	cfg, err := tlsconfig.Client(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(cfg)
}

func TestMutualTLSListenerAcceptsOnlyClientsWithACertificateOfItsCA(t *testing.T) {
	pki := tlstest.New(t)
	other := tlstest.New(t)
	serverCfg, err := tlsconfig.Server(pki.Server)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, grpc.Creds(credentials.NewTLS(serverCfg)))

	tests := []struct {
		name   string
		client tlsconfig.Files
		ok     bool
	}{
		{name: "certificate of the server's CA", client: pki.Client, ok: true},
		{name: "no client certificate", client: tlsconfig.Files{CA: pki.CA}},
		{name: "certificate of another CA", client: tlsconfig.Files{Cert: other.Client.Cert, Key: other.Client.Key, CA: pki.CA}},
		{name: "server not trusted", client: tlsconfig.Files{Cert: pki.Client.Cert, Key: pki.Client.Key, CA: other.CA}},
		{name: "plaintext", client: tlsconfig.Files{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := check(t, addr, clientCreds(t, tc.client))
			if tc.ok && err != nil {
				t.Fatalf("health check failed: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("health check succeeded; want the handshake refused")
			}
		})
	}
}

func TestServerTLSWithoutCAAcceptsClientsWithoutCertificates(t *testing.T) {
	pki := tlstest.New(t)
	serverCfg, err := tlsconfig.Server(tlsconfig.Files{Cert: pki.Server.Cert, Key: pki.Server.Key})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, grpc.Creds(credentials.NewTLS(serverCfg)))
	if err := check(t, addr, clientCreds(t, tlsconfig.Files{CA: pki.CA})); err != nil {
		t.Fatalf("health check over server-only TLS: %v", err)
	}
}

func TestFilesAreChecked(t *testing.T) {
	pki := tlstest.New(t)
	tests := []struct {
		name    string
		build   func(tlsconfig.Files) (any, error)
		files   tlsconfig.Files
		wantNil bool
		wantErr bool
	}{
		{name: "server without files is plaintext", build: server, wantNil: true},
		{name: "client without files is plaintext", build: client, wantNil: true},
		{name: "server without key", build: server, files: tlsconfig.Files{Cert: pki.Server.Cert}, wantErr: true},
		{name: "server with only a CA", build: server, files: tlsconfig.Files{CA: pki.CA}, wantErr: true},
		{name: "client certificate without key", build: client, files: tlsconfig.Files{Cert: pki.Client.Cert}, wantErr: true},
		{name: "CA that is not PEM", build: client, files: tlsconfig.Files{CA: pki.Client.Key}, wantErr: true},
		{name: "missing file", build: server, files: tlsconfig.Files{Cert: "/nonexistent.pem", Key: pki.Server.Key}, wantErr: true},
		{name: "client with only a CA", build: client, files: tlsconfig.Files{CA: pki.CA}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.build(tc.files)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (cfg == nil) != tc.wantNil {
				t.Fatalf("config = %v, want nil %v", cfg, tc.wantNil)
			}
		})
	}
}

func server(f tlsconfig.Files) (any, error) {
	cfg, err := tlsconfig.Server(f)
	if cfg == nil {
		return nil, err
	}
	return cfg, err
}

func client(f tlsconfig.Files) (any, error) {
	cfg, err := tlsconfig.Client(f)
	if cfg == nil {
		return nil, err
	}
	return cfg, err
}
