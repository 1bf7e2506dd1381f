package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// TestExpiredLeasesDeleteKeysAndSubscribersSeeIt writes a key with a ttl
// and registers an instance with a ttl, renews neither, and checks that
// both disappear within the ttl (plus slack for etcd's expiry check and a
// loaded machine) and that a cache subscriber sees each delete; it never
// sees the key that binds a lease to the tenant.
func TestExpiredLeasesDeleteKeysAndSubscribersSeeIt(t *testing.T) {
	const ttl = 2
	const slack = 10 * time.Second
	sys := startSystem(t, 1)
	ctx := context.Background()
	leases := confettipb.NewLeasesClient(sys.proxy)
	if _, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	cacheCli, _ := sys.startCache(t, "cache-1")
	w := watch(t, cacheCli, "acme", []string{"kv/", "svc/"}, "")
	w.waitFor(t, "the empty reset", func(map[string]string) bool {
		_, _, _, _, resets, _ := w.view()
		return resets == 1
	})

	for _, tc := range []struct {
		name  string
		key   string
		write func() error
	}{
		{name: "put with a ttl", key: "kv//session", write: func() error {
			_, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: "acme", Key: "/session", Value: []byte("s-1"), Ttl: ttl})
			return err
		}},
		{name: "registered instance", key: "svc/api/i-1", write: func() error {
			_, err := leases.Register(ctx, &confettipb.RegisterRequest{
				Tenant:   "acme",
				Instance: &confettipb.Instance{Service: "api", Id: "i-1", Address: "10.0.0.1:8080", Labels: map[string]string{"zone": "a"}},
				Ttl:      ttl,
			})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			written := time.Now()
			if err := tc.write(); err != nil {
				t.Fatal(err)
			}
			w.waitFor(t, tc.key+" to arrive", func(s map[string]string) bool { _, ok := s[tc.key]; return ok })
			w.waitFor(t, tc.key+" to expire", func(s map[string]string) bool { _, ok := s[tc.key]; return !ok })
			if took := time.Since(written); took > ttl*time.Second+slack {
				t.Fatalf("%s expired %s after it was written, ttl %ds", tc.key, took, ttl)
			}
			_, events, _, _, _, _ := w.view()
			var put, deleted bool
			for _, e := range events {
				put = put || strings.HasPrefix(e, tc.key+"=")
				deleted = deleted || strings.HasPrefix(e, tc.key+" DELETED@")
			}
			if !put || !deleted {
				t.Fatalf("subscriber events %v lack the put and the delete of %s", events, tc.key)
			}
		})
	}

	_, events, _, _, _, _ := w.view()
	for _, e := range events {
		if !strings.HasPrefix(e, "kv/") && !strings.HasPrefix(e, "svc/") {
			t.Fatalf("subscriber saw an internal key: %s", e)
		}
		if strings.HasPrefix(e, "svc/api/i-1=") {
			var v map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(e[:strings.LastIndex(e, "@")], "svc/api/i-1=")), &v); err != nil || v["address"] != "10.0.0.1:8080" {
				t.Fatalf("instance value in %q: %v, %v", e, v, err)
			}
		}
	}
	list, err := leases.ListInstances(ctx, &confettipb.ListInstancesRequest{Tenant: "acme", Service: "api"})
	if err != nil || len(list.Instances) != 0 {
		t.Fatalf("instances after expiry: %v, %v", list, err)
	}
}

// TestKeptAliveInstanceStaysAcrossProxies registers an instance through
// one proxy, renews its lease through another past several TTLs, and
// checks the instance stays; once renewals stop it goes.
func TestKeptAliveInstanceStaysAcrossProxies(t *testing.T) {
	sys := startSystem(t, 2)
	other := startProxy(t, sys.tc)
	ctx := context.Background()
	if _, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	reg, err := confettipb.NewLeasesClient(sys.proxy).Register(ctx, &confettipb.RegisterRequest{
		Tenant:   "acme",
		Instance: &confettipb.Instance{Service: "api", Id: "i-1", Address: "10.0.0.1:8080"},
		Ttl:      2,
	})
	if err != nil {
		t.Fatal(err)
	}
	leases := confettipb.NewLeasesClient(other.proxy)
	registered := func() bool {
		list, err := leases.ListInstances(ctx, &confettipb.ListInstancesRequest{Tenant: "acme", Service: "api"})
		if err != nil {
			t.Fatal(err)
		}
		return len(list.Instances) == 1
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := leases.KeepAlive(sctx)
	if err != nil {
		t.Fatal(err)
	}
	renewals := 0
	for until := time.Now().Add(3 * time.Duration(reg.Ttl) * time.Second); time.Now().Before(until); {
		if err := stream.Send(&confettipb.LeaseKeepAliveRequest{Tenant: "acme", Id: reg.Lease}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Ttl <= 0 {
			t.Fatalf("renewal %d: lease expired while kept alive", renewals)
		}
		renewals++
		if !registered() {
			t.Fatalf("instance gone after %d renewals", renewals)
		}
		<-time.After(time.Duration(resp.Ttl) * time.Second / 3)
	}
	cancel()
	testcluster.WaitFor(t, fmt.Sprintf("the instance to expire after %d renewals", renewals), func() bool { return !registered() })
}
