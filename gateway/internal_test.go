package gateway

import (
	"errors"
	"testing"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
)

func TestBackoffWindowDoublesUpToTheCapAndJitterFillsIt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attempts int
		want     time.Duration
	}{
		{name: "first reconnect", attempts: 0, want: time.Second},
		{name: "second", attempts: 1, want: 2 * time.Second},
		{name: "fourth", attempts: 3, want: 8 * time.Second},
		{name: "capped", attempts: 10, want: 30 * time.Second},
		{name: "capped far out", attempts: 1000, want: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoffWindow(time.Second, 30*time.Second, tc.attempts); got != tc.want {
				t.Fatalf("window after %d failures = %s, want %s", tc.attempts, got, tc.want)
			}
		})
	}
	// Full jitter: 1000 draws land in every tenth of the window and never
	// outside it.
	const w = time.Second
	var deciles [10]int
	for i := 0; i < 1000; i++ {
		d := jitter(w)
		if d < 0 || d >= w {
			t.Fatalf("jitter %s outside [0, %s)", d, w)
		}
		deciles[d*10/w]++
	}
	for i, n := range deciles {
		if n == 0 {
			t.Fatalf("no reconnect in tenth %d of the window: %v", i, deciles)
		}
	}
	if jitter(0) != 0 {
		t.Fatal("jitter of an empty window")
	}
}

func TestSnapshotDetectsEveryTruncationAndEveryFlippedByte(t *testing.T) {
	prefixes := []string{"kv/", "svc/"}
	v := NewView("tok",
		&confettipb.KeyValue{Key: "a", Value: []byte("1"), ModRevision: 2},
		&confettipb.KeyValue{Key: "x/1", Kind: confettipb.KeyValue_SERVICE, Value: []byte(`{"address":"h:1"}`), ModRevision: 3, Lease: 7},
	)
	good, err := encodeSnapshot("acme", prefixes, v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(good, "acme", prefixes)
	if err != nil || got.Token() != "tok" || got.Len() != 2 {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if kv, _ := got.Instance("x", "1"); kv.Lease != 7 || string(kv.Value) != `{"address":"h:1"}` {
		t.Fatalf("round trip of instance x/1: %v", kv)
	}
	if _, ok := got.Get("x/1"); ok {
		t.Fatal("a service instance reads as a plain key")
	}
	for n := 0; n < len(good); n++ {
		if _, err := decodeSnapshot(good[:n], "acme", prefixes); !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrCorruptSnapshot", n, len(good), err)
		}
	}
	for i := range good {
		b := append([]byte(nil), good...)
		b[i] ^= 0x01
		if _, err := decodeSnapshot(b, "acme", prefixes); !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("byte %d flipped: %v, want ErrCorruptSnapshot", i, err)
		}
	}
	if _, err := decodeSnapshot(good, "globex", prefixes); !errors.Is(err, ErrForeignSnapshot) {
		t.Fatalf("another tenant's snapshot: %v", err)
	}
	if _, err := decodeSnapshot(good, "acme", []string{"kv/"}); !errors.Is(err, ErrForeignSnapshot) {
		t.Fatalf("a snapshot of other prefixes: %v", err)
	}
}
