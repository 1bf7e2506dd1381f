package shardproxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
)

func TestAPIKeysAreCreatedListedAndRevoked(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	a.createTenant(t, "keys-1")
	// Remove what an earlier run of the test in this process left.
	for _, k := range c.store.APIKeys("keys-1") {
		if _, err := c.store.RevokeAPIKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}

	created, err := a.tenants.CreateAPIKey(ctx, &pb.CreateAPIKeyRequest{Tenant: "keys-1", Role: pb.Role_WRITER, Name: "deployer"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := auth.ParseKey(created.Secret)
	if err != nil {
		t.Fatalf("secret %q: %v", created.Secret, err)
	}
	want := &pb.APIKey{Id: k.ID, Tenant: "keys-1", Role: pb.Role_WRITER, Name: "deployer", CreateTime: created.Key.GetCreateTime()}
	if diff := cmp.Diff(want, created.Key, protocmp.Transform()); diff != "" {
		t.Fatalf("created key (-want +got):\n%s", diff)
	}

	// Meta holds the hash of the secret, never the secret.
	resp, err := c.metaCli.Get(ctx, "/confetti/meta/apikeys/"+k.ID)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("meta record: %v, %v", resp, err)
	}
	rec := string(resp.Kvs[0].Value)
	if strings.Contains(rec, k.Secret) || !strings.Contains(rec, k.Hash()) {
		t.Fatalf("meta record %s must hold the secret's hash and not the secret", rec)
	}

	reader, err := a.tenants.CreateAPIKey(ctx, &pb.CreateAPIKeyRequest{Tenant: "keys-1", Role: pb.Role_READER})
	if err != nil {
		t.Fatal(err)
	}
	list, err := a.tenants.ListAPIKeys(ctx, &pb.ListAPIKeysRequest{Tenant: "keys-1"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range list.Keys {
		ids = append(ids, k.Id)
	}
	if !slicesHaveSameElements(ids, []string{created.Key.Id, reader.Key.Id}) {
		t.Fatalf("listed %v, want %s and %s", ids, created.Key.Id, reader.Key.Id)
	}

	if _, err := a.tenants.RevokeAPIKey(ctx, &pb.RevokeAPIKeyRequest{Id: created.Key.Id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.store.APIKey(created.Key.Id); ok {
		t.Fatal("the proxy's store still holds the revoked key after RevokeAPIKey returned")
	}
	list, err = a.tenants.ListAPIKeys(ctx, &pb.ListAPIKeysRequest{Tenant: "keys-1"})
	if err != nil || len(list.Keys) != 1 || list.Keys[0].Id != reader.Key.Id {
		t.Fatalf("after revoking, listed %v, %v; want only %s", list, err, reader.Key.Id)
	}
	_, err = a.tenants.RevokeAPIKey(ctx, &pb.RevokeAPIKeyRequest{Id: created.Key.Id})
	wantStatus(t, err, codes.NotFound, created.Key.Id)

	op, err := a.tenants.CreateAPIKey(ctx, &pb.CreateAPIKeyRequest{Role: pb.Role_OPERATOR, Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := a.tenants.ListAPIKeys(ctx, &pb.ListAPIKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range ops.Keys {
		found = found || k.Id == op.Key.Id
		if k.Tenant != "" || k.Role != pb.Role_OPERATOR {
			t.Fatalf("operator key list holds %v", k)
		}
	}
	if !found {
		t.Fatalf("operator key %s not listed in %v", op.Key.Id, ops.Keys)
	}
}

func TestAPIKeyRequestsAreChecked(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	tests := []struct {
		name  string
		req   *pb.CreateAPIKeyRequest
		code  codes.Code
		parts []string
	}{
		{name: "no role", req: &pb.CreateAPIKeyRequest{Tenant: "acme"}, code: codes.InvalidArgument, parts: []string{"READER, WRITER, ADMIN or OPERATOR"}},
		{name: "operator key with a tenant", req: &pb.CreateAPIKeyRequest{Tenant: "acme", Role: pb.Role_OPERATOR}, code: codes.InvalidArgument, parts: []string{"operator keys belong to no tenant"}},
		{name: "tenant key without a tenant", req: &pb.CreateAPIKeyRequest{Role: pb.Role_READER}, code: codes.InvalidArgument, parts: []string{"needs a tenant"}},
		{name: "unknown tenant", req: &pb.CreateAPIKeyRequest{Tenant: "nobody-here", Role: pb.Role_READER}, code: codes.NotFound, parts: []string{"nobody-here", "confetti tenant create"}},
		{name: "bad tenant name", req: &pb.CreateAPIKeyRequest{Tenant: "Bad_Name", Role: pb.Role_READER}, code: codes.InvalidArgument},
		{name: "unprintable name", req: &pb.CreateAPIKeyRequest{Tenant: "acme", Role: pb.Role_READER, Name: "a\nb"}, code: codes.InvalidArgument, parts: []string{"printable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.tenants.CreateAPIKey(ctx, tc.req)
			wantStatus(t, err, tc.code, tc.parts...)
		})
	}
	t.Run("list keys of an unknown tenant", func(t *testing.T) {
		_, err := a.tenants.ListAPIKeys(ctx, &pb.ListAPIKeysRequest{Tenant: "nobody-here"})
		wantStatus(t, err, codes.NotFound)
	})
	t.Run("revoke without an id", func(t *testing.T) {
		_, err := a.tenants.RevokeAPIKey(ctx, &pb.RevokeAPIKeyRequest{})
		wantStatus(t, err, codes.InvalidArgument, "key id")
	})
}

func slicesHaveSameElements(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
