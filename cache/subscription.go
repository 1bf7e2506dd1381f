package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

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
	view     uint64
	shard    *shardState
	codec    *tokenCodec

	// rev is the shard revision the subscriber's state reflects.
	rev int64
	// sentRev is the revision of the last token sent.
	sentRev int64
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
	// Acks are read (and, for now, only drained) so that flow control never
	// blocks the client; a client that half-closes keeps receiving.
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
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
	sub := &subscription{
		c:        c,
		stream:   stream,
		tenant:   tenant,
		prefixes: prefixes,
		view:     viewHash(prefixes, start.GetIdentity()),
		codec:    c.codec(),
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
		switch {
		case p.shard != tenant.Shard || p.epoch != tenant.Epoch:
			c.metrics.resets.WithLabelValues("moved").Inc()
		case p.view != sub.view:
			c.metrics.resets.WithLabelValues("view").Inc()
		default:
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

func (s *subscription) serve(ctx context.Context, pos *position) error {
	if pos != nil {
		s.rev, s.sentRev = pos.rev, pos.rev
	} else {
		if err := s.reset("new"); err != nil {
			return err
		}
	}
	tick := time.NewTicker(s.c.cfg.ProgressInterval)
	defer tick.Stop()
	for {
		changed, _, _ := s.shard.wait()
		txns, seen, ok := s.shard.read(s.tenant.Name, s.prefixes, s.rev, s.c.cfg.EventsBatchBytes)
		if !ok {
			// The history moved past this subscriber: catch up with a
			// Reset at the current revision.
			if err := s.reset("history"); err != nil {
				return err
			}
			continue
		}
		if len(txns) > 0 {
			if err := s.sendEvents(txns, seen); err != nil {
				return err
			}
			continue
		}
		s.rev = max(s.rev, seen)
		select {
		case <-changed:
		case <-tick.C:
			if s.rev > s.sentRev {
				if err := s.send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Progress{
					Progress: &confettipb.Progress{Token: s.token(s.rev)},
				}}); err != nil {
					return err
				}
				s.sentRev = s.rev
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *subscription) sendEvents(txns []*confettipb.Txn, seen int64) error {
	n := 0
	for _, t := range txns {
		n += len(t.Events)
	}
	if err := s.send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{
		Events: &confettipb.Events{Txns: txns, Token: s.token(seen)},
	}}); err != nil {
		return err
	}
	s.c.metrics.eventsOut.Add(float64(n))
	s.rev, s.sentRev = seen, seen
	return nil
}

// reset sends the tenant's state under the subscription's prefixes in
// chunks; the last chunk carries the token.
func (s *subscription) reset(reason string) error {
	s.c.metrics.resets.WithLabelValues(reason).Inc()
	tr, rev := s.shard.snapshot(s.tenant.Name)
	var chunk []*confettipb.KeyValue
	size, n := 0, int32(0)
	flush := func(last bool) error {
		r := &confettipb.Reset{Kvs: chunk, Last: last, Chunk: n}
		if last {
			r.Token = s.token(rev)
		}
		chunk, size = nil, 0
		n++
		return s.send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: r}})
	}
	var err error
	if tr != nil {
		for _, p := range s.prefixes {
			tr.AscendGreaterOrEqual(entry{key: p}, func(e entry) bool {
				if !inRange(e.key, p, prefixEnd(p)) {
					return false
				}
				sz := proto.Size(e.kv)
				if len(chunk) > 0 && size+sz > s.c.cfg.ResetChunkBytes {
					if err = flush(false); err != nil {
						return false
					}
				}
				chunk = append(chunk, e.kv)
				size += sz
				return true
			})
			if err != nil {
				return err
			}
		}
	}
	if err := flush(true); err != nil {
		return err
	}
	s.rev, s.sentRev = rev, rev
	return nil
}

func (s *subscription) token(rev int64) string {
	return s.codec.encode(position{tenant: s.tenant.Name, shard: s.tenant.Shard, epoch: s.tenant.Epoch, rev: rev, view: s.view})
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
