package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
)

// FanoutConfig is one fan-out run: Subscribers streams of one tenant,
// multiplexed over Conns connections to a cache node, receiving Updates
// puts made Interval apart, each carrying its send time.
type FanoutConfig struct {
	CacheAddr   string
	Tenant      string
	Subscribers int
	Conns       int
	Updates     int
	Warmup      int
	Interval    time.Duration
	// Put writes the update's value (a decimal Unix time in nanoseconds)
	// to the key kv/tick of the tenant, through whatever path is measured.
	Put func(ctx context.Context, value string) error
}

// FanoutResult is what a fan-out run measured. CPU and memory are of the
// whole process, which here holds the subscribers as well as the node.
type FanoutResult struct {
	Subscribers, Conns, Updates int
	Delivered                   int64
	Missing                     int64
	P50, P99, Max               time.Duration
	CPUMicrosPerEvent           float64
	HeapBytesPerSubscriber      float64
}

func (r FanoutResult) String() string {
	return fmt.Sprintf("N=%d conns=%d updates=%d delivered=%d missing=%d  p50=%v p99=%v max=%v  cpu/event=%.1fus  heap/subscriber=%.0fB",
		r.Subscribers, r.Conns, r.Updates, r.Delivered, r.Missing, r.P50, r.P99, r.Max, r.CPUMicrosPerEvent, r.HeapBytesPerSubscriber)
}

// RunFanout subscribes, writes, and measures put-to-delivery latency from
// the timestamp in each value. Warm-up updates are sent but not counted.
func RunFanout(ctx context.Context, cfg FanoutConfig) (FanoutResult, error) {
	res := FanoutResult{Subscribers: cfg.Subscribers, Conns: cfg.Conns, Updates: cfg.Updates}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		cc, err := grpc.NewClient(cfg.CacheAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return res, err
		}
		defer cc.Close()
		conns[i] = cc
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([][]time.Duration, cfg.Subscribers)
	var ready, counted sync.WaitGroup
	var failed atomic.Value
	minStamp := atomic.Int64{}
	minStamp.Store(1<<63 - 1)
	for i := 0; i < cfg.Subscribers; i++ {
		ready.Add(1)
		counted.Add(1)
		go func() {
			defer counted.Done()
			st, err := confettipb.NewCacheClient(conns[i%cfg.Conns]).Subscribe(sctx)
			if err == nil {
				err = st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: cfg.Tenant, Prefixes: []string{"kv/tick"}}}})
			}
			if err != nil {
				failed.Store(err)
				ready.Done()
				return
			}
			readyDone := false
			for {
				m, err := st.Recv()
				if err != nil {
					if !readyDone {
						failed.Store(err)
						ready.Done()
					}
					return
				}
				if r := m.GetReset_(); r != nil && r.Last && !readyDone {
					readyDone = true
					ready.Done()
				}
				for _, t := range m.GetEvents().GetTxns() {
					for _, ev := range t.Events {
						sent, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
						if err != nil || sent < minStamp.Load() {
							continue
						}
						lat[i] = append(lat[i], time.Since(time.Unix(0, sent)))
					}
				}
				if len(lat[i]) >= cfg.Updates {
					return
				}
			}
		}()
	}
	ready.Wait()
	if err, ok := failed.Load().(error); ok {
		return res, err
	}
	runtime.GC()
	var subscribed runtime.MemStats
	runtime.ReadMemStats(&subscribed)
	res.HeapBytesPerSubscriber = float64(int64(subscribed.HeapInuse)-int64(before.HeapInuse)) / float64(cfg.Subscribers)

	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for u := 0; u < cfg.Warmup+cfg.Updates; u++ {
		<-tick.C
		now := time.Now().UnixNano()
		if u == cfg.Warmup {
			minStamp.Store(now)
		}
		if err := cfg.Put(ctx, strconv.FormatInt(now, 10)); err != nil {
			return res, err
		}
	}
	done := make(chan struct{})
	go func() { counted.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
	}
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
		res.Missing += int64(cfg.Updates - len(l))
	}
	res.Delivered = int64(len(all))
	if len(all) == 0 {
		return res, fmt.Errorf("no update delivered")
	}
	s := summarize(all)
	res.P50, res.P99, res.Max = s.P50, s.P99, s.Max
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	res.CPUMicrosPerEvent = float64(cpu.Microseconds()) / float64(res.Delivered)
	if res.Missing > 0 {
		return res, fmt.Errorf("%d of %d deliveries missing", res.Missing, cfg.Subscribers*cfg.Updates)
	}
	return res, nil
}
