package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// Report is what a run found, written to its directory as summary.md and
// summary.json, with operations.jsonl (every request), timeline.jsonl
// (the faults), streams.jsonl (every subscriber) and
// linearizability.html (porcupine's visualisation of the history).
type Report struct {
	Scenario string   `json:"scenario"`
	About    string   `json:"about"`
	Seed     uint64   `json:"seed"`
	Dir      string   `json:"dir"`
	Tenants  []Tenant `json:"tenants"`
	Timeline []Event  `json:"-"`
	History  []Op     `json:"-"`

	Ops          int    `json:"ops"`
	Faults       int    `json:"faults"`
	Linearizable string `json:"linearizable"`
	Writes       writeCheck
	Subscribers  int `json:"subscribers"`
	// Events counts events delivered to subscribers; Resets the Resets
	// after each subscriber's first; Resumes the failovers by replay.
	Events, Resets, Resumes int
	MaxLag                  time.Duration `json:"max_lag"`
	// Relists counts, per cache node and shard ("cache-2/shard-a"), the
	// listings of a shard after the node's first sync: only history etcd
	// compacted away may cause one.
	Relists      map[string]int64 `json:"relists"`
	Availability []Window         `json:"availability"`
	PerFault     []FaultFigure    `json:"per_fault"`
	// PerTenant splits each tenant's requests by the faults active.
	PerTenant []TenantAvailability `json:"per_tenant"`
	// ConvergeFinal is how long after the traffic stopped every
	// subscriber held the shards' last revision.
	ConvergeFinal time.Duration `json:"converge_final"`
	Violations    []string      `json:"violations"`

	// Registrations (including those made again), RegistrationsExpired
	// (leases found gone by the loop keeping them alive, allowed only on
	// a faulted shard), Releases (versions published and release
	// changes made) and ReleasesRefused.
	Registrations, RegistrationsExpired, Releases, ReleasesRefused int64

	streams  []streamSummary
	workload workloadStats
}

// FaultFigure is the recovery of one fault.
type FaultFigure struct {
	Fault            string        `json:"fault"`
	Shards           []string      `json:"shards,omitempty"`
	Injected, Healed time.Duration `json:"-"`
	// WriteAgainAfterInject and WriteAgainAfterHeal: until every tenant
	// of the faulted shards completed a write (-1: one never did).
	WriteAgainAfterInject, WriteAgainAfterHeal time.Duration
	// Subscribers counts those streaming from a faulted node at the
	// fault; Failover is the longest time one of them went without a
	// token across the fault.
	Subscribers int
	Failover    time.Duration
	// Back is how long after heal the last subscriber received its first
	// token; ConvergeP50 and ConvergeMax how long after heal subscribers
	// held the revision the shards were at when it healed.
	Back, ConvergeP50, ConvergeMax time.Duration
}

type streamSummary struct {
	Name      string        `json:"name"`
	Tenant    string        `json:"tenant"`
	Shard     string        `json:"shard"`
	Resets    int           `json:"resets"`
	Resumes   int           `json:"resumes"`
	Events    int           `json:"events"`
	MaxLag    time.Duration `json:"max_lag"`
	Endpoints []string      `json:"endpoints"`
	Violation string        `json:"violation,omitempty"`
}

// Pass reports a run without violations.
func (r *Report) Pass() bool { return len(r.Violations) == 0 }

// minAcked is the fewest acknowledged writes a run must make to count: a
// run whose traffic did not flow proves nothing.
const minAcked = 200

func (r *Report) check(sc Scenario, start time.Time, refs map[string]*watchcheck.Reference, subs []*subscriber, end time.Duration) {
	r.Ops = len(r.History)
	for _, ev := range r.Timeline {
		if ev.Kind == "inject" {
			r.Faults++
		}
	}
	// Linearizability of the proxies' KV, per key.
	res, err := linearizable(r.History, filepath.Join(r.Dir, "linearizability.html"), 2*time.Minute, faultAnnotations(r.Timeline))
	r.Linearizable = string(res)
	if err != nil {
		r.Violations = append(r.Violations, "linearizability visualisation: "+err.Error())
	}
	if res != "Ok" {
		r.Violations = append(r.Violations, fmt.Sprintf("linearizable: porcupine says %s (see linearizability.html)", res))
	}
	r.Writes = checkWrites(r.History, refs)
	if r.Writes.Lost > 0 || r.Writes.RefusedApplied > 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("writes: %d acknowledged and lost, %d refused and applied: %s", r.Writes.Lost, r.Writes.RefusedApplied, strings.Join(first(r.Writes.Examples, 3), "; ")))
	}
	if r.Writes.Acked < minAcked {
		r.Violations = append(r.Violations, fmt.Sprintf("traffic: only %d writes acknowledged, fewer than %d: the run proves nothing", r.Writes.Acked, minAcked))
	}

	// A lease may expire while its keepalives run only on a shard that
	// could not take them for longer than the TTL: etcd's leader revokes
	// overdue leases when it runs again (a frozen shard), unless a new
	// leader took over (which extends them).
	faulted := map[string]bool{}
	for _, ev := range r.Timeline {
		for _, s := range ev.Shards {
			faulted[s] = true
		}
	}
	r.workload.mu.Lock()
	for _, tn := range r.workload.expired {
		r.RegistrationsExpired++
		if !faulted[tn.Shard] {
			r.Violations = append(r.Violations, fmt.Sprintf("registrations: a lease of %s expired while its keepalive loop ran and no fault touched %s", tn.Name, tn.Shard))
		}
	}
	r.workload.mu.Unlock()
	r.Registrations = r.workload.Registered.Load()
	r.Releases, r.ReleasesRefused = r.workload.Published.Load()+r.workload.Released.Load(), r.workload.Refused.Load()
	if r.Registrations == 0 || r.Releases == 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("traffic: %d registrations and %d release changes: the run proves nothing about them", r.Registrations, r.Releases))
	}

	// Every subscriber's stream against etcd's.
	r.Subscribers = len(subs)
	for _, s := range subs {
		res, err := watchcheck.Check(refs[s.tenant.Shard], s.stream, cache.TokenRevision, watchcheck.Options{Merged: sc.Compacts, MaxTokenGap: 15 * time.Second})
		ss := streamSummary{Name: s.name, Tenant: s.tenant.Name, Shard: s.tenant.Shard, Resets: res.Resets, Resumes: res.Resumes, Events: res.Events, MaxLag: s.maxLag}
		for _, e := range s.endpoints {
			ss.Endpoints = append(ss.Endpoints, fmt.Sprintf("%v %s", e.at.Round(time.Millisecond), e.endpoint))
		}
		if err != nil {
			ss.Violation = err.Error()
			r.Violations = append(r.Violations, fmt.Sprintf("subscriber %s (%s on %s): %s", s.name, s.tenant.Name, s.tenant.Shard, firstLine(err.Error())))
		}
		if !sc.Compacts && res.Resets > 1 {
			r.Violations = append(r.Violations, fmt.Sprintf("subscriber %s: %d Resets with no compaction: a failover or a cache node's relist replaced etcd's events", s.name, res.Resets))
		}
		r.Events += res.Events
		r.Resets += max(res.Resets-1, 0)
		r.Resumes += res.Resumes
		r.MaxLag = max(r.MaxLag, s.maxLag)
		r.streams = append(r.streams, ss)
	}
	var relisted []string
	for k, n := range r.Relists {
		if n > 0 {
			relisted = append(relisted, fmt.Sprintf("%s %d", k, n))
		}
	}
	slices.Sort(relisted)
	if !sc.Compacts && len(relisted) > 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("relists: cache nodes listed shards again though nothing was compacted: %s", strings.Join(relisted, ", ")))
	}
	if r.Events == 0 {
		r.Violations = append(r.Violations, "traffic: no event reached a subscriber")
	}
	r.Availability = availability(r.History, r.Timeline, end)
	r.PerTenant = tenantAvailability(r.History, r.Timeline, r.Tenants)
	r.PerFault = faultFigures(start, r.History, r.Timeline, r.Tenants, subs)
}

// faultFigures measures the recovery of every fault of the timeline.
func faultFigures(start time.Time, history []Op, timeline []Event, tenants []Tenant, subs []*subscriber) []FaultFigure {
	var out []FaultFigure
	for _, inj := range timeline {
		if inj.Kind != "inject" {
			continue
		}
		f := FaultFigure{Fault: inj.Fault, Shards: inj.Shards, Injected: inj.At, Healed: -1}
		var healed *Event
		for i := range timeline {
			if timeline[i].Step == inj.Step && timeline[i].Kind == "healed" {
				healed = &timeline[i]
				f.Healed = healed.At
			}
		}
		f.WriteAgainAfterInject, f.WriteAgainAfterHeal = -1, -1
		for _, sh := range inj.Shards {
			if d, ok := writeAgain(history, sh, inj.At, tenants); ok {
				f.WriteAgainAfterInject = max(f.WriteAgainAfterInject, d)
			}
			if healed != nil {
				if d, ok := writeAgain(history, sh, healed.At, tenants); ok {
					f.WriteAgainAfterHeal = max(f.WriteAgainAfterHeal, d)
				}
			}
		}
		var converge []time.Duration
		for _, s := range subs {
			if s.cli == nil && inj.Fault != (StopReading{}).Name() {
				continue // a raw subscriber hears nothing while it is not reading
			}
			toks := s.stream.Tokens()
			at := func(d time.Duration) time.Time { return start.Add(d) }
			// A subscriber streaming from a part this fault stopped.
			if node := faultNode(inj.Fault); node != "" && s.endpointAt(inj.At) == node {
				f.Subscribers++
				var before, after time.Time
				for _, t := range toks {
					if !t.At.After(at(inj.At)) {
						before = t.At
					} else if after.IsZero() {
						after = t.At
					}
				}
				if !before.IsZero() && !after.IsZero() {
					f.Failover = max(f.Failover, after.Sub(before))
				}
			}
			if healed == nil {
				continue
			}
			for _, t := range toks {
				if t.At.After(at(healed.At)) {
					f.Back = max(f.Back, t.At.Sub(at(healed.At)))
					break
				}
			}
			want := healed.Revisions[s.tenant.Shard]
			for _, t := range toks {
				if rev, err := cache.TokenRevision(t.Token); err == nil && rev >= want && t.At.After(at(healed.At)) {
					converge = append(converge, t.At.Sub(at(healed.At)))
					break
				}
			}
		}
		if len(converge) > 0 {
			slices.Sort(converge)
			f.ConvergeP50, f.ConvergeMax = converge[len(converge)/2], converge[len(converge)-1]
		}
		out = append(out, f)
	}
	return out
}

// faultNode is the confetti node a fault stops, from its name ("SIGSTOP
// cache-1", "kill cache-1"), or "".
func faultNode(name string) string {
	for _, p := range []string{"SIGSTOP cache-", "kill cache-"} {
		if rest, ok := strings.CutPrefix(name, p); ok && !strings.Contains(rest, ",") {
			return "cache-" + rest
		}
	}
	return ""
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (r *Report) write() error {
	if err := writeJSONLines(filepath.Join(r.Dir, "operations.jsonl"), r.History); err != nil {
		return err
	}
	if err := writeJSONLines(filepath.Join(r.Dir, "timeline.jsonl"), r.Timeline); err != nil {
		return err
	}
	if err := writeJSONLines(filepath.Join(r.Dir, "streams.jsonl"), r.streams); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "summary.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dir, "summary.md"), []byte(r.Markdown()), 0o644)
}

func writeJSONLines[T any](path string, items []T) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func ms(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// Markdown is the report's summary: the figures, the faults and the
// availability table.
func (r *Report) Markdown() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Pass() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "# chaos %s (seed %d): %s\n\n%s\n\n", r.Scenario, r.Seed, verdict, r.About)
	fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| operations | %d |\n| faults | %d |\n", r.Ops, r.Faults)
	fmt.Fprintf(&b, "| writes acknowledged / lost | %d / %d |\n", r.Writes.Acked, r.Writes.Lost)
	fmt.Fprintf(&b, "| writes of unknown outcome / refused / refused but applied | %d / %d / %d |\n", r.Writes.Unknown, r.Writes.Refused, r.Writes.RefusedApplied)
	fmt.Fprintf(&b, "| linearizable (porcupine) | %s |\n", r.Linearizable)
	fmt.Fprintf(&b, "| instances registered / leases expired while kept alive | %d / %d |\n", r.Registrations, r.RegistrationsExpired)
	fmt.Fprintf(&b, "| item versions published and release changes / refused | %d / %d |\n", r.Releases, r.ReleasesRefused)
	fmt.Fprintf(&b, "| subscribers checked / violations | %d / %d |\n", r.Subscribers, countPrefix(r.Violations, "subscriber "))
	fmt.Fprintf(&b, "| events delivered | %d |\n", r.Events)
	fmt.Fprintf(&b, "| failovers by replay / by Reset | %d / %d |\n", r.Resumes, r.Resets)
	fmt.Fprintf(&b, "| largest subscriber lag seen | %s |\n", ms(r.MaxLag))
	fmt.Fprintf(&b, "| shards listed again by cache nodes (relists) | %s |\n", relistsText(r.Relists))
	fmt.Fprintf(&b, "| every subscriber at the last revision, after traffic stopped | %s |\n\n", ms(r.ConvergeFinal))
	fmt.Fprintf(&b, "## Faults\n\n| fault | at | healed | writes again after inject / heal | subscribers on the node / longest gap | back after heal | converged after heal p50 / max |\n|---|---|---|---|---|---|---|\n")
	for _, f := range r.PerFault {
		writes, subs := "-", "-"
		if len(f.Shards) > 0 {
			writes = ms(f.WriteAgainAfterInject) + " / " + ms(f.WriteAgainAfterHeal)
		}
		if f.Subscribers > 0 {
			subs = fmt.Sprintf("%d / %s", f.Subscribers, ms(f.Failover))
		}
		fmt.Fprintf(&b, "| %s | %.1f s | %.1f s | %s | %s | %s | %s / %s |\n", f.Fault, f.Injected.Seconds(), f.Healed.Seconds(), writes, subs, ms(f.Back), ms(f.ConvergeP50), ms(f.ConvergeMax))
	}
	fmt.Fprintf(&b, "\n## Availability (requests that succeeded, by window)\n\n| window | active faults | tenants of faulted shards | other tenants |\n|---|---|---|---|\n")
	for _, w := range r.Availability {
		faults := strings.Join(w.Faults, "; ")
		if faults == "" {
			faults = "none"
		}
		fmt.Fprintf(&b, "| %.1f-%.1f s | %s | %s | %s |\n", w.From.Seconds(), w.To.Seconds(), faults, ratio(w.FaultedOK, w.FaultedAll), ratio(w.UnfaultedOK, w.UnfaultedAll))
	}
	fmt.Fprintf(&b, "\n## Availability per tenant\n\n| tenant | shard | a fault on its shard | other faults only | no fault |\n|---|---|---|---|---|\n")
	for _, a := range r.PerTenant {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", a.Tenant, a.Shard, ratio(a.FaultedOK, a.FaultedAll), ratio(a.OtherFaultOK, a.OtherFaultAll), ratio(a.CalmOK, a.CalmAll))
	}
	fmt.Fprintf(&b, "\n## Violations\n\n")
	if r.Pass() {
		b.WriteString("none\n")
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "- %s\n", v)
	}
	return b.String()
}

func relistsText(m map[string]int64) string {
	var out []string
	for k, n := range m {
		if n > 0 {
			out = append(out, fmt.Sprintf("%s: %d", k, n))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func countPrefix(s []string, p string) int {
	n := 0
	for _, v := range s {
		if strings.HasPrefix(v, p) {
			n++
		}
	}
	return n
}
