//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary builds bin/confetti the way `make build` does, into a temp dir.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "confetti")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/confetti-io/confetti/cmd/confetti")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// devProcess is `confetti dev` running as its own process.
type devProcess struct {
	cmd  *exec.Cmd
	done chan error
	out  *bytes.Buffer
}

// startDev runs `confetti dev` on kernel-chosen ports and waits for its
// ready line.
func startDev(t *testing.T, bin, dataDir string, env []string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--base-port", "0", "--data-dir", dataDir)
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, done: make(chan error, 1), out: &bytes.Buffer{}}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		closed := false
		for sc.Scan() {
			p.out.WriteString(sc.Text() + "\n")
			if !closed && strings.Contains(sc.Text(), "confetti dev is ready") {
				close(ready)
				closed = true
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("confetti dev exited before it was ready: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("confetti dev not ready within 3 minutes")
	}
	return p
}

// stop sends Ctrl-C and waits for a clean exit.
func (p *devProcess) stop(t *testing.T) {
	if p.cmd.ProcessState != nil || p.done == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("confetti dev exited with %v after Ctrl-C", err)
		}
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		t.Error("confetti dev did not stop within a minute of Ctrl-C")
	}
	p.done = nil
}

// run runs one CLI command as a user types it and returns its output.
func run(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confetti %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tokenOf is the token printed on the last line of a watch's output.
func tokenOf(t *testing.T, out string) string {
	t.Helper()
	i := strings.LastIndex(out, "token=")
	if i < 0 {
		t.Fatalf("no token in %q", out)
	}
	return strings.TrimSpace(out[i+len("token="):])
}

// TestE2EReadmeTour runs the README's tour with the real binary: `confetti
// dev` in one process, the CLI in others, finding dev through the client
// config file it writes; then a restart keeps the data.
func TestE2EReadmeTour(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "CONFETTI_CLIENT_CONFIG="+filepath.Join(dir, "client.yaml"))
	dev := startDev(t, bin, filepath.Join(dir, "data"), env)

	if out := run(t, bin, env, "tenant", "create", "acme"); !strings.Contains(out, "created tenant acme on shard shard-") {
		t.Fatalf("tenant create: %q", out)
	}
	run(t, bin, env, "kv", "put", "--tenant", "acme", "/routes/1", `{"uri":"/hello"}`)
	out := run(t, bin, env, "kv", "watch", "--tenant", "acme", "/routes/", "--count", "1")
	if !strings.HasPrefix(out, `/routes/1 {"uri":"/hello"} rev=`) || !strings.Contains(out, "token=") {
		t.Fatalf("kv watch: %q", out)
	}
	token := strings.TrimSpace(out[strings.Index(out, "token=")+len("token="):])

	// A change after the token, read from the other cache node with --from.
	run(t, bin, env, "kv", "put", "--tenant", "acme", "/routes/2", "two")
	// The banner line reads "cache 1   127.0.0.1:PORT   gRPC: Cache ...".
	second := strings.Fields(grepLine(t, dev.out.String(), "cache 1 "))[2]
	out = run(t, bin, env, "kv", "watch", "--tenant", "acme", "/routes/", "--from", token, "--count", "1", "--cache-endpoints", second)
	if !strings.HasPrefix(out, "PUT /routes/2 two rev=") {
		t.Fatalf("kv watch --from on the second cache: %q", out)
	}
	if out := run(t, bin, env, "kv", "get", "--tenant", "acme", "/routes/", "--prefix"); out != "/routes/1 {\"uri\":\"/hello\"}\n/routes/2 two\n" {
		t.Fatalf("kv get --prefix: %q", out)
	}

	// Every printed token resumes exactly after its line: a watch that
	// stops after the first of two transactions the node sends in one
	// message keeps the token of that transaction, not of the message.
	run(t, bin, env, "kv", "put", "--tenant", "acme", "/w/1", "one")
	t0 := tokenOf(t, run(t, bin, env, "kv", "watch", "--tenant", "acme", "/w/", "--count", "1"))
	run(t, bin, env, "kv", "put", "--tenant", "acme", "/w/4", "four")
	run(t, bin, env, "kv", "put", "--tenant", "acme", "/w/5", "five")
	out = run(t, bin, env, "kv", "watch", "--tenant", "acme", "/w/", "--from", t0, "--count", "1")
	if !strings.HasPrefix(out, "PUT /w/4 four rev=") || strings.Count(out, "\n") != 1 {
		t.Fatalf("kv watch --from %s --count 1: %q, want the line of /w/4 alone", t0, out)
	}
	out = run(t, bin, env, "kv", "watch", "--tenant", "acme", "/w/", "--from", tokenOf(t, out), "--count", "1")
	if !strings.HasPrefix(out, "PUT /w/5 five rev=") {
		t.Fatalf("kv watch from the token printed with /w/4: %q, want /w/5", out)
	}
	dev.stop(t)

	startDev(t, bin, filepath.Join(dir, "data"), env)
	if out := run(t, bin, env, "tenant", "list"); !strings.Contains(out, "acme shard-") || !strings.Contains(out, "demo shard-") {
		t.Fatalf("tenant list after restart: %q", out)
	}
	if out := run(t, bin, env, "kv", "get", "--tenant", "acme", "/routes/2"); out != "/routes/2 two\n" {
		t.Fatalf("kv get after restart: %q", out)
	}
}

func grepLine(t *testing.T, text, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, text)
	return ""
}
