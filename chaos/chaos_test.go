//go:build chaos

package chaos_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/confetti-io/confetti/chaos"
)

// binaries are the programs the topology runs: bin/confetti and bin/etcd
// by default (make chaos builds them), or CONFETTI_BIN and ETCD_BIN.
func binaries(t *testing.T) chaos.Binaries {
	b := chaos.Binaries{Confetti: os.Getenv("CONFETTI_BIN"), Etcd: os.Getenv("ETCD_BIN")}
	if b.Confetti == "" {
		b.Confetti = "../bin/confetti"
	}
	if b.Etcd == "" {
		b.Etcd = "../bin/etcd"
	}
	for _, p := range []*string{&b.Confetti, &b.Etcd} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%v: run make build etcd, or set CONFETTI_BIN and ETCD_BIN", err)
		}
		*p = abs
	}
	return b
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// TestChaos runs the standard scenarios (CHAOS_RUN selects some by name
// with -run) over CHAOS_SEEDS seeds, scaled in time by CHAOS_SCALE, and
// leaves each run's report in CHAOS_OUT (default build/chaos).
func TestChaos(t *testing.T) {
	bins := binaries(t)
	out := os.Getenv("CHAOS_OUT")
	if out == "" {
		out = "../build/chaos"
	}
	seeds := envInt(t, "CHAOS_SEEDS", 1)
	scale := float64(envInt(t, "CHAOS_SCALE", 1))
	lg, _ := zap.NewDevelopment()
	for _, sc := range chaos.Scenarios(scale) {
		t.Run(sc.Name, func(t *testing.T) {
			for seed := 1; seed <= seeds; seed++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				r, err := chaos.Run(ctx, sc, chaos.Options{Seed: uint64(seed), Out: out, Bins: bins, Logger: lg.Named(sc.Name)})
				cancel()
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				t.Logf("seed %d: report in %s\n%s", seed, r.Dir, r.Markdown())
				if !r.Pass() {
					t.Errorf("seed %d: %d violations (report: %s)", seed, len(r.Violations), r.Dir)
				}
			}
		})
	}
}
