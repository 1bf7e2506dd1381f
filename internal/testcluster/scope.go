package testcluster

import (
	"strings"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// ScopeStart is the Start of a subscription of tenant whose scope is given
// as tenant-relative prefixes, the notation of the physical layout that
// tests write etcd with: kv/<prefix> a prefix of plain keys, cfg/ every
// item or cfg/<item> one, svc/ every service or svc/<service>/ one; nil is
// everything.
func ScopeStart(tenant string, scope []string, id *confettipb.Identity) *confettipb.Start {
	s := &confettipb.Start{Tenant: tenant, Identity: id}
	for _, p := range scope {
		switch {
		case p == keys.SpaceCfg:
			s.Items = append(s.Items, keys.All)
		case strings.HasPrefix(p, keys.SpaceCfg):
			s.Items = append(s.Items, strings.TrimSuffix(strings.TrimPrefix(p, keys.SpaceCfg), "/"))
		case p == keys.SpaceSvc:
			s.Services = append(s.Services, keys.All)
		case strings.HasPrefix(p, keys.SpaceSvc):
			s.Services = append(s.Services, strings.TrimSuffix(strings.TrimPrefix(p, keys.SpaceSvc), "/"))
		default:
			s.Prefixes = append(s.Prefixes, strings.TrimPrefix(p, keys.SpaceKV))
		}
	}
	return s
}

// RelativeKey is the tenant-relative key (the notation of ScopeStart) of a
// key a subscriber received.
func RelativeKey(kv *confettipb.KeyValue) string {
	return keys.Relative(kv.GetKey(), keys.Kind(kv.GetKind()))
}
