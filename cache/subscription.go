package cache

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
)

// subscription is one open subscription, of a Subscribe stream or one of
// the subscriptions of a SubscribeMany stream.
type subscription struct {
	c        *Cache
	sink     *sink
	sid      int64
	tenant   meta.Tenant
	prefixes []string
	id       *confettipb.Identity
	shard    *shardState
	codec    *tokenCodec
	start    time.Time

	// view is the subscriber's resolution of its items at the revision
	// of the last token queued for it, and viewHash its hash with the
	// prefixes. Only the subscription's goroutine touches them.
	view     view
	viewHash uint64

	// rollout is the item versions sent to the subscriber and its answers.
	rollout rollout

	// after is set for a start at after_revision: the subscriber never
	// gets a Reset, and fails with CompactedError when history no longer
	// covers where it stands, as an etcd watcher would.
	after bool
}

// open validates a Start and decides where the subscriber starts: the
// token's position when this node's history covers it, else nil for a
// Reset.
func (c *Cache) open(ctx context.Context, k *sink, sid int64, start *confettipb.Start) (*subscription, *position, error) {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	prefixes, err := keys.Scope(start.GetPrefixes(), start.GetItems(), start.GetServices())
	if err != nil {
		return nil, nil, err
	}
	tenant, err := c.store.LookupTenant(ctx, start.GetTenant())
	if err != nil {
		return nil, nil, err
	}
	id := start.GetIdentity()
	if id == nil {
		id = &confettipb.Identity{}
	}
	sub := &subscription{
		c:        c,
		sink:     k,
		sid:      sid,
		tenant:   tenant,
		prefixes: prefixes,
		id:       id,
		codec:    c.codec(),
		start:    time.Now(),
	}
	var pos *position
	need := int64(0)
	switch after := start.GetAfterRevision(); {
	case after < 0:
		return nil, nil, fmt.Errorf("%w: after_revision %d is negative", ErrBadRequest, after)
	case start.AfterRevision != nil && start.GetToken() != "":
		return nil, nil, fmt.Errorf("%w: give either a token or after_revision, not both", ErrBadRequest)
	case start.AfterRevision != nil:
		sub.after = true
		pos, need = &position{tenant: tenant.Name, shard: tenant.Shard, epoch: tenant.Epoch, rev: after}, after
	}
	if start.GetToken() != "" {
		p, err := sub.codec.decode(start.GetToken())
		if err != nil {
			return nil, nil, err
		}
		if p.tenant != tenant.Name {
			return nil, nil, fmt.Errorf("%w: the token was issued for tenant %q, not %q", ErrTokenTenant, p.tenant, tenant.Name)
		}
		if p.shard != tenant.Shard || p.epoch != tenant.Epoch {
			c.metrics.resets.WithLabelValues("moved").Inc()
		} else {
			pos, need = &p, p.rev
		}
	}
	// A token from a node that is ahead waits until this node catches up,
	// so that a resumed stream never goes back in revision.
	if sub.shard, err = c.waitSynced(ctx, tenant.Shard, need); err != nil {
		return nil, nil, err
	}
	return sub, pos, nil
}

// serve starts the subscriber from its token or with a Reset and joins
// its group, which queues to the subscriber's stream from then on. When
// the subscriber leaves the group (its stream's queue filled up, or a
// release change gave it another view), it catches up on its own from the
// last message queued for it and joins again.
func (s *subscription) serve(ctx context.Context, pos *position) error {
	from, reason := int64(-1), "new"
	var token *uint64
	switch {
	case pos != nil && s.after:
		from, reason = pos.rev, ""
	case pos != nil:
		from, reason, token = pos.rev, "", &pos.view
	}
	for {
		m := newMember(s)
		g, err := s.join(ctx, m, from, reason, token)
		if err != nil {
			if g != nil {
				s.shard.detach(g, m)
			}
			return err
		}
		select {
		case <-m.out:
		case <-ctx.Done():
			s.shard.detach(g, m)
			return ctx.Err()
		}
		s.shard.detach(g, m)
		rev, v := g.position(m)
		s.setView(v)
		from, reason, token = rev, "", nil
	}
}

// delivered records what the subscriber was sent. The stream's sender
// calls it.
func (s *subscription) delivered(msg *outMsg) {
	s.rollout.sent(msg.items)
	if msg.reset != nil {
		s.rollout.reset(msg.reset)
	}
}

// join brings the subscriber from revision from (or, with from < 0 or when
// the history no longer covers it, from nothing, by a Reset) up to the
// shard's current revision and joins its group there. Catching up streams
// most of the history without holding the shard's lock; the last step and
// the join happen under it, so the group delivers exactly what follows.
// token, when set, is the view hash of the token resumed from: the
// subscriber's view at from must match it, else it gets a Reset.
func (s *subscription) join(ctx context.Context, m *member, from int64, reason string, token *uint64) (*group, error) {
	if from >= 0 && token != nil {
		s.shard.mu.RLock()
		v, ok := s.shard.viewAtLocked(s.viewer(nil), from)
		s.shard.mu.RUnlock()
		switch {
		case !ok:
			from, reason = -1, "history"
		case viewHash(s.prefixes, v.String()) != *token:
			from, reason = -1, "view"
		default:
			// A resumed gateway holds what the token's view says; it
			// repeats its answers for those versions.
			s.setView(v)
			s.rollout.reset(v)
		}
	}
	sent := false
	if from >= 0 {
		for {
			r, ok := s.shard.read(s.viewer(s.view), from, s.c.cfg.EventsBatchBytes)
			if !ok {
				from, reason = -1, "history"
				break
			}
			if len(r.txns) == 0 {
				s.setView(r.view)
				break
			}
			if err := s.sendEvents(ctx, r); err != nil {
				return nil, err
			}
			sent, from = true, r.seen
		}
	}
	s.shard.mu.Lock()
	if from >= 0 && s.shard.hist.covers(from) {
		r, _ := s.shard.readLocked(s.viewer(s.view), from, math.MaxInt)
		s.setView(r.view)
		g := s.shard.attachLocked(s, m)
		s.shard.mu.Unlock()
		var err error
		switch {
		case len(r.txns) > 0:
			err = s.sendEvents(ctx, r)
		case token != nil && !sent:
			// A resume with nothing new still answers at once, so that
			// the client knows its token was accepted.
			err = s.progress(ctx, r.seen)
		}
		g.release(m)
		return g, err
	}
	if s.after {
		floor := s.shard.hist.floor
		s.shard.mu.Unlock()
		return nil, &CompactedError{Revision: floor + 1}
	}
	tr, rev := s.shard.snapshotLocked(s.tenant.Name)
	s.setView(s.shard.items.resolveView(s.tenant.Name, s.prefixes, s.id))
	items := s.shard.items.resetKVs(s.tenant.Name, s.view)
	g := s.shard.attachLocked(s, m)
	s.shard.mu.Unlock()
	if reason == "" {
		reason = "history"
	}
	err := s.reset(ctx, reason, tr, items, rev)
	g.release(m)
	return g, err
}

// progress sends a bookmark at rev.
func (s *subscription) progress(ctx context.Context, rev int64) error {
	return s.send(ctx, &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Progress{
		Progress: &confettipb.Progress{Token: s.tokenFor(rev, s.view), Revision: rev},
	}}, rev, nil)
}

// viewer is the subscription as a reader of history holding v.
func (s *subscription) viewer(v view) viewer {
	return viewer{tenant: s.tenant.Name, prefixes: s.prefixes, id: s.id, view: v}
}

// setView records the view the subscriber holds.
func (s *subscription) setView(v view) {
	s.view = v
	s.viewHash = viewHash(s.prefixes, v.String())
}

// sendEvents sends what a history read found, each transaction with the
// token of the view it leaves the subscriber with, and records the view.
func (s *subscription) sendEvents(ctx context.Context, r readResult) error {
	n := 0
	for i, t := range r.txns {
		n += len(t.Events)
		t.Token = s.tokenFor(t.Revision, r.views[i])
	}
	err := s.send(ctx, &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{
		Events: &confettipb.Events{Txns: r.txns},
	}}, r.seen, func(msg *outMsg) { msg.events, msg.items = n, r.sent })
	if err != nil {
		return err
	}
	s.setView(r.view)
	return nil
}

// reset sends the tenant's state at rev under the subscription's prefixes
// in chunks; the last chunk carries the token. The encoded chunks are kept
// in the node's reset cache, so a storm of subscribers of one view
// reconnecting at one revision encodes its Reset once.
func (s *subscription) reset(ctx context.Context, reason string, tr *tree, items []*confettipb.KeyValue, rev int64) error {
	s.c.metrics.resets.WithLabelValues(reason).Inc()
	key := s.groupKey() + "@" + strconv.FormatInt(rev, 10)
	chunks, ok := s.c.resetCache.Get(key)
	if !ok {
		v, err, _ := s.c.resetFlight.Do(key, func() (any, error) {
			if chunks, ok := s.c.resetCache.Get(key); ok {
				return chunks, nil
			}
			s.c.metrics.resetEncodes.Inc()
			chunks, size, err := s.encodeReset(tr, items, rev)
			if err != nil {
				return nil, err
			}
			if size <= s.c.cfg.ResetCacheMaxBytes {
				s.c.resetCache.Add(key, chunks)
			}
			return chunks, nil
		})
		if err != nil {
			return err
		}
		chunks = v.([]*outMsg)
	}
	for _, c := range chunks {
		if err := s.sink.put(ctx, frame{msg: c, sub: s}); err != nil {
			return err
		}
	}
	return nil
}

// encodeReset encodes the Reset of tr and the resolved items at rev in
// chunks of at most ResetChunkBytes (a larger single key gets a chunk of
// its own). The items' physical keys in tr are left out.
func (s *subscription) encodeReset(tr *tree, items []*confettipb.KeyValue, rev int64) ([]*outMsg, int, error) {
	var out []*outMsg
	var chunk []*confettipb.KeyValue
	size, total, n := 0, 0, int32(0)
	flush := func(last bool) error {
		r := &confettipb.Reset{Kvs: chunk, Last: last, Chunk: n}
		if last {
			r.Token = s.tokenFor(rev, s.view)
		}
		msg, err := newOutMsg(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: r}}, rev)
		if err != nil {
			return err
		}
		if last {
			msg.reset = s.view
		}
		out = append(out, msg)
		total += len(msg.body)
		chunk, size = nil, 0
		n++
		return nil
	}
	var err error
	add := func(kv *confettipb.KeyValue) bool {
		sz := proto.Size(kv)
		if len(chunk) > 0 && size+sz > s.c.cfg.ResetChunkBytes {
			if err = flush(false); err != nil {
				return false
			}
		}
		chunk = append(chunk, kv)
		size += sz
		return true
	}
	for _, p := range s.prefixes {
		for _, kv := range items {
			if strings.HasPrefix(keys.ItemKey(kv.GetItem().GetItem()), p) && !add(kv) {
				return nil, 0, err
			}
		}
		if tr == nil {
			continue
		}
		tr.AscendGreaterOrEqual(entry{key: p}, func(e entry) bool {
			if !inRange(e.key, p, keys.PrefixEnd(p)) {
				return false
			}
			if strings.HasPrefix(e.key, keys.SpaceCfg) {
				return true
			}
			return add(e.kv)
		})
		if err != nil {
			return nil, 0, err
		}
	}
	if err := flush(true); err != nil {
		return nil, 0, err
	}
	return out, total, nil
}

// groupKey names the group of subscribers that receive the same bytes.
func (s *subscription) groupKey() string {
	return s.tenant.Name + "\x00" + strings.Join(s.prefixes, "\x00") + "\x00" + strconv.FormatUint(s.viewHash, 16)
}

// tokenFor is the subscriber's token at rev when it holds v.
func (s *subscription) tokenFor(rev int64, v view) string {
	return s.codec.encode(position{tenant: s.tenant.Name, shard: s.tenant.Shard, epoch: s.tenant.Epoch, rev: rev, view: viewHash(s.prefixes, v.String())})
}

// send queues a message of the subscription's own, whose token is at rev;
// set fills in what it tells.
func (s *subscription) send(ctx context.Context, m *confettipb.SubscribeResponse, rev int64, set func(*outMsg)) error {
	msg, err := newOutMsg(m, rev)
	if err != nil {
		return err
	}
	if set != nil {
		set(msg)
	}
	if err := s.sink.put(ctx, frame{msg: msg, sub: s}); err != nil {
		return err
	}
	return nil
}
