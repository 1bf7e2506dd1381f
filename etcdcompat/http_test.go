//go:build etcdcompat

package etcdcompat

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLuaRestyEtcdRequests replays lua-resty-etcd's HTTP requests, as
// APISIX makes them, against dev's JSON gateway: /version, authenticate,
// a range with base64 key and range_end, and a chunked watch that
// receives a put made after it started.
func TestLuaRestyEtcdRequests(t *testing.T) {
	d := startDev(t)
	base := "http://" + d.field(t, "cache 1 etcd", 3)
	key := d.field(t, "demo key", 2)
	client := &http.Client{Timeout: time.Minute}
	call := func(path, token, body string) []byte {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	resp, err := client.Get(base + "/version")
	if err != nil {
		t.Fatal(err)
	}
	var version map[string]string
	json.NewDecoder(resp.Body).Decode(&version)
	resp.Body.Close()
	if version["etcdserver"] != "3.7.3" || version["etcdcluster"] == "" {
		t.Fatalf("/version: %v", version)
	}

	var auth struct{ Token string }
	json.Unmarshal(call("/v3/auth/authenticate", "", fmt.Sprintf(`{"name":"demo","password":%q}`, key)), &auth)
	if auth.Token == "" {
		t.Fatal("authenticate returned no token")
	}
	var rng struct {
		Header struct{ Revision string }
		Kvs    []struct{ Key, Value string }
	}
	json.Unmarshal(call("/v3/kv/range", auth.Token, fmt.Sprintf(`{"key":%q,"range_end":%q}`, b64("/routes/"), b64("/routes0"))), &rng)
	if len(rng.Kvs) != 1 || rng.Kvs[0].Key != b64("/routes/hello") || rng.Header.Revision == "" {
		t.Fatalf("range of /routes/: %+v", rng)
	}

	var rev int64
	fmt.Sscan(rng.Header.Revision, &rev)
	req, _ := http.NewRequest(http.MethodPost, base+"/v3/watch", strings.NewReader(fmt.Sprintf(
		`{"create_request":{"key":%q,"range_end":%q,"start_revision":%d}}`, b64("/routes/"), b64("/routes0"), rev+1)))
	req.Header.Set("Authorization", auth.Token)
	wresp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer wresp.Body.Close()
	if te := wresp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Fatalf("watch transfer encoding %v, want chunked", te)
	}
	lines := bufio.NewScanner(wresp.Body)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"created":true`) {
		t.Fatalf("watch: %q", lines.Text())
	}
	call("/v3/kv/put", auth.Token, fmt.Sprintf(`{"key":%q,"value":%q}`, b64("/routes/lua"), b64("resty")))
	for lines.Scan() {
		var msg struct {
			Result struct {
				Events []struct {
					Type string
					Kv   struct{ Key, Value string }
				}
			}
		}
		if err := json.Unmarshal(lines.Bytes(), &msg); err != nil {
			t.Fatalf("watch line %q: %v", lines.Text(), err)
		}
		if len(msg.Result.Events) == 0 {
			continue // a progress notification
		}
		if ev := msg.Result.Events[0]; ev.Kv.Key != b64("/routes/lua") || ev.Kv.Value != b64("resty") {
			t.Fatalf("watch event %+v", ev)
		}
		return
	}
	t.Fatalf("watch ended: %v", lines.Err())
}
