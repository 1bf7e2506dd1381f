//go:build e2e

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// registerProcess is `confetti svc register` running as its own process.
type registerProcess struct {
	cmd  *exec.Cmd
	done chan error

	mu  sync.Mutex
	out strings.Builder
}

// startRegister starts `confetti svc register` and waits until it has
// registered the instance.
func startRegister(t *testing.T, bin string, env []string, args ...string) *registerProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"svc", "register"}, args...)...)
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &registerProcess{cmd: cmd, done: make(chan error, 1)}
	registered := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		closed := false
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if !closed && strings.HasPrefix(sc.Text(), "registered ") {
				close(registered)
				closed = true
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case <-registered:
	case err := <-p.done:
		t.Fatalf("svc register exited before registering: %v\n%s", err, p.output())
	case <-time.After(time.Minute):
		t.Fatalf("svc register did not register within a minute:\n%s", p.output())
	}
	return p
}

func (p *registerProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits for the process to exit and returns its error.
func (p *registerProcess) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("svc register did not exit within a minute:\n%s", p.output())
		return nil
	}
}

// TestE2ESvcRegisterLivesAsLongAsItsProcess runs `confetti svc register`
// with the real binary against `confetti dev`: the instance stays past
// several TTLs while the process renews it, disappears within its TTL
// once the process is killed with SIGKILL, and is deregistered at once on
// Ctrl-C.
func TestE2ESvcRegisterLivesAsLongAsItsProcess(t *testing.T) {
	const ttl = 2
	const slack = 10 * time.Second
	bin := binary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "CONFETTI_CLIENT_CONFIG="+filepath.Join(dir, "client.yaml"))
	startDev(t, bin, filepath.Join(dir, "data"), env)
	run(t, bin, env, "tenant", "create", "acme")
	listed := func(instance string) bool {
		for _, l := range strings.Split(run(t, bin, env, "svc", "list", "--tenant", "acme", "api"), "\n") {
			if strings.HasPrefix(l, instance+" ") {
				return true
			}
		}
		return false
	}

	killed := startRegister(t, bin, env, "--tenant", "acme", "api", "i-1", "127.0.0.1:9001", "--ttl", "2", "--label", "zone=a")
	if !listed("i-1") {
		t.Fatalf("i-1 not listed after svc register printed:\n%s", killed.output())
	}
	if out := run(t, bin, env, "svc", "list", "--tenant", "acme", "api"); !strings.HasPrefix(out, "i-1 127.0.0.1:9001 labels=zone=a lease=") {
		t.Fatalf("svc list: %q", out)
	}
	for until := time.Now().Add(3 * ttl * time.Second); time.Now().Before(until); {
		if !listed("i-1") {
			t.Fatalf("i-1 gone while its process renews it:\n%s", killed.output())
		}
		<-time.After(300 * time.Millisecond)
	}
	if err := killed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	killed.wait(t)
	for listed("i-1") {
		if time.Since(killedAt) > ttl*time.Second+slack {
			t.Fatalf("i-1 still listed %s after its process was killed (ttl %ds)", time.Since(killedAt), ttl)
		}
		<-time.After(100 * time.Millisecond)
	}

	interrupted := startRegister(t, bin, env, "--tenant", "acme", "api", "i-2", "127.0.0.1:9002", "--ttl", "60")
	if err := interrupted.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := interrupted.wait(t); err != nil {
		t.Fatalf("svc register exited with %v after Ctrl-C:\n%s", err, interrupted.output())
	}
	if !strings.Contains(interrupted.output(), "deregistered api/i-2") {
		t.Fatalf("svc register output lacks the deregistration:\n%s", interrupted.output())
	}
	if listed("i-2") {
		t.Fatal("i-2 still listed after Ctrl-C, with a ttl of 60 s: it was not deregistered")
	}
}
