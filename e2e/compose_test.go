//go:build e2e && compose

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeCluster is the compose cluster of deploy/compose under a project
// and host ports of its own, so that it never meets a developer's `make
// up`.
type composeCluster struct {
	t       *testing.T
	project string
	env     []string
	keys    string
	ports   map[string]string
	bin     string
	cli     []string
}

// The host ports of the test's cluster.
var composePorts = map[string]string{
	"PROXY_1_PORT": "27700", "PROXY_1_HTTP_PORT": "27701", "PROXY_2_PORT": "27702", "PROXY_2_HTTP_PORT": "27703",
	"CACHE_1_PORT": "27710", "CACHE_2_PORT": "27711", "GATEWAY_PORT": "27730",
}

// sh runs a command in the repository root and returns its output; it
// fails the test when the command does.
func (c *composeCluster) sh(timeout time.Duration, name string, args ...string) string {
	c.t.Helper()
	out, err := c.try(timeout, name, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (c *composeCluster) try(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = "..", c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *composeCluster) compose(args ...string) string {
	c.t.Helper()
	return c.sh(5*time.Minute, "docker-compose", append([]string{"-p", c.project, "-f", "deploy/compose/docker-compose.yml", "--env-file", "deploy/compose/.env"}, args...)...)
}

// confetti runs the CLI against the cluster's published ports.
func (c *composeCluster) confetti(args ...string) string {
	c.t.Helper()
	return c.sh(time.Minute, c.bin, append(c.cli, args...)...)
}

// container is the name of a service's container.
func (c *composeCluster) container(service string) string {
	c.t.Helper()
	return strings.TrimSpace(c.compose("ps", "-q", service))
}

// etcdctl runs etcdctl as root in a member's container.
func (c *composeCluster) etcdctl(member string, args ...string) string {
	c.t.Helper()
	root, err := os.ReadFile(filepath.Join(c.keys, "etcd-root"))
	if err != nil {
		c.t.Fatal(err)
	}
	return c.sh(time.Minute, "docker", append([]string{"exec", c.container(member), "/usr/local/bin/etcdctl",
		"--endpoints=http://127.0.0.1:2379", "--user=root:" + strings.TrimSpace(string(root))}, args...)...)
}

func (c *composeCluster) get(path string) (int, string) {
	resp, err := http.Get("http://127.0.0.1:" + c.ports["GATEWAY_PORT"] + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually runs fn until it reports true, for up to two minutes.
func (c *composeCluster) eventually(what string, fn func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !fn() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestComposeEndToEnd brings the compose cluster up from the images, runs
// the README's tour against its published ports, kills a shard's etcd
// leader and a cache node, backs up meta and a shard, destroys the
// shard's volumes and restores them, and takes the cluster down, leaving
// nothing behind. Each step logs its time.
func TestComposeEndToEnd(t *testing.T) {
	c := &composeCluster{t: t, project: "confetti-e2e", keys: t.TempDir(), ports: composePorts}
	c.env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+c.project, "KEYS_DIR="+c.keys)
	for k, v := range c.ports {
		c.env = append(c.env, k+"="+v)
	}
	c.bin = binary(t)
	c.cli = []string{"--client-config", filepath.Join(c.keys, "none.yaml"),
		"--endpoints", "127.0.0.1:" + c.ports["PROXY_1_PORT"] + ",127.0.0.1:" + c.ports["PROXY_2_PORT"],
		"--api-key-file", filepath.Join(c.keys, "operator-key")}
	caches := []string{"--cache-endpoints", "127.0.0.1:" + c.ports["CACHE_1_PORT"] + ",127.0.0.1:" + c.ports["CACHE_2_PORT"]}
	cache2 := []string{"--cache-endpoints", "127.0.0.1:" + c.ports["CACHE_2_PORT"]}
	began := time.Now()
	step := func(name string, fn func()) {
		t.Helper()
		at := time.Now()
		fn()
		t.Logf("step %-34s %6.1fs", name, time.Since(at).Seconds())
	}
	down := func() {
		c.try(5*time.Minute, "docker-compose", "-p", c.project, "-f", "deploy/compose/docker-compose.yml", "--env-file", "deploy/compose/.env", "down", "--remove-orphans", "--volumes")
	}
	down()
	t.Cleanup(down)

	step("up", func() { c.sh(6*time.Minute, "deploy/compose/up.sh") })

	var token string
	step("tour: tenant, put, watch", func() {
		c.confetti("tenant", "create", "acme")
		c.confetti("kv", "put", "--tenant", "acme", "/routes/1", `{"uri":"/hello"}`)
		out := c.confetti(append(caches, "kv", "watch", "--tenant", "acme", "/routes/", "--count", "1")...)
		if !strings.HasPrefix(out, `/routes/1 {"uri":"/hello"} rev=`) {
			t.Fatalf("kv watch: %q", out)
		}
		token = out[strings.LastIndex(out, "token=")+len("token="):]
		token = strings.TrimSpace(token)
	})
	step("tour: resume on the other cache node", func() {
		c.confetti("kv", "put", "--tenant", "acme", "/routes/2", "two")
		out := c.confetti(append(cache2, "kv", "watch", "--tenant", "acme", "/routes/", "--from", token, "--count", "1")...)
		if !strings.HasPrefix(out, "PUT /routes/2 two rev=") {
			t.Fatalf("kv watch --from on cache 2: %q", out)
		}
		token = strings.TrimSpace(out[strings.LastIndex(out, "token=")+len("token="):])
	})
	step("tour: gateway to both backends", func() {
		seen := map[string]bool{}
		c.eventually("both backends behind /hello", func() bool {
			if code, body := c.get("/hello"); code == 200 {
				seen[strings.Fields(body)[2]] = true
			}
			return seen["b-1"] && seen["b-2"]
		})
	})
	step("tour: a release gray", func() {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "v1.json"), []byte(`{"v":1}`), 0o644)
		os.WriteFile(filepath.Join(dir, "v2.json"), []byte(`{"v":2}`), 0o644)
		c.confetti("item", "publish", "--tenant", "acme", "gateway", "--file", filepath.Join(dir, "v1.json"))
		c.confetti("item", "publish", "--tenant", "acme", "gateway", "--file", filepath.Join(dir, "v2.json"))
		out := c.confetti("release", "gray", "--tenant", "acme", "gateway", "--version", "2", "--labels", "zone=a", "--id", "zone-a")
		if !strings.Contains(out, "gray zone-a version 2") {
			t.Fatalf("release gray: %q", out)
		}
		a := c.confetti(append(caches, "item", "watch", "--tenant", "acme", "gateway", "--instance-id", "gw-a", "--labels", "zone=a", "--count", "1")...)
		b := c.confetti(append(caches, "item", "watch", "--tenant", "acme", "gateway", "--instance-id", "gw-b", "--labels", "zone=b", "--count", "1")...)
		if !strings.Contains(a, "v2 (gray zone-a)") || !strings.Contains(b, "v1 (stable)") {
			t.Fatalf("item watch: zone a %q, zone b %q", a, b)
		}
	})

	var leader, placed string
	step("kill demo's shard's etcd leader and cache 1", func() {
		list := c.confetti("tenant", "list")
		for _, l := range strings.Split(list, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "demo" {
				placed = f[1]
			}
		}
		if placed == "" {
			t.Fatalf("tenant list: %q", list)
		}
		leader = c.leaderOf(placed)
		c.sh(time.Minute, "docker", "kill", c.container(leader))
		c.sh(time.Minute, "docker", "kill", c.container("cache-1"))
	})
	step("write while they are down", func() {
		c.eventually("a write to the shard that lost its leader", func() bool {
			_, err := c.try(30*time.Second, c.bin, append(c.cli, "kv", "put", "--tenant", "demo", "/routes/hello", `{"uri":"/during","upstream_id":"web"}`)...)
			return err == nil
		})
		c.eventually("the gateway to route /during", func() bool { code, _ := c.get("/during"); return code == 200 })
		c.confetti("kv", "put", "--tenant", "acme", "/routes/3", "three")
		out := c.confetti(append(cache2, "kv", "watch", "--tenant", "acme", "/routes/", "--from", token, "--count", "1")...)
		if !strings.HasPrefix(out, "PUT /routes/3 three rev=") {
			t.Fatalf("resumed watch after the faults: %q", out)
		}
	})
	step("start them again", func() {
		c.compose("start", leader, "cache-1")
		c.waitHealthy(leader, "cache-1")
	})

	var backups string
	step("back up meta and demo's shard", func() {
		backups = t.TempDir()
		for _, m := range []string{"meta-1", placed + "-1"} {
			c.etcdctl(m, "snapshot", "save", "/data/backup.db")
			c.sh(time.Minute, "docker", "cp", c.container(m)+":/data/backup.db", filepath.Join(backups, m+".db"))
			// The restore runs as the image's user.
			if err := os.Chmod(filepath.Join(backups, m+".db"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(backups, 0o755); err != nil {
			t.Fatal(err)
		}
	})
	before := c.confetti("kv", "get", "--tenant", "demo", "", "--prefix")
	step("destroy demo's shard and restore it", func() {
		c.restoreShard(placed, filepath.Join(backups, placed+"-1.db"))
	})
	step("check the restored shard", func() {
		c.eventually("the restored shard serving demo's keys", func() bool {
			out, err := c.try(30*time.Second, c.bin, append(c.cli, "kv", "get", "--tenant", "demo", "", "--prefix")...)
			return err == nil && out == before
		})
		c.eventually("the gateway routing from the restored shard", func() bool { code, _ := c.get("/during"); return code == 200 })
		out := c.confetti(append(caches, "kv", "watch", "--tenant", "demo", "/routes/", "--count", "1")...)
		if !strings.Contains(out, `/routes/hello {"uri":"/during"`) {
			t.Fatalf("a subscriber's view after the restore: %q", out)
		}
	})
	step("down", func() {
		c.compose("down", "--remove-orphans", "--volumes")
		for _, kind := range []string{"container", "network", "volume"} {
			args := []string{kind, "ls", "-q", "--filter", "label=com.docker.compose.project=" + c.project}
			if kind == "container" {
				args = []string{"ps", "-aq", "--filter", "label=com.docker.compose.project=" + c.project}
			}
			if out := strings.TrimSpace(c.sh(time.Minute, "docker", args...)); out != "" {
				t.Fatalf("%ss of the project left after down: %s", kind, out)
			}
		}
	})
	t.Logf("compose end to end: %.1fs", time.Since(began).Seconds())
}

// leaderOf is the member of a shard that leads it now.
func (c *composeCluster) leaderOf(shard string) string {
	c.t.Helper()
	var eps []string
	for i := 1; i <= 3; i++ {
		eps = append(eps, fmt.Sprintf("http://%s-%d:2379", shard, i))
	}
	out := c.etcdctl(shard+"-1", "endpoint", "status", "--endpoints="+strings.Join(eps, ","), "-w", "json")
	var st []struct {
		Endpoint string `json:"Endpoint"`
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		} `json:"Status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("endpoint status: %v\n%s", err, out)
	}
	for _, s := range st {
		// The member's own 127.0.0.1 is listed too: take its name.
		if s.Status.Header.MemberID == s.Status.Leader && !strings.Contains(s.Endpoint, "127.0.0.1") {
			return strings.TrimSuffix(strings.TrimPrefix(s.Endpoint, "http://"), ":2379")
		}
	}
	c.t.Fatalf("no leader in %s", out)
	return ""
}

// waitHealthy waits until the services' containers are healthy.
func (c *composeCluster) waitHealthy(services ...string) {
	c.t.Helper()
	for _, s := range services {
		id := c.container(s)
		c.eventually(s+" healthy", func() bool {
			out, _ := c.try(time.Minute, "docker", "inspect", "-f", "{{.State.Health.Status}}", id)
			return strings.TrimSpace(out) == "healthy"
		})
	}
}

// restoreShard stops a shard's members, replaces their volumes with a
// restore of snapshot (revisions bumped past everything the old cluster
// gave out, and marked compacted, so that no watcher resumes into the
// past), and starts them again.
func (c *composeCluster) restoreShard(shard, snapshot string) {
	c.t.Helper()
	members := []string{shard + "-1", shard + "-2", shard + "-3"}
	var cluster []string
	for _, m := range members {
		cluster = append(cluster, m+"=http://"+m+":2380")
	}
	c.compose(append([]string{"stop"}, members...)...)
	c.compose(append([]string{"rm", "-f"}, members...)...)
	for _, m := range members {
		vol := c.project + "_" + m
		c.sh(time.Minute, "docker", "volume", "rm", vol)
		c.sh(time.Minute, "docker", "volume", "create", "--label", "com.docker.compose.project="+c.project, "--label", "com.docker.compose.volume="+m, vol)
		dir := filepath.Dir(snapshot)
		c.sh(2*time.Minute, "docker", "run", "--rm", "-v", vol+":/data", "-v", dir+":/backup:ro", "--entrypoint", "/usr/local/bin/etcdutl",
			"confetti/etcd:v3.7.3", "snapshot", "restore", "/backup/"+filepath.Base(snapshot),
			"--name="+m, "--data-dir=/data/etcd", "--initial-cluster="+strings.Join(cluster, ","),
			"--initial-cluster-token="+shard, "--initial-advertise-peer-urls=http://"+m+":2380",
			"--bump-revision=1000000", "--mark-compacted")
	}
	c.compose(append([]string{"up", "-d", "--no-deps"}, members...)...)
	c.waitHealthy(members...)
}
