package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Fault is a named injector: Inject breaks something, Heal repairs it
// and returns once the broken part serves again (the time it returns is
// the heal time of the figures).
type Fault interface {
	// Name names the fault in reports ("kill shard-a leader").
	Name() string
	// Shards are the shards whose tenants the fault touches directly; nil
	// when it touches no shard (a cache node, the subscribers' network).
	Shards() []string
	Inject(ctx context.Context, t *Topology) error
	Heal(ctx context.Context, t *Topology) error
}

// KillShard kills every member of a shard (or "meta") with SIGKILL (all
// its tenants lose their etcd) and restarts them at heal: a restarted
// shard, which the proxies must authenticate to again.
type KillShard struct{ Shard string }

func (f KillShard) Name() string     { return "kill " + f.Shard }
func (f KillShard) Shards() []string { return tenantShards(f.Shard) }
func (f KillShard) Inject(_ context.Context, t *Topology) error {
	return eachMember(t.Shard(f.Shard), func(m *Member) error { return m.Kill() })
}
func (f KillShard) Heal(ctx context.Context, t *Topology) error {
	return restartMembers(ctx, t.Shard(f.Shard).Members)
}

// FreezeShard stops every member of a shard (or "meta") with SIGSTOP:
// connections stay open and nothing answers, which only timeouts and
// progress checks notice.
type FreezeShard struct{ Shard string }

func (f FreezeShard) Name() string     { return "SIGSTOP " + f.Shard }
func (f FreezeShard) Shards() []string { return tenantShards(f.Shard) }

// tenantShards is the shards holding tenants among a fault's cluster:
// none for meta.
func tenantShards(cluster string) []string {
	if cluster == "meta" {
		return nil
	}
	return []string{cluster}
}
func (f FreezeShard) Inject(_ context.Context, t *Topology) error {
	return eachMember(t.Shard(f.Shard), func(m *Member) error { return m.Freeze() })
}
func (f FreezeShard) Heal(ctx context.Context, t *Topology) error {
	c := t.Shard(f.Shard)
	if err := eachMember(c, func(m *Member) error { return m.Thaw() }); err != nil {
		return err
	}
	return waitMembers(ctx, c.Members)
}

// KillLeader kills a shard's (or meta's, Shard "meta") current leader and
// restarts it at heal; Follower kills a follower instead.
type KillLeader struct {
	Shard    string
	Follower bool

	victim *Member
}

func (f *KillLeader) Name() string {
	if f.Follower {
		return "kill a follower of " + f.Shard
	}
	return "kill the leader of " + f.Shard
}
func (f *KillLeader) Shards() []string { return tenantShards(f.Shard) }
func (f *KillLeader) Inject(ctx context.Context, t *Topology) error {
	c := t.Shard(f.Shard)
	if c == nil {
		return fmt.Errorf("no cluster %s", f.Shard)
	}
	leader, err := t.Leader(ctx, c)
	if err != nil {
		return err
	}
	f.victim = leader
	if f.Follower {
		for _, m := range c.Members {
			if m != leader {
				f.victim = m
				break
			}
		}
	}
	return f.victim.Kill()
}
func (f *KillLeader) Heal(ctx context.Context, t *Topology) error {
	return restartMembers(ctx, []*Member{f.victim})
}

// KillNode kills confetti processes (proxies or cache nodes, by name) with
// SIGKILL and restarts them at heal, all at once.
type KillNode struct{ Names []string }

func (f KillNode) Name() string     { return "kill " + strings.Join(f.Names, ", ") }
func (f KillNode) Shards() []string { return nil }
func (f KillNode) Inject(_ context.Context, t *Topology) error {
	return eachNode(t, f.Names, func(n *Node) error { return n.Kill() })
}
func (f KillNode) Heal(ctx context.Context, t *Topology) error {
	if err := eachNode(t, f.Names, func(n *Node) error { return n.Start() }); err != nil {
		return err
	}
	return firstReady(ctx, t, f.Names)
}

// firstReady returns when the first of the named nodes serves, and leaves
// the others to come up on their own: a fleet's recovery is timed from
// the first node that can take it.
func firstReady(ctx context.Context, t *Topology, names []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(names))
	_ = eachNode(t, names, func(n *Node) error {
		go func() { errs <- n.WaitReady(ctx) }()
		return nil
	})
	var all []error
	for range names {
		err := <-errs
		if err == nil {
			return nil
		}
		all = append(all, err)
	}
	return errors.Join(all...)
}

// FreezeNode stops a confetti process with SIGSTOP and resumes it at heal.
type FreezeNode struct{ Node string }

func (f FreezeNode) Name() string     { return "SIGSTOP " + f.Node }
func (f FreezeNode) Shards() []string { return nil }
func (f FreezeNode) Inject(_ context.Context, t *Topology) error {
	return eachNode(t, []string{f.Node}, func(n *Node) error { return n.Freeze() })
}
func (f FreezeNode) Heal(ctx context.Context, t *Topology) error {
	return eachNode(t, []string{f.Node}, func(n *Node) error {
		if err := n.Thaw(); err != nil {
			return err
		}
		return n.WaitReady(ctx)
	})
}

// Partition cuts the links between two parts, named by prefix as in
// Topology.Links ("cache-1" and "shard-a"; "proxy" and "meta"; "gw" and
// "cache-2"): a blackhole, a delay with jitter, or a loss.
type Partition struct {
	From, To string
	// Delay and Jitter, when set, slow the path instead of cutting it;
	// Loss delays that fraction of chunks as lost segments.
	Delay, Jitter time.Duration
	Loss          float64
}

func (f Partition) Name() string {
	switch {
	case f.Delay > 0:
		return fmt.Sprintf("delay %s<->%s by %v+%v", f.From, f.To, f.Delay, f.Jitter)
	case f.Loss > 0:
		return fmt.Sprintf("lose %.0f%% %s<->%s", 100*f.Loss, f.From, f.To)
	}
	return fmt.Sprintf("blackhole %s<->%s", f.From, f.To)
}
func (f Partition) Shards() []string {
	if strings.HasPrefix(f.To, "shard-") && strings.HasPrefix(f.From, "proxy") {
		return []string{f.To[:len("shard-a")]}
	}
	return nil
}
func (f Partition) Inject(_ context.Context, t *Topology) error {
	links := t.Links(f.From, f.To)
	if len(links) == 0 {
		return fmt.Errorf("no link from %s to %s", f.From, f.To)
	}
	for _, l := range links {
		switch {
		case f.Delay > 0:
			l.Delay(f.Delay, f.Jitter)
		case f.Loss > 0:
			l.Loss(f.Loss)
		default:
			l.Blackhole()
		}
	}
	return nil
}
func (f Partition) Heal(_ context.Context, t *Topology) error {
	for _, l := range t.Links(f.From, f.To) {
		l.Heal()
	}
	return nil
}

// ReconnectStorm resets every subscriber connection at once: the whole
// fleet reconnects in the same instant.
type ReconnectStorm struct{}

func (ReconnectStorm) Name() string     { return "reset every subscriber connection" }
func (ReconnectStorm) Shards() []string { return nil }
func (ReconnectStorm) Inject(_ context.Context, t *Topology) error {
	for _, l := range t.Links("gw", "cache") {
		l.Reset()
	}
	return nil
}
func (ReconnectStorm) Heal(context.Context, *Topology) error { return nil }

// Compactions compacts every shard at a random recent revision every 100
// to 200 ms, and defragments one member of each shard once, until heal.
type Compactions struct {
	Seed uint64

	stop func()
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	n    int
}

func (f *Compactions) Name() string     { return "compact every 100-200 ms, defragment" }
func (f *Compactions) Shards() []string { return nil }
func (f *Compactions) Inject(ctx context.Context, t *Topology) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.stop = cancel
	for i, s := range t.Shards {
		cli, err := t.Etcd(s)
		if err != nil {
			cancel()
			return err
		}
		rng := rand.New(rand.NewPCG(f.Seed, uint64(i)))
		f.wg.Go(func() { f.loop(ctx, cli, s, rng) })
	}
	return nil
}

func (f *Compactions) loop(ctx context.Context, cli *clientv3.Client, s *Cluster, rng *rand.Rand) {
	defragged := false
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100*time.Millisecond + time.Duration(rng.Int64N(int64(100*time.Millisecond)))):
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.Get(rctx, "compaction-probe")
		if err == nil {
			rev := resp.Header.Revision - rng.Int64N(20)
			if rev > last {
				if _, err = cli.Compact(rctx, rev); err == nil {
					last = rev
					f.mu.Lock()
					f.n++
					f.mu.Unlock()
				}
			}
		}
		if err == nil && !defragged {
			_, err = cli.Defragment(rctx, "http://"+s.Members[rng.IntN(len(s.Members))].ClientAddr)
			defragged = err == nil
		}
		cancel()
		if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "compacted") {
			f.mu.Lock()
			f.err = err
			f.mu.Unlock()
		}
	}
}

func (f *Compactions) Heal(context.Context, *Topology) error {
	f.stop()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return fmt.Errorf("no compaction happened: %v", f.err)
	}
	return nil
}

func eachMember(c *Cluster, fn func(*Member) error) error {
	if c == nil {
		return errors.New("no such shard")
	}
	var errs []error
	for _, m := range c.Members {
		errs = append(errs, fn(m))
	}
	return errors.Join(errs...)
}

func eachNode(t *Topology, names []string, fn func(*Node) error) error {
	var errs []error
	for _, name := range names {
		found := false
		for _, n := range t.nodes() {
			if n.Name == name {
				found = true
				errs = append(errs, fn(n))
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("no node %s", name))
		}
	}
	return errors.Join(errs...)
}

func restartMembers(ctx context.Context, ms []*Member) error {
	for _, m := range ms {
		if err := m.Start(); err != nil {
			return err
		}
	}
	return waitMembers(ctx, ms)
}

func waitMembers(ctx context.Context, ms []*Member) error {
	for _, m := range ms {
		if err := m.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}
