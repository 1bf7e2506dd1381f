package buildinfo

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// NewCollector returns the confetti_build_info gauge of info: always 1,
// with the build in its labels (version, revision, go_version, api), the
// way Prometheus exporters publish their version.
func NewCollector(info Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "confetti",
		Name:      "build_info",
		Help:      "A metric with a constant 1 labelled by the Confetti version, VCS revision, Go version and API version the process was built with.",
		ConstLabels: prometheus.Labels{
			"version":    info.Version,
			"revision":   info.ShortRevision(),
			"go_version": info.GoVersion,
			"api":        info.API,
		},
	})
	g.Set(1)
	return g
}

// Register registers the confetti_build_info gauge of the running binary
// on reg. A registry that already holds it (several roles of one process
// sharing it) is left as it is.
func Register(reg prometheus.Registerer) error {
	err := reg.Register(NewCollector(Get()))
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}
