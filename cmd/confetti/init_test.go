package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/embedetcd"
)

// confetti init sets a cluster up and writes the operator key; run again
// it reads the key back and changes nothing.
func TestInitSetsUpOnceThenHasNothingToDo(t *testing.T) {
	meta, shard := embedetcd.NewForTest(t, 1), embedetcd.NewForTest(t, 1)
	dir := t.TempDir()
	for name, pw := range map[string]string{"root": "root-pw", "confetti": "confetti-pw"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(dir, "keys", "operator")
	secret := filepath.Join(dir, "operator-secret.yaml")
	args := []string{"init", "--meta-endpoints", strings.Join(meta.Endpoints(), ","),
		"--shard", "shard-a=" + strings.Join(shard.Endpoints(), ","),
		"--root-password-file", filepath.Join(dir, "root"), "--etcd-password-file", filepath.Join(dir, "confetti"),
		"--operator-key-file", keyFile, "--operator-key-secret", secret}
	out, errOut, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("init: %v (%s)", err, errOut)
	}
	for _, want := range []string{"meta: turned etcd auth on", "shard shard-a: created user confetti", "registered shard shard-a", "created operator key", "operator key in " + keyFile} {
		if !strings.Contains(out, want) {
			t.Errorf("first init printed %q, want %q", out, want)
		}
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.ParseKey(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("key file holds %q: %v", b, err)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	if m, err := os.ReadFile(secret); err != nil || !strings.Contains(string(m), "kind: Secret") {
		t.Fatalf("secret manifest %q, %v", m, err)
	}

	out, errOut, err = runCLI(t, args...)
	if err != nil {
		t.Fatalf("init again: %v (%s)", err, errOut)
	}
	if !strings.HasPrefix(out, "nothing to do: Confetti cluster ") {
		t.Fatalf("init again printed %q, want nothing to do", out)
	}
}

func TestInitRefusesToLoseANewKey(t *testing.T) {
	_, _, err := runCLI(t, "init", "--meta-endpoints", "http://127.0.0.1:1", "--root-password", "x", "--etcd-password", "y")
	if err == nil || !strings.Contains(err.Error(), "--operator-key-file") {
		t.Fatalf("init without a place for the key: %v", err)
	}
}

func TestInitJWTKeys(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runCLI(t, "init", "jwt-keys", "--dir", dir)
	if err != nil || !strings.Contains(out, "--auth-token jwt,pub-key="+filepath.Join(dir, "jwt-pub.pem")) {
		t.Fatalf("jwt-keys: %q, %v", out, err)
	}
}
