package main

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/buildinfo"
	"github.com/confetti-io/confetti/internal/testcluster"
)

func TestVersionPrintsTheBuildAndTheAPI(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	for _, want := range []string{"version:", "revision:", "go:       " + runtime.Version(), "api:      confetti.v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}

	out, _, err = runCLI(t, "--version")
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if want := buildinfo.Get().String() + "\n"; out != want {
		t.Errorf("--version = %q, want %q", out, want)
	}
	if !strings.Contains(out, "confetti.v1") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version = %q lacks the API or Go version", out)
	}

	out, _, err = runCLI(t, "version", "-w", "json")
	if err != nil {
		t.Fatalf("version -w json: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version -w json printed %q: %v", out, err)
	}
	for _, k := range []string{"version", "revision", "go_version", "api"} {
		if _, ok := got[k]; !ok {
			t.Errorf("version -w json = %s lacks %q", out, k)
		}
	}
}

// TestRolesLogTheBuildAndExportBuildInfo starts the proxy and cache roles
// against a real meta cluster: each logs its build when it starts and
// serves confetti_build_info on its metrics address.
func TestRolesLogTheBuildAndExportBuildInfo(t *testing.T) {
	tc := testcluster.New(t, 1)
	metaEP := strings.Join(tc.Meta.Endpoints(), ",")
	for _, tt := range []struct {
		name string
		args []string
	}{
		{name: "proxy", args: []string{"proxy", "--http-addr", ""}},
		{name: "cache", args: []string{"cache"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, stop := startCLI(t, append(tt.args, "--meta-endpoints", metaEP, "--listen-addr", "127.0.0.1:0",
				"--metrics-addr", "127.0.0.1:0", "--auth=false")...)
			var serving struct {
				MetricsAddr string `json:"metrics-addr"`
			}
			var starting map[string]any
			waitUntilCLI(t, "the serving log line", func() bool {
				for _, l := range strings.Split(errOut.String(), "\n") {
					var entry map[string]any
					if json.Unmarshal([]byte(l), &entry) != nil {
						continue
					}
					switch entry["msg"] {
					case "starting":
						starting = entry
					case "serving":
						json.Unmarshal([]byte(l), &serving)
					}
				}
				return serving.MetricsAddr != ""
			})
			info := buildinfo.Get()
			for k, want := range map[string]string{"version": info.Version, "revision": info.ShortRevision(), "go-version": info.GoVersion, "api": "confetti.v1"} {
				if starting[k] != want {
					t.Errorf("start log %v: %s = %v, want %q", starting, k, starting[k], want)
				}
			}
			resp, err := http.Get("http://" + serving.MetricsAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := `confetti_build_info{api="confetti.v1",go_version="` + info.GoVersion + `",revision="` + info.ShortRevision() + `",version="` + info.Version + `"} 1`; !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
			if err := stop(); err != nil {
				t.Fatalf("%s stopped with %v", tt.name, err)
			}
		})
	}
}
