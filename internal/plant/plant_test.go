//go:build chaosplant

package plant

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestOnceFiresExactlyOnceAtFireAt(t *testing.T) {
	Set(SkipEvent)
	t.Cleanup(func() { Set() })
	if !On(SkipEvent) || On(AckUnapplied) {
		t.Fatalf("On: skip-event %v, ack-unapplied %v; want only skip-event", On(SkipEvent), On(AckUnapplied))
	}
	var fired atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if Once(SkipEvent) {
					fired.Add(1)
				}
				if Once(AckUnapplied) {
					t.Error("a bug that is off fired")
				}
			}
		}()
	}
	wg.Wait()
	if fired.Load() != 1 || !Fired(SkipEvent) {
		t.Fatalf("fired %d times (Fired %v); want once", fired.Load(), Fired(SkipEvent))
	}
	if Fired(AckUnapplied) {
		t.Fatal("Fired reports a bug that is off")
	}

	Set(SkipEvent)
	for i := 1; i <= FireAt; i++ {
		if got := Once(SkipEvent); got != (i == FireAt) {
			t.Fatalf("call %d after Set: Once = %v; want true only at call %d", i, got, FireAt)
		}
	}
}

func TestSetRefusesUnknownBug(t *testing.T) {
	t.Cleanup(func() { Set() })
	defer func() {
		if recover() == nil {
			t.Fatal("Set accepted an unknown bug name")
		}
	}()
	Set("skip-events")
}
