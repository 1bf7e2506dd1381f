package etcdapi

import (
	"context"
	"testing"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/metadata"
)

// A token from one node is accepted by every node of the cluster (same
// token key), so clients fail over with the token they hold; a token of
// another cluster, or an altered one, is not.
func TestTokensAreValidOnEveryNodeOfTheCluster(t *testing.T) {
	key := []byte("cluster token key")
	a, b := New(Config{TokenKey: key}), New(Config{TokenKey: key})
	stranger := New(Config{TokenKey: []byte("another cluster")})
	resp, err := a.Authenticate(context.Background(), &etcdpb.AuthenticateRequest{Name: "acme", Password: "cft_key"})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := a.Authenticate(context.Background(), &etcdpb.AuthenticateRequest{Name: "acme", Password: "cft_key"})
	if again.Token != resp.Token {
		t.Fatal("the same credentials got another token")
	}
	with := func(token string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", token))
	}
	for _, s := range []*Server{a, b} {
		c, err := s.caller(with(resp.Token))
		if err != nil || c.tenant != "acme" {
			t.Fatalf("caller: %+v, %v", c, err)
		}
		md, _ := metadata.FromOutgoingContext(c.ctx)
		if got := md.Get("x-api-key"); len(got) != 1 || got[0] != "cft_key" {
			t.Fatalf("forwarded key %q", got)
		}
	}
	if _, err := stranger.caller(with(resp.Token)); err == nil {
		t.Fatal("another cluster accepted the token")
	}
	altered := []byte(resp.Token)
	altered[len(altered)/2] ^= 'A' ^ 'B'
	if _, err := b.caller(with(string(altered))); err == nil {
		t.Fatal("an altered token was accepted")
	}
	if _, err := b.caller(context.Background()); err == nil {
		t.Fatal("a request without credentials was served")
	}
}

// Without credentials a request is the default tenant's, when one is set.
func TestDefaultTenantServesRequestsWithoutCredentials(t *testing.T) {
	s := New(Config{DefaultTenant: "local", DefaultAPIKey: "cft_local"})
	c, err := s.caller(context.Background())
	if err != nil || c.tenant != "local" {
		t.Fatalf("caller: %+v, %v", c, err)
	}
	md, _ := metadata.FromOutgoingContext(c.ctx)
	if got := md.Get("x-api-key"); len(got) != 1 || got[0] != "cft_local" {
		t.Fatalf("forwarded key %q", got)
	}
}
