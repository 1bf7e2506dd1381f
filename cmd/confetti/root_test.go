package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/confetti-io/confetti/internal/clientconfig"
)

// resolved parses args like the command line would and resolves the found
// command's flags against env.
func resolved(t *testing.T, env map[string]string, args ...string) (*app, *cobra.Command, error) {
	t.Helper()
	a := newApp(io.Discard, io.Discard)
	a.lookupEnv = func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	root := newRootCommand(a)
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	return a, cmd, a.resolveFlags(cmd)
}

func TestClientFlagsResolveFlagThenEnvThenClientConfigThenDefault(t *testing.T) {
	dir := t.TempDir()
	// The default client config path lives under the test's directory.
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	t.Setenv("HOME", dir)
	defaultFile, err := clientconfig.DefaultPath()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(defaultFile, dir) {
		t.Fatalf("default client config %s is outside the test directory", defaultFile)
	}
	file := filepath.Join(dir, "client.yaml")
	if err := clientconfig.Save(file, &clientconfig.Config{
		Endpoints:      []string{"file:7700"},
		CacheEndpoints: []string{"file:7710", "file:7711"},
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		env       map[string]string
		args      []string
		wantEP    []string
		wantCache []string
		wantDial  time.Duration
		wantOut   string
	}{
		{
			name:      "built-in defaults are confetti dev's endpoints",
			args:      []string{"kv", "get", "--tenant", "t", "k"},
			wantEP:    []string{"127.0.0.1:7700"},
			wantCache: []string{"127.0.0.1:7710", "127.0.0.1:7711"},
			wantDial:  5 * time.Second,
			wantOut:   "simple",
		},
		{
			name:      "client config file over defaults",
			args:      []string{"kv", "get", "--client-config", file, "--tenant", "t", "k"},
			wantEP:    []string{"file:7700"},
			wantCache: []string{"file:7710", "file:7711"},
			wantDial:  5 * time.Second,
			wantOut:   "simple",
		},
		{
			name:      "client config path from the environment",
			env:       map[string]string{"CONFETTI_CLIENT_CONFIG": file},
			args:      []string{"tenant", "list"},
			wantEP:    []string{"file:7700"},
			wantCache: []string{"file:7710", "file:7711"},
			wantDial:  5 * time.Second,
			wantOut:   "simple",
		},
		{
			name: "environment over client config file",
			env: map[string]string{
				"CONFETTI_CLIENT_CONFIG": file,
				"CONFETTI_ENDPOINTS":     "env:1,env:2",
				"CONFETTI_DIAL_TIMEOUT":  "2s",
				"CONFETTI_WRITE_OUT":     "json",
			},
			args:      []string{"kv", "watch", "--tenant", "t", "/p/"},
			wantEP:    []string{"env:1", "env:2"},
			wantCache: []string{"file:7710", "file:7711"},
			wantDial:  2 * time.Second,
			wantOut:   "json",
		},
		{
			name: "flags over environment",
			env: map[string]string{
				"CONFETTI_CLIENT_CONFIG":   file,
				"CONFETTI_ENDPOINTS":       "env:1",
				"CONFETTI_CACHE_ENDPOINTS": "env:9",
				"CONFETTI_WRITE_OUT":       "json",
			},
			args:      []string{"kv", "put", "--endpoints", "flag:1", "-w", "simple", "--tenant", "t", "k", "v"},
			wantEP:    []string{"flag:1"},
			wantCache: []string{"env:9"},
			wantDial:  5 * time.Second,
			wantOut:   "simple",
		},
		{
			name:      "an empty variable counts as unset",
			env:       map[string]string{"CONFETTI_ENDPOINTS": ""},
			args:      []string{"tenant", "list", "--client-config", file},
			wantEP:    []string{"file:7700"},
			wantCache: []string{"file:7710", "file:7711"},
			wantDial:  5 * time.Second,
			wantOut:   "simple",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, err := resolved(t, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantEP, a.endpoints); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCache, a.cacheEndpoints); diff != "" {
				t.Errorf("cache endpoints (-want +got):\n%s", diff)
			}
			if a.dialTimeout != tt.wantDial {
				t.Errorf("dial timeout = %s, want %s", a.dialTimeout, tt.wantDial)
			}
			if a.writeOut != tt.wantOut {
				t.Errorf("write-out = %s, want %s", a.writeOut, tt.wantOut)
			}
		})
	}
}

func TestServerRoleFlagsResolveFlagThenEnvThenConfigFileThenDefault(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	file := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(file, []byte(`
meta-endpoints:
  - http://10.0.0.1:2379
  - http://10.0.0.2:2379
listen-addr: :17700
max-ttl: 60
request-timeout: 3s
enable-pprof: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CONFETTI_MAX_TTL":     "120",
		"CONFETTI_LISTEN_ADDR": ":27700",
	}
	_, cmd, err := resolved(t, env, "proxy", "--config-file", file, "--listen-addr", ":37700")
	if err != nil {
		t.Fatal(err)
	}
	fs := cmd.Flags()
	get := func(name string) string { return fs.Lookup(name).Value.String() }
	for name, want := range map[string]string{
		"listen-addr":     ":37700",                                      // flag
		"max-ttl":         "120",                                         // env over file
		"meta-endpoints":  "[http://10.0.0.1:2379,http://10.0.0.2:2379]", // file list
		"request-timeout": "3s",                                          // file
		"enable-pprof":    "true",                                        // file
		"metrics-addr":    "127.0.0.1:7790",                              // default
		"max-key-bytes":   "4096",                                        // default
	} {
		if got := get(name); got != want {
			t.Errorf("--%s = %s, want %s", name, got, want)
		}
	}
}

func TestConfigFileRejectsKeysThatAreNotFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cache.yaml")
	if err := os.WriteFile(file, []byte("listen-adr: :7710\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := resolved(t, nil, "cache", "--config-file", file)
	if err == nil || !strings.Contains(err.Error(), `"listen-adr"`) {
		t.Fatalf("config file with a misspelt key: err = %v, want it named", err)
	}
}

func TestEnvNameIsUpperSnakeCase(t *testing.T) {
	tests := []struct {
		name string
		flag string
		want string
	}{
		{name: "one word", flag: "endpoints", want: "CONFETTI_ENDPOINTS"},
		{name: "dashes", flag: "cache-endpoints", want: "CONFETTI_CACHE_ENDPOINTS"},
		{name: "three words", flag: "expect-mod-revision", want: "CONFETTI_EXPECT_MOD_REVISION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := envName(tt.flag); got != tt.want {
				t.Fatalf("envName(%q) = %s, want %s", tt.flag, got, tt.want)
			}
		})
	}
}
