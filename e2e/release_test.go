package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/internal/release"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// TestStagedPlanWithRealGatewaysAcrossCacheNodes runs a staged plan against
// gateways built on the SDK, spread over two cache nodes: the plan pauses
// itself when a gateway NACKs, status counts every gateway once across
// the nodes and when they move between them, and after the refusing
// gateway leaves the plan completes by itself.
func TestStagedPlanWithRealGatewaysAcrossCacheNodes(t *testing.T) {
	tc := testcluster.New(t, 1)
	st, clients := tc.NewStore(t)
	p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zaptest.NewLogger(t).Named("proxy"), PlanInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	conn, _ := serve(t, p.Register)
	ten, rel := confettipb.NewTenantsClient(conn), confettipb.NewReleasesClient(conn)
	ctx := context.Background()
	const tenant, item = "shop", "gateway"
	if _, err := ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: tenant}); err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 2; v++ {
		if _, err := rel.Publish(ctx, &confettipb.PublishRequest{Tenant: tenant, Item: item, Content: []byte(fmt.Sprintf(`{"v":%d}`, v))}); err != nil {
			t.Fatal(err)
		}
	}
	sys := &system{tc: tc}
	type node struct {
		addr string
		stop func()
	}
	var nodes []node
	for _, name := range []string{"cache-a", "cache-b"} {
		_, addr, stop := sys.startCacheAt(t, name)
		nodes = append(nodes, node{addr: addr, stop: stop})
	}

	// Six gateways, three per node, each able to fail over to the other
	// node. The refusing one is picked inside the plan's first step (50%).
	bad := ""
	for i := 0; bad == ""; i++ {
		if id := fmt.Sprintf("bad-%d", i); release.Bucket(tenant, item, id) < 5000 {
			bad = id
		}
	}
	ids := []string{"gw-1", "gw-2", "gw-3", "gw-4", "gw-5", bad}
	gws := map[string]*gateway.Client{}
	for i, id := range ids {
		eps := []string{nodes[i%2].addr, nodes[(i+1)%2].addr}
		cfg := gateway.Config{Endpoints: eps, Tenant: tenant, Items: []string{"*"}, Identity: gateway.Identity{InstanceID: id},
			BackoffInitial: 100 * time.Millisecond, Logger: zaptest.NewLogger(t).Named(id)}
		if id == bad {
			cfg.Validate = func(key string, kv *confettipb.KeyValue) error {
				if strings.Contains(string(kv.Value), `"v":2`) {
					return errors.New("upstream web-v2 does not resolve")
				}
				return nil
			}
		}
		c, err := gateway.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		gws[id] = c
	}
	status := func() (running, pending, nacked map[int64]int64, errs []string) {
		resp, err := rel.Status(ctx, &confettipb.ReleaseStatusRequest{Tenant: tenant, Item: item})
		if err != nil {
			return nil, nil, nil, nil
		}
		running, pending, nacked = map[int64]int64{}, map[int64]int64{}, map[int64]int64{}
		for _, v := range resp.Versions {
			running[v.Version], pending[v.Version], nacked[v.Version] = v.Running, v.Pending, v.Nacked
			errs = append(errs, v.Errors...)
		}
		return running, pending, nacked, errs
	}
	testcluster.WaitFor(t, "every gateway runs v1, counted once over both nodes", func() bool {
		running, _, _, _ := status()
		return running[1] == 6
	})

	if _, err := rel.StartPlan(ctx, &confettipb.StartPlanRequest{Tenant: tenant, Item: item, Plan: &confettipb.Plan{
		Version: 2, Steps: []int32{5000, 10000}, BakeSeconds: 1, MaxNackBasisPoints: 100,
	}}); err != nil {
		t.Fatal(err)
	}
	planState := func() (*confettipb.Plan, int64) {
		r, err := rel.GetRelease(ctx, &confettipb.GetReleaseRequest{Tenant: tenant, Item: item})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetPlan(), r.GetStable()
	}
	testcluster.WaitFor(t, "the plan pauses itself on the NACK", func() bool {
		plan, _ := planState()
		return plan.GetState() == confettipb.Plan_PAUSED
	})
	_, _, nacked, errs := status()
	if nacked[2] != 1 || len(errs) == 0 || !strings.Contains(errs[0], "web-v2") {
		t.Fatalf("status after the pause: nacked %v, errors %q", nacked, errs)
	}

	// Node a goes away: its gateways move to node b and are still each
	// counted once.
	nodes[0].stop()
	testcluster.WaitFor(t, "the gateways of node a moved to node b", func() bool {
		for _, c := range gws {
			if c.Stats().Endpoint != nodes[1].addr {
				return false
			}
		}
		return true
	})
	testcluster.WaitFor(t, "six gateways counted after the move", func() bool {
		running, pending, nacked, _ := status()
		total := int64(0)
		for _, m := range []map[int64]int64{running, pending, nacked} {
			for _, n := range m {
				total += n
			}
		}
		return total == 6 && nacked[2] == 1
	})
	for _, c := range gws {
		if s := c.Stats(); s.Resets != 1 {
			t.Fatalf("a gateway needed %d Resets; moving between nodes must resume by replay", s.Resets)
		}
	}

	// The refusing gateway leaves; resumed, the plan finishes by itself.
	gws[bad].Close()
	if _, err := rel.ResumePlan(ctx, &confettipb.PlanRequest{Tenant: tenant, Item: item}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the plan completes and v2 is stable", func() bool {
		plan, stable := planState()
		return plan.GetState() == confettipb.Plan_DONE && stable == 2
	})
	testcluster.WaitFor(t, "the five remaining gateways run v2", func() bool {
		running, _, _, _ := status()
		return running[2] == 5
	})
	for id, c := range gws {
		if id == bad {
			continue
		}
		if kv, ok := c.Item(item); !ok || string(kv.Value) != `{"v":2}` {
			t.Fatalf("%s holds %v", id, kv)
		}
	}
}
