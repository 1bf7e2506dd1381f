package bench

import (
	"context"
	"fmt"
	"time"
)

// ResumeResult is one resume storm: N subscribers on cache node 1, node 1
// stopped, every subscriber resuming on node 2 from its last token.
type ResumeResult struct {
	N              int `json:"n"`
	StreamsPerConn int `json:"streams_per_conn"`
	Procs          int `json:"procs"`
	Tenants        int `json:"tenants"`
	// GapUpdates were written once node 1 had stopped, so every
	// subscriber has to get them from node 2.
	GapUpdates int `json:"gap_updates"`
	// StopMs is how long node 1 took to stop (its streams end during it).
	StopMs float64 `json:"stop_ms"`
	// AllResumedMs is from the start of the stop to when the last
	// subscriber had the last gap update; Resume the same per subscriber.
	AllResumedMs float64    `json:"all_resumed_ms"`
	Resume       Latency    `json:"resume"`
	CDF          []CDFPoint `json:"cdf,omitempty"`
	// Replays started their resumed stream with Events (history covered
	// their token), Resets with a Reset; Incomplete never had the last
	// update.
	Replays    int    `json:"replays"`
	Resets     int    `json:"resets"`
	Incomplete int    `json:"incomplete"`
	Error      string `json:"error,omitempty"`
}

// runResume runs one resume storm of n subscribers.
func (h *harness) runResume(ctx context.Context, e *fanoutEnv, n, perConn int) (res ResumeResult, err error) {
	cfg := h.cfg
	procs := cfg.procsFor(ScenarioResume, n)
	k := len(e.tenants)
	pre, gap := max(cfg.Warmup, k), max(cfg.Updates, k)
	res = ResumeResult{N: n, StreamsPerConn: perConn, Procs: procs, Tenants: k, GapUpdates: gap}
	e.settle(ctx)
	n1, err := e.startCacheNode(ctx, "cache-1")
	if err != nil {
		return res, err
	}
	defer n1.stop()
	n2, err := e.startCacheNode(ctx, "cache-2")
	if err != nil {
		return res, err
	}
	defer n2.stop()

	// Updates go round robin over the tenants: the first pre before the
	// stop, the next gap after it.
	base := childSpec{Mode: modeResume, Target: TargetConfetti, StreamsPerConn: perConn, DrainTimeout: cfg.DrainTimeout}
	for i, t := range e.tenants {
		base.Tenants = append(base.Tenants, childTenant{
			Name: t.Name, Addrs: []string{n1.addr, n2.addr},
			Mark: lastOf(i, k, 0, pre), Last: lastOf(i, k, pre, pre+gap),
		})
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Minute+time.Duration(pre)*cfg.Interval+cfg.DrainTimeout)
	defer cancel()
	cs, err := startChildren(rctx, cfg.ChildArgs, splitSpecs(base, n, procs))
	if err != nil {
		return res, err
	}
	defer cs.close()
	if err := cs.expect("ready"); err != nil {
		return res, err
	}
	put := func(seq int) error {
		return e.putEtcd(rctx, e.tenants[seq%k], updateValue(int64(seq), time.Now()))
	}
	for seq := range pre {
		if err := put(seq); err != nil {
			return res, err
		}
		time.Sleep(cfg.Interval)
	}
	if err := cs.expect("mark"); err != nil {
		return res, err
	}

	t0 := time.Now()
	n1.stop()
	res.StopMs = msSince(t0)
	for seq := pre; seq < pre+gap; seq++ {
		if err := put(seq); err != nil {
			return res, err
		}
	}
	if err := cs.send("sent"); err != nil {
		return res, err
	}
	results, err := cs.results()
	if err != nil {
		return res, err
	}
	var took []time.Duration
	for _, r := range results {
		res.Replays += r.Replays
		res.Resets += r.Resets
		res.Incomplete += r.Incomplete
		for _, d := range r.Done {
			if d != 0 {
				took = append(took, time.Unix(0, d).Sub(t0))
			}
		}
	}
	if len(took) > 0 {
		res.Resume, res.CDF = summarizeDurations(took)
		res.AllResumedMs = res.Resume.Max
	}
	if res.Incomplete > 0 {
		return res, fmt.Errorf("%d of %d subscribers did not resume on node 2 with every update", res.Incomplete, n)
	}
	return res, nil
}

// lastOf is the last update in [from, to) that goes to tenant i of k when
// updates go round robin, or -1 when none does.
func lastOf(i, k, from, to int) int64 {
	for seq := to - 1; seq >= from; seq-- {
		if seq%k == i {
			return int64(seq)
		}
	}
	return -1
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
