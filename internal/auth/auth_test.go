package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// fakeKeys is an in-memory key table.
type fakeKeys struct {
	mu      sync.Mutex
	keys    map[string]meta.APIKey
	changed chan struct{}
	// notLoaded is what Loaded returns.
	notLoaded error
}

func newFakeKeys() *fakeKeys {
	return &fakeKeys{keys: map[string]meta.APIKey{}, changed: make(chan struct{})}
}

func (f *fakeKeys) APIKey(id string) (meta.APIKey, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[id]
	return k, ok
}

func (f *fakeKeys) Loaded() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notLoaded
}

func (f *fakeKeys) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// add creates a key and returns it whole.
func (f *fakeKeys) add(t *testing.T, tenant string, role meta.Role) string {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[k.ID] = meta.APIKey{ID: k.ID, Tenant: tenant, Role: role, Name: string(role) + "@" + tenant, SHA256: k.Hash()}
	close(f.changed)
	f.changed = make(chan struct{})
	return k.String()
}

func (f *fakeKeys) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keys, id)
	close(f.changed)
	f.changed = make(chan struct{})
}

func withKey(key string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataKey, key))
}

func TestKeysRoundTripAndMalformedKeysAreRefused(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k.ID) != 16 || len(k.Secret) != 43 {
		t.Fatalf("key %q: id %d and secret %d characters, want 16 and 43", k, len(k.ID), len(k.Secret))
	}
	got, err := ParseKey(k.String())
	if err != nil || got != k {
		t.Fatalf("ParseKey(%q) = %+v, %v", k, got, err)
	}
	if other, _ := NewKey(); other.ID == k.ID || other.Secret == k.Secret {
		t.Fatal("two new keys share a part")
	}
	for _, bad := range []string{"", "cft_", "cft__secret", "cft_id_", "cft_id", "key_id_secret", "cft_ID_secret", "cft_a-b_secret", "Bearer cft_id_secret"} {
		if _, err := ParseKey(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseKey(%q): err = %v, want ErrInvalidKey", bad, err)
		}
	}
}

// TestEveryMethodHasAPolicy keeps the policy table complete: a method
// added to the API without a policy would be refused to every key.
func TestEveryMethodHasAPolicy(t *testing.T) {
	var methods []string
	protoregistry.GlobalFiles.RangeFilesByPackage("confetti.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				methods = append(methods, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	if len(methods) < 30 {
		t.Fatalf("found only %d methods in confetti.v1", len(methods))
	}
	for _, m := range methods {
		if _, ok := policies[m]; !ok {
			t.Errorf("%s has no access policy", m)
		}
	}
	if len(policies) != len(methods) {
		t.Errorf("%d policies for %d methods: the table names methods the API lacks", len(policies), len(methods))
	}
}

func TestAuthenticateSaysWhatIsWrong(t *testing.T) {
	keys := newFakeKeys()
	reg := prometheus.NewRegistry()
	a, err := New(keys, Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	good := keys.add(t, "acme", meta.RoleWriter)
	k, _ := ParseKey(good)
	revoked := keys.add(t, "acme", meta.RoleWriter)
	rk, _ := ParseKey(revoked)
	keys.remove(rk.ID)
	tests := []struct {
		name  string
		ctx   context.Context
		want  error
		parts []string
	}{
		{name: "no metadata", ctx: context.Background(), want: ErrMissingKey, parts: []string{"x-api-key", "X-API-Key", "confetti tenant key create"}},
		{name: "empty key", ctx: withKey(""), want: ErrMissingKey},
		{name: "two keys", ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataKey, good, MetadataKey, good)), want: ErrInvalidKey, parts: []string{"exactly one"}},
		{name: "malformed", ctx: withKey("hunter2"), want: ErrInvalidKey, parts: []string{"cft_", "confetti tenant key create"}},
		{name: "unknown id", ctx: withKey("cft_abcdefgh_" + k.Secret), want: ErrInvalidKey, parts: []string{"abcdefgh", "unknown, revoked"}},
		{name: "wrong secret", ctx: withKey("cft_" + k.ID + "_" + strings.Repeat("x", 43)), want: ErrInvalidKey, parts: []string{k.ID}},
		{name: "revoked", ctx: withKey(revoked), want: ErrInvalidKey, parts: []string{rk.ID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(tc.ctx)
			if !errors.Is(err, tc.want) || rpcerr.Code(err) != codes.Unauthenticated {
				t.Fatalf("err = %v, want %v (Unauthenticated)", err, tc.want)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Fatalf("message %q lacks %q", err, p)
				}
			}
			if strings.Contains(err.Error(), k.Secret) {
				t.Fatalf("message %q shows a secret", err)
			}
		})
	}
	p, err := a.Authenticate(withKey(good))
	want := Principal{KeyID: k.ID, Tenant: "acme", Role: meta.RoleWriter, Name: "writer@acme"}
	if err != nil || p != want {
		t.Fatalf("Authenticate = %+v, %v; want %+v", p, err, want)
	}
	var m dto.Metric
	if err := a.metrics.denied.WithLabelValues("invalid").Write(&m); err != nil || m.GetCounter().GetValue() != 5 {
		t.Fatalf("denied{reason=invalid} = %v (%v), want 5", m.GetCounter().GetValue(), err)
	}
}

func TestPolicyMatrix(t *testing.T) {
	keys := newFakeKeys()
	a, err := New(keys, Config{})
	if err != nil {
		t.Fatal(err)
	}
	principal := func(tenant string, role meta.Role) Principal {
		p, err := a.Verify(keys.add(t, tenant, role))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var (
		reader   = principal("acme", meta.RoleReader)
		writer   = principal("acme", meta.RoleWriter)
		admin    = principal("acme", meta.RoleAdmin)
		operator = principal("", meta.RoleOperator)
		other    = principal("globex", meta.RoleAdmin)
	)
	type call struct {
		method string
		req    any
	}
	var (
		kvRange   = call{pb.KV_Range_FullMethodName, &pb.RangeRequest{Tenant: "acme"}}
		kvPut     = call{pb.KV_Put_FullMethodName, &pb.PutRequest{Tenant: "acme"}}
		kvTxn     = call{pb.KV_Txn_FullMethodName, &pb.TxnRequest{Tenant: "acme"}}
		getTenant = call{pb.Tenants_GetTenant_FullMethodName, &pb.GetTenantRequest{Name: "acme"}}
		create    = call{pb.Tenants_CreateTenant_FullMethodName, &pb.CreateTenantRequest{Name: "acme"}}
		addShard  = call{pb.Shards_AddShard_FullMethodName, &pb.AddShardRequest{Id: "s9"}}
		listKeys  = call{pb.Tenants_ListAPIKeys_FullMethodName, &pb.ListAPIKeysRequest{Tenant: "acme"}}
		newWriter = call{pb.Tenants_CreateAPIKey_FullMethodName, &pb.CreateAPIKeyRequest{Tenant: "acme", Role: pb.Role_WRITER}}
		newOp     = call{pb.Tenants_CreateAPIKey_FullMethodName, &pb.CreateAPIKeyRequest{Role: pb.Role_OPERATOR}}
		revokeOwn = call{pb.Tenants_RevokeAPIKey_FullMethodName, &pb.RevokeAPIKeyRequest{Id: reader.KeyID}}
		revokeOp  = call{pb.Tenants_RevokeAPIKey_FullMethodName, &pb.RevokeAPIKeyRequest{Id: operator.KeyID}}
		publish   = call{pb.Releases_Publish_FullMethodName, &pb.PublishRequest{Tenant: "acme"}}
		history   = call{pb.Releases_History_FullMethodName, &pb.HistoryRequest{Tenant: "acme"}}
		ttl       = call{pb.Leases_TimeToLive_FullMethodName, &pb.LeaseTimeToLiveRequest{Tenant: "acme"}}
		grant     = call{pb.Leases_Grant_FullMethodName, &pb.LeaseGrantRequest{Tenant: "acme"}}
		subscribe = call{pb.Cache_Subscribe_FullMethodName, &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Start{Start: &pb.Start{Tenant: "acme"}}}}
		status    = call{pb.Cache_Status_FullMethodName, &pb.CacheStatusRequest{}}
		unknown   = call{"/confetti.v1.KV/Compact", &pb.RangeRequest{Tenant: "acme"}}
	)
	// allowed lists, per caller, the calls it may make; it is refused the
	// rest with PermissionDenied.
	all := []call{kvRange, kvPut, kvTxn, getTenant, create, addShard, listKeys, newWriter, newOp, revokeOwn, revokeOp, publish, history, ttl, grant, subscribe, status, unknown}
	tests := []struct {
		name    string
		p       Principal
		allowed []call
	}{
		{name: "reader", p: reader, allowed: []call{kvRange, getTenant, history, ttl, subscribe}},
		{name: "writer", p: writer, allowed: []call{kvRange, kvPut, kvTxn, getTenant, publish, history, ttl, grant, subscribe}},
		{name: "admin", p: admin, allowed: []call{kvRange, kvPut, kvTxn, getTenant, listKeys, newWriter, revokeOwn, publish, history, ttl, grant, subscribe}},
		{name: "operator", p: operator, allowed: []call{kvRange, kvPut, kvTxn, getTenant, create, addShard, listKeys, newWriter, newOp, revokeOwn, revokeOp, publish, history, ttl, grant, subscribe, status}},
		{name: "admin of another tenant", p: other, allowed: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range all {
				ok := false
				for _, al := range tc.allowed {
					ok = ok || (al.method == c.method && al.req == c.req)
				}
				err := a.Authorize(tc.p, c.method, c.req)
				switch {
				case ok && err != nil:
					t.Errorf("%s %v: refused: %v", methodName(c.method), c.req, err)
				case !ok && err == nil:
					t.Errorf("%s %v: allowed, want refused", methodName(c.method), c.req)
				case !ok && rpcerr.Code(err) != codes.PermissionDenied:
					t.Errorf("%s %v: code %v (%v), want PermissionDenied", methodName(c.method), c.req, rpcerr.Code(err), err)
				}
			}
		})
	}
}

func TestRefusalsSayWhy(t *testing.T) {
	keys := newFakeKeys()
	a, err := New(keys, Config{})
	if err != nil {
		t.Fatal(err)
	}
	reader, _ := a.Verify(keys.add(t, "acme", meta.RoleReader))
	admin, _ := a.Verify(keys.add(t, "acme", meta.RoleAdmin))
	otherKey, _ := a.Verify(keys.add(t, "globex", meta.RoleReader))
	tests := []struct {
		name   string
		p      Principal
		method string
		req    any
		parts  []string
	}{
		{name: "role too low", p: reader, method: pb.KV_Put_FullMethodName, req: &pb.PutRequest{Tenant: "acme"}, parts: []string{"role reader may not call KV.Put; use a writer key"}},
		{name: "another tenant", p: reader, method: pb.KV_Range_FullMethodName, req: &pb.RangeRequest{Tenant: "globex"}, parts: []string{"key " + reader.KeyID + " of tenant acme may not use tenant \"globex\""}},
		{name: "operator method", p: admin, method: pb.Shards_ListShards_FullMethodName, req: &pb.ListShardsRequest{}, parts: []string{"Shards.ListShards needs an operator key", "admin key " + admin.KeyID + " of tenant acme"}},
		{name: "another tenant's keys", p: admin, method: pb.Tenants_ListAPIKeys_FullMethodName, req: &pb.ListAPIKeysRequest{Tenant: "globex"}, parts: []string{"may not use tenant \"globex\""}},
		{name: "revoke another tenant's key", p: admin, method: pb.Tenants_RevokeAPIKey_FullMethodName, req: &pb.RevokeAPIKeyRequest{Id: otherKey.KeyID}, parts: []string{"may not revoke keys of tenant \"globex\""}},
		{name: "operator key by an admin", p: admin, method: pb.Tenants_CreateAPIKey_FullMethodName, req: &pb.CreateAPIKeyRequest{Tenant: "acme", Role: pb.Role_OPERATOR}, parts: []string{"only an operator key may create operator keys"}},
		{name: "unknown method", p: admin, method: "/confetti.v1.KV/Compact", req: &pb.RangeRequest{Tenant: "acme"}, parts: []string{"KV.Compact has no access policy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Authorize(tc.p, tc.method, tc.req)
			if !errors.Is(err, ErrPermissionDenied) {
				t.Fatalf("err = %v, want ErrPermissionDenied", err)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Fatalf("message %q lacks %q", err, p)
				}
			}
		})
	}
	err = a.Authorize(admin, pb.Tenants_RevokeAPIKey_FullMethodName, &pb.RevokeAPIKeyRequest{Id: "nokey"})
	if rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("revoking an unknown key: %v, want NotFound", err)
	}
}
