package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// Latencies summarizes one operation's latency samples.
type Latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func summarize(d []time.Duration) Latencies {
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Latencies{N: len(d), P50: at(0.50), P99: at(0.99), Max: d[len(d)-1]}
}

// ProxyVsDirect is the latency of the same operations on the same etcd
// cluster, sent through the shard proxy and straight to etcd.
type ProxyVsDirect struct {
	Op             string
	Direct, Proxy  Latencies
	RatioP50       float64
	RatioP99       float64
	ValueBytes     int
	SequentialReqs int
}

func (r ProxyVsDirect) String() string {
	return fmt.Sprintf("%-4s n=%d value=%dB  direct p50=%v p99=%v  proxy p50=%v p99=%v  proxy/direct p50=%.2f p99=%.2f",
		r.Op, r.SequentialReqs, r.ValueBytes, r.Direct.P50, r.Direct.P99, r.Proxy.P50, r.Proxy.P99, r.RatioP50, r.RatioP99)
}

// CompareProxyWrites measures n puts and n gets of one key of tenant, one
// at a time, alternating between the proxy (kv) and etcd itself (direct,
// a client of the tenant's shard), so that both see the same machine
// load. Direct writes are plain puts, what an application on etcd would
// send; the proxy's are fenced transactions.
func CompareProxyWrites(ctx context.Context, kv confettipb.KVClient, direct *clientv3.Client, tenant string, n, valueBytes int) ([]ProxyVsDirect, error) {
	value := make([]byte, valueBytes)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	physical := keys.KV(tenant) + "bench/direct"
	// Warm both paths (connections, routing, the lease-free write path).
	for i := 0; i < 50; i++ {
		if _, err := kv.Put(ctx, &confettipb.PutRequest{Tenant: tenant, Key: "bench/proxy", Value: value}); err != nil {
			return nil, err
		}
		if _, err := direct.Put(ctx, physical, string(value)); err != nil {
			return nil, err
		}
	}
	var out []ProxyVsDirect
	for _, op := range []string{"put", "get"} {
		dd, pd := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			start := time.Now()
			var err error
			if op == "put" {
				_, err = direct.Put(ctx, physical, string(value))
			} else {
				_, err = direct.Get(ctx, physical)
			}
			if err != nil {
				return nil, err
			}
			dd = append(dd, time.Since(start))
			start = time.Now()
			if op == "put" {
				_, err = kv.Put(ctx, &confettipb.PutRequest{Tenant: tenant, Key: "bench/proxy", Value: value})
			} else {
				_, err = kv.Range(ctx, &confettipb.RangeRequest{Tenant: tenant, Key: "bench/proxy"})
			}
			if err != nil {
				return nil, err
			}
			pd = append(pd, time.Since(start))
		}
		r := ProxyVsDirect{Op: op, Direct: summarize(dd), Proxy: summarize(pd), ValueBytes: valueBytes, SequentialReqs: n}
		r.RatioP50 = float64(r.Proxy.P50) / float64(r.Direct.P50)
		r.RatioP99 = float64(r.Proxy.P99) / float64(r.Direct.P99)
		out = append(out, r)
	}
	return out, nil
}
