package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(ChildEnv); spec != "" {
		os.Exit(RunChild(spec, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// BenchmarkFanout pushes one update at a time to N subscribers of one
// tenant through one cache node and reports put-to-delivery latency, and
// the node's CPU per delivered event and heap per subscriber (the
// subscribers run in child processes, 10,000 per process at most). N comes from CONFETTI_BENCH_N (comma
// separated; default 1000,10000); the time between updates from
// CONFETTI_BENCH_INTERVAL (default 200ms; an interval shorter than one
// fan-out takes measures a saturated node, not one update's latency); the
// subscriptions multiplexed per connection from
// CONFETTI_BENCH_STREAMS_PER_CONN (default 100; 1 is one connection each).
//
//	CONFETTI_BENCH_N=1000,10000,50000 CONFETTI_BENCH_INTERVAL=1s go test -run '^$' -bench Fanout -benchtime 1x -timeout 30m ./bench/
func BenchmarkFanout(b *testing.B) {
	ns := []int{1000, 10000}
	if v := os.Getenv("CONFETTI_BENCH_N"); v != "" {
		ns = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			ns = append(ns, n)
		}
	}
	interval := 200 * time.Millisecond
	if v := os.Getenv("CONFETTI_BENCH_INTERVAL"); v != "" {
		var err error
		if interval, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	perConn := 100
	if v := os.Getenv("CONFETTI_BENCH_STREAMS_PER_CONN"); v != "" {
		var err error
		if perConn, err = strconv.Atoi(v); err != nil || perConn < 1 {
			b.Fatalf("CONFETTI_BENCH_STREAMS_PER_CONN=%q: want a positive number", v)
		}
	}
	tc := testcluster.New(b, 1)
	st, clients := tc.NewStore(b)
	tn, _, err := st.CreateTenant(context.Background(), "fan")
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.New(st, clients, cache.Config{Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.NumStreamWorkers(2))
	c.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	for !c.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	shard := tc.ShardClient(b, tn.Shard)
	for _, n := range ns {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res, err := RunFanout(context.Background(), FanoutConfig{
					CacheAddr: lis.Addr().String(), Tenant: "fan",
					Subscribers: n, Conns: max(1, n/perConn), Processes: (n + 9999) / 10000, Updates: 20, Warmup: 3, Interval: interval,
					Put: func(ctx context.Context, v string) error {
						_, err := shard.Put(ctx, keys.KV("fan")+"tick", v, clientv3.WithPrevKV())
						return err
					},
				})
				b.Log(res)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(res.P50.Microseconds()), "p50-us")
				b.ReportMetric(float64(res.P99.Microseconds()), "p99-us")
				b.ReportMetric(float64(res.Max.Microseconds()), "max-us")
				b.ReportMetric(res.CPUMicrosPerEvent, "cpu-us/event")
				b.ReportMetric(res.HeapBytesPerSubscriber, "heap-B/sub")
				b.ReportMetric(float64(res.EtcdWatchers), "etcd-watchers")
			}
		})
	}
}
