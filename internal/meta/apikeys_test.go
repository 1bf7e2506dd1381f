package meta

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/embedetcd"
)

const testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestAPIKeysAreMirroredByEveryStore(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	a, b := newStore(t, c), newStore(t, c)
	ctx := context.Background()
	if _, err := a.AddShard(ctx, Shard{ID: "s1", Endpoints: []string{"http://s1"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	w, err := a.CreateAPIKey(ctx, APIKey{ID: "w1", Tenant: "acme", Role: RoleWriter, Name: "ci", SHA256: testHash})
	if err != nil {
		t.Fatal(err)
	}
	if w.CreateTime == 0 {
		t.Fatal("CreateAPIKey left the create time zero")
	}
	// The creating store holds the key when CreateAPIKey returns.
	if got, ok := a.APIKey("w1"); !ok || got != w {
		t.Fatalf("creating store holds %+v, %v; want %+v", got, ok, w)
	}
	if _, err := a.CreateAPIKey(ctx, APIKey{ID: "op1", Role: RoleOperator, SHA256: testHash}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := b.APIKey("op1"); return ok })
	if got := b.APIKeys("acme"); len(got) != 1 || got[0] != w {
		t.Fatalf("other store lists %+v for acme, want %+v", got, w)
	}
	if got := b.APIKeys(""); len(got) != 1 || got[0].ID != "op1" {
		t.Fatalf("other store lists %+v as operator keys, want op1", got)
	}

	if _, err := a.CreateAPIKey(ctx, APIKey{ID: "w1", Tenant: "acme", Role: RoleReader, SHA256: testHash}); !errors.Is(err, ErrAPIKeyExists) {
		t.Fatalf("reusing an id: err = %v, want ErrAPIKeyExists", err)
	}

	revoked, err := a.RevokeAPIKey(ctx, "w1")
	if err != nil || revoked != w {
		t.Fatalf("revoke: %+v, %v", revoked, err)
	}
	if _, ok := a.APIKey("w1"); ok {
		t.Fatal("revoking store still holds the key")
	}
	waitFor(t, func() bool { _, ok := b.APIKey("w1"); return !ok })
	if _, err := a.RevokeAPIKey(ctx, "w1"); !errors.Is(err, ErrAPIKeyNotFound) {
		t.Fatalf("revoking twice: err = %v, want ErrAPIKeyNotFound", err)
	}

	// A restarted store loads the keys by listing.
	if got := newStore(t, c).APIKeys(""); len(got) != 1 || got[0].ID != "op1" {
		t.Fatalf("new store lists %+v as operator keys, want op1", got)
	}
}

func TestAPIKeyRecordsAreChecked(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	st := newStore(t, c)
	ctx := context.Background()
	tests := []struct {
		name string
		key  APIKey
		want error
		part string
	}{
		{name: "unknown tenant", key: APIKey{ID: "k1", Tenant: "nope", Role: RoleReader, SHA256: testHash}, want: ErrTenantNotFound, part: "confetti tenant create nope"},
		{name: "no id", key: APIKey{Tenant: "nope", Role: RoleReader, SHA256: testHash}, want: ErrInvalid},
		{name: "id with a slash", key: APIKey{ID: "a/b", Role: RoleOperator, SHA256: testHash}, want: ErrInvalid},
		{name: "unknown role", key: APIKey{ID: "k1", Tenant: "acme", Role: "root", SHA256: testHash}, want: ErrInvalid},
		{name: "operator key with a tenant", key: APIKey{ID: "k1", Tenant: "acme", Role: RoleOperator, SHA256: testHash}, want: ErrInvalid},
		{name: "tenant key without a tenant", key: APIKey{ID: "k1", Role: RoleAdmin, SHA256: testHash}, want: ErrInvalid},
		{name: "secret instead of a hash", key: APIKey{ID: "k1", Role: RoleOperator, SHA256: "hunter2"}, want: ErrInvalid},
		{name: "long name", key: APIKey{ID: "k1", Role: RoleOperator, Name: strings.Repeat("n", 200), SHA256: testHash}, want: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.CreateAPIKey(ctx, tc.key)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.part) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.part)
			}
		})
	}
	if got := st.APIKeys(""); len(got) != 0 {
		t.Fatalf("refused keys were stored: %+v", got)
	}
}
