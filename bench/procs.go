package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// children are the subscriber processes of one run, this executable
// started again with Config.ChildArgs.
type children struct {
	procs []*childProc
}

type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// splitSpecs divides n subscribers over procs processes, each with its own
// source address (127.0.0.1, 127.0.0.2, ...) so that no address runs out
// of ports, whatever the connections per subscriber.
func splitSpecs(base childSpec, n, procs int) []childSpec {
	specs := make([]childSpec, procs)
	first := 0
	for p := range specs {
		s := base
		s.First = first
		s.Subscribers = n / procs
		if p < n%procs {
			s.Subscribers++
		}
		s.LocalIP = fmt.Sprintf("127.0.0.%d", 1+p%254)
		first += s.Subscribers
		specs[p] = s
	}
	return specs
}

// startChildren starts one process per spec and hands it its spec.
func startChildren(ctx context.Context, args []string, specs []childSpec) (_ *children, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cs := &children{}
	defer func() {
		if err != nil {
			cs.close()
		}
	}()
	for _, spec := range specs {
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = append(os.Environ(), ChildEnv+"=1")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		p := &childProc{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20)}
		cs.procs = append(cs.procs, p)
		b, _ := json.Marshal(spec)
		if _, err := fmt.Fprintf(stdin, "%s\n", b); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// expect reads the next line of every process, which must be word; a
// process that reports an error instead makes it fail with that error.
func (cs *children) expect(word string) error {
	return cs.each(func(i int, p *childProc) error {
		line, err := p.out.ReadString('\n')
		line = strings.TrimSpace(line)
		if line == word {
			return nil
		}
		var res childResult
		if json.Unmarshal([]byte(line), &res) == nil && res.Error != "" {
			return fmt.Errorf("subscriber process %d: %s", i, res.Error)
		}
		return fmt.Errorf("subscriber process %d: want %q, got %q (%v)", i, word, line, err)
	})
}

// send writes line to every process.
func (cs *children) send(line string) error {
	return cs.each(func(_ int, p *childProc) error {
		_, err := fmt.Fprintln(p.stdin, line)
		return err
	})
}

// results reads every process's report.
func (cs *children) results() ([]childResult, error) {
	out := make([]childResult, len(cs.procs))
	err := cs.each(func(i int, p *childProc) error {
		line, err := p.out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("subscriber process %d: %w", i, err)
		}
		if err := json.Unmarshal([]byte(line), &out[i]); err != nil {
			return fmt.Errorf("subscriber process %d: %w", i, err)
		}
		if out[i].Error != "" {
			return fmt.Errorf("subscriber process %d: %s", i, out[i].Error)
		}
		return nil
	})
	return out, err
}

// each runs f for every process at once.
func (cs *children) each(f func(int, *childProc) error) error {
	errs := make([]error, len(cs.procs))
	var wg sync.WaitGroup
	for i, p := range cs.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// close ends every process.
func (cs *children) close() {
	for _, p := range cs.procs {
		p.stdin.Close()
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}
