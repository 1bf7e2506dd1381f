package bench

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/shardproxy"
)

// BenchmarkProxyVsDirect reports put and get latency through the shard
// proxy against etcd itself on the same cluster in the same run, with
// their ratio (the target: the proxy adds at most 20% at p50), on a shard
// that syncs its log to disk as production etcd does, and on one that does
// not (where the extra network hop is all there is to see).
//
//	go test -run '^$' -bench ProxyVsDirect -benchtime 1x ./bench/
func BenchmarkProxyVsDirect(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchProxyVsDirect(b, testcluster.WithFsync()) })
	b.Run("no-fsync", func(b *testing.B) { benchProxyVsDirect(b) })
}

func benchProxyVsDirect(b *testing.B, opts ...testcluster.Option) {
	tc := testcluster.New(b, 1, opts...)
	st, clients := tc.NewStore(b)
	p, err := shardproxy.New(st, clients, shardproxy.Config{Logger: zap.NewNop(), TenantRPS: -1})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	p.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	kv := confettipb.NewKVClient(conn)
	tn, err := confettipb.NewTenantsClient(conn).CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	direct := tc.ShardClient(b, tn.Shard)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		results, err := CompareProxyWrites(ctx, kv, direct, "bench", 2000, 256)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			b.Log(r)
			b.ReportMetric(float64(r.Direct.P50.Microseconds()), r.Op+"-direct-p50-us")
			b.ReportMetric(float64(r.Proxy.P50.Microseconds()), r.Op+"-proxy-p50-us")
			b.ReportMetric(float64(r.Direct.P99.Microseconds()), r.Op+"-direct-p99-us")
			b.ReportMetric(float64(r.Proxy.P99.Microseconds()), r.Op+"-proxy-p99-us")
			b.ReportMetric(r.RatioP50, r.Op+"-ratio-p50")
		}
	}
}

// echoKV answers Range at once, with no store behind it.
type echoKV struct {
	confettipb.UnimplementedKVServer
}

func (echoKV) Range(context.Context, *confettipb.RangeRequest) (*confettipb.RangeResponse, error) {
	return &confettipb.RangeResponse{}, nil
}

// BenchmarkUnaryFloor is the cost of one gRPC unary call on this machine's
// loopback with nothing behind it: the least any extra hop (such as the
// shard proxy's) adds.
//
//	go test -run '^$' -bench UnaryFloor -benchtime 1x ./bench/
func BenchmarkUnaryFloor(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	confettipb.RegisterKVServer(srv, echoKV{})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	kv := confettipb.NewKVClient(conn)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		d := make([]time.Duration, 0, 4000)
		for j := 0; j < 4000; j++ {
			start := time.Now()
			if _, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "bench", Key: "k"}); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(start))
		}
		s := summarize(d[500:])
		b.Logf("bare unary call p50=%v p99=%v", s.P50, s.P99)
		b.ReportMetric(float64(s.P50.Microseconds()), "p50-us")
		b.ReportMetric(float64(s.P99.Microseconds()), "p99-us")
	}
}
