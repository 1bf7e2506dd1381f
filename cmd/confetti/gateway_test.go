package main

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/testcluster"
)

// TestDevGatewayTour runs the README's gateway tour against dev in this
// process: /hello round-robins over the two demo backends, and a route
// changed with kv put takes effect at once.
func TestDevGatewayTour(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four etcd clusters")
	}
	clientConfig := filepath.Join(t.TempDir(), "client.yaml")
	d := startDev(t, t.TempDir(), clientConfig)
	m := regexp.MustCompile(`(?m)^\s+gateway\s+(http://\S+)`).FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("banner lacks the gateway:\n%s", d.out)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(m[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		code, body := get("/hello")
		if code != http.StatusOK || !strings.HasPrefix(body, "hello from b-") {
			t.Fatalf("GET /hello: %d %q", code, body)
		}
		seen[body[:len("hello from b-1")]] = true
	}
	if len(seen) != 2 {
		t.Fatalf("four requests reached %v, want both backends", seen)
	}
	// The gateway's metrics count the requests by route and say where its
	// subscription streams from.
	mm := regexp.MustCompile(`(?m)^\s+gateway metrics\s+(http://\S+)`).FindStringSubmatch(d.out.String())
	if mm == nil {
		t.Fatalf("banner lacks the gateway's metrics:\n%s", d.out)
	}
	resp, err := http.Get(mm[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scraped, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`confetti_gateway_requests_total{code="200",route="hello"} 4`,
		`confetti_gateway_upstream_duration_seconds_count{route="hello"} 4`,
		`confetti_gateway_sdk_connected{endpoint="127.0.0.1:`,
		`confetti_gateway_sdk_resets_total 1`,
		`confetti_build_info{`,
	} {
		if !strings.Contains(string(scraped), want) {
			t.Errorf("gateway /metrics lacks %s", want)
		}
	}
	if resp, err := http.Get(mm[1] + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("gateway /readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cli(t, clientConfig, "kv", "put", "--tenant", "demo", "/routes/hello", `{"uri":"/hey","upstream_id":"web"}`)
	testcluster.WaitFor(t, "the route change", func() bool {
		code, _ := get("/hey")
		return code == http.StatusOK
	})
	if code, body := get("/hello"); code != http.StatusNotFound || !strings.Contains(body, "no route matches GET /hello") {
		t.Fatalf("GET /hello after the route moved: %d %q", code, body)
	}
	d.stopped(t)
}
