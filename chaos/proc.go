package chaos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process of a topology (an etcd member, a proxy, a cache
// node), restartable with the same command line, its output appended to a
// log file in the report directory. A Proc dies with the runner.
type Proc struct {
	Name string
	bin  string
	args []string
	env  []string
	log  string
	// ready, if set, answers whether the process serves.
	ready func(ctx context.Context) error

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool // SIGSTOPped
}

// Start starts the process; it fails if it runs already.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s runs already", p.Name)
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n=== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.Name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopped = cmd, done, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(out, "=== %s exit %s: %v\n", time.Now().Format(time.RFC3339Nano), p.Name, err)
		out.Close()
		p.mu.Lock()
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process is alive (stopped or not).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

func (p *Proc) signal(sig syscall.Signal) (chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, fmt.Errorf("%s is not running", p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return p.done, nil
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() error {
	done, err := p.signal(syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// Freeze stops the process with SIGSTOP: its sockets stay open and silent.
func (p *Proc) Freeze() error {
	_, err := p.signal(syscall.SIGSTOP)
	return err
}

// Thaw resumes a frozen process.
func (p *Proc) Thaw() error {
	_, err := p.signal(syscall.SIGCONT)
	return err
}

// Terminate stops the process gracefully (SIGTERM, SIGKILL after timeout).
func (p *Proc) Terminate(timeout time.Duration) {
	p.mu.Lock()
	cmd, done, stopped := p.cmd, p.done, p.stopped
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if stopped {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// WaitReady polls the process's readiness until it answers or ctx ends.
func (p *Proc) WaitReady(ctx context.Context) error {
	var last error
	for {
		if !p.Running() {
			return fmt.Errorf("%s exited (log: %s)", p.Name, p.log)
		}
		if last = p.ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v (log: %s)", p.Name, last, p.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpReady is a readiness check answered by a 200 from url.
func httpReady(url string) func(ctx context.Context) error {
	cli := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := cli.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// ports hands out the listen addresses of a topology's processes.
// Processes restart on the same address, so a port is chosen once, by the
// kernel, and released for the process to bind. They live on 127.0.0.2,
// apart from 127.0.0.1 where the links listen and every connection takes
// its local port: nothing else of the run can take a released port before
// its process binds it.
type ports struct {
	used map[string]bool
}

const procIP = "127.0.0.2"

func (p *ports) next() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", procIP+":0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if !p.used[addr] {
			p.used[addr] = true
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port on %s", procIP)
}
