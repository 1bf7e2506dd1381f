//go:build chaosplant

package plant

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
)

// bug is one planted bug's switch and the count of its hook's calls.
type bug struct {
	on    atomic.Bool
	calls atomic.Int64
}

// bugs never changes after init; only the atomics inside do.
var bugs = map[string]*bug{
	SkipEvent:       {},
	AdvanceToken:    {},
	DropSecondEvent: {},
	AckUnapplied:    {},
}

func init() {
	var names []string
	for _, n := range strings.Split(os.Getenv("CONFETTI_PLANT"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	Set(names...)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "confetti-plant: armed %s (fires at call %d)\n", n, FireAt)
	}
}

// On reports whether bug name is switched on.
func On(name string) bool {
	b := bugs[name]
	return b != nil && b.on.Load()
}

// Once reports whether bug name fires now: true for exactly one call per
// process while it is on, the FireAt-th, so that the system has run
// normally before. It announces the firing on stderr.
func Once(name string) bool {
	b := bugs[name]
	if b == nil || !b.on.Load() || b.calls.Add(1) != FireAt {
		return false
	}
	fmt.Fprintf(os.Stderr, "confetti-plant: fired %s\n", name)
	return true
}

// Set switches on exactly the bugs named, switches off the others, and
// starts every count again; for tests. It panics on an unknown name, so
// that a misspelt bug never makes a run that tests nothing.
func Set(names ...string) {
	for _, n := range names {
		if bugs[n] == nil {
			panic(fmt.Sprintf("plant: unknown bug %q (known: %s, %s, %s, %s)", n, SkipEvent, AdvanceToken, DropSecondEvent, AckUnapplied))
		}
	}
	for n, b := range bugs {
		b.on.Store(false)
		b.calls.Store(0)
		b.on.Store(slices.Contains(names, n))
	}
}

// Fired reports whether bug name has fired since it was last Set.
func Fired(name string) bool {
	b := bugs[name]
	return b != nil && b.calls.Load() >= FireAt
}
