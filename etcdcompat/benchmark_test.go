//go:build etcdcompat

package etcdcompat

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestEtcdBenchmark runs etcd's own load generator (tools/benchmark)
// against dev's etcd front door as tenant demo: puts, linearizable and
// serializable ranges, mixed transactions and watches complete with no
// request failing, and the keys it wrote are the tenant's. Its keys are
// varint-encoded integers; a key space of 64 keeps every key one byte
// under 0x80 followed by zeros, valid UTF-8 as Confetti's keys are. Its
// watch-latency command writes random bytes as keys, which the front door
// refuses with a message saying why (32 random bytes are valid UTF-8
// with a chance well under one in a million).
func TestEtcdBenchmark(t *testing.T) {
	d := startDev(t)
	ep := d.field(t, "cache 0 etcd", 3)
	demo := "demo:" + d.field(t, "demo key", 2)

	run := func(args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin(t, "etcd-benchmark"), append([]string{"--endpoints", ep, "--user", demo, "--clients", "4", "--conns", "2"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{
		{"put", "--total", "2000", "--key-space-size", "64", "--val-size", "256"},
		{"range", "\x02", "\x40", "--total", "1000"},
		{"range", "\x02", "\x40", "--total", "1000", "--consistency", "s"},
		{"txn-mixed", "\x02", "\x40", "--total", "1000", "--key-space-size", "64", "--rw-ratio", "4"},
		{"watch", "--streams", "4", "--watch-per-stream", "25", "--put-total", "500", "--key-space-size", "64", "--watched-key-total", "16"},
	} {
		out, err := run(args...)
		if err != nil || strings.Contains(out, "Error distribution") || !strings.Contains(out, "Requests/sec") {
			t.Fatalf("benchmark %q: %v\n%s", args, err, out)
		}
	}

	// The writes are tenant demo's: etcdctl as demo lists the 64 keys
	// (eight bytes, the first under 0x80, the rest zero) beside the demo's
	// own; another tenant sees none of them.
	benchmarkKeys := func(user string) int {
		out, ok := etcdctl(t, ep, user, "", "get", "", "--from-key", "--keys-only", "-w", "json")
		if !ok {
			t.Fatalf("etcdctl get --from-key: %s", out)
		}
		var r struct{ Kvs []struct{ Key []byte } }
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("etcdctl get -w json: %v\n%s", err, out)
		}
		n := 0
		for _, kv := range r.Kvs {
			if len(kv.Key) == 8 && kv.Key[0] < 0x80 && strings.Trim(string(kv.Key[1:]), "\x00") == "" {
				n++
			}
		}
		return n
	}
	if got := benchmarkKeys(demo); got != 64 {
		t.Fatalf("tenant demo holds %d of the benchmark's keys, want 64", got)
	}
	d.confetti(t, "tenant", "create", "other")
	if got := benchmarkKeys("other:" + d.field(t, "operator key", 2)); got != 0 {
		t.Fatalf("tenant other sees %d of demo's keys", got)
	}

	out, err := run("watch-latency", "--put-total", "10", "--key-size", "32")
	if want := "Confetti keys are UTF-8 strings"; err == nil || !strings.Contains(out, want) {
		t.Fatalf("watch-latency with random binary keys: err %v, want a refusal saying %q:\n%s", err, want, out)
	}
}
