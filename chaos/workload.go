package chaos

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Registration and release traffic, beside the KV writers: service
// instances registered with a lease and kept alive through either proxy,
// and a config item published and released (stable, a 50% gray, its
// promotion, a staged plan) over and over, so that subscribers resolve
// items by identity while faults hit.

// registrationTTL is the instances' lease TTL; keepalives go every
// registrationTTL/5.
const registrationTTL = 5

// workloadStats counts what the registration and release traffic did.
type workloadStats struct {
	Registered                   atomic.Int64
	Published, Released, Refused atomic.Int64

	mu sync.Mutex
	// expired are the leases found expired by the keepalive loop that
	// kept them: a registration lost though its process was alive.
	expired []Tenant
}

func (tr *traffic) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-api-key", tr.key)
}

// register keeps an instance of tenant registered until ctx ends,
// switching proxies when one fails.
func (tr *traffic) register(ctx context.Context, tn Tenant, id string, st *workloadStats) {
	ctx = tr.ctx(ctx)
	inst := &confettipb.Instance{Service: "api", Id: id, Address: id + ":8080"}
	p := 0
	var lease int64
	for ctx.Err() == nil {
		if lease == 0 {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := confettipb.NewLeasesClient(tr.proxies[p]).Register(rctx, &confettipb.RegisterRequest{Tenant: tn.Name, Instance: inst, Ttl: registrationTTL})
			cancel()
			if err != nil {
				p = (p + 1) % len(tr.proxies)
				sleepCtx(ctx, 200*time.Millisecond)
				continue
			}
			lease = resp.Lease
			st.Registered.Add(1)
		}
		expired := tr.keepAlive(ctx, tn, lease, p, st)
		if expired {
			st.mu.Lock()
			st.expired = append(st.expired, tn)
			st.mu.Unlock()
			lease = 0
		}
		p = (p + 1) % len(tr.proxies)
	}
}

// keepAlive keeps lease alive over one proxy's KeepAlive stream until the
// stream fails (false) or etcd says the lease is gone (true).
func (tr *traffic) keepAlive(ctx context.Context, tn Tenant, lease int64, p int, st *workloadStats) bool {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := confettipb.NewLeasesClient(tr.proxies[p]).KeepAlive(sctx)
	if err != nil {
		return false
	}
	for ctx.Err() == nil {
		if err := stream.Send(&confettipb.LeaseKeepAliveRequest{Tenant: tn.Name, Id: lease}); err != nil {
			return false
		}
		got := make(chan error, 1)
		var resp *confettipb.LeaseKeepAliveResponse
		go func() {
			var err error
			resp, err = stream.Recv()
			got <- err
		}()
		select {
		case err := <-got:
			if status.Code(err) == codes.NotFound {
				return true
			}
			if err != nil {
				return false
			}
			if resp.Ttl <= 0 {
				return true
			}
		case <-time.After(2 * time.Second):
			// A stream that does not answer is as good as broken.
			return false
		}
		sleepCtx(ctx, registrationTTL*time.Second/5)
	}
	return false
}

// release publishes versions of the tenant's item "app" and moves its
// release: stable, a 50% gray of the next version, its promotion, a
// staged plan, its abort.
func (tr *traffic) release(ctx context.Context, tn Tenant, st *workloadStats) {
	ctx = tr.ctx(ctx)
	for n := 0; ctx.Err() == nil; n++ {
		rc := confettipb.NewReleasesClient(tr.proxies[n%len(tr.proxies)])
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		v, err := rc.Publish(rctx, &confettipb.PublishRequest{Tenant: tn.Name, Item: "app", Content: fmt.Appendf(nil, `{"n":%d}`, n), Message: "chaos"})
		if err == nil {
			st.Published.Add(1)
			switch n % 6 {
			case 0:
				_, err = rc.SetStable(rctx, &confettipb.SetStableRequest{Tenant: tn.Name, Item: "app", Version: v.Version, Reason: "chaos"})
			case 1:
				_, err = rc.StartGray(rctx, &confettipb.StartGrayRequest{Tenant: tn.Name, Item: "app", Reason: "chaos",
					Gray: &confettipb.Gray{Id: "half", Version: v.Version, Rule: &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: 5000}}}})
			case 2:
				_, err = rc.PromoteGray(rctx, &confettipb.PromoteGrayRequest{Tenant: tn.Name, Item: "app", GrayId: "half", Reason: "chaos"})
			case 3:
				// A staged plan: a quarter, then everyone, a second's bake
				// each, advanced by the proxies while faults hit.
				_, err = rc.StartPlan(rctx, &confettipb.StartPlanRequest{Tenant: tn.Name, Item: "app", Reason: "chaos",
					Plan: &confettipb.Plan{GrayId: "staged", Version: v.Version, Steps: []int32{2500, 10000}, BakeSeconds: 1}})
			case 5:
				// Whatever the plan reached: a finished one has nothing to
				// abort.
				if _, err = rc.AbortPlan(rctx, &confettipb.PlanRequest{Tenant: tn.Name, Item: "app", Reason: "chaos"}); status.Code(err) == codes.FailedPrecondition {
					err = nil
				}
			}
			if err == nil {
				st.Released.Add(1)
			}
		}
		cancel()
		if err != nil {
			st.Refused.Add(1)
		}
		sleepCtx(ctx, 1500*time.Millisecond)
	}
}

// runWorkload starts instances registrations and a releaser per tenant.
func (tr *traffic) runWorkload(ctx context.Context, instances int, st *workloadStats) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, tn := range tr.tenants {
		for i := range instances {
			wg.Go(func() { tr.register(ctx, tn, fmt.Sprintf("i-%d", i), st) })
		}
		wg.Go(func() { tr.release(ctx, tn, st) })
	}
	return &wg
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
