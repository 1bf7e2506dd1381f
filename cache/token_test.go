package cache

import (
	"errors"
	"testing"

	"github.com/confetti-io/confetti/api/confettipb"
)

func TestTokenRoundTripAndTampering(t *testing.T) {
	c := tokenCodec{key: []byte("0123456789abcdef0123456789abcdef")}
	p := position{tenant: "acme", shard: "s2", epoch: 3, rev: 123456789, view: viewHash([]string{"kv/"}, nil)}
	tok := c.encode(p)
	got, err := c.decode(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Fatalf("decode(encode(p)) = %+v, want %+v", got, p)
	}
	other := tokenCodec{key: []byte("another cluster's key, 32 bytes.")}
	flipped := []byte(tok)
	flipped[5] ^= 1
	for _, tc := range []struct {
		name string
		tok  string
		c    tokenCodec
	}{
		{name: "truncated", tok: tok[:len(tok)-3], c: c},
		{name: "very short", tok: "AA", c: c},
		{name: "altered", tok: string(flipped), c: c},
		{name: "not base64", tok: "not a token!", c: c},
		{name: "other cluster", tok: tok, c: other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.c.decode(tc.tok); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("decode = %v, want ErrInvalidToken", err)
			}
		})
	}
}

func TestViewHashSeesPrefixesAndIdentity(t *testing.T) {
	base := viewHash([]string{"kv/"}, &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"zone": "a", "tier": "edge"}})
	same := viewHash([]string{"kv/"}, &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"tier": "edge", "zone": "a"}})
	if base != same {
		t.Fatal("label order changed the view")
	}
	for name, h := range map[string]uint64{
		"prefixes": viewHash([]string{"kv/routes/"}, &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"zone": "a", "tier": "edge"}}),
		"instance": viewHash([]string{"kv/"}, &confettipb.Identity{InstanceId: "gw-2", Labels: map[string]string{"zone": "a", "tier": "edge"}}),
		"labels":   viewHash([]string{"kv/"}, &confettipb.Identity{InstanceId: "gw-1", Labels: map[string]string{"zone": "b", "tier": "edge"}}),
	} {
		if h == base {
			t.Errorf("another %s gave the same view", name)
		}
	}
}
