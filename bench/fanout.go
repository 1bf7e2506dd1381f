package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
)

// FanoutResult is one fan-out run: one target, N subscribers, one
// multiplexing setting.
type FanoutResult struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	// Views is "same" (a tenant's subscribers share one view) or
	// "distinct" (every subscription has its own).
	Views          string `json:"views"`
	N              int    `json:"n"`
	StreamsPerConn int    `json:"streams_per_conn"`
	Conns          int    `json:"conns"`
	Procs          int    `json:"procs"`
	Tenants        int    `json:"tenants"`
	Shards         int    `json:"shards"`
	CacheNodes     int    `json:"cache_nodes,omitempty"`
	Updates        int    `json:"updates"`
	Warmup         int    `json:"warmup"`
	IntervalMs     int64  `json:"interval_ms"`
	// Expected deliveries (every subscriber, every update of its tenant),
	// those that arrived, and those that did not.
	Expected  int64 `json:"expected"`
	Delivered int64 `json:"delivered"`
	Missing   int64 `json:"missing"`
	// Disorder counts updates a subscriber received twice or out of order.
	Disorder int64 `json:"disorder"`
	// Restarts counts watches etcd or its grpc-proxy canceled, which the
	// subscribers watched again from the next revision.
	Restarts int `json:"restarts"`
	// Latency is from each update's intended send time to its delivery.
	Latency Latency    `json:"latency"`
	CDF     []CDFPoint `json:"cdf,omitempty"`
	// EventsPerSec is the deliveries over the time from the first
	// measured update's intended send time to the last delivery.
	EventsPerSec float64 `json:"events_per_sec"`
	// ServerCPUPerEvent is the CPU time of the harness process (the
	// servers: etcd, cache nodes, proxies, floor, and the writer) per
	// delivered event, in microseconds; ClientCPUPerEvent the subscriber
	// processes', and ClientCPUSeconds their total.
	ServerCPUPerEvent float64 `json:"server_cpu_us_per_event"`
	ClientCPUPerEvent float64 `json:"client_cpu_us_per_event"`
	ClientCPUSeconds  float64 `json:"client_cpu_seconds"`
	// ServerRSSPerSub and ServerHeapPerSub are the growth of the harness
	// process's resident set and Go heap from before the subscribers
	// connected to when all were ready, per subscriber, in bytes
	// (connections included).
	ServerRSSPerSub  float64 `json:"server_rss_bytes_per_sub"`
	ServerHeapPerSub float64 `json:"server_heap_bytes_per_sub"`
	// EtcdWatchers is the watchers the run added in the etcd shards while
	// its subscribers were connected.
	EtcdWatchers int `json:"etcd_watchers"`
	// EtcdSentPerUpdate is the bytes of gRPC responses the etcd servers
	// encoded per update sent, watch responses included: what the
	// subscribers cost etcd.
	EtcdSentPerUpdate float64 `json:"etcd_sent_bytes_per_update"`
	// P99VsFloor and P99VsEtcd are the p99 latency over that of floor and
	// of etcd in the same run (0: not measured).
	P99VsFloor float64 `json:"p99_vs_floor,omitempty"`
	P99VsEtcd  float64 `json:"p99_vs_etcd,omitempty"`
	// P99VsTCPFloor and CPUVsTCPFloor are the p99 latency and the server
	// CPU per delivered event over those of tcpfloor in the same run.
	P99VsTCPFloor float64 `json:"p99_vs_tcpfloor,omitempty"`
	CPUVsTCPFloor float64 `json:"cpu_vs_tcpfloor,omitempty"`
	Error         string  `json:"error,omitempty"`
}

// fanoutEnv is the cluster of the fan-out scenarios, and the etcd
// watchers and open files it has with no target running.
type fanoutEnv struct {
	*cluster
	baseWatchers, baseFiles int
}

// settle waits until the previous run has released what it held.
func (e *fanoutEnv) settle(ctx context.Context) { settle(ctx, e.baseWatchers, e.baseFiles) }

func startFanoutEnv(ctx context.Context, cfg Config) (*fanoutEnv, error) {
	names := make([]string, cfg.Tenants)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%d", i)
	}
	cl, err := startCluster(ctx, cfg.Shards, false, names)
	if err != nil {
		return nil, err
	}
	return &fanoutEnv{cluster: cl, baseWatchers: etcdWatchers(), baseFiles: openFiles()}, nil
}

// schedule is the tenant of each measured update, drawn from the seed, so
// that every target of an invocation gets the same sequence.
func schedule(cfg Config) []int {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed))
	s := make([]int, cfg.Updates)
	for i := range s {
		s[i] = rng.IntN(cfg.Tenants)
	}
	return s
}

// target is one target of a run, started: the addresses each tenant's
// subscribers connect to, how an update is written, and how it stops.
type target struct {
	addrs func(t meta.Tenant) []string
	put   func(ctx context.Context, t meta.Tenant, value string) error
	stop  func()
}

// putEtcd writes an update straight to the tenant's shard, as an
// application on etcd would.
func (e *fanoutEnv) putEtcd(ctx context.Context, t meta.Tenant, value string) error {
	_, cli, err := e.shardOf(t)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, keys.KV(t.Name)+tickKey, value)
	return err
}

func (e *fanoutEnv) startTarget(ctx context.Context, name string, cacheNodes int) (*target, error) {
	var stops []func()
	tg := &target{put: e.putEtcd, stop: func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}}
	fail := func(err error) (*target, error) {
		tg.stop()
		return nil, err
	}
	switch name {
	case TargetFloor:
		f := NewFloor()
		srv, err := startServer(func(s *grpc.Server) { confettipb.RegisterCacheServer(s, f) }, nil)
		if err != nil {
			return nil, err
		}
		stops = append(stops, srv.stop)
		tg.addrs = func(meta.Tenant) []string { return []string{srv.addr} }
		tg.put = func(_ context.Context, t meta.Tenant, v string) error { f.Publish(t.Name, v); return nil }
	case TargetTCPFloor:
		f, err := StartTCPFloor()
		if err != nil {
			return nil, err
		}
		stops = append(stops, f.Close)
		tg.addrs = func(meta.Tenant) []string { return []string{f.Addr()} }
		tg.put = func(_ context.Context, t meta.Tenant, v string) error { f.Publish(t.Name, v); return nil }
	case TargetConfetti, TargetSSE, TargetEtcdAPI:
		var addrs []string
		for i := range cacheNodes {
			n, err := e.startCacheNode(ctx, fmt.Sprintf("cache-%d", i+1))
			if err != nil {
				return fail(err)
			}
			stops = append(stops, n.stop)
			addr, stop, err := n.door(name)
			if err != nil {
				return fail(err)
			}
			stops = append(stops, stop)
			addrs = append(addrs, addr)
		}
		tg.addrs = func(meta.Tenant) []string { return addrs }
	case TargetEtcd:
		tg.addrs = func(t meta.Tenant) []string {
			sh, _, _ := e.shardOf(t)
			return []string{strings.TrimPrefix(sh.Endpoints()[0], "http://")}
		}
	case TargetGRPCProxy:
		// One grpc-proxy per shard, as etcd users deploy it in front of
		// each cluster.
		addrs := map[string]string{}
		for i, id := range e.shardIDs {
			cli, err := e.shards[i].Client()
			if err != nil {
				return fail(err)
			}
			pctx, cancel := context.WithCancel(context.Background())
			wp, _ := grpcproxy.NewWatchProxy(pctx, zap.NewNop(), cli)
			stops = append(stops, func() { cancel(); cli.Close() })
			srv, err := startServer(func(s *grpc.Server) { etcdserverpb.RegisterWatchServer(s, wp) }, nil)
			if err != nil {
				return fail(err)
			}
			stops = append(stops, srv.stop)
			addrs[id] = srv.addr
		}
		tg.addrs = func(t meta.Tenant) []string { return []string{addrs[t.Shard]} }
	default:
		return nil, fmt.Errorf("bench: unknown target %q", name)
	}
	return tg, nil
}

// door serves the front door of the node that target's subscribers
// use, and returns its address and what stops it: the node's gRPC
// listener itself, its Server-Sent Events handler, or an etcd front door
// that reads and watches through the node's gRPC listener, as the cache
// role wires it.
func (n *cacheNode) door(target string) (string, func(), error) {
	switch target {
	case TargetSSE:
		return startHTTP(n.cache.HTTPHandler(nil))
	case TargetEtcdAPI:
		pool, err := etcdapi.DialPool(etcdapi.CacheConns, func() (*grpc.ClientConn, error) {
			return grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), windows[0], windows[1])
		})
		if err != nil {
			return "", nil, err
		}
		lis, err := etcdapi.New(etcdapi.Config{Cache: pool, ClusterName: "bench", Logger: zap.NewNop()}).Listen("127.0.0.1:0")
		if err != nil {
			pool.Close()
			return "", nil, err
		}
		return lis.Addr(), func() { lis.Close(); pool.Close() }, nil
	}
	return n.addr, func() {}, nil
}

// runFanout measures one target with n subscribers, perConn streams per
// connection.
func (h *harness) runFanout(ctx context.Context, e *fanoutEnv, scenario, name string, n, perConn int) (res FanoutResult, err error) {
	cfg := h.cfg
	procs := cfg.procsFor(scenario, n)
	res = FanoutResult{
		Scenario: scenario, Target: name, N: n, StreamsPerConn: perConn, Procs: procs, Views: viewsName(cfg.DistinctViews),
		Tenants: cfg.Tenants, Shards: cfg.Shards, Updates: cfg.Updates, Warmup: cfg.Warmup, IntervalMs: cfg.Interval.Milliseconds(),
	}
	if cacheTarget(name) {
		res.CacheNodes = cfg.CacheNodes
	}
	if httpTarget(name) {
		perConn = 1
		res.StreamsPerConn = 1
	}
	sched := schedule(cfg)
	expect := make([]int64, cfg.Tenants)
	for _, t := range sched {
		expect[t]++
	}
	e.settle(ctx)
	tg, err := e.startTarget(ctx, name, cfg.CacheNodes)
	if err != nil {
		return res, err
	}
	defer tg.stop()

	base := childSpec{Mode: modeFanout, Target: name, StreamsPerConn: perConn, DistinctViews: cfg.DistinctViews, DrainTimeout: cfg.DrainTimeout}
	for i, t := range e.tenants {
		key := keys.KV(t.Name) + tickKey
		if name == TargetEtcdAPI {
			// The front door serves the tenant's own keys.
			key = tickKey
		}
		base.Tenants = append(base.Tenants, childTenant{Name: t.Name, Key: key, Addrs: tg.addrs(t), Expect: expect[i]})
	}
	specs := splitSpecs(base, n, procs)
	for _, s := range specs {
		res.Conns += connsOf(s)
		res.Expected += expectedOf(s)
	}
	if limit := raiseOpenFiles(); uint64(res.Conns)+1000 > limit {
		return res, fmt.Errorf("bench: %d connections need more than this process's open-files limit of %d; use more streams per connection", res.Conns, limit)
	}

	mem0 := measureMemory()
	// Generous: setting up 10,000 subscribers of a slow target takes a
	// while on a shared machine, and the run itself is bounded.
	rctx, cancel := context.WithTimeout(ctx, 15*time.Minute+time.Duration(cfg.Warmup+cfg.Updates)*cfg.Interval+cfg.DrainTimeout)
	defer cancel()
	cs, err := startChildren(rctx, cfg.ChildArgs, specs)
	if err != nil {
		return res, err
	}
	defer cs.close()
	if err := cs.expect("ready"); err != nil {
		return res, err
	}
	mem1 := measureMemory()
	res.ServerRSSPerSub = float64(mem1.rss-mem0.rss) / float64(n)
	res.ServerHeapPerSub = float64(mem1.heap-mem0.heap) / float64(n)
	res.EtcdWatchers = etcdWatchers() - e.baseWatchers

	bar := startProgress(cfg.Progress, fmt.Sprintf("%s %s N=%d streams/conn=%d", scenario, name, n, perConn), cfg.Warmup+cfg.Updates)
	cpu0, sent0 := cpuTime(), etcdSentBytes()
	start := time.Now()
	for u := range cfg.Warmup + cfg.Updates {
		at := start.Add(time.Duration(u) * cfg.Interval)
		select {
		case <-rctx.Done():
			bar.finish()
			return res, rctx.Err()
		case <-time.After(time.Until(at)):
		}
		var t meta.Tenant
		var v string
		if u < cfg.Warmup {
			t, v = e.tenants[u%len(e.tenants)], warmupValue(u)
		} else {
			// The value carries the intended send time, not the actual
			// one: a writer that falls behind adds its delay to the
			// latency instead of hiding it (coordinated omission).
			t, v = e.tenants[sched[u-cfg.Warmup]], updateValue(int64(u), at)
		}
		if err := tg.put(rctx, t, v); err != nil {
			bar.finish()
			return res, fmt.Errorf("bench: put: %w", err)
		}
		bar.step()
	}
	bar.finish()
	if err := cs.send("sent"); err != nil {
		return res, err
	}
	results, err := cs.results()
	serverCPU := cpuTime() - cpu0
	res.EtcdSentPerUpdate = (etcdSentBytes() - sent0) / float64(cfg.Warmup+cfg.Updates)
	if err != nil {
		return res, err
	}
	h1 := newHistogram()
	var clientCPU time.Duration
	var lastRecv int64
	var incomplete, errs int
	firstErr := ""
	for _, r := range results {
		if r.Hist != nil {
			h1.Merge(hdrhistogram.Import(r.Hist))
		}
		res.Delivered += r.Delivered
		res.Missing += r.Missing
		res.Disorder += r.Disorder
		res.Restarts += r.Restarts
		incomplete += r.Incomplete
		errs += r.Errors
		if firstErr == "" {
			firstErr = r.FirstErr
		}
		clientCPU += r.CPU
		lastRecv = max(lastRecv, r.LastRecv)
	}
	res.Latency = summarizeHistogram(h1)
	res.CDF = cdf(h1)
	if res.Delivered > 0 {
		first := start.Add(time.Duration(cfg.Warmup) * cfg.Interval)
		if span := time.Unix(0, lastRecv).Sub(first); span > 0 {
			res.EventsPerSec = float64(res.Delivered) / span.Seconds()
		}
		res.ServerCPUPerEvent = float64(serverCPU.Microseconds()) / float64(res.Delivered)
		res.ClientCPUPerEvent = float64(clientCPU.Microseconds()) / float64(res.Delivered)
	}
	res.ClientCPUSeconds = clientCPU.Seconds()
	switch {
	case res.Missing > 0:
		return res, fmt.Errorf("%d of %d deliveries missing: %d of %d subscribers did not get every update (%d subscriber errors; first: %s)",
			res.Missing, res.Expected, incomplete, n, errs, firstErr)
	case res.Disorder > 0:
		return res, fmt.Errorf("%d updates delivered twice or out of order", res.Disorder)
	}
	return res, nil
}

// connsOf is how many client connections a subscriber process opens,
// and expectedOf how many deliveries it should see.
func connsOf(s childSpec) int {
	perAddr := map[string]int{}
	for i := range s.Subscribers {
		_, a := s.placement(i)
		perAddr[a]++
	}
	conns := 0
	for _, k := range perAddr {
		conns += (k + s.StreamsPerConn - 1) / s.StreamsPerConn
	}
	return conns
}

func expectedOf(s childSpec) int64 {
	var total int64
	for i := range s.Subscribers {
		t, _ := s.placement(i)
		total += t.Expect
	}
	return total
}

// ratios fills each result's ratios to floor, tcpfloor and etcd among the
// results of the same scenario, N and multiplexing.
func ratios(rs []FanoutResult) {
	for i := range rs {
		for _, b := range rs {
			if b.Scenario != rs[i].Scenario || b.N != rs[i].N || b.StreamsPerConn != rs[i].StreamsPerConn || b.Views != rs[i].Views || b.Latency.P99 == 0 || b.Error != "" {
				continue
			}
			switch b.Target {
			case TargetFloor:
				rs[i].P99VsFloor = rs[i].Latency.P99 / b.Latency.P99
			case TargetEtcd:
				rs[i].P99VsEtcd = rs[i].Latency.P99 / b.Latency.P99
			case TargetTCPFloor:
				rs[i].P99VsTCPFloor = rs[i].Latency.P99 / b.Latency.P99
				if b.ServerCPUPerEvent > 0 {
					rs[i].CPUVsTCPFloor = rs[i].ServerCPUPerEvent / b.ServerCPUPerEvent
				}
			}
		}
	}
}

func viewsName(distinct bool) string {
	if distinct {
		return "distinct"
	}
	return "same"
}
