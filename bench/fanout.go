package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
)

// FanoutConfig is one fan-out run: Subscribers streams of one tenant,
// multiplexed over Conns connections to a cache node and split over
// Processes child processes (each holds its own connections, so the
// node's figures are its own and the open-files limit of one process is
// never the bound), receiving Updates puts made Interval apart, each
// carrying its send time.
type FanoutConfig struct {
	// Target is how subscribers subscribe: TargetConfetti and TargetFloor
	// open Cache.Subscribe streams at Addr; TargetEtcd and TargetGRPCProxy
	// open etcd watches of Key at Addr.
	Target      string
	CacheAddr   string
	Key         string
	Tenant      string
	Subscribers int
	Conns       int
	Processes   int
	Updates     int
	Warmup      int
	Interval    time.Duration
	// Put writes the update's value (a decimal Unix time in nanoseconds,
	// or, for a warm-up update, that time after "warmup-") to the key
	// kv/tick of the tenant, through whatever path is measured.
	Put func(ctx context.Context, value string) error
}

// The fan-out targets.
const (
	TargetConfetti  = "confetti"
	TargetEtcd      = "etcd"
	TargetGRPCProxy = "grpcproxy"
	TargetFloor     = "floor"
)

// FanoutResult is what a fan-out run measured. CPU and heap are the
// measuring process's own, which holds the cache node and not the
// subscribers.
type FanoutResult struct {
	Target                                 string
	Subscribers, Conns, Processes, Updates int
	Delivered                              int64
	Missing                                int64
	P50, P99, Max                          time.Duration
	CPUMicrosPerEvent                      float64
	HeapBytesPerSubscriber                 float64
	// EtcdWatchers is the watchers of every etcd server embedded in this
	// process (meta and shards) while the subscribers were connected.
	EtcdWatchers int
}

func (r FanoutResult) String() string {
	return fmt.Sprintf("%-9s N=%d conns=%d procs=%d updates=%d delivered=%d missing=%d  p50=%v p99=%v max=%v  node cpu/event=%.1fus  node heap/subscriber=%.0fB  etcd watchers=%d",
		r.Target, r.Subscribers, r.Conns, r.Processes, r.Updates, r.Delivered, r.Missing, r.P50, r.P99, r.Max, r.CPUMicrosPerEvent, r.HeapBytesPerSubscriber, r.EtcdWatchers)
}

// ChildEnv makes a test binary of this package act as a subscriber
// process (see RunChild) instead of running tests.
const ChildEnv = "CONFETTI_BENCH_CHILD"

// childSpec is what a subscriber process is told, as JSON in ChildEnv.
type childSpec struct {
	Target      string    `json:"target"`
	Addr        string    `json:"addr"`
	Key         string    `json:"key"`
	Tenant      string    `json:"tenant"`
	Subscribers int       `json:"subscribers"`
	Conns       int       `json:"conns"`
	Updates     int       `json:"updates"`
	MinStamp    time.Time `json:"-"`
}

// RunFanout starts the subscriber processes, waits until every
// subscriber holds its Reset, writes, and measures put-to-delivery latency
// from the timestamp in each value. Warm-up updates are sent but not
// counted.
func RunFanout(ctx context.Context, cfg FanoutConfig) (FanoutResult, error) {
	if cfg.Target == "" {
		cfg.Target = TargetConfetti
	}
	res := FanoutResult{Target: cfg.Target, Subscribers: cfg.Subscribers, Conns: cfg.Conns, Processes: max(1, cfg.Processes), Updates: cfg.Updates}
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	type child struct {
		cmd    *exec.Cmd
		out    *bufio.Reader
		stdout io.ReadCloser
	}
	var children []*child
	defer func() {
		for _, c := range children {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	}()
	for p := 0; p < res.Processes; p++ {
		n := cfg.Subscribers / res.Processes
		if p < cfg.Subscribers%res.Processes {
			n++
		}
		spec, _ := json.Marshal(childSpec{Target: cfg.Target, Addr: cfg.CacheAddr, Key: cfg.Key, Tenant: cfg.Tenant, Subscribers: n, Conns: max(1, cfg.Conns/res.Processes), Updates: cfg.Updates})
		cmd := exec.CommandContext(ctx, self, "-test.run=^$")
		cmd.Env = append(os.Environ(), ChildEnv+"="+string(spec))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, err
		}
		children = append(children, &child{cmd: cmd, out: bufio.NewReader(stdout), stdout: stdout})
	}
	for i, c := range children {
		line, err := c.out.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			return res, fmt.Errorf("subscriber process %d: %q, %v", i, line, err)
		}
	}
	runtime.GC()
	var subscribed runtime.MemStats
	runtime.ReadMemStats(&subscribed)
	res.HeapBytesPerSubscriber = float64(int64(subscribed.HeapInuse)-int64(before.HeapInuse)) / float64(cfg.Subscribers)
	res.EtcdWatchers = embeddedEtcdWatchers()

	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for u := 0; u < cfg.Warmup+cfg.Updates; u++ {
		<-tick.C
		value := strconv.FormatInt(time.Now().UnixNano(), 10)
		if u < cfg.Warmup {
			// Delivered like any other update, but not a number, so
			// subscribers do not count it.
			value = "warmup-" + value
		}
		if err := cfg.Put(ctx, value); err != nil {
			return res, err
		}
	}
	var all []time.Duration
	for i, c := range children {
		line, err := c.out.ReadString('\n')
		if err != nil {
			return res, fmt.Errorf("subscriber process %d: %w", i, err)
		}
		var out childResult
		if err := json.Unmarshal([]byte(line), &out); err != nil {
			return res, fmt.Errorf("subscriber process %d: %w", i, err)
		}
		if out.Error != "" {
			return res, fmt.Errorf("subscriber process %d: %s", i, out.Error)
		}
		raw, _ := base64.StdEncoding.DecodeString(out.Latencies)
		for j := 0; j+8 <= len(raw); j += 8 {
			all = append(all, time.Duration(binary.LittleEndian.Uint64(raw[j:])))
		}
		res.Missing += out.Missing
	}
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
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

// childResult is a subscriber process's answer: every counted latency, as
// little-endian int64 nanoseconds in base64, and the deliveries it missed.
type childResult struct {
	Latencies string `json:"latencies"`
	Missing   int64  `json:"missing"`
	Error     string `json:"error,omitempty"`
}

// RunChild is a subscriber process: it opens the subscriptions its spec
// names, prints "ready" once each holds its Reset, counts every update
// whose value is a send time (warm-up updates are not), and prints a
// childResult once every subscriber has its updates (or after a minute
// without them).
func RunChild(specJSON string, stdout io.Writer) int {
	var spec childSpec
	fail := func(err error) int {
		b, _ := json.Marshal(childResult{Error: err.Error()})
		fmt.Fprintf(stdout, "%s\n", b)
		return 1
	}
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lat := make([][]time.Duration, spec.Subscribers)
	var ready, counted sync.WaitGroup
	var failed atomic.Value
	// record counts one delivered value; it reports whether subscriber i
	// has all its updates.
	record := func(i int, value []byte) bool {
		sent, err := strconv.ParseInt(string(value), 10, 64)
		if err == nil {
			lat[i] = append(lat[i], time.Since(time.Unix(0, sent)))
		}
		return len(lat[i]) >= spec.Updates
	}
	var subscribe func(i int, markReady func(error))
	switch spec.Target {
	case TargetEtcd, TargetGRPCProxy:
		clis := make([]*clientv3.Client, spec.Conns)
		for i := range clis {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{spec.Addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return fail(err)
			}
			defer cli.Close()
			clis[i] = cli
		}
		subscribe = func(i int, markReady func(error)) {
			wch := clis[i%len(clis)].Watch(ctx, spec.Key, clientv3.WithCreatedNotify())
			for wr := range wch {
				if err := wr.Err(); err != nil {
					markReady(err)
					return
				}
				if wr.Created {
					markReady(nil)
				}
				for _, ev := range wr.Events {
					if record(i, ev.Kv.Value) {
						return
					}
				}
			}
			markReady(fmt.Errorf("watch closed"))
		}
	default:
		conns := make([]*grpc.ClientConn, spec.Conns)
		for i := range conns {
			cc, err := grpc.NewClient(spec.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return fail(err)
			}
			defer cc.Close()
			conns[i] = cc
		}
		subscribe = func(i int, markReady func(error)) {
			st, err := confettipb.NewCacheClient(conns[i%len(conns)]).Subscribe(ctx)
			if err == nil {
				err = st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{Tenant: spec.Tenant, Prefixes: []string{"kv/tick"}}}})
			}
			if err != nil {
				markReady(err)
				return
			}
			for {
				m, err := st.Recv()
				if err != nil {
					markReady(err)
					return
				}
				if r := m.GetReset_(); r != nil && r.Last {
					markReady(nil)
				}
				for _, t := range m.GetEvents().GetTxns() {
					for _, ev := range t.Events {
						if record(i, ev.Kv.Value) {
							return
						}
					}
				}
			}
		}
	}
	for i := 0; i < spec.Subscribers; i++ {
		ready.Add(1)
		counted.Add(1)
		go func() {
			defer counted.Done()
			var once sync.Once
			subscribe(i, func(err error) {
				once.Do(func() {
					if err != nil {
						failed.Store(err)
					}
					ready.Done()
				})
			})
		}()
	}
	ready.Wait()
	if err, ok := failed.Load().(error); ok {
		return fail(err)
	}
	fmt.Fprintln(stdout, "ready")
	done := make(chan struct{})
	go func() { counted.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cancel()
		<-done
	}
	var out childResult
	buf := make([]byte, 0, 8*spec.Subscribers*spec.Updates)
	for _, l := range lat {
		for _, d := range l {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(d))
		}
		out.Missing += int64(spec.Updates - len(l))
	}
	out.Latencies = base64.StdEncoding.EncodeToString(buf)
	b, _ := json.Marshal(out)
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}

// embeddedEtcdWatchers reads etcd's watcher gauge, which the etcd servers
// embedded in this process share through the default Prometheus registry.
func embeddedEtcdWatchers() int {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return -1
	}
	for _, f := range families {
		if f.GetName() == "etcd_debugging_mvcc_watcher_total" {
			total := 0.0
			for _, m := range f.GetMetric() {
				total += m.GetGauge().GetValue()
			}
			return int(total)
		}
	}
	return -1
}
