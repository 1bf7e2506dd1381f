package shardproxy

import (
	"fmt"
	"math"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// limiterCacheSize bounds how many tenants' token buckets one proxy keeps;
// the least recently seen tenant's bucket is dropped first (and starts full
// again if the tenant returns).
const limiterCacheSize = 100000

// tenantLimits is one token bucket per tenant: each proxy lets a tenant
// make rps requests per second on average, in bursts of up to burst. With
// N proxies behind a balancer a tenant gets at most N times that.
type tenantLimits struct {
	rps     float64
	burst   int
	buckets *lru.Cache[string, *rate.Limiter]
}

func newTenantLimits(rps float64, burst int) *tenantLimits {
	if rps < 0 {
		return nil
	}
	c, _ := lru.New[string, *rate.Limiter](limiterCacheSize)
	return &tenantLimits{rps: rps, burst: burst, buckets: c}
}

// allow takes one token from tenant's bucket, or says how long to wait.
func (l *tenantLimits) allow(tenant string) error {
	if l == nil {
		return nil
	}
	b, ok := l.buckets.Get(tenant)
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.rps), l.burst)
		if prev, found, _ := l.buckets.PeekOrAdd(tenant, b); found {
			b = prev
		}
	}
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return fmt.Errorf("%w: tenant %q is over %g requests per second on this proxy (burst %d); retry in %dms",
			ErrRateLimited, tenant, l.rps, l.burst, int64(math.Ceil(float64(d.Microseconds())/1000)))
	}
	return nil
}
