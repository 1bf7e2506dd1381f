package meta

import (
	"context"
	"errors"
	"testing"

	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/keys"
)

func TestCacheNodesAreListedWhileRegistered(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	a, b := newStore(t, c), newStore(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.RegisterCache(ctx, CacheNode{Name: "node-1", Addr: "127.0.0.1:7710"}); err != nil {
		t.Fatal(err)
	}
	if err := a.RegisterCache(context.Background(), CacheNode{Name: "node-2", Addr: "127.0.0.1:7711"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(b.Caches()) == 2 })
	if got := b.Caches(); got[0].Name != "node-1" || got[0].Addr != "127.0.0.1:7710" || got[1].Name != "node-2" {
		t.Fatalf("caches = %+v", got)
	}
	// Ending the registration revokes the record at once, not after the TTL.
	cancel()
	waitFor(t, func() bool { return len(b.Caches()) == 1 })
	// Closing the store ends its registrations too.
	a.Close()
	waitFor(t, func() bool { return len(b.Caches()) == 0 })
}

func TestCacheNodeRegistrationRefusesBadRecords(t *testing.T) {
	st := newStore(t, embedetcd.NewForTest(t, 1))
	if err := st.RegisterCache(context.Background(), CacheNode{Name: "bad name", Addr: "x:1"}); !errors.Is(err, keys.ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
	if err := st.RegisterCache(context.Background(), CacheNode{Name: "n"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no address: %v", err)
	}
}
