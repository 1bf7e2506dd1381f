package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/clientconfig"
)

// devKeys are the API keys a `confetti dev` banner shows.
type devKeys struct{ operator, demo string }

var bannerKey = regexp.MustCompile(`(?m)^  (operator|demo) key +(cft_\S+)$`)

func devKeysOf(t *testing.T, banner string) devKeys {
	t.Helper()
	var k devKeys
	for _, m := range bannerKey.FindAllStringSubmatch(banner, -1) {
		if m[1] == "operator" {
			k.operator = m[2]
		} else {
			k.demo = m[2]
		}
	}
	if k.operator == "" || k.demo == "" {
		t.Fatalf("banner lacks the operator and demo keys:\n%s", banner)
	}
	return k
}

// checkDevAuth checks, on a running `confetti dev`, that its operator key
// is in the client config file (so the CLI works with no flags), that the
// demo key is a writer of demo only, that requests without a key are
// refused with a message saying how to get one, and the key verbs. It
// returns the banner's keys.
func checkDevAuth(t *testing.T, dataDir, banner, clientConfig string) devKeys {
	t.Helper()
	keys := devKeysOf(t, banner)
	cfg, err := clientconfig.Load(clientConfig)
	if err != nil || cfg.APIKey != keys.operator {
		t.Fatalf("client config api-key = %q (%v), want the operator key %q", cfg.APIKey, err, keys.operator)
	}
	for _, path := range []string{filepath.Join(dataDir, devSecretsFile), clientConfig} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600: it holds secrets", path, st.Mode().Perm())
		}
	}

	if out := cli(t, clientConfig, "kv", "get", "--tenant", "demo", "/routes/hello", "--api-key", keys.demo); !strings.HasPrefix(out, "/routes/hello ") {
		t.Fatalf("kv get with the demo key printed %q", out)
	}
	if _, _, err := runCLIWith(t, clientConfig, "kv", "get", "--tenant", "acme", "/routes/1", "--api-key", keys.demo); err == nil || !strings.Contains(errorMessage(err), `may not use tenant "acme"`) {
		t.Fatalf("demo key reading acme: err = %v, want permission denied", err)
	}
	if _, _, err := runCLIWith(t, clientConfig, "tenant", "list", "--api-key", ""); err == nil || !strings.Contains(errorMessage(err), "confetti tenant key create") {
		t.Fatalf("tenant list without a key: err = %v, want a message saying how to get one", err)
	}

	// A writer key of acme: created, used, listed, revoked.
	out, errOut, err := runCLIWith(t, clientConfig, "tenant", "key", "create", "acme", "--role", "writer", "--name", "ci")
	if err != nil || !regexp.MustCompile(`^cft_[a-z2-7]{16}_\S{43}\n$`).MatchString(out) || !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("tenant key create printed %q, %q, %v", out, errOut, err)
	}
	writer := strings.TrimSpace(out)
	id := strings.Split(writer, "_")[1]
	if out := cli(t, clientConfig, "kv", "put", "--tenant", "acme", "/routes/9", "nine", "--api-key", writer); !strings.HasPrefix(out, "OK rev=") {
		t.Fatalf("kv put with the new writer key printed %q", out)
	}
	if out := cli(t, clientConfig, "tenant", "key", "list", "acme"); !regexp.MustCompile(`(?m)^` + id + ` writer ci \S+Z$`).MatchString(out) {
		t.Fatalf("tenant key list printed %q, want %s", out, id)
	}
	if out := cli(t, clientConfig, "tenant", "key", "revoke", id); out != "revoked key "+id+"\n" {
		t.Fatalf("tenant key revoke printed %q", out)
	}
	if _, _, err := runCLIWith(t, clientConfig, "kv", "get", "--tenant", "acme", "/routes/9", "--api-key", writer); err == nil || !strings.Contains(errorMessage(err), id) {
		t.Fatalf("revoked key: err = %v, want it refused", err)
	}
	return keys
}
