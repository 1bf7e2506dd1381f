package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Results is everything one invocation measured, as written to
// results.json.
type Results struct {
	Date        string   `json:"date"`
	CommandLine string   `json:"command_line,omitempty"`
	Machine     Machine  `json:"machine"`
	Settings    Settings `json:"settings"`
	// Fanout holds the runs of the fanout and scale scenarios.
	Fanout   []FanoutResult   `json:"fanout,omitempty"`
	Resume   []ResumeResult   `json:"resume,omitempty"`
	Release  []ReleaseResult  `json:"release,omitempty"`
	Writes   []WritesResult   `json:"writes,omitempty"`
	Register []RegisterResult `json:"register,omitempty"`
	Failures []string         `json:"failures,omitempty"`
	// Plots are the PNG files written next to results.json.
	Plots   []string `json:"plots,omitempty"`
	Seconds float64  `json:"seconds"`
}

// Settings are the workload settings every run of an invocation shares.
type Settings struct {
	Scenarios    []string `json:"scenarios"`
	Quick        bool     `json:"quick"`
	IntervalMs   int64    `json:"interval_ms"`
	Updates      int      `json:"updates"`
	Warmup       int      `json:"warmup"`
	Tenants      int      `json:"tenants"`
	Seed         uint64   `json:"seed"`
	Shards       int      `json:"shards"`
	CacheNodes   int      `json:"cache_nodes"`
	WriteOps     int      `json:"write_ops"`
	WriteClients int      `json:"write_clients"`
}

// harness runs the scenarios of one invocation.
type harness struct {
	cfg Config
	res *Results
	log io.Writer
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, format+"\n", args...)
}

// failed records a failed run; the invocation goes on and fails at the
// end.
func (h *harness) failed(what string, err error) string {
	msg := fmt.Sprintf("%s: %v", what, err)
	h.res.Failures = append(h.res.Failures, msg)
	h.logf("FAILED %s", msg)
	return err.Error()
}

// Run runs the configured scenarios and writes results.json, results.md
// and the plots to cfg.Out. It returns an error, after writing what was
// measured, when a run failed (a subscriber that missed an update fails
// its run).
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	began := time.Now()
	h := &harness{cfg: cfg, log: cfg.Log, res: &Results{
		Date: began.Format(time.RFC3339), CommandLine: cfg.CommandLine, Machine: describeMachine(),
		Settings: Settings{
			Scenarios: cfg.Scenarios, Quick: cfg.Quick, IntervalMs: cfg.Interval.Milliseconds(), Updates: cfg.Updates, Warmup: cfg.Warmup,
			Tenants: cfg.Tenants, Seed: cfg.Seed, Shards: cfg.Shards, CacheNodes: cfg.CacheNodes, WriteOps: cfg.WriteOps, WriteClients: cfg.WriteClients,
		},
	}}
	if h.log == nil {
		h.log = io.Discard
	}
	raiseOpenFiles()
	runErr := h.run(ctx)
	h.res.Seconds = time.Since(began).Seconds()
	if err := h.write(); err != nil {
		return h.res, errors.Join(runErr, err)
	}
	if runErr != nil {
		return h.res, runErr
	}
	if n := len(h.res.Failures); n > 0 {
		return h.res, fmt.Errorf("bench: %d of the runs failed:\n  %s", n, strings.Join(h.res.Failures, "\n  "))
	}
	return h.res, nil
}

func (h *harness) run(ctx context.Context) error {
	want := func(s string) bool { return slices.Contains(h.cfg.Scenarios, s) }
	if want(ScenarioFanout) || want(ScenarioScale) || want(ScenarioResume) || want(ScenarioRelease) {
		e, err := startFanoutEnv(ctx, h.cfg)
		if err != nil {
			return fmt.Errorf("bench: start etcd: %w", err)
		}
		defer e.close()
		for _, s := range []string{ScenarioFanout, ScenarioScale} {
			if want(s) {
				h.fanoutScenario(ctx, e, s)
			}
		}
		if want(ScenarioResume) {
			h.resumeScenario(ctx, e)
		}
		if want(ScenarioRelease) {
			h.releaseScenario(ctx, e)
		}
		e.close()
	}
	if want(ScenarioWrites) {
		h.writesScenario(ctx)
	}
	return ctx.Err()
}

func (h *harness) fanoutScenario(ctx context.Context, e *fanoutEnv, scenario string) {
	ns, targets, perConns := h.cfg.runsOf(scenario)
	for _, perConn := range perConns {
		for _, n := range ns {
			first := len(h.res.Fanout)
			for _, t := range targets {
				if ctx.Err() != nil {
					return
				}
				if httpTarget(t) && perConn > 1 {
					// HTTP/1.1 carries one stream per connection.
					continue
				}
				r, err := h.runFanout(ctx, e, scenario, t, n, perConn)
				if err != nil {
					r.Error = h.failed(fmt.Sprintf("%s %s N=%d streams/conn=%d", scenario, t, n, perConn), err)
				}
				h.res.Fanout = append(h.res.Fanout, r)
				h.logf("%s", fanoutLine(r))
			}
			ratios(h.res.Fanout[first:])
		}
	}
}

func (h *harness) resumeScenario(ctx context.Context, e *fanoutEnv) {
	ns, _, perConns := h.cfg.runsOf(ScenarioResume)
	for _, perConn := range perConns {
		for _, n := range ns {
			if ctx.Err() != nil {
				return
			}
			r, err := h.runResume(ctx, e, n, perConn)
			if err != nil {
				r.Error = h.failed(fmt.Sprintf("resume N=%d streams/conn=%d", n, perConn), err)
			}
			h.res.Resume = append(h.res.Resume, r)
			h.logf("%s", resumeLine(r))
		}
	}
}

func (h *harness) releaseScenario(ctx context.Context, e *fanoutEnv) {
	ns, _, perConns := h.cfg.runsOf(ScenarioRelease)
	for _, perConn := range perConns {
		for _, n := range ns {
			if ctx.Err() != nil {
				return
			}
			r, err := h.runRelease(ctx, e, n, perConn)
			if err != nil {
				r.Error = h.failed(fmt.Sprintf("release N=%d streams/conn=%d", n, perConn), err)
			}
			h.res.Release = append(h.res.Release, r)
			h.logf("%s", releaseLine(r))
		}
	}
}

func (h *harness) writesScenario(ctx context.Context) {
	r, err := h.runUnaryFloor(ctx)
	if err != nil {
		r.Error = h.failed("writes: unary floor", err)
	}
	h.res.Writes = append(h.res.Writes, r)
	h.logf("%s", writesLine(r))
	for _, shards := range []int{1, 3} {
		if ctx.Err() != nil {
			return
		}
		rs, err := h.runWrites(ctx, shards)
		if err != nil {
			h.failed(fmt.Sprintf("writes shards=%d", shards), err)
		}
		h.res.Writes = append(h.res.Writes, rs...)
		for _, r := range rs {
			h.logf("%s", writesLine(r))
		}
	}
	if ctx.Err() != nil {
		return
	}
	rs, err := h.runRegisterStorm(ctx, h.cfg.Registrations)
	if err != nil {
		h.failed("writes: registration storm", err)
	}
	h.res.Register = append(h.res.Register, rs...)
	for _, r := range rs {
		h.logf("register %-6s N=%d  all registered in %s  p50=%s p99=%s  leases=%d  p99/direct=%s",
			r.Path, r.N, ms(r.AllMs), ms(r.Latency.P50), ms(r.Latency.P99), r.Leases, ratio(r.P99VsDirect))
	}
}
