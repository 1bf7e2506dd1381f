package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/bench"
)

// benchConfig runs a bench command line with a runner that records the
// configuration instead of benchmarking.
func benchConfig(t *testing.T, args ...string) (bench.Config, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut)
	a.lookupEnv = func(string) (string, bool) { return "", false }
	var got bench.Config
	a.runBench = func(_ context.Context, cfg bench.Config) (*bench.Results, error) {
		got = cfg
		return &bench.Results{}, nil
	}
	root := newRootCommand(a)
	root.SetArgs(append(args, "--client-config", filepath.Join(t.TempDir(), "none.yaml")))
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.Execute(); err != nil {
		t.Fatalf("confetti %s: %v (stderr %q)", strings.Join(args, " "), err, errOut.String())
	}
	return got, out.String()
}

func TestBenchWritesIntoATemporaryDirectoryByDefault(t *testing.T) {
	cfg, _ := benchConfig(t, "bench", "--quick")
	t.Cleanup(func() { os.RemoveAll(cfg.Out) })
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(os.TempDir(), cfg.Out)
	if !filepath.IsAbs(cfg.Out) || err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("bench without --out writes to %q, want a directory under %s", cfg.Out, os.TempDir())
	}
	if strings.HasPrefix(cfg.Out, wd) {
		t.Fatalf("bench without --out writes to %q, inside the working directory %s", cfg.Out, wd)
	}
	if st, err := os.Stat(cfg.Out); err != nil || !st.IsDir() {
		t.Fatalf("bench's output directory %q: %v", cfg.Out, err)
	}

	out := filepath.Join(t.TempDir(), "results")
	if cfg, _ := benchConfig(t, "bench", "--quick", "--out", out); cfg.Out != out {
		t.Fatalf("bench --out %s writes to %q", out, cfg.Out)
	}
}

func TestBenchHelpListsEveryScenario(t *testing.T) {
	_, help := benchConfig(t, "bench", "--help")
	for _, s := range bench.Scenarios {
		if !regexp.MustCompile(`(?m)^  ` + s + ` +\S`).MatchString(help) {
			t.Errorf("bench --help does not describe the scenario %q:\n%s", s, help)
		}
	}
}
