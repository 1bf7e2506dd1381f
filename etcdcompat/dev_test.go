//go:build etcdcompat

package etcdcompat

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is a binary of bin/ at the repository root, as `make etcd-compat`
// builds them.
func bin(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (run `make etcd-compat`, which builds it)", p, err)
	}
	return p
}

// output collects a process's output.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// dev is `confetti dev` on kernel-chosen ports.
type dev struct {
	dir    string
	env    []string
	banner string
}

func startDev(t *testing.T) *dev {
	t.Helper()
	d := &dev{dir: t.TempDir()}
	d.env = append(os.Environ(), "CONFETTI_CLIENT_CONFIG="+filepath.Join(d.dir, "client.yaml"), "HOME="+d.dir)
	cmd := exec.Command(bin(t, "confetti"), "dev", "--base-port", "0", "--data-dir", filepath.Join(d.dir, "data"))
	cmd.Env = d.env
	out := &output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("confetti dev's output:\n%s", out)
		}
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), "confetti dev is ready") {
		select {
		case err := <-done:
			t.Fatalf("confetti dev exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("confetti dev not ready within 3 minutes:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.banner = out.String()
	return d
}

// field is the n-th field of the banner line starting with prefix.
func (d *dev) field(t *testing.T, prefix string, n int) string {
	t.Helper()
	for _, l := range strings.Split(d.banner, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return strings.TrimPrefix(strings.Fields(l)[n], "http://")
		}
	}
	t.Fatalf("no banner line %q in:\n%s", prefix, d.banner)
	return ""
}

// confetti runs a client verb of the confetti binary against dev.
func (d *dev) confetti(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "confetti"), args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confetti %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// etcdctl runs the real etcdctl with stdin, returning its output and
// whether it succeeded.
func etcdctl(t *testing.T, endpoints, user, stdin string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "etcdctl"), append([]string{"--endpoints", endpoints, "--user", user}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), false
	}
	return string(out), true
}

// cacheProcess is a cache node of dev's cluster in a process of its own,
// with its etcd front door.
type cacheProcess struct {
	cmd  *exec.Cmd
	out  *output
	done chan struct{}
	// etcdAddr is where its etcd front door listens.
	etcdAddr string
}

// devSecrets are the credentials dev generated for its etcd clusters.
type devSecrets struct {
	EtcdPassword     string `json:"etcd-password"`
	EtcdRootPassword string `json:"etcd-root-password"`
}

func (d *dev) secrets(t *testing.T) devSecrets {
	t.Helper()
	var s devSecrets
	b, err := os.ReadFile(filepath.Join(d.dir, "data", "secrets.json"))
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil {
		t.Fatalf("dev's etcd credentials: %v", err)
	}
	return s
}

func (d *dev) startCache(t *testing.T, etcdAddr string) *cacheProcess {
	t.Helper()
	pw := filepath.Join(d.dir, "etcd-password")
	if err := os.WriteFile(pw, []byte(d.secrets(t).EtcdPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	metaURL := "http://" + d.field(t, "etcd meta", 2)
	cmd := exec.Command(bin(t, "confetti"), "cache", "--meta-endpoints", metaURL, "--etcd-username", "confetti", "--etcd-password-file", pw,
		"--listen-addr", "127.0.0.1:0", "--http-addr", "", "--metrics-addr", "", "--node-name", "extra",
		"--etcd-listen-addr", etcdAddr, "--etcd-proxy-endpoints", d.field(t, "shard proxy", 2), "--etcd-cluster-name", "confetti-dev")
	p := &cacheProcess{cmd: cmd, out: &output{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ready := false
		for _, l := range strings.Split(p.out.String(), "\n") {
			var e struct {
				Msg  string `json:"msg"`
				Addr string `json:"etcd-listen-addr"`
			}
			if json.Unmarshal([]byte(l), &e) != nil {
				continue
			}
			switch e.Msg {
			case "etcd front door":
				p.etcdAddr = e.Addr
			case "ready":
				ready = true
			}
		}
		if ready && p.etcdAddr != "" {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("cache process exited:\n%s", p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache process not ready:\n%s", p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *cacheProcess) kill() {
	p.cmd.Process.Kill()
	<-p.done
}
