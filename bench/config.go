package bench

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// The scenarios, in the order Run runs them.
const (
	ScenarioFanout = "fanout"
	ScenarioScale  = "scale"
	ScenarioResume = "resume"
	ScenarioWrites = "writes"
	// ScenarioRelease grays an item's next version to half of N gateways
	// and compares it with a plain key update of the same size.
	ScenarioRelease = "release"
)

// Scenarios lists every scenario Run knows, in the order it runs them.
var Scenarios = []string{ScenarioFanout, ScenarioScale, ScenarioResume, ScenarioRelease, ScenarioWrites}

// The fan-out targets.
const (
	TargetFloor     = "floor"
	TargetTCPFloor  = "tcpfloor"
	TargetConfetti  = "confetti"
	TargetSSE       = "sse"
	TargetEtcd      = "etcd"
	TargetEtcdAPI   = "etcdapi"
	TargetGRPCProxy = "grpcproxy"
)

// Targets lists every fan-out target, in the order a run measures them.
var Targets = []string{TargetFloor, TargetTCPFloor, TargetConfetti, TargetSSE, TargetEtcd, TargetEtcdAPI, TargetGRPCProxy}

// etcdTarget reports whether a target's subscribers are clientv3
// watchers: of etcd itself, of its grpc-proxy, or of the cache nodes'
// etcd front door.
func etcdTarget(t string) bool {
	return t == TargetEtcd || t == TargetEtcdAPI || t == TargetGRPCProxy
}

// cacheTarget reports whether a target is served by Confetti's cache
// nodes.
func cacheTarget(t string) bool { return t == TargetConfetti || t == TargetSSE || t == TargetEtcdAPI }

// httpTarget reports whether a target's subscribers read Server-Sent
// Events over HTTP/1.1: a connection each, whatever the streams per
// connection of the run.
func httpTarget(t string) bool { return t == TargetSSE || t == TargetTCPFloor }

// Config is one invocation of the harness. Zero values mean the documented
// defaults, which depend on Quick and on the scenario.
type Config struct {
	// Scenarios to run, in any order; empty means all of Scenarios.
	Scenarios []string
	// Quick runs every scenario small and short (CI's check that the
	// harness works end to end); explicit settings below still win.
	Quick bool
	// N is the subscriber counts of the fanout, scale, resume and release
	// scenarios. Empty means 1000,10000 for fanout, 50000 for scale and
	// 10000 for resume and release (quick: 200, 400, 200 and 200).
	N []int
	// Targets of the fanout and scale scenarios. Empty means all of Targets for
	// fanout and confetti alone for scale.
	Targets []string
	// StreamsPerConn is how many subscriptions share one client connection
	// (for etcd targets, one clientv3 client); each value is a run, and 1
	// is one connection per subscriber. Empty means 100,1 for fanout and
	// 100 for scale and resume.
	StreamsPerConn []int
	// DistinctViews gives every subscription a view of its own (its
	// tenant's tick key and a prefix no other subscription names), so
	// that no target can send one message for several subscriptions of
	// a connection; false subscribes every subscription of a tenant to
	// the same key.
	DistinctViews bool
	// Interval is the time between two updates. Zero means 1s (quick:
	// 100ms). An interval shorter than one fan-out measures a saturated
	// target.
	Interval time.Duration
	// Updates is the measured updates per run; zero means 20 (quick: 5).
	Updates int
	// Warmup is the updates sent before them and not measured; zero means
	// 3 (quick: 2).
	Warmup int
	// Tenants is how many tenants the writer spreads updates over;
	// subscriber i follows tenant i mod Tenants. Zero means 1.
	Tenants int
	// Seed fixes which tenant each update goes to; every target of a run
	// gets the same sequence. Zero means 1.
	Seed uint64
	// Procs is the subscriber processes of a run; zero means one per
	// SubscribersPerProc subscribers.
	Procs int
	// SubscribersPerProc bounds the subscribers of one child process when
	// Procs is zero; zero means 10000 (the open-files limit is 20000 per
	// process).
	SubscribersPerProc int
	// CacheNodes is the cache nodes subscribers of confetti are spread
	// over; zero means 1. The resume scenario always uses 2.
	CacheNodes int
	// Shards is the etcd shard clusters of the fanout, scale and resume
	// scenarios; zero means 1. The writes scenario measures 1 and 3.
	Shards int
	// WriteOps is how many operations of each kind the writes scenario
	// times one at a time and then runs concurrently; zero means 2000
	// (quick: 200).
	WriteOps int
	// WriteClients is the concurrent writers of the throughput runs; zero
	// means 16.
	WriteClients int
	// Registrations is the instances of the writes scenario's
	// registration storm; zero means 5000 (quick: 200).
	Registrations int
	// ContentBytes is the size of the release scenario's item versions
	// and of its plain update; zero means 1024.
	ContentBytes int
	// DrainTimeout is how long subscribers may take, after the last
	// update, to receive everything; zero means 60s (quick: 20s).
	DrainTimeout time.Duration
	// Out is the directory results.json, results.md and the plots are
	// written to. Required.
	Out string
	// ChildArgs are the arguments this executable is started with to act
	// as a subscriber process (it also gets ChildEnv=1 and must call
	// RunChild). For the confetti binary: bench child; for a test binary
	// of this package: -test.run=^$.
	ChildArgs []string
	// Log receives the tables as runs finish; nil means none.
	Log io.Writer
	// Progress receives a progress bar when it is a terminal; nil means
	// none.
	Progress io.Writer
	// CommandLine is recorded in results.json.
	CommandLine string
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Scenarios) == 0 {
		c.Scenarios = slices.Clone(Scenarios)
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return c, fmt.Errorf("bench: unknown scenario %q (known: %v)", s, Scenarios)
		}
	}
	for _, t := range c.Targets {
		if !slices.Contains(Targets, t) {
			return c, fmt.Errorf("bench: unknown target %q (known: %v)", t, Targets)
		}
	}
	pick := func(v *int, normal, quick int) {
		if *v == 0 {
			*v = normal
			if c.Quick {
				*v = quick
			}
		}
	}
	if c.Interval == 0 {
		c.Interval = time.Second
		if c.Quick {
			c.Interval = 100 * time.Millisecond
		}
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = time.Minute
		if c.Quick {
			c.DrainTimeout = 20 * time.Second
		}
	}
	pick(&c.Updates, 20, 5)
	pick(&c.Warmup, 3, 2)
	pick(&c.Tenants, 1, 1)
	pick(&c.SubscribersPerProc, 10000, 10000)
	pick(&c.CacheNodes, 1, 1)
	pick(&c.Shards, 1, 1)
	pick(&c.WriteOps, 2000, 200)
	pick(&c.WriteClients, 16, 16)
	pick(&c.Registrations, 5000, 200)
	pick(&c.ContentBytes, 1024, 1024)
	if c.Seed == 0 {
		c.Seed = 1
	}
	switch {
	case c.Out == "":
		return c, errors.New("bench: an output directory is required")
	case len(c.ChildArgs) == 0:
		return c, errors.New("bench: ChildArgs must say how this executable runs a subscriber process")
	case c.Interval < 0 || c.DrainTimeout < 0:
		return c, errors.New("bench: interval and drain timeout must be positive")
	case c.Updates < 1 || c.Warmup < 0 || c.Tenants < 1 || c.Procs < 0 || c.SubscribersPerProc < 1 ||
		c.CacheNodes < 1 || c.Shards < 1 || c.WriteOps < 1 || c.WriteClients < 1 || c.Registrations < 1 || c.ContentBytes < 1:
		return c, errors.New("bench: updates, tenants, cache nodes, shards, write ops and clients must be at least 1; warm-up and procs at least 0")
	}
	for _, n := range c.N {
		if n < 1 {
			return c, fmt.Errorf("bench: N must be positive, not %d", n)
		}
	}
	for _, s := range c.StreamsPerConn {
		if s < 1 {
			return c, fmt.Errorf("bench: streams per connection must be positive, not %d", s)
		}
	}
	return c, nil
}

// runsOf is what one scenario runs: its subscriber counts, targets and
// streams per connection after defaults.
func (c Config) runsOf(scenario string) (ns []int, targets []string, perConn []int) {
	ns, targets, perConn = c.N, c.Targets, c.StreamsPerConn
	switch scenario {
	case ScenarioFanout:
		if ns == nil {
			ns = []int{1000, 10000}
			if c.Quick {
				ns = []int{200}
			}
		}
		if targets == nil {
			targets = Targets
		}
		if perConn == nil {
			perConn = []int{100, 1}
		}
	case ScenarioScale:
		if ns == nil {
			ns = []int{50000}
			if c.Quick {
				ns = []int{400}
			}
		}
		if targets == nil {
			targets = []string{TargetConfetti}
		}
		if perConn == nil {
			perConn = []int{100}
		}
	case ScenarioResume, ScenarioRelease:
		if ns == nil {
			ns = []int{10000}
			if c.Quick {
				ns = []int{200}
			}
		}
		targets = []string{TargetConfetti}
		if perConn == nil {
			perConn = []int{100}
		}
	}
	return ns, targets, perConn
}

// procsFor is the subscriber processes of a run of n subscribers. Quick
// runs of the scale scenario use two, so that a CI run exercises several
// processes and source addresses.
func (c Config) procsFor(scenario string, n int) int {
	if c.Procs > 0 {
		return min(c.Procs, n)
	}
	if c.Quick && scenario == ScenarioScale {
		return min(2, n)
	}
	return (n + c.SubscribersPerProc - 1) / c.SubscribersPerProc
}
