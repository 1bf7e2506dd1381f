package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// httpDo makes one request of the proxy's HTTP API and returns the body.
func httpDo(t *testing.T, method, url, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s %s", method, url, resp.Status, b)
	}
	return string(b)
}

// decode parses one JSON object.
func decode(t *testing.T, what, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s is not one JSON object: %v\n%s", what, err, s)
	}
	return m
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkSnakeCase fails for every field name of v that is not snake_case.
func checkSnakeCase(t *testing.T, what string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !snakeCase.MatchString(k) {
				t.Errorf("%s: field %q is not snake_case", what, k)
			}
			checkSnakeCase(t, what, e)
		}
	case []any:
		for _, e := range v {
			checkSnakeCase(t, what, e)
		}
	}
}

// TestJSONOutputIsTheHTTPAPIShape checks that -w json and the HTTP API
// show a key alike, field for field: what kv put prints is what a GET of
// the key answers, kv get prints the HTTP listing, a binary value comes in
// value_base64 in both, and every other -w json output uses the proto
// field names as the HTTP API's generated routes do.
func TestJSONOutputIsTheHTTPAPIShape(t *testing.T) {
	tp := startProxy(t, false)
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(t, append(args, "--endpoints", tp.grpcAddr, "-w", "json")...)
		if err != nil {
			t.Fatalf("confetti %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	kvURL := tp.httpURL + "/v1/tenants/acme/kv/"

	checkSnakeCase(t, "tenant create", decode(t, "tenant create", run("tenant", "create", "acme")))

	for i, value := range []string{`{"uri":"/a?b=<c>&d"}`, `{"uri":"/v2"}`} {
		put := decode(t, "kv put", run("kv", "put", "--tenant", "acme", "/routes/1", value))
		get := decode(t, "HTTP GET", httpDo(t, "GET", kvURL+"/routes/1", ""))
		if diff := cmp.Diff(get, put); diff != "" {
			t.Errorf("put %d: kv put -w json differs from the HTTP GET of the key (-http +cli):\n%s", i+1, diff)
		}
		if put["value"] != value || put["version"] != float64(i+1) || put["lease"] != "0" {
			t.Errorf("put %d printed %v, want the value as a string, version %d and lease \"0\"", i+1, put, i+1)
		}
	}

	httpDo(t, "PUT", kvURL+"/bin", "\xff\x00binary")
	list := decode(t, "kv get", run("kv", "get", "--tenant", "acme", "/", "--prefix"))
	httpList := decode(t, "HTTP listing", httpDo(t, "GET", kvURL+"/?prefix=true", ""))
	if diff := cmp.Diff(httpList, list); diff != "" {
		t.Errorf("kv get --prefix -w json differs from the HTTP listing (-http +cli):\n%s", diff)
	}
	bin := decode(t, "HTTP GET", httpDo(t, "GET", kvURL+"/bin", ""))
	if bin["value_base64"] != "/wBiaW5hcnk=" || bin["value"] != nil {
		t.Errorf("HTTP GET of a binary value = %v, want value_base64 only", bin)
	}
	if kvs, _ := list["kvs"].([]any); len(kvs) != 2 || !cmp.Equal(kvs[0], any(bin)) {
		t.Errorf("kv get lists %v, want the binary key first, as the HTTP GET shows it", list["kvs"])
	}

	del := decode(t, "kv del", run("kv", "del", "--tenant", "acme", "/routes/", "--prefix"))
	httpDel := decode(t, "HTTP DELETE", httpDo(t, "DELETE", kvURL+"/bin", ""))
	if del["deleted"] != float64(1) || httpDel["deleted"] != float64(1) || !cmp.Equal(keysOf(del), keysOf(httpDel)) {
		t.Errorf("kv del -w json = %v, HTTP DELETE = %v: want the same fields", del, httpDel)
	}

	content := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(content, []byte(`{"routes":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"tenant list":  run("tenant", "list"),
		"shard list":   run("shard", "list"),
		"lease grant":  run("lease", "grant", "--tenant", "acme", "30"),
		"item publish": run("item", "publish", "--tenant", "acme", "routes", "--file", content),
		"release get":  run("release", "get", "--tenant", "acme", "routes"),
	} {
		m := decode(t, name, out)
		checkSnakeCase(t, name, m)
		if name == "item publish" && (m["content_hash"] == nil || m["create_time"] == nil) {
			t.Errorf("item publish -w json = %v, want content_hash and create_time", m)
		}
	}
}

func keysOf(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
