package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// Step is one fault of a scenario: injected At after traffic starts,
// healed For later.
type Step struct {
	At, For time.Duration
	Fault   Fault
}

// Scenario is a topology, a traffic mix, a fault schedule and what must
// hold.
type Scenario struct {
	Name, About string
	Spec        Spec
	// Tenants, SubscribersPerTenant and WritersPerTenant size the
	// traffic (a writer of its own keeps a tenant's requests flowing
	// while another tenant's shard hangs); each writer waits Pause
	// between requests.
	Tenants, SubscribersPerTenant, WritersPerTenant int
	// InstancesPerTenant are service instances registered with a lease
	// and kept alive; each tenant also has an item released over and
	// over.
	InstancesPerTenant int
	Pause              time.Duration
	// Steps are the faults; Recovery is how long traffic runs after the
	// last heal.
	Steps    []Step
	Recovery time.Duration
	// Compacts: etcd's history is compacted under the subscribers, so a
	// cache node may relist (a transaction that merges several is then
	// allowed); otherwise every subscriber must see etcd's own
	// transactions and no Reset after its first.
	Compacts bool
	// Expect checks the scenario's own targets on the report and returns
	// what failed.
	Expect func(r *Report) []string
}

// Event is an entry of the fault timeline.
type Event struct {
	At     time.Duration `json:"at"`
	Step   int           `json:"step"`
	Kind   string        `json:"kind"` // inject, heal (begins), healed (the part serves again), error
	Fault  string        `json:"fault"`
	Shards []string      `json:"shards,omitempty"`
	Err    string        `json:"err,omitempty"`
	// Revisions, on a healed event, are the shards' revisions then.
	Revisions map[string]int64 `json:"revisions,omitempty"`
}

// Options are a run's settings that are not the scenario's.
type Options struct {
	Seed uint64
	// Out is the directory the run's report directory is made in.
	Out  string
	Bins Binaries
	// Logger receives progress.
	Logger *zap.Logger
}

// subscriber is one SDK client of the run, or a raw stream (cli nil), and
// what it was seen doing.
type subscriber struct {
	name   string
	tenant Tenant
	cli    *gateway.Client
	stream *watchcheck.Stream

	mu sync.Mutex
	// endpoints records the node the client streamed from over time
	// ("" while it streamed from none).
	endpoints []endpointAt
	maxLag    time.Duration
}

type endpointAt struct {
	at       time.Duration
	endpoint string
}

// endpointAt returns the endpoint the subscriber streamed from at at.
func (s *subscriber) endpointAt(at time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := ""
	for _, e := range s.endpoints {
		if e.at > at {
			break
		}
		ep = e.endpoint
	}
	return ep
}

// Run runs a scenario and returns its report; the report directory holds
// everything the run saw. err is for a run that could not be carried out
// (a topology that did not start); a run that found violations returns
// them in the report.
func Run(ctx context.Context, sc Scenario, opt Options) (*Report, error) {
	lg := opt.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	dir := filepath.Join(opt.Out, fmt.Sprintf("%s-seed%d", sc.Name, opt.Seed))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	lg.Info("starting topology", zap.String("scenario", sc.Name), zap.String("dir", dir))
	top, err := StartTopology(ctx, dir, opt.Bins, sc.Spec, opt.Seed)
	if err != nil {
		return nil, err
	}
	defer top.Stop()

	r := &Report{Scenario: sc.Name, About: sc.About, Seed: opt.Seed, Dir: dir}
	var proxies []*grpc.ClientConn
	var names []string
	for _, p := range top.Proxies {
		cc, err := Dial(p)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		proxies, names = append(proxies, cc), append(names, p.Name)
	}
	tenants, err := createTenants(ctx, proxies[0], top, sc.Tenants)
	if err != nil {
		return nil, err
	}
	r.Tenants = tenants

	refs := map[string]*watchcheck.Reference{}
	for _, s := range top.Shards {
		cli, err := top.Etcd(s)
		if err != nil {
			return nil, err
		}
		ref, err := watchcheck.StartReference(ctx, cli)
		if err != nil {
			return nil, err
		}
		defer ref.Stop()
		refs[s.Name] = ref
	}

	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	var subs []*subscriber
	for i, tn := range tenants {
		for j := range sc.SubscribersPerTenant {
			name := fmt.Sprintf("sub-%d-%d", i, j)
			// Every plain key, item (resolved for this identity) and service.
			st := &confettipb.Start{Tenant: tn.Name, Prefixes: []string{""}, Items: []string{"*"}, Services: []string{"*"}, Identity: &confettipb.Identity{InstanceId: name}}
			stream := watchcheck.NewStream(st)
			cli, err := gateway.New(gateway.Config{Endpoints: top.CacheEndpoints(), Tenant: tn.Name, Prefixes: st.Prefixes, Items: st.Items, Services: st.Services,
				Identity: gateway.Identity{InstanceID: name}, APIKey: top.OperatorKey, Observer: stream})
			if err != nil {
				return nil, err
			}
			if err := cli.Start(ctx); err != nil {
				return nil, err
			}
			defer cli.Close()
			subs = append(subs, &subscriber{name: name, tenant: tn, cli: cli, stream: stream})
		}
	}
	// A raw subscriber per tenant, which StopReading stops reading.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var readers sync.WaitGroup
	for i, tn := range tenants {
		name := fmt.Sprintf("reader-%d", i)
		st := &confettipb.Start{Tenant: tn.Name, Prefixes: []string{""}, Items: []string{"*"}, Services: []string{"*"}, Identity: &confettipb.Identity{InstanceId: name}}
		rd := &reader{start: st, stream: watchcheck.NewStream(st), key: top.OperatorKey}
		top.readers = append(top.readers, rd)
		readers.Go(func() { rd.run(readCtx, top.CacheEndpoints()) })
		subs = append(subs, &subscriber{name: name, tenant: tn, stream: rd.stream})
	}
	for _, s := range subs {
		if s.cli == nil {
			continue
		}
		select {
		case <-s.cli.Ready():
		case <-time.After(time.Minute):
			return nil, fmt.Errorf("subscriber %s not synced within a minute", s.name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// Watch where each subscriber streams from, and its lag.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampling sync.WaitGroup
	nodeAt := map[string]string{}
	for i, ep := range top.CacheEndpoints() {
		nodeAt[ep] = top.Caches[i].Name
	}
	sampling.Go(func() { sample(sampleCtx, subs, nodeAt, since) })

	tr := &traffic{start: start, tenants: tenants, proxies: proxies, names: names, key: top.OperatorKey, pause: sc.Pause}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	writers := tr.run(trafficCtx, sc.WritersPerTenant*len(tenants), opt.Seed)
	workload := tr.runWorkload(trafficCtx, sc.InstancesPerTenant, &r.workload)

	lg.Info("traffic running; faults scheduled", zap.Int("steps", len(sc.Steps)))
	var (
		tlMu     sync.Mutex
		timeline []Event
		healers  sync.WaitGroup
	)
	note := func(ev Event) {
		if ev.At == 0 {
			ev.At = since()
		}
		if ev.Kind == "healed" {
			ev.Revisions = map[string]int64{}
			for name, ref := range refs {
				ev.Revisions[name] = ref.Revision()
			}
		}
		tlMu.Lock()
		timeline = append(timeline, ev)
		tlMu.Unlock()
		lg.Info("fault", zap.String("kind", ev.Kind), zap.String("fault", ev.Fault), zap.String("err", ev.Err))
	}
	for i, st := range sc.Steps {
		healers.Go(func() {
			if !sleepUntil(ctx, start.Add(st.At)) {
				return
			}
			f := st.Fault
			at := since()
			if err := f.Inject(ctx, top); err != nil {
				note(Event{Step: i, Kind: "error", Fault: f.Name(), Err: "inject: " + err.Error()})
				return
			}
			note(Event{At: at, Step: i, Kind: "inject", Fault: f.Name(), Shards: f.Shards()})
			if !sleepUntil(ctx, start.Add(st.At+st.For)) {
				return
			}
			note(Event{Step: i, Kind: "heal", Fault: f.Name(), Shards: f.Shards()})
			hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := f.Heal(hctx, top); err != nil {
				note(Event{Step: i, Kind: "error", Fault: f.Name(), Err: "heal: " + err.Error()})
				return
			}
			note(Event{Step: i, Kind: "healed", Fault: f.Name(), Shards: f.Shards()})
		})
	}
	healers.Wait()
	sleepUntil(ctx, time.Now().Add(sc.Recovery))
	stopTraffic()
	writers.Wait()
	workload.Wait()
	lg.Info("traffic stopped; waiting for convergence")

	// Final reads of every checked key, once etcd and the proxies serve.
	finalReads(ctx, tr, tenants)
	trafficEnd := since()

	// Every subscriber converges to the revision each shard is at now.
	convergeStart := time.Now()
	final := map[string]int64{}
	for name, ref := range refs {
		cli, err := top.Etcd(top.Shard(name))
		if err != nil {
			return nil, err
		}
		resp, err := cli.Get(ctx, "converge-probe")
		if err != nil {
			return nil, fmt.Errorf("reading %s's revision: %w", name, err)
		}
		final[name] = resp.Header.Revision
		if err := ref.WaitRevision(ctx, resp.Header.Revision); err != nil {
			return nil, err
		}
	}
	r.Violations = append(r.Violations, converge(ctx, subs, final, time.Minute)...)
	r.ConvergeFinal = time.Since(convergeStart)
	r.Relists, err = relists(ctx, top)
	if err != nil {
		r.Violations = append(r.Violations, "cache status: "+err.Error())
	}
	stopSampling()
	sampling.Wait()
	stopReading()
	readers.Wait()
	for _, s := range subs {
		if s.cli != nil {
			s.cli.Close()
		}
	}

	tlMu.Lock()
	r.Timeline = slices.Clone(timeline)
	tlMu.Unlock()
	for _, ev := range r.Timeline {
		if ev.Kind == "error" {
			r.Violations = append(r.Violations, fmt.Sprintf("fault %q: %s", ev.Fault, ev.Err))
		}
	}
	history := tr.History()
	r.History = history
	r.check(sc, start, refs, subs, trafficEnd)
	if sc.Expect != nil {
		r.Violations = append(r.Violations, sc.Expect(r)...)
	}
	if err := r.write(); err != nil {
		return r, err
	}
	return r, nil
}

// relists asks every cache node how often it listed each shard again
// after its first sync ("cache-2/shard-a": 1).
func relists(ctx context.Context, top *Topology) (map[string]int64, error) {
	out := map[string]int64{}
	for _, n := range top.Caches {
		cc, err := Dial(n)
		if err != nil {
			return nil, err
		}
		var st *confettipb.CacheStatusResponse
		err = retry(ctx, 30*time.Second, func() error {
			var err error
			st, err = confettipb.NewCacheClient(cc).Status(metadata.AppendToOutgoingContext(ctx, "x-api-key", top.OperatorKey), &confettipb.CacheStatusRequest{})
			return err
		})
		cc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		for _, sh := range st.Shards {
			out[n.Name+"/"+sh.Shard] = sh.Relists
		}
	}
	return out, nil
}

// sample records the node every subscriber streams from when it changes
// (nodeAt names the node of an endpoint), and its largest lag.
func sample(ctx context.Context, subs []*subscriber, nodeAt map[string]string, since func() time.Duration) {
	for {
		for _, s := range subs {
			if s.cli == nil {
				continue
			}
			st := s.cli.Stats()
			s.mu.Lock()
			if n := len(s.endpoints); n == 0 || s.endpoints[n-1].endpoint != nodeAt[st.Endpoint] {
				s.endpoints = append(s.endpoints, endpointAt{since(), nodeAt[st.Endpoint]})
			}
			s.maxLag = max(s.maxLag, st.Lag)
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// converge waits until every subscriber holds a token at or past its
// shard's revision in want.
func converge(ctx context.Context, subs []*subscriber, want map[string]int64, bound time.Duration) []string {
	deadline := time.Now().Add(bound)
	for {
		var behind []string
		for _, s := range subs {
			rev, err := cache.TokenRevision(s.stream.LastToken())
			if err != nil || rev < want[s.tenant.Shard] {
				behind = append(behind, fmt.Sprintf("%s at revision %d of %s, want %d", s.name, rev, s.tenant.Shard, want[s.tenant.Shard]))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return []string{fmt.Sprintf("converged: %d subscribers not caught up within %v after the run, e.g. %s", len(behind), bound, behind[0])}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// finalReads reads every checked key once more after the faults, retrying
// until each read succeeds: the last word of the linearizability check.
func finalReads(ctx context.Context, tr *traffic, tenants []Tenant) {
	client := tr.clientID()
	for _, tn := range tenants {
		for k := range linKeys {
			deadline := time.Now().Add(time.Minute)
			for n := 0; ; n++ {
				op := Op{Client: client, Tenant: tn.Name, Shard: tn.Shard, Proxy: tr.names[n%len(tr.names)], Kind: "get", Key: fmt.Sprintf("lin/k%d", k)}
				tr.do(ctx, confettipb.NewKVClient(tr.proxies[n%len(tr.proxies)]), &op)
				tr.record(op)
				if op.OK || time.Now().After(deadline) || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}

// createTenants creates n tenants through a proxy and learns their shards;
// it creates more (up to 3n) until every shard holds one.
func createTenants(ctx context.Context, cc *grpc.ClientConn, top *Topology, n int) ([]Tenant, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", top.OperatorKey)
	tc := confettipb.NewTenantsClient(cc)
	var out []Tenant
	per := map[string]int{}
	for i := 0; i < 3*n; i++ {
		if len(out) >= n && len(per) == len(top.Shards) {
			break
		}
		var tn *confettipb.Tenant
		err := retry(ctx, time.Minute, func() error {
			var err error
			tn, err = tc.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: fmt.Sprintf("chaos-%d", i)})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("create tenant: %w", err)
		}
		out = append(out, Tenant{Name: tn.Name, Shard: tn.Shard})
		per[tn.Shard]++
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func retry(ctx context.Context, bound time.Duration, fn func() error) error {
	deadline := time.Now().Add(bound)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sleepUntil sleeps until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

// faultAnnotations shows the fault timeline above porcupine's history.
func faultAnnotations(timeline []Event) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, ev := range timeline {
		if ev.Kind != "inject" {
			continue
		}
		end := ev.At
		for _, h := range timeline {
			if h.Step == ev.Step && h.Kind == "healed" {
				end = h.At
			}
		}
		out = append(out, porcupine.Annotation{Tag: "faults", Start: int64(ev.At), End: int64(end), Description: ev.Fault, BackgroundColor: "#f4cccc"})
	}
	return out
}
