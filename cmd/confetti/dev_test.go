package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devRun is a `confetti dev` running in this process.
type devRun struct {
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func startDev(t *testing.T, dataDir, clientConfig string) *devRun {
	t.Helper()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	a := newApp(out, errOut)
	a.lookupEnv = func(string) (string, bool) { return "", false }
	root := newRootCommand(a)
	root.SetArgs([]string{"dev", "--data-dir", dataDir, "--base-port", "0", "--cache-nodes", "2",
		"--client-config", clientConfig, "--log-level", "error"})
	root.SetOut(out)
	root.SetErr(errOut)
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{out: out, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(d.stop)

	deadline := time.NewTimer(3 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), readyLine) {
		select {
		case err := <-d.done:
			d.done <- err // for stop
			t.Fatalf("dev exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		case <-deadline.C:
			t.Fatalf("dev not ready in time\nstdout:\n%s\nstderr:\n%s", out, errOut)
		case <-tick.C:
		}
	}
	return d
}

// stop interrupts dev as Ctrl-C does and waits until it has stopped.
func (d *devRun) stop() {
	d.cancel()
	if err, ok := <-d.done; ok {
		d.done <- err
	}
}

func (d *devRun) stopped(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		close(d.done)
		if err != nil {
			t.Fatalf("dev stopped with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("dev did not stop within a minute")
	}
	if !strings.Contains(d.out.String(), "confetti dev stopped") {
		t.Fatalf("dev output lacks the stop line:\n%s", d.out)
	}
}

func cli(t *testing.T, clientConfig string, args ...string) string {
	t.Helper()
	out, errOut, err := runCLIWith(t, clientConfig, args...)
	if err != nil {
		t.Fatalf("confetti %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestDevServesTheBannerCommandsAndKeepsDataAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four etcd clusters")
	}
	dataDir := t.TempDir()
	clientConfig := filepath.Join(t.TempDir(), "confetti", "client.yaml")
	d := startDev(t, dataDir, clientConfig)
	banner := d.out.String()
	for _, want := range []string{"etcd meta", "etcd shard-a", "etcd shard-b", "etcd shard-c", "shard proxy", "cache 0", "cache 1", "proxy metrics", clientConfig, "confetti tenant create acme"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	if out := cli(t, clientConfig, "tenant", "create", "acme"); !regexp.MustCompile(`^created tenant acme on shard shard-[abc]\n$`).MatchString(out) {
		t.Fatalf("tenant create printed %q", out)
	}
	if out := cli(t, clientConfig, "kv", "put", "--tenant", "acme", "/routes/1", `{"uri":"/hello"}`); !strings.HasPrefix(out, "OK rev=") {
		t.Fatalf("kv put printed %q", out)
	}
	// The cache node may not have applied the put yet when the watch
	// starts: the key then comes as an event after the Reset.
	watched := cli(t, clientConfig, "kv", "watch", "--tenant", "acme", "/routes/", "--count", "1")
	if !regexp.MustCompile(`^(PUT )?/routes/1 \{"uri":"/hello"\} rev=\d+ token=\S+\n$`).MatchString(watched) {
		t.Fatalf("kv watch printed %q", watched)
	}
	if out := cli(t, clientConfig, "kv", "get", "--tenant", "acme", "/routes/", "--prefix"); out != "/routes/1 {\"uri\":\"/hello\"}\n" {
		t.Fatalf("kv get printed %q", out)
	}
	if out := cli(t, clientConfig, "kv", "get", "--tenant", "demo", "", "--prefix", "--keys-only"); out != "/routes/hello\n/upstreams/web\n" {
		t.Fatalf("demo tenant holds %q", out)
	}
	if out := cli(t, clientConfig, "tenant", "list"); !regexp.MustCompile(`^acme shard-[abc]\ndemo shard-[abc]\n$`).MatchString(out) {
		t.Fatalf("tenant list printed %q", out)
	}
	keys := checkDevAuth(t, dataDir, banner, clientConfig)
	d.stopped(t)

	d = startDev(t, dataDir, clientConfig)
	if again := devKeysOf(t, d.out.String()); again != keys {
		t.Fatalf("after a restart dev shows keys %+v, want the same as before, %+v", again, keys)
	}
	if out := cli(t, clientConfig, "kv", "get", "--tenant", "acme", "/routes/1"); out != "/routes/1 {\"uri\":\"/hello\"}\n" {
		t.Fatalf("after a restart kv get printed %q", out)
	}
	if _, _, err := runCLIWith(t, clientConfig, "tenant", "create", "acme"); err == nil || !strings.Contains(errorMessage(err), "already exists") {
		t.Fatalf("creating acme again after a restart: err = %v, want already exists", err)
	}
	d.stopped(t)
}
