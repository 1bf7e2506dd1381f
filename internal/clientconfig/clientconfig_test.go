package clientconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadOfAMissingOrEmptyFileIsEmpty(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{name: "missing", path: filepath.Join(dir, "nope", "client.yaml")},
		{name: "empty", path: empty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&Config{}, c); diff != "" {
				t.Fatalf("Load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSaveThenLoadRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "confetti", "client.yaml")
	want := &Config{
		Endpoints:      []string{"127.0.0.1:7700"},
		CacheEndpoints: []string{"127.0.0.1:7710", "127.0.0.1:7711"},
		APIKey:         "ck_secret",
		HTTPEndpoint:   "http://127.0.0.1:7780",
	}
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"endpoints:", "cache-endpoints:", "api-key:", "http-endpoint:"} {
		if !strings.Contains(string(b), key) {
			t.Errorf("file lacks kebab-case key %s:\n%s", key, b)
		}
	}
}

func TestSaveIsPrivateAndLeavesNoTemporaryFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "confetti")
	path := filepath.Join(dir, "client.yaml")
	for _, eps := range [][]string{{"a:1"}, {"b:2", "c:3"}} {
		if err := Save(path, &Config{Endpoints: eps}); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode = %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, want 0700", di.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("dir holds %v, want only client.yaml", names)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b:2", "c:3"}, c.Endpoints); diff != "" {
		t.Fatalf("endpoints after overwrite (-want +got):\n%s", diff)
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.yaml")
	if err := os.WriteFile(path, []byte("endpoint: [127.0.0.1:7700]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "endpoint") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load with a misspelt key: err = %v, want an error naming the key and the file", err)
	}
}

func TestResolvePrefersExplicitThenEnvThenDefault(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv(EnvVar, "")
	def, err := DefaultPath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(home, ".config", "confetti", "client.yaml"); def != want {
		t.Fatalf("DefaultPath = %s, want %s", def, want)
	}
	tests := []struct {
		name     string
		explicit string
		env      string
		want     string
	}{
		{name: "default", want: def},
		{name: "env", env: "/from/env.yaml", want: "/from/env.yaml"},
		{name: "explicit over env", explicit: "/from/flag.yaml", env: "/from/env.yaml", want: "/from/flag.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvVar, tt.env)
			got, err := Resolve(tt.explicit)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Resolve(%q) with %s=%q = %s, want %s", tt.explicit, EnvVar, tt.env, got, tt.want)
			}
		})
	}
}
