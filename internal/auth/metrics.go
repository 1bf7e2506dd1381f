package auth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Authenticator's Prometheus collectors.
type metrics struct {
	// denied counts refused requests by reason: missing, invalid (a
	// malformed, unknown, revoked or wrong key), not-loaded (the key table
	// is not loaded from meta yet), role, tenant, check (a method's own
	// condition) and no-policy.
	denied *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti",
			Subsystem: "auth",
			Name:      "denied_total",
			Help:      "Requests refused for their API key, by reason.",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.denied); err != nil {
		// Several authenticators in one process share their series.
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, err
		}
		m.denied = existing
	}
	return m, nil
}
