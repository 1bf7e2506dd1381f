//go:build chaos

package chaos_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	return absolute(t, b)
}

func absolute(t *testing.T, b chaos.Binaries) chaos.Binaries {
	if b.Etcd == "" {
		b.Etcd = "../bin/etcd"
	}
	for _, p := range []*string{&b.Confetti, &b.Etcd} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%v: run make chaos, or set CONFETTI_BIN, PLANT_BIN and ETCD_BIN", err)
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

// TestPlantedBugsAreCaught runs each planted bug (internal/plant) against
// processes of bin/confetti-plant (built with -tags chaosplant, or
// PLANT_BIN): the bug must fire and a checker must report it.
func TestPlantedBugsAreCaught(t *testing.T) {
	b := chaos.Binaries{Confetti: os.Getenv("PLANT_BIN"), Etcd: os.Getenv("ETCD_BIN")}
	if b.Confetti == "" {
		b.Confetti = "../bin/confetti-plant"
	}
	bins := absolute(t, b)
	out := os.Getenv("CHAOS_OUT")
	if out == "" {
		out = "../build/chaos"
	}
	lg, _ := zap.NewDevelopment()
	for _, bug := range chaos.PlantedBugs {
		t.Run(bug, func(t *testing.T) {
			sc, want, err := chaos.Planted(bug)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			r, err := chaos.Run(ctx, sc, chaos.Options{Seed: 1, Out: out, Bins: bins, Logger: lg.Named(sc.Name)})
			if err != nil {
				t.Fatal(err)
			}
			logs, _ := filepath.Glob(filepath.Join(r.Dir, "logs", "*.log"))
			fired := false
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				fired = fired || strings.Contains(string(b), "confetti-plant: fired "+bug)
			}
			if !fired {
				t.Fatalf("%s never fired (logs in %s): the run tested nothing", bug, r.Dir)
			}
			var caught []string
			for _, v := range r.Violations {
				if strings.HasPrefix(v, want) {
					caught = append(caught, v)
				}
			}
			if len(caught) == 0 {
				t.Fatalf("%s fired and no checker reported a %q violation; violations: %q (report: %s)", bug, want, r.Violations, r.Dir)
			}
			t.Logf("%s caught: %d violations, e.g. %s", bug, len(r.Violations), caught[0])
		})
	}
}
