package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/bootstrap"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/meta"
)

func TestKeyBootstrapWritesAnOperatorKeyIntoMeta(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := embedetcd.Start(ctx, embedetcd.Config{Name: "meta"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.EnableAuth(ctx, embedetcd.Auth{RootPassword: "root-pw", User: "confetti", Password: "s3cret", Prefix: bootstrap.Prefix}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := strings.Join(c.Endpoints(), ",")

	out, errOut, err := runCLI(t, "key", "bootstrap", "--meta-endpoints", ep, "--etcd-username", "confetti", "--etcd-password-file", good, "--name", "ops")
	if err != nil {
		t.Fatalf("key bootstrap: %v (stderr %q)", err, errOut)
	}
	k, err := auth.ParseKey(strings.TrimSpace(out))
	if err != nil || !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("key bootstrap printed %q, %q: %v", out, errOut, err)
	}
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := meta.New(cli, meta.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rec, ok := st.APIKey(k.ID)
	if !ok || rec.Role != meta.RoleOperator || rec.Tenant != "" || rec.Name != "ops" || rec.SHA256 != k.Hash() {
		t.Fatalf("meta holds %+v, %v for key %s; want an operator key named ops with the secret's hash", rec, ok, k.ID)
	}

	// Wrong or missing credentials fail with etcd's own error at once, not
	// by running out of the time --timeout allows.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no credentials", want: "user name is empty"},
		{name: "wrong password", args: []string{"--etcd-username", "confetti", "--etcd-password-file", bad}, want: "authentication failed"},
	} {
		args := append([]string{"key", "bootstrap", "--meta-endpoints", ep, "--timeout", "10m"}, tc.args...)
		if _, _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "etcd credentials") || strings.Contains(err.Error(), "deadline exceeded") {
			t.Fatalf("key bootstrap with %s: err = %v, want etcd's %q at once, with a hint, not a deadline", tc.name, err, tc.want)
		}
	}
	if _, _, err := runCLI(t, "key", "bootstrap", "--meta-endpoints", ep, "--etcd-password", "x", "--etcd-password-file", good); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("key bootstrap with two passwords: err = %v", err)
	}
}
