package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// subscription is one open Subscribe stream.
type subscription struct {
	c        *Cache
	stream   confettipb.Cache_SubscribeServer
	tenant   meta.Tenant
	prefixes []string
	id       *confettipb.Identity
	shard    *shardState
	codec    *tokenCodec
	start    time.Time

	// sentRev is the revision of the last token sent: the revision the
	// subscriber's state reflects once it has applied what it got. view
	// is the subscriber's resolution of its items at sentRev, and
	// viewHash its hash with the prefixes. Only the stream's goroutine
	// touches them.
	sentRev  int64
	view     view
	viewHash uint64

	// rollout is the item versions sent to the subscriber and its answers.
	rollout rollout
}

// Subscribe serves one subscription: a Reset or a replay from the token,
// then Events and Progress until the client goes away.
func (c *Cache) Subscribe(stream confettipb.Cache_SubscribeServer) error {
	err := c.subscribe(stream)
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return rpcerr.Status(err)
}

func (c *Cache) subscribe(stream confettipb.Cache_SubscribeServer) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.subsWG.Add(1)
	c.mu.Unlock()
	defer c.subsWG.Done()
	c.metrics.subscribers.Inc()
	defer c.metrics.subscribers.Dec()

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	req, err := stream.Recv()
	if err != nil {
		return err
	}
	start := req.GetStart()
	if start == nil {
		return fmt.Errorf("%w: the first message of a subscription must be start", ErrBadRequest)
	}
	sub, pos, err := c.open(ctx, stream, start)
	if err != nil {
		return err
	}
	conn := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		conn = p.Addr.String()
	}
	release, err := c.admit(sub, conn)
	if err != nil {
		return err
	}
	defer release()
	// Acks are read as they come, so that flow control never blocks the
	// client; a client that half-closes keeps receiving.
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
			if a := req.GetAck(); a != nil {
				sub.rollout.ack(a, time.Now())
			}
		}
	}()
	return sub.serve(ctx, pos)
}

// open validates a Start and decides where the subscriber starts: the
// token's position when this node's history covers it, else nil for a
// Reset.
func (c *Cache) open(ctx context.Context, stream confettipb.Cache_SubscribeServer, start *confettipb.Start) (*subscription, *position, error) {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	prefixes, err := keys.ValidPrefixes(start.GetPrefixes())
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
		stream:   stream,
		tenant:   tenant,
		prefixes: prefixes,
		id:       id,
		codec:    c.codec(),
		start:    time.Now(),
	}
	var pos *position
	need := int64(0)
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

// serve starts the subscriber from its token or with a Reset, joins its
// group, and sends what the group queues until the client goes away. When
// the subscriber falls behind (its queue filled up), it catches up on its
// own and joins again.
func (s *subscription) serve(ctx context.Context, pos *position) error {
	from, reason := int64(-1), "new"
	var token *uint64
	if pos != nil {
		from, reason, token = pos.rev, "", &pos.view
	}
	for {
		m := newMember(s.c.cfg.SubscriberQueue, s.id)
		g, err := s.join(m, from, reason, token)
		if err != nil {
			return err
		}
		err = s.pump(ctx, m)
		s.shard.detach(g, m)
		if !errors.Is(err, errLagging) && !errors.Is(err, errMoved) {
			return err
		}
		from, reason, token = s.sentRev, "", nil
	}
}

var (
	errLagging = errors.New("cache: subscriber lagging")
	errMoved   = errors.New("cache: subscriber moved to another view")
)

// pump sends the member's queued messages until the stream ends or the
// member is marked lagging.
func (s *subscription) pump(ctx context.Context, m *member) error {
	for {
		select {
		case msg := <-m.q:
			if err := s.stream.SendMsg(msg.pm); err != nil {
				return err
			}
			s.sentRev = msg.rev
			s.c.metrics.eventsOut.Add(float64(msg.events))
			s.c.metrics.bytesOut.Add(float64(msg.bytes))
			s.rollout.sent(msg.items)
			if msg.moved != nil {
				s.setView(msg.moved)
				return errMoved
			}
		case <-m.lag:
			return errLagging
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// join brings the subscriber from revision from (or, with from < 0 or when
// the history no longer covers it, from nothing, by a Reset) up to the
// shard's current revision and joins its group there. Catching up streams
// most of the history without holding the shard's lock; the last step and
// the join happen under it, so the group delivers exactly what follows.
// token, when set, is the view hash of the token resumed from: the
// subscriber's view at from must match it, else it gets a Reset.
func (s *subscription) join(m *member, from int64, reason string, token *uint64) (*group, error) {
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
			if err := s.sendEvents(r); err != nil {
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
		switch {
		case len(r.txns) > 0:
			return g, s.sendEvents(r)
		case token != nil && !sent:
			// A resume with nothing new still answers at once, so that
			// the client knows its token was accepted.
			return g, s.progress(r.seen)
		}
		return g, nil
	}
	tr, rev := s.shard.snapshotLocked(s.tenant.Name)
	s.setView(s.shard.items.resolveView(s.tenant.Name, s.prefixes, s.id))
	items := s.shard.items.resetKVs(s.tenant.Name, s.view)
	g := s.shard.attachLocked(s, m)
	s.shard.mu.Unlock()
	if reason == "" {
		reason = "history"
	}
	return g, s.reset(reason, tr, items, rev)
}

// progress sends a bookmark at rev.
func (s *subscription) progress(rev int64) error {
	if err := s.send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Progress{
		Progress: &confettipb.Progress{Token: s.tokenFor(rev, s.view)},
	}}); err != nil {
		return err
	}
	s.sentRev = rev
	return nil
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

// sendEvents sends what a history read found, and records the view it
// leaves the subscriber with.
func (s *subscription) sendEvents(r readResult) error {
	n := 0
	for _, t := range r.txns {
		n += len(t.Events)
	}
	if err := s.send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{
		Events: &confettipb.Events{Txns: r.txns, Token: s.tokenFor(r.seen, r.view)},
	}}); err != nil {
		return err
	}
	s.c.metrics.eventsOut.Add(float64(n))
	s.sentRev = r.seen
	s.setView(r.view)
	s.rollout.sent(r.sent)
	return nil
}

// reset sends the tenant's state at rev under the subscription's prefixes
// in chunks; the last chunk carries the token. The encoded chunks are kept
// in the node's reset cache, so a storm of subscribers of one view
// reconnecting at one revision encodes its Reset once.
func (s *subscription) reset(reason string, tr *tree, items []*confettipb.KeyValue, rev int64) error {
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
		chunks = v.([]encodedChunk)
	}
	for _, c := range chunks {
		if err := s.stream.SendMsg(c.pm); err != nil {
			return err
		}
		s.c.metrics.bytesOut.Add(float64(c.bytes))
	}
	s.sentRev = rev
	s.rollout.reset(s.view)
	return nil
}

// encodedChunk is one encoded Reset chunk.
type encodedChunk struct {
	pm    *grpc.PreparedMsg
	bytes int
}

// encodeReset encodes the Reset of tr and the resolved items at rev in
// chunks of at most ResetChunkBytes (a larger single key gets a chunk of
// its own). The items' physical keys in tr are left out.
func (s *subscription) encodeReset(tr *tree, items []*confettipb.KeyValue, rev int64) ([]encodedChunk, int, error) {
	var out []encodedChunk
	var chunk []*confettipb.KeyValue
	size, total, n := 0, 0, int32(0)
	flush := func(last bool) error {
		r := &confettipb.Reset{Kvs: chunk, Last: last, Chunk: n}
		if last {
			r.Token = s.tokenFor(rev, s.view)
		}
		m := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: r}}
		pm := &grpc.PreparedMsg{}
		if err := pm.Encode(s.stream, m); err != nil {
			return err
		}
		sz := proto.Size(m)
		out = append(out, encodedChunk{pm: pm, bytes: sz})
		total += sz
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
			if strings.HasPrefix(kv.Key, p) && !add(kv) {
				return nil, 0, err
			}
		}
		if tr == nil {
			continue
		}
		tr.AscendGreaterOrEqual(entry{key: p}, func(e entry) bool {
			if !inRange(e.key, p, prefixEnd(p)) {
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

func (s *subscription) send(m *confettipb.SubscribeResponse) error {
	s.c.metrics.bytesOut.Add(float64(proto.Size(m)))
	return s.stream.Send(m)
}

// prefixEnd is the first key after every key starting with p, or "" when
// there is none.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}
