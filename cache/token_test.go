package cache

import (
	"errors"
	"testing"
)

func TestTokenRoundTripAndTampering(t *testing.T) {
	c := newTokenCodec([]byte("0123456789abcdef0123456789abcdef"))
	p := position{tenant: "acme", shard: "s2", epoch: 3, rev: 123456789, view: viewHash([]string{"kv/"}, "")}
	tok := c.encode(p)
	got, err := c.decode(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Fatalf("decode(encode(p)) = %+v, want %+v", got, p)
	}
	other := newTokenCodec([]byte("another cluster's key, 32 bytes."))
	flipped := []byte(tok)
	flipped[5] ^= 1
	for _, tc := range []struct {
		name string
		tok  string
		c    *tokenCodec
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

func TestViewHashSeesPrefixesAndView(t *testing.T) {
	base := viewHash([]string{"kv/"}, "")
	if viewHash([]string{"kv/"}, "") != base {
		t.Fatal("the same view hashed differently")
	}
	for name, h := range map[string]uint64{
		"prefixes":       viewHash([]string{"kv/routes/"}, ""),
		"more prefixes":  viewHash([]string{"kv/", "svc/"}, ""),
		"effective view": viewHash([]string{"kv/"}, "cfg/app=2"),
	} {
		if h == base {
			t.Errorf("another %s gave the same view", name)
		}
	}
}
