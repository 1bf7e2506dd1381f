package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// startBinary starts this test binary as the confetti binary (see
// TestMain) with args, in an environment of its own, and returns its
// standard output and error as they grow.
func startBinary(t *testing.T, args ...string) (*exec.Cmd, *syncWriter, *syncWriter) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], append(args, "--client-config", filepath.Join(dir, "none.yaml"))...)
	cmd.Env = []string{mainEnv + "=1", "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "PATH=" + os.Getenv("PATH"),
		// Under -race, exit at once rather than after the race
		// detector's usual second.
		"GORACE=atexit_sleep_ms=0"}
	out, errOut := &syncWriter{}, &syncWriter{}
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, out, errOut
}

// TestWatchesAndGatewayStopOnSIGTERM starts kv watch, item watch and the
// gateway as processes subscribed to a cache node, sends SIGTERM, and
// checks that each exits with status 0 and says that it stopped.
func TestWatchesAndGatewayStopOnSIGTERM(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		// running is in standard error once the command serves.
		running string
		// stopped is in standard error once the command has stopped.
		stopped []string
	}{
		{
			name:    "kv watch",
			args:    []string{"kv", "watch", "--tenant", "acme", "/routes/"},
			stopped: []string{"kv watch: terminated signal received: stopped; resume with --from t1"},
		},
		{
			name:    "item watch",
			args:    []string{"item", "watch", "--tenant", "acme", "routes", "--instance-id", "gw-a"},
			stopped: []string{"item watch: terminated signal received: stopped"},
		},
		{
			name:    "gateway",
			args:    []string{"gateway", "--tenant", "acme", "--listen", "127.0.0.1:0"},
			running: `"msg":"serving"`,
			stopped: []string{`"msg":"stopping","reason":"terminated signal received"`, `"msg":"stopped"`},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			node := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{resetMsg(0, true, "t1", kv("/routes/1", "x", 3))}}
			cmd, out, errOut := startBinary(t, append(tt.args, "--cache-endpoints", startCache(t, node))...)
			waitUntilCLI(t, "the subscription", func() bool {
				return len(node.received()) > 0 && strings.Contains(errOut.String(), tt.running) &&
					(tt.name != "kv watch" || strings.Contains(out.String(), "token=t1"))
			})
			sent := time.Now()
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if errors.As(err, &ee) || err != nil {
					t.Fatalf("%s exited with %v\nstderr:\n%s", tt.name, err, errOut)
				}
				t.Logf("%s exited %s after SIGTERM", tt.name, time.Since(sent))
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not exit after SIGTERM\nstderr:\n%s", tt.name, errOut)
			}
			for _, want := range tt.stopped {
				if !strings.Contains(errOut.String(), want) {
					t.Errorf("%s: stderr lacks %q:\n%s", tt.name, want, errOut)
				}
			}
		})
	}
}
