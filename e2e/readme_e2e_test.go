//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bannerOffsets are the rows of dev's banner and the offset from its base
// port that each address has by default (--base-port 7700).
var bannerOffsets = map[string]int{
	"shard proxy": 0, "proxy HTTP": 1, "cache 0": 10, "cache 1": 11, "cache 0 SSE": 16, "cache 1 SSE": 17,
	"etcd meta": 20, "etcd shard-a": 22, "etcd shard-b": 24, "etcd shard-c": 26,
	"gateway": 30, "backend b-1": 31, "backend b-2": 32, "cache 0 etcd": 40, "cache 1 etcd": 41,
	"proxy metrics": 90, "cache 0 metrics": 91, "cache 1 metrics": 92, "gateway metrics": 93,
}

// devAddrs maps dev's default addresses (port 77xx) to those of the dev
// under test, read from its banner.
func devAddrs(t *testing.T, banner string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, off := range bannerOffsets {
		fields := strings.Fields(strings.TrimPrefix(grepLine(t, banner, name+" "), "  "))
		addr := strings.TrimPrefix(fields[len(strings.Fields(name))], "http://")
		out[strconv.Itoa(7700+off)] = addr
	}
	return out
}

var defaultAddrRE = regexp.MustCompile(`(127\.0\.0\.1|localhost):(77\d\d)\b`)

// shell is one bash session running a README's commands in order, as a
// reader's terminal would: variables and jobs persist between commands.
type shell struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	dir string
	n   int
}

// endMark ends each command's output, followed by its exit status.
const endMark = "\x1eREADME-END"

func startShell(t *testing.T, dir string, env []string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir, cmd.Env = dir, env
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &shell{t: t, cmd: cmd, in: in, out: bufio.NewReader(pr), dir: dir}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
		pw.Close()
	})
	return s
}

// run runs one command line and returns what it printed and whether it
// succeeded. A command ending in & runs in the background, its output
// in a file of its own.
func (s *shell) run(line string, timeout time.Duration) (string, bool) {
	s.t.Helper()
	if bg, ok := strings.CutSuffix(strings.TrimSpace(line), "&"); ok && !strings.HasSuffix(bg, "&") {
		s.n++
		line = fmt.Sprintf("{ exec %s ; } >%s 2>&1 &", bg, filepath.Join(s.dir, fmt.Sprintf("job-%d.out", s.n)))
	} else {
		line = fmt.Sprintf("{ %s\n} 2>&1 </dev/null", line)
	}
	if _, err := fmt.Fprintf(s.in, "%s\nprintf '\\n%s %%d\\n' $?\n", line, endMark); err != nil {
		s.t.Fatalf("the shell stopped: %v", err)
	}
	type result struct {
		out string
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		var b strings.Builder
		for {
			l, err := s.out.ReadString('\n')
			if err != nil {
				done <- result{err: err}
				return
			}
			if rest, ok := strings.CutPrefix(l, endMark+" "); ok {
				out := strings.TrimRight(b.String(), "\n")
				done <- result{out: out, ok: strings.TrimSpace(rest) == "0"}
				return
			}
			b.WriteString(l)
		}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			s.t.Fatalf("reading the shell: %v", r.err)
		}
		return r.out, r.ok
	case <-time.After(timeout):
		s.t.Fatalf("%q did not finish within %s", line, timeout)
		return "", false
	}
}

// background is a command started for an "in another terminal" block.
type background struct {
	line string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

func (b *background) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// stop interrupts the command as Ctrl-C does and waits for it.
func (b *background) stop(t *testing.T) {
	select {
	case <-b.done:
		return
	default:
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("%q did not stop within 30 s of Ctrl-C", b.line)
	}
}

// TestE2EReadme runs every command block of README.md, in order, against
// `confetti dev` run by the real binary, and compares what the commands
// print with what the README shows (see readme.go for the rules).
func TestE2EReadme(t *testing.T) {
	text, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	scripts, err := ParseReadme(string(text))
	if err != nil {
		t.Fatal(err)
	}
	bin := binary(t)
	work := t.TempDir()
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(work, "bin", "confetti")); err != nil {
		t.Fatal(err)
	}
	// etcd's own etcdctl, for the section on using Confetti as etcd.
	etcdctl, err := filepath.Abs(filepath.Join("..", "bin", "etcdctl"))
	if err == nil {
		_, err = os.Stat(etcdctl)
	}
	if err != nil {
		t.Fatalf("etcdctl: %v (make e2e builds it into bin/)", err)
	}
	if err := os.Symlink(etcdctl, filepath.Join(work, "bin", "etcdctl")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CONFETTI_CLIENT_CONFIG="+filepath.Join(work, "client.yaml"), "HOME="+work,
		"PATH="+filepath.Join(work, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	dev := startDev(t, bin, filepath.Join(work, "data"), env)
	banner := dev.out.String()
	addrs := devAddrs(t, banner)
	bannerKeys := map[string]string{
		"OP":       strings.Fields(grepLine(t, banner, "operator key"))[2],
		"DEMO_KEY": strings.Fields(grepLine(t, banner, "demo key"))[2],
	}

	sh := startShell(t, work, env)
	var (
		bgs                                       []*background
		lastToken, lastKeyID, lastSecret, lastRev string
		tokenRE                                   = regexp.MustCompile(`token=(\S+)|"token":\s*"([^"]+)"`)
		keyIDRE                                   = regexp.MustCompile(`"id":\s*"([a-z0-9]{16})"|cft_([a-z0-9]{16})_|^([a-z0-9]{16}) `)
		secretRE                                  = regexp.MustCompile(`"secret":\s*"(cft_[^"]+)"|^(cft_[a-z0-9]+_\S+)$`)
		revRE                                     = regexp.MustCompile(`"mod_revision":\s*(\d+)`)
		exportKeyRE                               = regexp.MustCompile(`^export (\w+)=cft_\S*`)
	)
	t.Cleanup(func() {
		for _, b := range bgs {
			b.stop(t)
		}
	})
	learn := func(out string) {
		for _, l := range strings.Split(out, "\n") {
			for _, m := range tokenRE.FindAllStringSubmatch(l, -1) {
				lastToken = m[1] + m[2]
			}
			if m := keyIDRE.FindStringSubmatch(l); m != nil {
				lastKeyID = m[1] + m[2] + m[3]
			}
			if m := secretRE.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
				lastSecret = m[1] + m[2]
			}
			for _, m := range revRE.FindAllStringSubmatch(l, -1) {
				lastRev = m[1]
			}
		}
	}
	substitute := func(cmd string) string {
		cmd = defaultAddrRE.ReplaceAllStringFunc(cmd, func(s string) string {
			port := s[strings.LastIndex(s, ":")+1:]
			if a, ok := addrs[port]; ok {
				return a
			}
			return s
		})
		cmd = strings.ReplaceAll(cmd, "<token>", lastToken)
		cmd = strings.ReplaceAll(cmd, "<id>", lastKeyID)
		cmd = strings.ReplaceAll(cmd, "<rev>", lastRev)
		if m := exportKeyRE.FindStringSubmatch(cmd); m != nil {
			if key, ok := bannerKeys[m[1]]; ok {
				cmd = "export " + m[1] + "=" + key
			} else {
				cmd = "export " + m[1] + "=" + lastSecret
			}
		}
		return cmd
	}

	for _, s := range scripts {
		where := fmt.Sprintf("README line %d", s.Line)
		if s.Stop != "" {
			found := false
			for _, b := range bgs {
				if strings.Contains(b.line, s.Stop) {
					b.stop(t)
					found = true
				}
			}
			if !found {
				t.Fatalf("%s: no background command %q to stop", where, s.Stop)
			}
		}
		switch s.Kind {
		case NotRun:
			for _, c := range s.Commands {
				checkParses(t, where, work, env, c)
			}
			continue
		case Background:
			// As in another terminal where the reader exported the same
			// variables: the shell's environment so far.
			shellEnv, ok := sh.run("env -0", time.Minute)
			if !ok {
				t.Fatalf("%s: env: %s", where, shellEnv)
			}
			for _, c := range s.Commands {
				b := &background{line: c, done: make(chan struct{})}
				b.cmd = exec.Command("bash", "--noprofile", "--norc", "-c", "exec "+substitute(c))
				b.cmd.Dir, b.cmd.Env = work, strings.Split(strings.TrimRight(shellEnv, "\x00"), "\x00")
				b.cmd.Stdout, b.cmd.Stderr = b, b
				b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				if err := b.cmd.Start(); err != nil {
					t.Fatalf("%s: %s: %v", where, c, err)
				}
				go func() { b.cmd.Wait(); close(b.done) }()
				bgs = append(bgs, b)
			}
			continue
		case BackgroundOutput:
			checkBackground(t, where, s.Expect, bgs)
			continue
		}
		deadline := time.Now().Add(time.Minute)
		for {
			var out strings.Builder
			failed := ""
			for _, c := range s.Commands {
				o, ok := sh.run(substitute(c), 2*time.Minute)
				learn(o)
				if o != "" {
					out.WriteString(o + "\n")
				}
				if ok == s.Failing {
					failed = c
				}
			}
			diff := ""
			if s.Expect != nil {
				diff = Compare(s.Expect, out.String())
			}
			switch {
			case diff == "" && failed == "":
			case s.Eventually && time.Now().Before(deadline):
				time.Sleep(500 * time.Millisecond)
				continue
			case failed != "" && s.Failing:
				t.Fatalf("%s: %q succeeded; the README shows it failing:\n%s", where, failed, out.String())
			case failed != "":
				t.Fatalf("%s: %q failed:\n%s", where, failed, out.String())
			default:
				t.Fatalf("%s: %s: %s", where, strings.Join(s.Commands, "; "), diff)
			}
			break
		}
	}
}

// checkBackground waits until the background commands printed the lines
// want: the lines of one prefix (before the first ":") in order, by one
// command.
func checkBackground(t *testing.T, where string, want []string, bgs []*background) {
	t.Helper()
	groups := map[string][]string{}
	var order []string
	for _, l := range want {
		p, _, _ := strings.Cut(l, ":")
		if _, ok := groups[p]; !ok {
			order = append(order, p)
		}
		groups[p] = append(groups[p], l)
	}
	deadline := time.Now().Add(time.Minute)
	for _, p := range order {
		for {
			var missing string
			ok := false
			for _, b := range bgs {
				if m, found := ContainsInOrder(groups[p], b.output()); found {
					ok = true
					break
				} else {
					missing = m
				}
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				var outs []string
				for _, b := range bgs {
					outs = append(outs, b.line+":\n"+b.output())
				}
				t.Fatalf("%s: no background command printed %q; they printed:\n%s", where, missing, strings.Join(outs, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// checkParses checks that a command of a block that is not run would run:
// a confetti command parses with the real command tree (run with --help
// by the shell, so quoting is the reader's), a make target exists.
func checkParses(t *testing.T, where, work string, env []string, line string) {
	t.Helper()
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch name := filepath.Base(fields[0]); name {
	case "confetti":
		cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", line+" --help")
		cmd.Dir, cmd.Env = work, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %q does not parse: %v\n%s", where, line, err, out)
		}
	case "make":
		for _, target := range fields[1:] {
			if strings.Contains(target, "=") {
				continue
			}
			out, err := exec.CommandContext(ctx, "make", "-C", "..", "-n", target).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: make target %q: %v\n%s", where, target, err, out)
			}
		}
	}
}
