package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// keepAliveMinBackoff and keepAliveMaxBackoff bound the wait before a
	// failed shard keepalive stream is opened again.
	keepAliveMinBackoff = 50 * time.Millisecond
	keepAliveMaxBackoff = 2 * time.Second
)

// errKeepAliveStalled ends a shard keepalive stream that left a renewal
// unanswered for longer than the request timeout.
var errKeepAliveStalled = errors.New("shardproxy: keepalive stream answered nothing within the request timeout")

// keepAlives renews leases for every caller of the proxy over one etcd
// LeaseKeepAlive stream per shard. A renewal is sent only when a caller
// asks for one: the proxy never keeps a lease alive on its own. etcd's
// answer goes back to every caller waiting on that lease id, so callers
// renewing the same lease at the same time share one request. A stream
// that fails, or leaves a renewal unanswered for the request timeout, is
// replaced, and the renewals still waiting are sent again on the new one.
//
// A shard's stream is opened on its first renewal and kept open; after a
// failure it is opened again only while renewals are waiting. renew is safe
// for concurrent use; close ends every stream, fails the renewals still
// waiting with ErrClosing and waits for the goroutines.
type keepAlives struct {
	client  func(shard string) (*clientv3.Client, error)
	timeout time.Duration
	lg      *zap.Logger
	// streams counts the open shard streams, by shard.
	streams *prometheus.GaugeVec

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	shards map[string]*shardKeepAlive
}

// renewal is etcd's answer to one keepalive: the lease's new TTL in
// seconds (0: the lease is gone) and the shard revision of the answer.
type renewal struct {
	ttl      int64
	revision int64
}

func newKeepAlives(client func(shard string) (*clientv3.Client, error), timeout time.Duration, lg *zap.Logger, streams *prometheus.GaugeVec) *keepAlives {
	ctx, cancel := context.WithCancel(context.Background())
	return &keepAlives{
		client:  client,
		timeout: timeout,
		lg:      lg,
		streams: streams,
		ctx:     ctx,
		cancel:  cancel,
		shards:  map[string]*shardKeepAlive{},
	}
}

// renew sends one keepalive for lease id on shard's stream and waits for
// etcd's answer until ctx ends.
func (k *keepAlives) renew(ctx context.Context, shard string, id int64) (renewal, error) {
	s, err := k.shard(shard)
	if err != nil {
		return renewal{}, err
	}
	return s.renew(ctx, id)
}

// shard returns the stream owner of a shard, starting it on first use.
func (k *keepAlives) shard(id string) (*shardKeepAlive, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ctx.Err() != nil {
		return nil, fmt.Errorf("%w; renew through another proxy", ErrClosing)
	}
	s, ok := k.shards[id]
	if !ok {
		s = &shardKeepAlive{
			k:       k,
			shard:   id,
			kick:    make(chan struct{}, 1),
			waiting: map[int64][]chan renewal{},
			unsent:  map[int64]struct{}{},
			sentAt:  map[int64]time.Time{},
		}
		k.shards[id] = s
		k.wg.Add(1)
		go s.run()
	}
	return s, nil
}

// close ends every shard stream and waits for their goroutines.
func (k *keepAlives) close() {
	k.mu.Lock()
	k.cancel()
	k.mu.Unlock()
	k.wg.Wait()
}

// shardKeepAlive owns the keepalive stream of one shard.
type shardKeepAlive struct {
	k     *keepAlives
	shard string
	// kick wakes the stream goroutine when a renewal is queued.
	kick chan struct{}

	mu sync.Mutex
	// waiting holds, per lease id, the callers waiting for its next answer.
	waiting map[int64][]chan renewal
	// unsent holds the lease ids to send on the current stream.
	unsent map[int64]struct{}
	// sentAt holds when each unanswered lease id was first sent on the
	// current stream.
	sentAt map[int64]time.Time
}

func (s *shardKeepAlive) renew(ctx context.Context, id int64) (renewal, error) {
	ch := make(chan renewal, 1)
	s.mu.Lock()
	first := len(s.waiting[id]) == 0
	s.waiting[id] = append(s.waiting[id], ch)
	if first {
		s.unsent[id] = struct{}{}
	}
	s.mu.Unlock()
	if first {
		s.poke()
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		s.forget(id, ch)
		return renewal{}, ctx.Err()
	case <-s.k.ctx.Done():
		s.forget(id, ch)
		return renewal{}, fmt.Errorf("%w; renew through another proxy", ErrClosing)
	}
}

// forget removes a caller that stopped waiting.
func (s *shardKeepAlive) forget(id int64, ch chan renewal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiting[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) > 0 {
		s.waiting[id] = ws
		return
	}
	delete(s.waiting, id)
	delete(s.unsent, id)
}

func (s *shardKeepAlive) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// deliver hands etcd's answer for a lease to every caller waiting on it.
func (s *shardKeepAlive) deliver(resp *etcdserverpb.LeaseKeepAliveResponse) {
	r := renewal{ttl: resp.TTL, revision: resp.GetHeader().GetRevision()}
	s.mu.Lock()
	ws := s.waiting[resp.ID]
	delete(s.waiting, resp.ID)
	delete(s.sentAt, resp.ID)
	s.mu.Unlock()
	for _, ch := range ws {
		ch <- r
	}
}

// takeUnsent returns the lease ids to send now and records when they
// were sent.
func (s *shardKeepAlive) takeUnsent() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.unsent) == 0 {
		return nil
	}
	now := time.Now()
	ids := make([]int64, 0, len(s.unsent))
	for id := range s.unsent {
		ids = append(ids, id)
		if _, ok := s.sentAt[id]; !ok {
			s.sentAt[id] = now
		}
	}
	clear(s.unsent)
	return ids
}

// stalled reports whether a renewal sent on the current stream has waited
// longer than the request timeout.
func (s *shardKeepAlive) stalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.sentAt {
		if time.Since(at) > s.k.timeout {
			return true
		}
	}
	return false
}

// run keeps the shard's stream open while renewals wait, until close.
func (s *shardKeepAlive) run() {
	defer s.k.wg.Done()
	backoff := keepAliveMinBackoff
	for s.waitForDemand() {
		answered, err := s.stream()
		if s.k.ctx.Err() != nil {
			return
		}
		if answered {
			backoff = keepAliveMinBackoff
		}
		s.k.lg.Warn("lease keepalive stream ended; reopening", zap.String("shard", s.shard), zap.Duration("backoff", backoff), zap.Error(err))
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.k.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, keepAliveMaxBackoff)
	}
}

// waitForDemand waits until a renewal is waiting; false means close.
func (s *shardKeepAlive) waitForDemand() bool {
	for {
		s.mu.Lock()
		n := len(s.waiting)
		s.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-s.kick:
		case <-s.k.ctx.Done():
			return false
		}
	}
}

// stream runs one LeaseKeepAlive stream on the shard until it fails or
// stalls. answered reports whether etcd answered anything on it.
func (s *shardKeepAlive) stream() (answered bool, err error) {
	cli, err := s.k.client(s.shard)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.k.ctx))
	defer cancel()
	st, err := etcdserverpb.NewLeaseClient(cli.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		return false, err
	}
	open := s.k.streams.WithLabelValues(s.shard)
	open.Inc()
	defer open.Dec()

	// Answers to what was sent on an earlier stream are lost with it.
	s.mu.Lock()
	clear(s.sentAt)
	for id := range s.waiting {
		s.unsent[id] = struct{}{}
	}
	s.mu.Unlock()

	var got atomic.Bool
	recvErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			got.Store(true)
			s.deliver(resp)
		}
	}()
	defer func() {
		cancel()
		<-done
	}()
	check := time.NewTicker(max(s.k.timeout/4, 10*time.Millisecond))
	defer check.Stop()
	for {
		for _, id := range s.takeUnsent() {
			if err := st.Send(&etcdserverpb.LeaseKeepAliveRequest{ID: id}); err != nil {
				return got.Load(), fmt.Errorf("send keepalive: %w", err)
			}
		}
		select {
		case <-s.kick:
		case err := <-recvErr:
			return got.Load(), err
		case <-check.C:
			if s.stalled() {
				return got.Load(), errKeepAliveStalled
			}
		case <-ctx.Done():
			return got.Load(), ctx.Err()
		}
	}
}
