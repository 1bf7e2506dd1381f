package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// unknown stands for a part of the build the binary does not record.
const unknown = "unknown"

// API is the version of the gRPC and HTTP API this build serves and
// speaks: the protobuf package of api/ ("confetti.v1"), whose routes are
// /v1/ on HTTP.
var API = string(pb.File_confetti_v1_common_proto.Package())

// Info describes one build.
type Info struct {
	// Version is the main module's version: a release tag, a
	// pseudo-version derived from the VCS revision, or "(devel)" for a
	// build the toolchain could not stamp.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, "unknown"
	// when the build recorded none (go test, a build outside a checkout).
	Revision string `json:"revision"`
	// Time is the commit time of Revision (RFC 3339), empty when unknown.
	Time string `json:"time,omitempty"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go_version"`
	// API is the API version, API.
	API string `json:"api"`
}

// Get returns the build of the running binary.
var Get = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(bi, ok)
})

// fromBuildInfo reads what the toolchain recorded; ok is false when it
// recorded nothing.
func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	info := Info{Version: unknown, Revision: unknown, GoVersion: runtime.Version(), API: API}
	if !ok || bi == nil {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// ShortRevision is the first 12 characters of Revision, with "+dirty"
// when the work tree was modified.
func (i Info) ShortRevision() string {
	r := i.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if i.Modified {
		r += "+dirty"
	}
	return r
}

// String is one line for people: version, revision, Go and API versions.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "confetti %s (revision %s", i.Version, i.ShortRevision())
	if i.Time != "" {
		fmt.Fprintf(&b, " of %s", i.Time)
	}
	fmt.Fprintf(&b, ") built with %s, API %s", i.GoVersion, i.API)
	return b.String()
}

// Fields are the log fields of the build, for the start message of a
// role.
func (i Info) Fields() []zap.Field {
	return []zap.Field{
		zap.String("version", i.Version),
		zap.String("revision", i.ShortRevision()),
		zap.String("go-version", i.GoVersion),
		zap.String("api", i.API),
	}
}
