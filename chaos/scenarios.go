package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// standardSpec is the topology of every scenario: meta, 3 shards of 3 etcd
// members, 2 shard proxies, 2 cache nodes with a 1 s bookmark interval.
var standardSpec = Spec{Shards: 3, Members: 3, Proxies: 2, Caches: 2, ProgressInterval: time.Second}

// backoffInitial is the SDK's default reconnect window, the subscribers'
// here.
const backoffInitial = time.Second

// scenario fills in the standard topology and traffic.
func scenario(name, about string, steps []Step, expect func(r *Report) []string) Scenario {
	return Scenario{Name: name, About: about, Spec: standardSpec, Tenants: 6, SubscribersPerTenant: 6,
		WritersPerTenant: 1, InstancesPerTenant: 3, Pause: 20 * time.Millisecond, Steps: steps, Recovery: 10 * time.Second, Expect: expect}
}

// Scenarios returns the standard set, scaled in time by scale (1 for make
// chaos; more for make chaos-long).
func Scenarios(scale float64) []Scenario {
	d := func(s float64) time.Duration { return time.Duration(s * scale * float64(time.Second)) }
	scs := []Scenario{
		scenario("shard-restart", "Every member of shard-b killed with SIGKILL and restarted: the proxies authenticate again (etcd's simple tokens die with the process) and the cache nodes' watches resume at their revision.",
			[]Step{{At: d(8), For: d(6), Fault: KillShard{Shard: "shard-b"}}},
			func(r *Report) []string {
				return within(r, "writes again after the shard is ready", 2*time.Second, func(f FaultFigure) time.Duration { return f.WriteAgainAfterHeal })
			}),
		scenario("shard-freeze", "Every member of shard-a stopped with SIGSTOP: nothing answers and no connection breaks. The cache nodes' stall detector must not block; a recovered watch resumes at its revision, with no relist.",
			[]Step{{At: d(8), For: d(10), Fault: FreezeShard{Shard: "shard-a"}}},
			func(r *Report) []string {
				return within(r, "writes again after the shard is thawed", 2*time.Second, func(f FaultFigure) time.Duration { return f.WriteAgainAfterHeal })
			}),
		scenario("cache-freeze", "cache-1 stopped with SIGSTOP: its subscribers hear no bookmark, treat the silence as a dead stream and resume on cache-2, while their lag grows.",
			[]Step{{At: d(8), For: d(12), Fault: FreezeNode{Node: "cache-1"}}},
			func(r *Report) []string {
				var out []string
				for _, f := range r.PerFault {
					if f.Subscribers == 0 {
						out = append(out, f.Fault+": no subscriber streamed from the frozen node")
					}
				}
				if r.MaxLag == 0 {
					out = append(out, "no subscriber's Stats.Lag grew while its node was frozen")
				}
				// Three silent bookmark intervals, then the SDK's reconnect
				// window, and a second for the new stream's first bookmark.
				return append(out, within(r, "a frozen node's subscriber without news", 3*standardSpec.ProgressInterval+backoffInitial+time.Second, func(f FaultFigure) time.Duration { return f.Failover })...)
			}),
		scenario("cache-restart", "Both cache nodes killed and restarted: every subscriber must be back soon after the first node serves, whatever backoff it reached while they were down.",
			[]Step{{At: d(8), For: d(4), Fault: KillNode{Names: []string{"cache-1", "cache-2"}}}},
			func(r *Report) []string {
				return within(r, "the last subscriber back after the first node served", 2*time.Second, func(f FaultFigure) time.Duration { return f.Back })
			}),
		scenario("leaders", "The leader of shard-a, meta's only member, a follower of shard-c, then proxy-1 (mid-transaction) killed in turn, each restarted; then proxy-2 and meta stopped with SIGSTOP.",
			[]Step{
				{At: d(6), For: d(4), Fault: &KillLeader{Shard: "shard-a"}},
				{At: d(12), For: d(4), Fault: &KillLeader{Shard: "meta"}},
				{At: d(18), For: d(4), Fault: &KillLeader{Shard: "shard-c", Follower: true}},
				{At: d(24), For: d(3), Fault: KillNode{Names: []string{"proxy-1"}}},
				{At: d(30), For: d(4), Fault: FreezeNode{Node: "proxy-2"}},
				{At: d(36), For: d(4), Fault: FreezeShard{Shard: "meta"}},
			}, nil),
		scenario("partitions", "Network faults between exactly two parts: cache-1 from shard-a, proxy-1 from meta, proxy-2 from shard-c (blackholes); subscribers to cache-2 delayed; proxy-1 to shard-b losing segments; raw subscribers that stop reading for 12 s; then every subscriber connection reset at once.",
			[]Step{
				{At: d(6), For: d(8), Fault: Partition{From: "cache-1", To: "shard-a"}},
				{At: d(8), For: d(10), Fault: Partition{From: "proxy-1", To: "meta"}},
				{At: d(16), For: d(6), Fault: Partition{From: "proxy-2", To: "shard-c"}},
				{At: d(24), For: d(6), Fault: Partition{From: "gw", To: "cache-2", Delay: 100 * time.Millisecond, Jitter: 50 * time.Millisecond}},
				{At: d(24), For: d(6), Fault: Partition{From: "proxy-1", To: "shard-b", Loss: 0.1}},
				{At: d(10), For: d(12), Fault: StopReading{}},
				{At: d(32), For: 0, Fault: ReconnectStorm{}},
			}, nil),
	}
	comp := scenario("compaction", "Every shard compacted at a random recent revision every 100-200 ms and defragmented, while cache-2 is cut from shard-a long enough for its revision to be compacted away: it must relist, and its subscribers still see etcd's state, in order, exactly once.",
		[]Step{
			{At: d(4), For: d(20), Fault: &Compactions{Seed: 1}},
			{At: d(8), For: d(8), Fault: Partition{From: "cache-2", To: "shard-a"}},
		}, func(r *Report) []string {
			if r.Relists["cache-2/shard-a"] == 0 {
				return []string{"cache-2 never listed shard-a again: its revision was not compacted away, the scenario tested less than it says"}
			}
			return nil
		})
	comp.Compacts = true
	return append(scs, comp)
}

// Find returns the standard scenario named name.
func Find(name string, scale float64) (Scenario, error) {
	var names []string
	for _, sc := range Scenarios(scale) {
		if sc.Name == name {
			return sc, nil
		}
		names = append(names, sc.Name)
	}
	return Scenario{}, fmt.Errorf("no scenario %q: choose one of %s (confetti chaos list)", name, strings.Join(names, ", "))
}

// within checks a per-fault figure of every fault against a bound; a
// negative figure (what it measures never happened) fails too.
func within(r *Report, what string, bound time.Duration, figure func(FaultFigure) time.Duration) []string {
	var out []string
	for _, f := range r.PerFault {
		v := figure(f)
		if v < 0 || v > bound {
			out = append(out, fmt.Sprintf("%s: %s took %s, target %v", f.Fault, what, ms(v), bound))
		}
	}
	if len(r.PerFault) == 0 {
		out = append(out, "no fault was injected")
	}
	return slices.Clip(out)
}

// Planted returns the scenario that shows the planted bug named bug (see
// internal/plant) is caught, and what the violation must say: a short run
// with no fault, against processes of a binary built with -tags
// chaosplant, the bug switched on in every one of them.
func Planted(bug string) (Scenario, string, error) {
	caught := map[string]string{
		"skip-event":        "subscriber ",
		"advance-token":     "subscriber ",
		"drop-second-event": "subscriber ",
		"ack-unapplied":     "writes: ",
	}
	want, ok := caught[bug]
	if !ok {
		return Scenario{}, "", fmt.Errorf("no planted bug %q", bug)
	}
	sc := scenario("plant-"+bug, "The planted bug "+bug+" switched on in every confetti process: a checker must catch it.", nil, nil)
	sc.Spec.Env = []string{"CONFETTI_PLANT=" + bug}
	sc.Tenants, sc.SubscribersPerTenant = 3, 3
	return sc, want, nil
}

// PlantedBugs are the bugs Planted knows.
var PlantedBugs = []string{"skip-event", "advance-token", "drop-second-event", "ack-unapplied"}
