package shardproxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func TestMetricsCountRequestsByMethodAndCode(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "metered")
	ctx := testCtx(t)
	for i := 0; i < 3; i++ {
		if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "metered", Key: "k", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "metered"}); err == nil {
		t.Fatal("put without a key: want an error")
	}
	if _, err := a.leases.Grant(ctx, &pb.LeaseGrantRequest{Tenant: "metered", Ttl: 0}); err == nil {
		t.Fatal("lease grant without a ttl: want an error")
	}
	families, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		metric string
		labels map[string]string
		want   uint64
	}{
		{name: "successful puts", metric: "confetti_proxy_requests_total", labels: map[string]string{"method": "KV.Put", "code": "OK"}, want: 3},
		{name: "refused put", metric: "confetti_proxy_requests_total", labels: map[string]string{"method": "KV.Put", "code": "InvalidArgument"}, want: 1},
		{name: "refused lease grant", metric: "confetti_proxy_requests_total", labels: map[string]string{"method": "Leases.Grant", "code": "InvalidArgument"}, want: 1},
		{name: "put durations", metric: "confetti_proxy_request_duration_seconds", labels: map[string]string{"method": "KV.Put"}, want: 4},
		{name: "successful puts on the tenant's shard", metric: "confetti_proxy_shard_requests_total", labels: map[string]string{"shard": a.createTenant(t, "metered").Shard, "code": "OK"}, want: 3},
		{name: "refused requests on the tenant's shard", metric: "confetti_proxy_shard_requests_total", labels: map[string]string{"shard": a.createTenant(t, "metered").Shard, "code": "InvalidArgument"}, want: 2},
		{name: "placement", metric: "confetti_proxy_shard_tenants", labels: map[string]string{"shard": a.createTenant(t, "metered").Shard, "state": "active"}, want: uint64(tenantCounts(c.store.Tenants())[a.createTenant(t, "metered").Shard])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sample(families, tc.metric, tc.labels); got != tc.want {
				t.Fatalf("%s%v = %d, want %d", tc.metric, tc.labels, got, tc.want)
			}
		})
	}

	// A second proxy on the same registry shares the collectors.
	if _, err := New(c.store, c.clients, Config{Registerer: a.reg}); err != nil {
		t.Fatalf("second proxy on one registry: %v", err)
	}
	if _, err := New(c.store, c.clients, Config{Registerer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
}

// sample returns a counter's value or a histogram's sample count for the
// series with exactly labels.
func sample(families []*dto.MetricFamily, name string, labels map[string]string) uint64 {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			if h := m.GetHistogram(); h != nil {
				return h.GetSampleCount()
			}
			if g := m.GetGauge(); g != nil {
				return uint64(g.GetValue())
			}
			return uint64(m.GetCounter().GetValue())
		}
	}
	return 0
}
