//go:build etcdcompat

package etcdcompat

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEtcdctl drives the real etcdctl against dev's etcd front door as
// tenant demo, then as another tenant that sees none of it.
func TestEtcdctl(t *testing.T) {
	d := startDev(t)
	ep := d.field(t, "cache 0 etcd", 3)
	demo := "demo:" + d.field(t, "demo key", 2)
	d.confetti(t, "tenant", "create", "other")
	other := "other:" + d.field(t, "operator key", 2)

	ctl := func(user, stdin string, args ...string) string {
		t.Helper()
		out, ok := etcdctl(t, ep, user, stdin, args...)
		if !ok {
			t.Fatalf("etcdctl %s: %s", strings.Join(args, " "), out)
		}
		return out
	}
	expect := func(got, want string) {
		t.Helper()
		if strings.TrimSpace(got) != strings.TrimSpace(want) {
			t.Fatalf("got:\n%s\nwant:\n%s", got, want)
		}
	}

	expect(ctl(demo, "", "put", "/e/1", "one"), "OK")
	expect(ctl(demo, "", "put", "/e/2", "two"), "OK")
	expect(ctl(demo, "", "put", "/e/3", "three"), "OK")
	expect(ctl(demo, "", "get", "/e/", "--prefix"), "/e/1\none\n/e/2\ntwo\n/e/3\nthree")
	expect(ctl(demo, "", "get", "/e/", "--prefix", "--limit", "1"), "/e/1\none")
	expect(ctl(demo, "", "get", "/e/", "--prefix", "--sort-by", "VALUE", "--order", "ASCEND", "--keys-only"), "/e/1\n\n/e/3\n\n/e/2")

	var js struct {
		Header struct{ Revision int64 }
		Kvs    []struct {
			Key         []byte
			ModRevision int64 `json:"mod_revision"`
		}
		Count int64
	}
	if err := json.Unmarshal([]byte(ctl(demo, "", "get", "/e/1", "-w", "json")), &js); err != nil || len(js.Kvs) != 1 || string(js.Kvs[0].Key) != "/e/1" {
		t.Fatalf("get -w json: %+v, %v", js, err)
	}
	rev1 := js.Kvs[0].ModRevision
	expect(ctl(demo, "", "put", "/e/1", "uno"), "OK")
	expect(ctl(demo, "", "get", "/e/1", "--rev", fmt.Sprint(rev1)), "/e/1\none")
	expect(ctl(demo, "", "del", "/e/3", "--prev-kv"), "1\n/e/3\nthree")

	// txn, interactively: compares, then success ops, then failure ops.
	expect(ctl(demo, "value(\"/e/1\") = \"uno\"\n\nput /e/t yes\n\nput /e/t no\n\n", "txn"), "SUCCESS\n\nOK")
	expect(ctl(demo, "", "get", "/e/t", "--print-value-only"), "yes")

	// watch: from a revision, with a prefix; events as etcd prints them.
	watch := exec.Command(bin(t, "etcdctl"), "--endpoints", ep, "--user", demo, "watch", "/e/", "--prefix", "--rev", fmt.Sprint(rev1))
	wout := &output{}
	watch.Stdout, watch.Stderr = wout, wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { watch.Process.Kill(); watch.Wait() }()
	ctl(demo, "", "put", "/e/after", "watched")
	want := "PUT\n/e/1\none\nPUT\n/e/2\ntwo\nPUT\n/e/3\nthree\nPUT\n/e/1\nuno\nDELETE\n/e/3\n\nPUT\n/e/t\nyes\nPUT\n/e/after\nwatched\n"
	waitFor(t, "the watch's events", func() bool { return strings.Contains(wout.String(), want) }, wout)

	// leases.
	grant := ctl(demo, "", "lease", "grant", "60")
	m := regexp.MustCompile(`lease ([0-9a-f]+) granted with TTL\(60s\)`).FindStringSubmatch(grant)
	if m == nil {
		t.Fatalf("lease grant: %q", grant)
	}
	id := m[1]
	expect(ctl(demo, "", "put", "/e/leased", "x", "--lease", id), "OK")
	if out := ctl(demo, "", "lease", "keep-alive", "--once", id); !strings.Contains(out, "keepalived with TTL(") {
		t.Fatalf("keep-alive: %q", out)
	}
	if out := ctl(demo, "", "lease", "timetolive", id, "--keys"); !strings.Contains(out, "granted with TTL(60s)") || !strings.Contains(out, "attached keys([/e/leased])") {
		t.Fatalf("timetolive: %q", out)
	}
	if out := ctl(demo, "", "lease", "revoke", id); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %q", out)
	}
	expect(ctl(demo, "", "get", "/e/leased"), "")

	// cluster views.
	if out := ctl(demo, "", "endpoint", "status", "-w", "table"); !strings.Contains(out, "3.7.3") {
		t.Fatalf("endpoint status: %q", out)
	}
	if out := ctl(demo, "", "member", "list"); !strings.Contains(out, "dev-cache-0") || !strings.Contains(out, "dev-cache-1") {
		t.Fatalf("member list: %q", out)
	}
	if out := ctl(demo, "", "endpoint", "health"); !strings.Contains(out, "is healthy") {
		t.Fatalf("endpoint health: %q", out)
	}
	if out, ok := etcdctl(t, ep, demo, "", "defrag"); ok || !strings.Contains(out, "Unimplemented") {
		t.Fatalf("defrag: %v %q", ok, out)
	}
	if out, ok := etcdctl(t, ep, demo, "", "compaction", "1"); ok || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("compaction: %v %q", ok, out)
	}

	// Another tenant sees none of it, and its writes stay its own.
	expect(ctl(other, "", "get", "", "--from-key"), "")
	expect(ctl(other, "", "put", "/e/1", "theirs"), "OK")
	expect(ctl(demo, "", "get", "/e/1", "--print-value-only"), "uno")
	expect(ctl(other, "", "get", "", "--prefix", "--keys-only"), "/e/1")

	// Without credentials or with a wrong key, nothing is served.
	if out, ok := etcdctl(t, ep, "demo:nope", "", "get", "/e/1"); ok || !strings.Contains(out, "authentication failed") {
		t.Fatalf("wrong key: %v %q", ok, out)
	}
}

func waitFor(t *testing.T, what string, cond func() bool, out *output) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; output:\n%s", what, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
