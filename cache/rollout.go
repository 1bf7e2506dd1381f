package cache

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// rollout is what one subscriber was sent of each item and what it
// answered. The stream's goroutine records what it sends, the reader of
// the stream records acks, and Rollout reads; all take mu.
type rollout struct {
	mu    sync.Mutex
	items map[string]*gatewayItem
	// early holds answers for items not (yet) recorded as sent: a gateway
	// that resumes on this node repeats its answers right after its start
	// message, before the node has worked out what it holds.
	early map[string]*confettipb.Ack
}

// maxEarlyAnswers bounds the answers kept for items not recorded as sent.
const maxEarlyAnswers = 1024

// gatewayItem is one item's version at one gateway.
type gatewayItem struct {
	ref   ref
	state confettipb.GatewayRollout_State
	err   string
	at    time.Time
}

// sent records item versions sent (version zero: the item was removed).
func (r *rollout) sent(items []itemSent) {
	if len(items) == 0 {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		r.setLocked(it.item, it.ref, now)
	}
}

// reset records a Reset: the subscriber holds exactly the items of v. An
// item it already held at the same version keeps its answer.
func (r *rollout) reset(v view) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for item := range r.items {
		if _, ok := v[item]; !ok {
			delete(r.items, item)
		}
	}
	for item, ref := range v {
		r.setLocked(item, ref, now)
	}
}

func (r *rollout) setLocked(item string, ref ref, now time.Time) {
	if ref.version == 0 {
		delete(r.items, item)
		return
	}
	if cur := r.items[item]; cur != nil && cur.ref.version == ref.version {
		return
	}
	if r.items == nil {
		r.items = map[string]*gatewayItem{}
	}
	it := &gatewayItem{ref: ref, state: confettipb.GatewayRollout_PENDING, at: now}
	r.items[item] = it
	if a := r.early[item]; a != nil {
		delete(r.early, item)
		if a.GetVersion() == ref.version {
			it.answer(a, now)
		}
	}
}

func (it *gatewayItem) answer(a *confettipb.Ack, now time.Time) {
	if a.GetOk() {
		it.state, it.err = confettipb.GatewayRollout_RUNNING, ""
	} else {
		it.state, it.err = confettipb.GatewayRollout_NACKED, a.GetError()
	}
	it.at = now
}

// ack records a gateway's answer for the version it was last sent; an
// answer for another version (an older one, arriving late) is dropped, and
// one for an item not recorded as sent is kept until it is.
func (r *rollout) ack(a *confettipb.Ack, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	it := r.items[a.GetItem()]
	switch {
	case it == nil:
		if r.early == nil {
			r.early = map[string]*confettipb.Ack{}
		}
		if len(r.early) < maxEarlyAnswers {
			r.early[a.GetItem()] = a
		}
	case it.ref.version == a.GetVersion():
		it.answer(a, now)
	}
}

// get returns a copy of the item's entry.
func (r *rollout) get(item string) (gatewayItem, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	it := r.items[item]
	if it == nil {
		return gatewayItem{}, false
	}
	return *it, true
}

// Rollout reports, for one item, each subscribed gateway's version and
// answer on this node.
func (c *Cache) Rollout(_ context.Context, req *confettipb.RolloutRequest) (*confettipb.RolloutResponse, error) {
	if err := keys.ValidName("tenant", req.GetTenant()); err != nil {
		return nil, rpcerr.Status(err)
	}
	if err := release.ValidItemName(req.GetItem()); err != nil {
		return nil, rpcerr.Status(err)
	}
	c.mu.RLock()
	subs := make([]*subscription, 0, len(c.subs[req.GetTenant()]))
	for s := range c.subs[req.GetTenant()] {
		subs = append(subs, s)
	}
	c.mu.RUnlock()
	out := &confettipb.RolloutResponse{Node: c.cfg.NodeName}
	for _, s := range subs {
		it, ok := s.rollout.get(req.GetItem())
		if !ok {
			continue
		}
		out.Gateways = append(out.Gateways, &confettipb.GatewayRollout{
			InstanceId:    s.id.GetInstanceId(),
			Version:       it.ref.version,
			GrayId:        it.ref.gray,
			State:         it.state,
			Error:         it.err,
			Time:          it.at.UnixNano(),
			ConnectedTime: s.start.UnixNano(),
		})
	}
	slices.SortFunc(out.Gateways, func(a, b *confettipb.GatewayRollout) int { return strings.Compare(a.InstanceId, b.InstanceId) })
	return out, nil
}
