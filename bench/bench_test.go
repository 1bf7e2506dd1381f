package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) != "" {
		os.Exit(RunChild(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// TestQuickSuiteDeliversEverythingAndWritesItsFiles runs `confetti bench
// --quick` (every scenario, small), with this test binary as the
// subscriber processes, and checks what CI relies on: no run failed, every
// subscriber got every update, and the JSON, Markdown and plots are
// written. It asserts nothing about speed.
func TestQuickSuiteDeliversEverythingAndWritesItsFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	var log bytes.Buffer
	res, err := Run(ctx, Config{Quick: true, Out: out, ChildArgs: []string{"-test.run=^$"}, Log: &log})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Fanout) == 0 || len(res.Resume) == 0 || len(res.Writes) == 0 {
		t.Fatalf("got %d fanout, %d resume and %d writes results; want every scenario", len(res.Fanout), len(res.Resume), len(res.Writes))
	}
	seen := map[string]bool{}
	for _, f := range res.Fanout {
		seen[f.Scenario+"/"+f.Target] = true
		if f.Expected == 0 || f.Delivered != f.Expected || f.Missing != 0 || f.Disorder != 0 {
			t.Errorf("%s %s N=%d: expected %d deliveries, delivered %d, missing %d, disorder %d", f.Scenario, f.Target, f.N, f.Expected, f.Delivered, f.Missing, f.Disorder)
		}
	}
	for _, want := range []string{"fanout/floor", "fanout/confetti", "fanout/etcd", "fanout/etcdapi", "fanout/grpcproxy", "scale/confetti"} {
		if !seen[want] {
			t.Errorf("no %s run", want)
		}
	}
	for _, x := range res.Resume {
		if x.Incomplete != 0 || x.Replays+x.Resets != x.N {
			t.Errorf("resume N=%d: %d replayed, %d reset, %d incomplete", x.N, x.Replays, x.Resets, x.Incomplete)
		}
	}
	var fromFile Results
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fromFile); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, &fromFile); diff != "" {
		t.Errorf("results.json differs from the results (-returned +file):\n%s", diff)
	}
	if len(res.Plots) == 0 {
		t.Error("no plots")
	}
	for _, f := range append([]string{"results.md"}, res.Plots...) {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, size %v", f, err, st)
		}
	}
}
