//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/confetti-io/confetti/internal/testcluster"
)

// lines collects a process's output lines.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) read(sc *bufio.Scanner) {
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
	}
}

func (l *lines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

// startCacheProcess runs a cache node of dev's cluster as a process of
// its own and returns it with the address of its SSE door.
func startCacheProcess(t *testing.T, bin, dataDir, metaURL string) (*exec.Cmd, string) {
	t.Helper()
	var secrets struct {
		EtcdPassword string `json:"etcd-password"`
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "secrets.json"))
	if err == nil {
		err = json.Unmarshal(b, &secrets)
	}
	if err != nil {
		t.Fatalf("dev's etcd password: %v", err)
	}
	pw := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(pw, []byte(secrets.EtcdPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "cache", "--meta-endpoints", metaURL, "--etcd-username", "confetti", "--etcd-password-file", pw,
		"--listen-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "", "--node-name", "extra")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	log := &lines{}
	go log.read(bufio.NewScanner(out))
	var addr string
	testcluster.WaitFor(t, "the extra cache node serving and ready", func() bool {
		ready := false
		for _, l := range log.get() {
			var e struct {
				Msg      string `json:"msg"`
				HTTPAddr string `json:"http-addr"`
			}
			if json.Unmarshal([]byte(l), &e) != nil {
				continue
			}
			switch e.Msg {
			case "serving":
				addr = e.HTTPAddr
			case "ready":
				ready = true
			}
		}
		return ready && addr != ""
	})
	return cmd, addr
}

// TestE2ESSEPythonSubscriberResumesThroughANodeKill runs the README's
// Python subscriber (standard library only) against confetti dev and a
// cache node of its own, kills that node mid-stream, and checks that the
// subscriber resumed on dev's node from its last event id: every write
// printed once, in order, after a single state.
func TestE2ESSEPythonSubscriberResumesThroughANodeKill(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("the Python example needs python3 on PATH (apt-get install python3)")
	}
	bin := binary(t)
	work := t.TempDir()
	dataDir := filepath.Join(work, "data")
	env := append(os.Environ(), "CONFETTI_CLIENT_CONFIG="+filepath.Join(work, "client.yaml"), "HOME="+work)
	dev := startDev(t, bin, dataDir, env)
	banner := dev.out.String()
	addrs := devAddrs(t, banner)
	key := strings.Fields(grepLine(t, banner, "demo key"))[2]
	extra, extraAddr := startCacheProcess(t, bin, dataDir, "http://"+addrs["7720"])

	py := exec.Command(python, "../examples/sse_subscribe.py", "demo", "/sse/", "http://"+extraAddr, "http://"+addrs["7716"])
	py.Env = append(os.Environ(), "CONFETTI_API_KEY="+key)
	stdout, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	py.Stderr = &stderr
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() })
	got := &lines{}
	go got.read(bufio.NewScanner(stdout))
	testcluster.WaitFor(t, "the subscriber's state", func() bool { return len(got.get()) > 0 })

	put := func(i int) string {
		req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/v1/tenants/demo/kv//sse/%d", addrs["7701"], i), strings.NewReader(fmt.Sprintf("v%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("put /sse/%d: %s", i, resp.Status)
		}
		return fmt.Sprintf("PUT /sse/%d v%d", i, i)
	}
	want := []string{"STATE {}"}
	for i := range 20 {
		want = append(want, put(i))
	}
	testcluster.WaitFor(t, "the first writes printed", func() bool { return len(got.get()) >= len(want) })
	if err := extra.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 40; i++ {
		want = append(want, put(i))
	}
	testcluster.WaitFor(t, "every write printed", func() bool { return len(got.get()) >= len(want) })
	// A line printed twice, or one missing, shows as a difference here:
	// the stream is ordered, so the last write comes last.
	if g := got.get(); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the subscriber printed\n%s\nwant\n%s\n(stderr: %s)", strings.Join(g, "\n"), strings.Join(want, "\n"), stderr.String())
	}
	if !strings.Contains(stderr.String(), "resuming on the next node") {
		t.Fatalf("the subscriber never failed over: %s", stderr.String())
	}
}
