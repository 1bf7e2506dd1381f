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

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(ChildEnv); spec != "" {
		os.Exit(RunChild(spec, os.Stdout))
	}
	os.Exit(m.Run())
}

// BenchmarkFanout pushes one update at a time to N subscribers of one
// tenant and reports put-to-delivery latency, and the measuring process's
// CPU per delivered event and heap per subscriber (the subscribers run in
// child processes, 10,000 per process at most), for each target in the
// same run on the same workload:
//
//   - floor: a bare Cache.Subscribe fan-out with no store (the transport limit);
//   - confetti: one cache node sourcing one etcd shard;
//   - etcd: watchers on the etcd shard itself;
//   - grpcproxy: watchers through etcd's own grpc-proxy in front of it.
//
// CONFETTI_BENCH_N sets N (comma separated; default 1000,10000),
// CONFETTI_BENCH_TARGETS the targets (default all four),
// CONFETTI_BENCH_INTERVAL the time between updates (default 200ms; an
// interval shorter than one fan-out measures a saturated target, not one
// update's latency), CONFETTI_BENCH_STREAMS_PER_CONN the subscriptions per
// connection (default 100; 1 is one connection each).
//
//	CONFETTI_BENCH_N=1000,10000 CONFETTI_BENCH_INTERVAL=1s go test -run '^$' -bench Fanout -benchtime 1x -timeout 60m ./bench/
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
	targets := []string{TargetFloor, TargetConfetti, TargetEtcd, TargetGRPCProxy}
	if v := os.Getenv("CONFETTI_BENCH_TARGETS"); v != "" {
		targets = strings.Split(v, ",")
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
	ctx := context.Background()
	tc := testcluster.New(b, 1)
	st, clients := tc.NewStore(b)
	tn, _, err := st.CreateTenant(ctx, "fan")
	if err != nil {
		b.Fatal(err)
	}
	shard := tc.ShardClient(b, tn.Shard)
	put := func(ctx context.Context, v string) error {
		_, err := shard.Put(ctx, keys.KV("fan")+"tick", v)
		return err
	}

	addrs := map[string]string{}
	serve := func(register func(*grpc.Server)) string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := grpc.NewServer(grpc.NumStreamWorkers(2))
		register(srv)
		go srv.Serve(lis)
		b.Cleanup(srv.Stop)
		return lis.Addr().String()
	}
	c, err := cache.New(st, clients, cache.Config{Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	addrs[TargetConfetti] = serve(c.Register)
	floor := NewFloor()
	addrs[TargetFloor] = serve(func(s *grpc.Server) { confettipb.RegisterCacheServer(s, floor) })
	addrs[TargetEtcd] = strings.TrimPrefix(tc.Shards[tn.Shard].Endpoints()[0], "http://")
	proxyCli, err := tc.Shards[tn.Shard].Client()
	if err != nil {
		b.Fatal(err)
	}
	defer proxyCli.Close()
	wp, _ := grpcproxy.NewWatchProxy(ctx, zap.NewNop(), proxyCli)
	addrs[TargetGRPCProxy] = serve(func(s *grpc.Server) { etcdserverpb.RegisterWatchServer(s, wp) })
	for !c.Ready() {
		time.Sleep(10 * time.Millisecond)
	}

	for _, n := range ns {
		results := map[string]FanoutResult{}
		for _, target := range targets {
			b.Run(fmt.Sprintf("%s/N=%d", target, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					cfg := FanoutConfig{
						Target: target, CacheAddr: addrs[target], Key: keys.KV("fan") + "tick", Tenant: "fan",
						Subscribers: n, Conns: max(1, n/perConn), Processes: (n + 9999) / 10000,
						Updates: 20, Warmup: 3, Interval: interval, Put: put,
					}
					if target == TargetFloor {
						cfg.Put = func(_ context.Context, v string) error { floor.Publish(v); return nil }
					}
					res, err := RunFanout(ctx, cfg)
					b.Log(res)
					if err != nil {
						b.Fatal(err)
					}
					results[target] = res
					b.ReportMetric(float64(res.P50.Microseconds()), "p50-us")
					b.ReportMetric(float64(res.P99.Microseconds()), "p99-us")
					b.ReportMetric(float64(res.Max.Microseconds()), "max-us")
					b.ReportMetric(res.CPUMicrosPerEvent, "cpu-us/event")
					b.ReportMetric(res.HeapBytesPerSubscriber, "heap-B/sub")
					b.ReportMetric(float64(res.EtcdWatchers), "etcd-watchers")
				}
			})
		}
		for _, target := range targets {
			r, ok := results[target]
			if !ok {
				continue
			}
			line := fmt.Sprintf("N=%d %-9s p99=%v", n, target, r.P99)
			for _, base := range []string{TargetFloor, TargetEtcd} {
				if br, ok := results[base]; ok && br.P99 > 0 {
					line += fmt.Sprintf("  p99/%s=%.2f", base, float64(r.P99)/float64(br.P99))
				}
			}
			b.Log(line)
		}
	}
}
