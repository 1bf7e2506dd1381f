package main

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDevStartsWithAnUnreachableShard registers a shard where no etcd
// listens (forced, then activated), restarts dev, and checks that it comes
// up and serves: new tenants avoid the shard, the cache nodes are ready
// and say which shard they lack and why, and the shard can be removed.
func TestDevStartsWithAnUnreachableShard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four etcd clusters, twice")
	}
	dataDir := t.TempDir()
	clientConfig := filepath.Join(t.TempDir(), "confetti", "client.yaml")
	d := startDev(t, dataDir, clientConfig)
	dead := unusedURL(t)
	if _, _, err := runCLIWith(t, clientConfig, "shard", "add", "shard-d", "--etcd-endpoints", dead); err == nil || !strings.Contains(errorMessage(err), "endpoint "+dead) {
		t.Fatalf("shard add of an unreachable etcd: err = %v, want it refused naming the endpoint", err)
	}
	cli(t, clientConfig, "shard", "add", "shard-d", "--etcd-endpoints", dead, "--force")
	if out := cli(t, clientConfig, "shard", "activate", "shard-d"); out != "shard shard-d active tenants=0\n" {
		t.Fatalf("shard activate printed %q", out)
	}
	d.stopped(t)

	d = startDev(t, dataDir, clientConfig)
	defer d.stopped(t)
	for i := 0; i < 5; i++ {
		out := cli(t, clientConfig, "tenant", "create", "t"+string(rune('0'+i)))
		if !regexp.MustCompile(`^created tenant t\d on shard shard-[abc]\n$`).MatchString(out) {
			t.Fatalf("tenant create printed %q, want a reachable shard", out)
		}
	}
	if out := cli(t, clientConfig, "kv", "get", "--tenant", "demo", "/routes/hello"); !strings.HasPrefix(out, "/routes/hello ") {
		t.Fatalf("kv get of the demo tenant printed %q", out)
	}
	status := cli(t, clientConfig, "cache", "status")
	if !regexp.MustCompile(`(?m)^  shard-d unavailable .* last-error=.*shard shard-d is not synced on this node: .*` + regexp.QuoteMeta(dead)).MatchString(status) {
		t.Fatalf("cache status does not say which shard is unavailable and why:\n%s", status)
	}
	m := regexp.MustCompile(`(?m)^  cache 0 metrics +(http://\S+)`).FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("banner lacks the metrics address of cache 0:\n%s", d.out)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(m[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "ok\n") || !strings.Contains(string(body), "degraded: cache: shard unavailable: shard shard-d") {
		t.Fatalf("cache /readyz = %d %q, want ok naming the unavailable shard", resp.StatusCode, body)
	}
	if out := cli(t, clientConfig, "shard", "remove", "shard-d"); out != "removed shard shard-d\n" {
		t.Fatalf("shard remove printed %q", out)
	}
}
