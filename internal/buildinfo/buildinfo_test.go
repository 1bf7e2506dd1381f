package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFromBuildInfoReadsVersionRevisionAndGo(t *testing.T) {
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want Info
	}{
		{
			name: "a build from a checkout with changes",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Main:      debug.Module{Path: "github.com/confetti-io/confetti", Version: "v0.0.0-20261205000631-767dc5c4c8e4+dirty"},
				Settings: []debug.BuildSetting{
					{Key: "vcs", Value: "git"},
					{Key: "vcs.revision", Value: "767dc5c4c8e408bd7d176f9a2b08f5578261a6b8"},
					{Key: "vcs.time", Value: "2026-12-05T00:06:31Z"},
					{Key: "vcs.modified", Value: "true"},
				},
			},
			ok: true,
			want: Info{
				Version: "v0.0.0-20261205000631-767dc5c4c8e4+dirty", Revision: "767dc5c4c8e408bd7d176f9a2b08f5578261a6b8",
				Time: "2026-12-05T00:06:31Z", Modified: true, GoVersion: "go1.26.8", API: "confetti.v1",
			},
		},
		{
			name: "a build that recorded no VCS",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			ok:   true,
			want: Info{Version: "(devel)", Revision: "unknown", GoVersion: "go1.26.8", API: "confetti.v1"},
		},
		{
			name: "no build info at all",
			want: Info{Version: "unknown", Revision: "unknown", GoVersion: runtime.Version(), API: "confetti.v1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fromBuildInfo(tt.bi, tt.ok)); diff != "" {
				t.Errorf("info (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStringNamesEveryPart(t *testing.T) {
	info := Info{Version: "v1.2.3", Revision: "767dc5c4c8e408bd7d176f9a2b08f5578261a6b8", Modified: true, GoVersion: "go1.26.8", API: "confetti.v1"}
	got := info.String()
	for _, want := range []string{"v1.2.3", "767dc5c4c8e4+dirty", "go1.26.8", "confetti.v1"} {
		if !strings.Contains(got, want) {
			t.Errorf("String() = %q lacks %q", got, want)
		}
	}
}

func TestRegisterExportsBuildInfoOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		if err := Register(reg); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	info := Get()
	want := `
# HELP confetti_build_info A metric with a constant 1 labelled by the Confetti version, VCS revision, Go version and API version the process was built with.
# TYPE confetti_build_info gauge
confetti_build_info{api="confetti.v1",go_version="` + info.GoVersion + `",revision="` + info.ShortRevision() + `",version="` + info.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "confetti_build_info"); err != nil {
		t.Error(err)
	}
}
