package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
)

// The release scenario's item and plain key, relative to the tenant.
const (
	releaseItem = "app"
	blobKey     = "blob"
)

// ReleaseResult is one release run: N gateways (subscribers with instance
// ids gw-0 ... gw-N-1) of one item on one cache node. First a plain key
// update of the item's size goes to all of them; then a gray of the next
// version to a percentage, which only the gateways it selects receive.
type ReleaseResult struct {
	N              int `json:"n"`
	StreamsPerConn int `json:"streams_per_conn"`
	Procs          int `json:"procs"`
	ContentBytes   int `json:"content_bytes"`
	// GrayBasisPoints is the gray's percentage; Affected the gateways it
	// selects, which must each receive the new version.
	GrayBasisPoints int `json:"gray_basis_points"`
	Affected        int `json:"affected"`
	// Plain is from the plain update's send to each delivery; Gray from
	// the release record's write to each affected gateway holding the new
	// version (Gray.Max: the last of them).
	Plain Latency `json:"plain"`
	Gray  Latency `json:"gray"`
	// PlainBytesPerSub is the bytes the node sent per subscriber for the
	// plain update; GrayBytesPerAffected the bytes it sent for the gray
	// per affected gateway.
	PlainBytesPerSub     float64 `json:"plain_bytes_per_sub"`
	GrayBytesPerAffected float64 `json:"gray_bytes_per_affected"`
	// Missing counts plain deliveries that did not arrive; Incomplete the
	// affected gateways that never held the new version.
	Missing    int64  `json:"missing"`
	Incomplete int    `json:"incomplete"`
	Error      string `json:"error,omitempty"`
}

// releaseGrayBP is the gray's percentage: 50%, as in the issue's
// benchmark.
const releaseGrayBP = 5000

// runRelease runs the release scenario with n gateways.
func (h *harness) runRelease(ctx context.Context, e *fanoutEnv, n, perConn int) (res ReleaseResult, err error) {
	cfg := h.cfg
	procs := cfg.procsFor(ScenarioRelease, n)
	size := cfg.ContentBytes
	res = ReleaseResult{N: n, StreamsPerConn: perConn, Procs: procs, ContentBytes: size, GrayBasisPoints: releaseGrayBP}
	t := e.tenants[0]
	for g := range n {
		if release.Bucket(t.Name, releaseItem, gatewayID(g)) < releaseGrayBP {
			res.Affected++
		}
	}
	_, cli, err := e.shardOf(t)
	if err != nil {
		return res, err
	}
	// The item, written as the shard proxy stores it: two versions of
	// the same size, the first stable.
	for v := int64(1); v <= 2; v++ {
		content := []byte(fmt.Sprintf(`{"version":%d,"pad":"%s"}`, v, strings.Repeat("x", max(0, size-30))))
		sum := sha256.Sum256(content)
		b, _ := proto.Marshal(&confettipb.ItemVersion{Tenant: t.Name, Item: releaseItem, Version: v, Content: content, ContentHash: hex.EncodeToString(sum[:]), CreateTime: time.Now().Unix()})
		if _, err := cli.Put(ctx, keys.ItemVersion(t.Name, releaseItem, v), string(b)); err != nil {
			return res, err
		}
	}
	putRelease := func(r *confettipb.Release) error {
		b, _ := proto.Marshal(r)
		_, err := cli.Put(ctx, keys.ItemRelease(t.Name, releaseItem), string(b))
		return err
	}
	if err := putRelease(&confettipb.Release{Tenant: t.Name, Item: releaseItem, Stable: 1}); err != nil {
		return res, err
	}
	e.settle(ctx)
	node, err := e.startCacheNode(ctx, "cache-release")
	if err != nil {
		return res, err
	}
	defer node.stop()

	base := childSpec{Mode: modeRelease, Target: TargetConfetti, StreamsPerConn: perConn, DrainTimeout: cfg.DrainTimeout,
		Item: releaseItem, GrayBasisPoints: releaseGrayBP, GrayVersion: 2,
		Tenants: []childTenant{{Name: t.Name, Addrs: []string{node.addr}}}}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Minute+cfg.DrainTimeout)
	defer cancel()
	cs, err := startChildren(rctx, cfg.ChildArgs, splitSpecs(base, n, procs))
	if err != nil {
		return res, err
	}
	defer cs.close()
	if err := cs.expect("ready"); err != nil {
		return res, err
	}

	b0 := sentBytes(node.reg)
	value := updateValue(1, time.Now())
	value += "|" + strings.Repeat("x", max(0, size-len(value)-1))
	if _, err := cli.Put(rctx, keys.KV(t.Name)+blobKey, value); err != nil {
		return res, err
	}
	if err := cs.expect("mark"); err != nil {
		return res, err
	}
	b1 := sentBytes(node.reg)
	t1 := time.Now()
	if err := putRelease(&confettipb.Release{Tenant: t.Name, Item: releaseItem, Stable: 1, Grays: []*confettipb.Gray{{
		Id: "half", Version: 2, Rule: &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: releaseGrayBP}},
	}}}); err != nil {
		return res, err
	}
	if err := cs.send("sent"); err != nil {
		return res, err
	}
	results, err := cs.results()
	if err != nil {
		return res, err
	}
	b2 := sentBytes(node.reg)
	var took []time.Duration
	plain := newHistogram()
	for _, r := range results {
		res.Missing += r.Missing
		res.Incomplete += r.Incomplete
		if r.Hist != nil {
			plain.Merge(hdrhistogram.Import(r.Hist))
		}
		for _, d := range r.Done {
			if d != 0 {
				took = append(took, time.Unix(0, d).Sub(t1))
			}
		}
	}
	res.Plain = summarizeHistogram(plain)
	if len(took) > 0 {
		res.Gray, _ = summarizeDurations(took)
	}
	res.PlainBytesPerSub = (b1 - b0) / float64(n)
	if res.Affected > 0 {
		res.GrayBytesPerAffected = (b2 - b1) / float64(res.Affected)
	}
	switch {
	case res.Missing > 0:
		return res, fmt.Errorf("%d of %d gateways missed the plain update", res.Missing, n)
	case res.Incomplete > 0 || len(took) != res.Affected:
		return res, fmt.Errorf("%d of %d affected gateways never held the gray's version (%d did)", res.Affected-len(took), res.Affected, len(took))
	}
	return res, nil
}

// gatewayID is the instance id of release-scenario subscriber g.
func gatewayID(g int) string { return fmt.Sprintf("gw-%d", g) }

// sentBytes reads the bytes a cache node sent to subscribers.
func sentBytes(reg *prometheus.Registry) float64 {
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, f := range families {
		if f.GetName() == "confetti_cache_sent_bytes_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// subscribeRelease is release-scenario subscriber i: a gateway with its
// instance id, subscribed to the item and the plain key. It is complete
// once it has the plain update and, when the gray selects it, the gray's
// version; it keeps its stream open until the process ends, so that the
// node resolves the gray for every gateway.
func (c *child) subscribeRelease(i int) {
	s := &c.subs[i]
	t, addr := c.place(i)
	id := gatewayID(c.spec.First + i)
	affected := release.Bucket(t.Name, c.spec.Item, id) < c.spec.GrayBasisPoints
	s.affected = affected
	finished := false
	finish := func() {
		if !finished {
			finished = true
			c.done.Done()
		}
	}
	defer finish()
	start := &confettipb.Start{Tenant: t.Name, Prefixes: []string{blobKey}, Items: []string{c.spec.Item}, Identity: &confettipb.Identity{InstanceId: id}}
	err := c.subscription(i, addr, start, func(m *confettipb.SubscribeResponse) bool {
		if r := m.GetReset_(); r != nil && r.Last {
			c.markReady(i)
		}
		now := time.Now()
		for _, tx := range m.GetEvents().GetTxns() {
			for _, ev := range tx.Events {
				switch {
				case ev.Kv.GetKind() == confettipb.KeyValue_KEY && ev.Kv.Key == blobKey:
					v, _, _ := strings.Cut(string(ev.Kv.Value), "|")
					if seq, at, ok := parseValue([]byte(v)); ok && seq > s.last {
						s.last, s.got = seq, s.got+1
						s.lat = append(s.lat, now.Sub(at))
						if !s.marked {
							s.marked = true
							c.marked.Done()
						}
					}
				case ev.Kv.GetKind() == confettipb.KeyValue_ITEM && ev.Kv.Key == c.spec.Item:
					if ev.Kv.GetItem().GetVersion() == c.spec.GrayVersion && s.doneAt == 0 {
						s.doneAt = now.UnixNano()
					}
				}
			}
		}
		if s.got > 0 && (!affected || s.doneAt != 0) {
			finish()
		}
		return false
	})
	if err != nil && !s.ready {
		c.fail(err)
		c.markReady(i)
	}
}
