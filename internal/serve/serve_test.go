package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// holdService is a hand-written service whose one streaming method blocks
// until release is closed, standing in for a role's long-lived streams.
type holdService struct {
	release chan struct{}
	entered chan struct{}
}

var holdDesc = grpc.ServiceDesc{
	ServiceName: "test.Hold",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Hold",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			h := srv.(*holdService)
			h.entered <- struct{}{}
			select {
			case <-h.release:
				return nil
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		},
	}},
}

func newHold() *holdService {
	return &holdService{release: make(chan struct{}), entered: make(chan struct{}, 8)}
}

func start(t *testing.T, opts Options) (*Server, Addrs) {
	t.Helper()
	s, addrs, _ := startHold(t, opts)
	return s, addrs
}

func startHold(t *testing.T, opts Options) (*Server, Addrs, *holdService) {
	t.Helper()
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hold := newHold()
	s.GRPC().RegisterService(&holdDesc, hold)
	addrs, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s, addrs, hold
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestReadinessDrivesReadyzAndGRPCHealth(t *testing.T) {
	var ready atomic.Bool
	_, addrs := start(t, Options{
		MetricsAddr:   "127.0.0.1:0",
		ReadyInterval: 10 * time.Millisecond,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("shards not synced")
			}
			return nil
		},
		Degraded: func() []string { return []string{"shard s9 is unreachable"} },
	})
	base := "http://" + addrs.Metrics

	code, body := httpGet(t, base+"/healthz")
	if code != http.StatusOK {
		t.Fatalf("/healthz = %d %q, want 200", code, body)
	}
	code, body = httpGet(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "shards not synced") {
		t.Fatalf("/readyz before ready = %d %q, want 503 with the reason", code, body)
	}

	hc := healthpb.NewHealthClient(dial(t, addrs.GRPC))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, service := range []string{"", "test.Hold"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health of %q before ready = %v, want NOT_SERVING", service, resp.Status)
		}
	}
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("first watched status = %v, want NOT_SERVING", first.Status)
	}

	ready.Store(true)
	next, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if next.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watched status after ready = %v, want SERVING", next.Status)
	}
	code, body = httpGet(t, base+"/readyz")
	if code != http.StatusOK || body != "ok\ndegraded: shard s9 is unreachable\n" {
		t.Fatalf("/readyz when ready = %d %q, want 200, ok and the degraded part", code, body)
	}
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "test.Hold"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of test.Hold when ready = %v, want SERVING", resp.Status)
	}
	cancel()
}

func TestMetricsServeTheRegistryAndGRPCCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	writes := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "confetti", Name: "test_writes_total", Help: "test"})
	reg.MustRegister(writes)
	writes.Add(3)
	_, addrs := start(t, Options{MetricsAddr: "127.0.0.1:0", Registry: reg})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(dial(t, addrs.GRPC)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	code, body := httpGet(t, "http://"+addrs.Metrics+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"confetti_test_writes_total 3",
		`confetti_grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	tests := []struct {
		name   string
		enable bool
		want   int
	}{
		{name: "disabled", enable: false, want: http.StatusNotFound},
		{name: "enabled", enable: true, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addrs := start(t, Options{MetricsAddr: "127.0.0.1:0", EnablePprof: tt.enable})
			if code, _ := httpGet(t, "http://"+addrs.Metrics+"/debug/pprof/"); code != tt.want {
				t.Fatalf("/debug/pprof/ = %d, want %d", code, tt.want)
			}
		})
	}
}

func TestReflectionListsRegisteredServices(t *testing.T) {
	_, addrs := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(dial(t, addrs.GRPC)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.Name] = true
	}
	for _, want := range []string{"grpc.health.v1.Health", "test.Hold"} {
		if !got[want] {
			t.Errorf("reflection lists %v, lacks %s", got, want)
		}
	}
	stream.CloseSend()
}

func TestListenOnAnyAddressWithKernelPort(t *testing.T) {
	_, addrs := start(t, Options{ListenAddr: ":0", MetricsAddr: ":0"})
	_, gport, err := net.SplitHostPort(addrs.GRPC)
	if err != nil || gport == "0" {
		t.Fatalf("grpc addr %q: want a bound port", addrs.GRPC)
	}
	_, mport, err := net.SplitHostPort(addrs.Metrics)
	if err != nil || mport == "0" {
		t.Fatalf("metrics addr %q: want a bound port", addrs.Metrics)
	}
	if code, _ := httpGet(t, "http://127.0.0.1:"+mport+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz over loopback = %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(dial(t, "127.0.0.1:"+gport)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailsCleanlyWhenTheAddressIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s, err := New(Options{ListenAddr: "127.0.0.1:0", MetricsAddr: taken.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(); err == nil {
		t.Fatal("Start on a taken metrics address succeeded")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop: err = %v, want ErrStopped", err)
	}
}

func openHold(t *testing.T, ctx context.Context, cc *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	stream, err := cc.NewStream(ctx, &holdDesc.Streams[0], "/test.Hold/Hold")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	return stream
}

func TestStopDrainsStreamsGracefully(t *testing.T) {
	hold := newHold()
	var drained atomic.Int32
	s, err := New(Options{
		ListenAddr:  "127.0.0.1:0",
		MetricsAddr: "127.0.0.1:0",
		Logger:      zaptest.NewLogger(t),
		Drain: func() {
			drained.Add(1)
			close(hold.release)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.GRPC().RegisterService(&holdDesc, hold)
	addrs, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := openHold(t, ctx, dial(t, addrs.GRPC))
	<-hold.entered

	if err := s.Stop(ctx); err != nil {
		t.Fatalf("graceful Stop: %v", err)
	}
	if err := stream.RecvMsg(&emptypb.Empty{}); !errors.Is(err, io.EOF) {
		t.Fatalf("stream after a graceful stop: err = %v, want io.EOF (handler returned)", err)
	}
	if n := drained.Load(); n != 1 {
		t.Fatalf("Drain called %d times, want 1", n)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addrs.Metrics, time.Second); err == nil {
		t.Fatal("metrics address still accepts connections after Stop")
	}
}

func TestStopClosesConnectionsWhenGraceRunsOut(t *testing.T) {
	s, addrs, hold := startHold(t, Options{MetricsAddr: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := openHold(t, ctx, dial(t, addrs.GRPC))
	<-hold.entered

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stopCancel()
	if err := s.Stop(stopCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a stream that never ends: err = %v, want DeadlineExceeded", err)
	}
	err := stream.RecvMsg(&emptypb.Empty{})
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Fatalf("stream after a hard stop: err = %v, want Unavailable", err)
	}
	if err := s.Ready(); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("Ready after Stop = %v, want ErrShuttingDown", err)
	}
}
