package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	role "github.com/confetti-io/confetti/internal/serve"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/tlsconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig/tlstest"
	"github.com/confetti-io/confetti/shardproxy"
)

// securedSystem is a cluster whose proxies and cache node check API keys,
// each with a meta store of its own as separate processes would have.
type securedSystem struct {
	tc      *testcluster.Cluster
	proxies []*grpc.ClientConn
	cache   *grpc.ClientConn
	// opKey is an operator key written straight into meta, as `confetti
	// key bootstrap` does.
	opKey string
}

// serveSecured serves register's services on a loopback port through
// internal/serve (health and reflection included) with opts, and returns
// the bound address.
func serveSecured(t *testing.T, opts []grpc.ServerOption, register func(*grpc.Server)) string {
	t.Helper()
	srv, err := role.New(role.Options{ListenAddr: "127.0.0.1:0", ServerOptions: opts, Logger: zaptest.NewLogger(t).Named("serve")})
	if err != nil {
		t.Fatal(err)
	}
	register(srv.GRPC())
	addrs, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
	})
	return addrs.GRPC
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// authOptions are the server options of a component checking keys
// against its own store.
func authOptions(t *testing.T, st *meta.Store) []grpc.ServerOption {
	t.Helper()
	a, err := auth.New(st, auth.Config{Logger: zaptest.NewLogger(t).Named("auth")})
	if err != nil {
		t.Fatal(err)
	}
	return a.ServerOptions()
}

func startSecured(t *testing.T, proxies int) *securedSystem {
	t.Helper()
	s := &securedSystem{tc: testcluster.New(t, 1)}
	var stores []*meta.Store
	for i := 0; i < proxies; i++ {
		st, clients := s.tc.NewStore(t)
		stores = append(stores, st)
		p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zaptest.NewLogger(t).Named("proxy")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		s.proxies = append(s.proxies, dialPlain(t, serveSecured(t, authOptions(t, st), p.Register)))
	}
	st, clients := s.tc.NewStore(t)
	stores = append(stores, st)
	c, err := cache.New(st, clients, cache.Config{Logger: zaptest.NewLogger(t).Named("cache"), ProgressInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.cache = dialPlain(t, serveSecured(t, authOptions(t, st), c.Register))
	t.Cleanup(c.Close)

	k, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Role: meta.RoleOperator, Name: "bootstrap", SHA256: k.Hash()}); err != nil {
		t.Fatal(err)
	}
	s.opKey = k.String()
	// Every store mirrors meta by watch: the key is usable once each
	// proxy's and the cache's has seen it.
	testcluster.WaitFor(t, "the operator key in every store", func() bool {
		for _, st := range stores {
			if _, ok := st.APIKey(k.ID); !ok {
				return false
			}
		}
		return true
	})
	return s
}

// as is a context that sends key with every call.
func as(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, auth.MetadataKey, key)
}

// newKey creates a key through proxy 0 with the given caller's key.
func (s *securedSystem) newKey(t *testing.T, caller, tenant string, role confettipb.Role) string {
	t.Helper()
	resp, err := confettipb.NewTenantsClient(s.proxies[0]).CreateAPIKey(as(testCtx(t), caller), &confettipb.CreateAPIKeyRequest{Tenant: tenant, Role: role, Name: role.String()})
	if err != nil {
		t.Fatalf("create %v key of %q: %v", role, tenant, err)
	}
	return resp.Secret
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(status.Convert(err).Message(), p) {
			t.Fatalf("message %q lacks %q", status.Convert(err).Message(), p)
		}
	}
}

func TestAuthRolesAndTenantsThroughProxyAndCache(t *testing.T) {
	s := startSecured(t, 1)
	ctx := testCtx(t)
	ten := confettipb.NewTenantsClient(s.proxies[0])
	kv := confettipb.NewKVClient(s.proxies[0])
	shards := confettipb.NewShardsClient(s.proxies[0])
	cacheCli := confettipb.NewCacheClient(s.cache)
	for _, name := range []string{"acme", "globex"} {
		if _, err := ten.CreateTenant(as(ctx, s.opKey), &confettipb.CreateTenantRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	admin := s.newKey(t, s.opKey, "acme", confettipb.Role_ADMIN)
	// An admin creates its tenant's other keys.
	writer := s.newKey(t, admin, "acme", confettipb.Role_WRITER)
	reader := s.newKey(t, admin, "acme", confettipb.Role_READER)
	globexAdmin := s.newKey(t, s.opKey, "globex", confettipb.Role_ADMIN)
	if _, err := kv.Put(as(ctx, writer), &confettipb.PutRequest{Tenant: "acme", Key: "/routes/1", Value: []byte("one")}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		key   string
		call  func(ctx context.Context) error
		code  codes.Code
		parts []string
	}{
		{name: "missing key", call: func(ctx context.Context) error {
			_, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "acme", Key: "/routes/1"})
			return err
		}, code: codes.Unauthenticated, parts: []string{"missing API key", "X-API-Key", "confetti tenant key create"}},
		{name: "malformed key", key: "secret", call: func(ctx context.Context) error {
			_, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "acme", Key: "/routes/1"})
			return err
		}, code: codes.Unauthenticated, parts: []string{"cft_"}},
		{name: "unknown key", key: "cft_aaaaaaaaaaaaaaaa_" + strings.Repeat("x", 43), call: func(ctx context.Context) error {
			_, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "acme", Key: "/routes/1"})
			return err
		}, code: codes.Unauthenticated, parts: []string{"aaaaaaaaaaaaaaaa", "unknown"}},
		{name: "reader reads", key: reader, call: func(ctx context.Context) error {
			resp, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "acme", Key: "/routes/1"})
			if err == nil && len(resp.Kvs) != 1 {
				t.Fatalf("reader read %v", resp.Kvs)
			}
			return err
		}},
		{name: "reader cannot put", key: reader, call: func(ctx context.Context) error {
			_, err := kv.Put(ctx, &confettipb.PutRequest{Tenant: "acme", Key: "/routes/2", Value: []byte("x")})
			return err
		}, code: codes.PermissionDenied, parts: []string{"role reader may not call KV.Put; use a writer key"}},
		{name: "reader cannot run a transaction", key: reader, call: func(ctx context.Context) error {
			_, err := kv.Txn(ctx, &confettipb.TxnRequest{Tenant: "acme"})
			return err
		}, code: codes.PermissionDenied},
		{name: "writer deletes", key: writer, call: func(ctx context.Context) error {
			_, err := kv.DeleteRange(ctx, &confettipb.DeleteRangeRequest{Tenant: "acme", Key: "/nothing"})
			return err
		}},
		{name: "writer of acme cannot read globex", key: writer, call: func(ctx context.Context) error {
			_, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "globex", Key: "/routes/1"})
			return err
		}, code: codes.PermissionDenied, parts: []string{"of tenant acme may not use tenant \"globex\""}},
		{name: "writer cannot list keys", key: writer, call: func(ctx context.Context) error {
			_, err := ten.ListAPIKeys(ctx, &confettipb.ListAPIKeysRequest{Tenant: "acme"})
			return err
		}, code: codes.PermissionDenied, parts: []string{"use a admin key"}},
		{name: "admin lists its tenant's keys", key: admin, call: func(ctx context.Context) error {
			resp, err := ten.ListAPIKeys(ctx, &confettipb.ListAPIKeysRequest{Tenant: "acme"})
			if err == nil && len(resp.Keys) != 3 {
				t.Fatalf("acme has %d keys, want 3", len(resp.Keys))
			}
			return err
		}},
		{name: "admin cannot read another tenant's keys", key: globexAdmin, call: func(ctx context.Context) error {
			_, err := ten.ListAPIKeys(ctx, &confettipb.ListAPIKeysRequest{Tenant: "acme"})
			return err
		}, code: codes.PermissionDenied, parts: []string{"of tenant globex may not use tenant \"acme\""}},
		{name: "admin cannot create keys for another tenant", key: globexAdmin, call: func(ctx context.Context) error {
			_, err := ten.CreateAPIKey(ctx, &confettipb.CreateAPIKeyRequest{Tenant: "acme", Role: confettipb.Role_ADMIN})
			return err
		}, code: codes.PermissionDenied},
		{name: "admin cannot create operator keys", key: admin, call: func(ctx context.Context) error {
			_, err := ten.CreateAPIKey(ctx, &confettipb.CreateAPIKeyRequest{Role: confettipb.Role_OPERATOR})
			return err
		}, code: codes.PermissionDenied},
		{name: "admin cannot create tenants", key: admin, call: func(ctx context.Context) error {
			_, err := ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "initech"})
			return err
		}, code: codes.PermissionDenied, parts: []string{"Tenants.CreateTenant needs an operator key"}},
		{name: "admin cannot list tenants", key: admin, call: func(ctx context.Context) error {
			_, err := ten.ListTenants(ctx, &confettipb.ListTenantsRequest{})
			return err
		}, code: codes.PermissionDenied},
		{name: "admin cannot list shards", key: admin, call: func(ctx context.Context) error {
			_, err := shards.ListShards(ctx, &confettipb.ListShardsRequest{})
			return err
		}, code: codes.PermissionDenied},
		{name: "reader gets its own tenant", key: reader, call: func(ctx context.Context) error {
			_, err := ten.GetTenant(ctx, &confettipb.GetTenantRequest{Name: "acme"})
			return err
		}},
		{name: "reader cannot get another tenant", key: reader, call: func(ctx context.Context) error {
			_, err := ten.GetTenant(ctx, &confettipb.GetTenantRequest{Name: "globex"})
			return err
		}, code: codes.PermissionDenied},
		{name: "operator lists shards", key: s.opKey, call: func(ctx context.Context) error {
			_, err := shards.ListShards(ctx, &confettipb.ListShardsRequest{})
			return err
		}},
		{name: "operator writes any tenant", key: s.opKey, call: func(ctx context.Context) error {
			_, err := kv.Put(ctx, &confettipb.PutRequest{Tenant: "globex", Key: "/a", Value: []byte("b")})
			return err
		}},
		{name: "reader reads the cache", key: reader, call: func(ctx context.Context) error {
			_, err := cacheCli.Range(ctx, &confettipb.RangeRequest{Tenant: "acme", Key: "/routes/1"})
			return err
		}},
		{name: "reader cannot read another tenant from the cache", key: reader, call: func(ctx context.Context) error {
			_, err := cacheCli.Range(ctx, &confettipb.RangeRequest{Tenant: "globex", Key: "/routes/1"})
			return err
		}, code: codes.PermissionDenied},
		{name: "cache status needs an operator key", key: admin, call: func(ctx context.Context) error {
			_, err := cacheCli.Status(ctx, &confettipb.CacheStatusRequest{})
			return err
		}, code: codes.PermissionDenied},
		{name: "operator reads cache status", key: s.opKey, call: func(ctx context.Context) error {
			_, err := cacheCli.Status(ctx, &confettipb.CacheStatusRequest{})
			return err
		}},
		{name: "health needs no key", call: func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(s.proxies[0]).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(as(ctx, tc.key))
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

func TestAuthSubscriptionsNeedAKeyOfTheirTenantAndEndWhenItIsRevoked(t *testing.T) {
	s := startSecured(t, 1)
	ctx := testCtx(t)
	ten := confettipb.NewTenantsClient(s.proxies[0])
	for _, name := range []string{"acme", "globex"} {
		if _, err := ten.CreateTenant(as(ctx, s.opKey), &confettipb.CreateTenantRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	reader := s.newKey(t, s.opKey, "acme", confettipb.Role_READER)
	globexReader := s.newKey(t, s.opKey, "globex", confettipb.Role_READER)
	cacheCli := confettipb.NewCacheClient(s.cache)

	subscribe := func(key, tenant string) (confettipb.Cache_SubscribeClient, error) {
		stream, err := cacheCli.Subscribe(as(ctx, key))
		if err != nil {
			return nil, err
		}
		// A refused stream may end before the start is sent; Send then
		// reports io.EOF and Recv the status.
		if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: tenant}}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		_, err = stream.Recv()
		return stream, err
	}
	// The cache node learns of new keys through meta's watch; until then it
	// answers that it does not know them.
	for _, k := range []struct{ key, tenant string }{{reader, "acme"}, {globexReader, "globex"}} {
		testcluster.WaitFor(t, "the cache node to know a new key", func() bool {
			sctx, cancel := context.WithCancel(as(ctx, k.key))
			defer cancel()
			st, err := cacheCli.Subscribe(sctx)
			if err == nil {
				err = st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: k.tenant}}})
			}
			if err == nil {
				_, err = st.Recv()
			}
			return err == nil
		})
	}
	t.Run("without a key", func(t *testing.T) {
		_, err := subscribe("", "acme")
		wantCode(t, err, codes.Unauthenticated, "confetti tenant key create")
	})
	t.Run("with another tenant's key", func(t *testing.T) {
		_, err := subscribe(globexReader, "acme")
		wantCode(t, err, codes.PermissionDenied, "of tenant globex may not use tenant \"acme\"")
	})
	t.Run("operator key", func(t *testing.T) {
		if _, err := subscribe(s.opKey, "acme"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("revoked while open", func(t *testing.T) {
		stream, err := subscribe(reader, "acme")
		if err != nil {
			t.Fatal(err)
		}
		k, _ := auth.ParseKey(reader)
		if _, err := ten.RevokeAPIKey(as(ctx, s.opKey), &confettipb.RevokeAPIKeyRequest{Id: k.ID}); err != nil {
			t.Fatal(err)
		}
		for {
			// Progress messages may come before the end.
			if _, err = stream.Recv(); err != nil {
				break
			}
		}
		wantCode(t, err, codes.Unauthenticated, "revoked", k.ID)
	})
}

// TestAuthRevocationReachesEveryProxyWithinTwoSeconds revokes a key through
// one proxy and checks that another proxy, with a meta store of its own,
// refuses it within the two seconds the contract allows.
func TestAuthRevocationReachesEveryProxyWithinTwoSeconds(t *testing.T) {
	s := startSecured(t, 2)
	ctx := testCtx(t)
	if _, err := confettipb.NewTenantsClient(s.proxies[0]).CreateTenant(as(ctx, s.opKey), &confettipb.CreateTenantRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	admin := s.newKey(t, s.opKey, "acme", confettipb.Role_ADMIN)
	writer := s.newKey(t, admin, "acme", confettipb.Role_WRITER)
	put := func(p int) error {
		_, err := confettipb.NewKVClient(s.proxies[p]).Put(as(ctx, writer), &confettipb.PutRequest{Tenant: "acme", Key: "/k", Value: []byte("v")})
		return err
	}
	// The key works on both proxies (the second learns of it by watch).
	testcluster.WaitFor(t, "the writer key to work on both proxies", func() bool { return put(0) == nil && put(1) == nil })

	k, _ := auth.ParseKey(writer)
	if _, err := confettipb.NewTenantsClient(s.proxies[0]).RevokeAPIKey(as(ctx, admin), &confettipb.RevokeAPIKeyRequest{Id: k.ID}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	// The revoking proxy refuses the key as soon as RevokeAPIKey returns.
	wantCode(t, put(0), codes.Unauthenticated, k.ID)
	for {
		err := put(1)
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if err != nil {
			t.Fatalf("second proxy: %v", err)
		}
		if time.Since(revoked) > 2*time.Second {
			t.Fatal("the second proxy still accepts the key 2s after its revocation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Revoking it again finds nothing.
	_, err := confettipb.NewTenantsClient(s.proxies[1]).RevokeAPIKey(as(ctx, admin), &confettipb.RevokeAPIKeyRequest{Id: k.ID})
	wantCode(t, err, codes.NotFound)
}

// TestAuthMutualTLSProxyRefusesClientsWithoutACertificate runs a proxy
// whose gRPC listener requires a client certificate from the test CA.
func TestAuthMutualTLSProxyRefusesClientsWithoutACertificate(t *testing.T) {
	tc := testcluster.New(t, 1)
	st, clients := tc.NewStore(t)
	p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zaptest.NewLogger(t).Named("proxy")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	pki := tlstest.New(t)
	serverTLS, err := tlsconfig.Server(pki.Server)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveSecured(t, append(authOptions(t, st), grpc.Creds(credentials.NewTLS(serverTLS))), p.Register)
	k, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAPIKey(context.Background(), meta.APIKey{ID: k.ID, Role: meta.RoleOperator, SHA256: k.Hash()}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		client tlsconfig.Files
		ok     bool
	}{
		{name: "client certificate", client: pki.Client, ok: true},
		{name: "no client certificate", client: tlsconfig.Files{CA: pki.CA}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clientTLS, err := tlsconfig.Client(tc.client)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)), auth.WithAPIKey(k.String()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = confettipb.NewTenantsClient(cc).ListTenants(testCtx(t), &confettipb.ListTenantsRequest{})
			if tc.ok && err != nil {
				t.Fatalf("ListTenants: %v", err)
			}
			if !tc.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("ListTenants without a client certificate: %v, want Unavailable (handshake refused)", err)
			}
		})
	}
	// The listener speaks only TLS.
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
